"""The systemd units: ``systemd-analyze verify`` accepts them without a warning, and the
settings the deployment relies on are there, the same in both units."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
SERVICE = UNITS / "voicegate.service"
TEMPLATE = UNITS / "voicegate@.service"
INSTALLED_BINARY = "/opt/voicegate/venv/bin/voicegate"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"

needs_analyze = pytest.mark.skipif(
    not os.access(SYSTEMD_ANALYZE, os.X_OK),
    reason=f"systemd-analyze is not installed ({SYSTEMD_ANALYZE} absent): units not verified",
)


def service_settings(path: Path) -> list[tuple[str, str]]:
    """(key, value) of every assignment in [Service], in order."""
    settings: list[tuple[str, str]] = []
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.append((key, value))
    return settings


def installable_copy(unit: Path, directory: Path) -> Path:
    """The unit with its ExecStart binary (the install prefix, absent here) replaced by
    an executable that exists, which verify requires; nothing else changes."""
    binary = directory / "bin" / "voicegate"
    binary.parent.mkdir(exist_ok=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    text = unit.read_text()
    assert text.count(f"ExecStart={INSTALLED_BINARY} ") == 1, unit
    copy = directory / unit.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={binary} "))
    return copy


def verify(directory: Path, unit_name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", unit_name],
        check=False,
        capture_output=True,
        text=True,
        cwd=directory,
        timeout=60,
    )


@needs_analyze
@pytest.mark.parametrize(
    ("unit", "instance"), [(SERVICE, "voicegate.service"), (TEMPLATE, "voicegate@edge-1.service")]
)
def test_systemd_analyze_verify_is_clean(unit: Path, instance: str, tmp_path: Path) -> None:
    installable_copy(unit, tmp_path)
    result = verify(tmp_path, f"./{instance}")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # unknown keys and bad values only warn


@needs_analyze
def test_verify_would_catch_a_bad_setting(tmp_path: Path) -> None:
    copy = installable_copy(SERVICE, tmp_path)
    copy.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSystem=sturdy"))
    result = verify(tmp_path, "./voicegate.service")
    assert "ProtectSystem" in result.stderr or "protect system" in result.stderr


def test_required_settings_are_present() -> None:
    for unit in (SERVICE, TEMPLATE):
        settings = dict(service_settings(unit))
        assert settings["Type"] == "notify", unit
        assert settings["NotifyAccess"] == "main", unit
        assert settings["Restart"] == "on-failure", unit
        assert settings["User"] == "voicegate", unit
        assert settings["NoNewPrivileges"] == "yes", unit
        assert settings["ProtectSystem"] == "strict", unit
        assert settings["ProtectHome"] == "yes", unit
        assert settings["PrivateTmp"] == "yes", unit
        assert settings["CapabilityBoundingSet"] == "", unit
        families = set(settings["RestrictAddressFamilies"].split())
        assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}, unit
        assert int(settings["LimitNOFILE"]) >= 65536, unit
        assert ("EnvironmentFile", "-/etc/voicegate/voicegate.env") in service_settings(unit)
        assert settings["ExecStart"].startswith(f"{INSTALLED_BINARY} serve --config "), unit
        assert settings["ExecStart"].endswith(
            " --host ${VOICEGATE_HOST} --port ${VOICEGATE_PORT}"
        ), unit


def test_template_differs_only_in_per_node_settings() -> None:
    per_node = {"ExecStart", "EnvironmentFile", "Environment", "CacheDirectory"}
    common = [s for s in service_settings(SERVICE) if s[0] not in per_node]
    assert [s for s in service_settings(TEMPLATE) if s[0] not in per_node] == common
    template = service_settings(TEMPLATE)
    assert ("Environment", "VOICEGATE_NODE_NAME=%i") in template
    # The node's own env file holds its port: required, unlike the shared one.
    assert ("EnvironmentFile", "/etc/voicegate/nodes/%i.env") in template
    assert "--config /etc/voicegate/nodes/%i.toml " in dict(template)["ExecStart"]
    assert "VOICEGATE_PORT=" not in " ".join(v for k, v in template if k == "Environment")
