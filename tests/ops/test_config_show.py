"""``voicegate config show``: effective values, their sources, and errors with exit 2."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from voicegate.core.config import load_config
from voicegate.core.config_show import render_config
from voicegate.server.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]

FILE = """
[node]
name = "edge-1"
gateways = 3

[rings]
impl = "reference"

[workers.stt]
cpus = [0]
options = { beam = 2, model = "tiny", nested = { "a b" = [1, 2] } }
"""


def lines_by_key(text: str) -> dict[str, str]:
    """'section.key' -> the rest of the line after the key (value and comment)."""
    result: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif " = " in line and not line.startswith("#"):
            key, _, rest = line.partition(" = ")
            result[f"{section}.{key}"] = rest
    return result


def test_values_are_marked_default_file_or_env(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(FILE)
    env = {"VOICEGATE_NODE_GATEWAYS": "4", "VOICEGATE_HEALTH_MAX_RESTARTS": "9"}
    text = render_config(path, env)
    keys = lines_by_key(text)
    assert keys["node.name"] == '"edge-1"  # file'
    assert keys["node.gateways"] == "4  # env VOICEGATE_NODE_GATEWAYS"
    assert keys["node.drain_timeout_s"] == "10.0  # default"
    assert keys["rings.impl"] == '"reference"  # file'
    assert keys["health.max_restarts"] == "9  # env VOICEGATE_HEALTH_MAX_RESTARTS"
    assert keys["workers.stt.cpus"] == "[0]  # file"
    assert keys["workers.vad.cpus"] == "[]  # default"
    assert "# bundle is unset  # default" in text
    # The output is a configuration file that loads to the same configuration.
    shown = tmp_path / "shown.toml"
    shown.write_text(text)
    assert load_config(shown, env={}) == load_config(path, env)
    assert tomllib.loads(text)["workers"]["stt"]["options"] == {
        "beam": 2,
        "model": "tiny",
        "nested": {"a b": [1, 2]},
    }


def test_config_env_variable_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(FILE)
    keys = lines_by_key(render_config(None, {"VOICEGATE_CONFIG": str(path)}))
    assert keys["node.name"] == '"edge-1"  # file'


def test_cli_prints_config_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(FILE)
    monkeypatch.setenv("VOICEGATE_RINGS_SPIN_US", "7.5")
    assert main(["config", "show", "--config", str(path)]) == 0
    keys = lines_by_key(capsys.readouterr().out)
    assert keys["rings.spin_us"] == "7.5  # env VOICEGATE_RINGS_SPIN_US"


@pytest.mark.parametrize(
    ("contents", "env", "expected"),
    [
        ("[node]\ngateways = 0\n", {}, "node.gateways = 0 (from {path}): must be between"),
        ("[node]\nname = 'x'\n", {"VOICEGATE_HEALTH_MAX_RESTARTS": "many"}, "health.max_restarts"),
        ("[rings]\nsize = 3\n", {}, "rings.size = 3"),
        ("[node\n", {}, "not valid TOML"),
    ],
)
def test_errors_name_key_and_value_and_exit_2(
    tmp_path: Path, contents: str, env: dict[str, str], expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(contents)
    result = subprocess.run(
        [sys.executable, "-m", "voicegate", "config", "show", "--config", str(path)],
        check=False,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", **env},
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert expected.format(path=path) in result.stderr
    assert result.stdout == ""


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["config", "show", "--config", str(tmp_path / "absent.toml")]) == 2
    assert "absent.toml" in capsys.readouterr().err


def test_gateway_send_path_is_shown_with_its_source(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[gateway]\nsend_queue_frames = 20\nlead_ms = 600\n")
    env = {"VOICEGATE_GATEWAY_LEAD_MS": "450", "VOICEGATE_GATEWAY_STALL_MS": "120"}
    text = render_config(path, env)
    keys = lines_by_key(text)
    assert keys["gateway.send_queue_frames"] == "20  # file"
    assert keys["gateway.lead_ms"] == "450.0  # env VOICEGATE_GATEWAY_LEAD_MS"
    assert keys["gateway.stall_ms"] == "120.0  # env VOICEGATE_GATEWAY_STALL_MS"
    assert keys["gateway.send_buffer_bytes"] == "0  # default"
    assert keys["gateway.unread_limit_ms"] == "2000.0  # default"
    shown = tmp_path / "shown.toml"
    shown.write_text(text)
    assert load_config(shown, env={}) == load_config(path, env)
