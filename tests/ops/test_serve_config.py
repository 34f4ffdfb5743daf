"""``voicegate serve``'s configuration: file < ``VOICEGATE_*`` < flags, the gateway's
send path included, and a bad flag named in the error with exit status 2."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from voicegate.core.config import ConfigError, GatewayOptions
from voicegate.server.cli import build_parser, main
from voicegate.server.serve import effective_config

FILE = """
[gateway]
send_queue_frames = 20
stall_ms = 150
lead_ms = 600
send_buffer_bytes = 16384
unread_limit_ms = 900

[limits]
max_sessions = 7
idle_timeout_s = 30
"""

ENV = {
    "VOICEGATE_GATEWAY_STALL_MS": "120",
    "VOICEGATE_GATEWAY_LEAD_MS": "450",
    "VOICEGATE_LIMITS_MAX_SESSIONS": "8",
}


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def options(path: Path, env: dict[str, str], *flags: str) -> GatewayOptions:
    config = effective_config(serve_args("--config", str(path), *flags), env)
    return GatewayOptions.from_config(config)


@pytest.fixture
def node_file(tmp_path: Path) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(FILE)
    return path


def test_each_layer_wins_over_the_one_below(node_file: Path) -> None:
    assert options(node_file, {}) == GatewayOptions(
        max_sessions=7,
        send_queue_frames=20,
        stall_ms=150.0,
        lead_ms=600.0,
        send_buffer_bytes=16384,
        unread_limit_ms=900.0,
    )
    with_env = options(node_file, ENV)
    assert (with_env.stall_ms, with_env.lead_ms, with_env.max_sessions) == (120.0, 450.0, 8)
    assert with_env.send_queue_frames == 20  # the file's, where the environment is silent
    with_flags = options(
        node_file,
        ENV,
        "--stall-ms", "90",
        "--send-queue-frames", "30",
        "--max-sessions", "9",
        "--unread-limit-ms", "1200",
    )  # fmt: skip
    assert with_flags == GatewayOptions(
        max_sessions=9,  # flag over environment over file
        send_queue_frames=30,  # flag over file
        stall_ms=90.0,  # flag over environment over file
        lead_ms=450.0,  # environment over file
        send_buffer_bytes=16384,  # file
        unread_limit_ms=1200.0,
    )


def test_without_file_or_flags_the_defaults_hold(tmp_path: Path) -> None:
    config = effective_config(serve_args(), {})
    assert GatewayOptions.from_config(config) == GatewayOptions()
    assert config.limits.idle_timeout_s == 300.0


def test_other_sections_keep_their_values_under_gateway_flags(node_file: Path) -> None:
    args = serve_args("--config", str(node_file), "--lead-ms", "0", "--gateways", "3")
    config = effective_config(args, {"VOICEGATE_NODE_GATEWAYS": "2"})
    assert config.node.gateways == 3
    assert config.gateway.lead_ms == 0.0
    assert config.limits.idle_timeout_s == 30.0
    assert config.gateway.event_loop == "auto"


@pytest.mark.parametrize(
    ("flag", "value", "key"),
    [
        ("--send-queue-frames", "0", "gateway.send_queue_frames"),
        ("--stall-ms", "0", "gateway.stall_ms"),
        ("--lead-ms", "-1", "gateway.lead_ms"),
        ("--send-buffer-bytes", "-1", "gateway.send_buffer_bytes"),
        ("--unread-limit-ms", "-3", "gateway.unread_limit_ms"),
        ("--max-sessions", "0", "limits.max_sessions"),
        ("--gateways", "0", "node.gateways"),
    ],
)
def test_a_bad_flag_is_named(node_file: Path, flag: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        effective_config(serve_args("--config", str(node_file), flag, value), {})
    assert info.value.key == key
    assert info.value.source == flag
    assert f"{key} = " in str(info.value)
    assert f"(from {flag})" in str(info.value)


def test_a_bad_flag_exits_2_before_the_node_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bundle that does not exist: were the flag accepted, serve would stop there.
    argv = ["serve", "--bundle", str(tmp_path / "absent"), "--stall-ms", "-1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "gateway.stall_ms = -1.0 (from --stall-ms): must be > 0" in err
    assert "Traceback" not in err


def test_a_bad_file_value_is_named_with_its_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[gateway]\nlead_ms = -5\n")
    with pytest.raises(ConfigError, match=rf"gateway\.lead_ms = -5\.0 \(from {path}\)"):
        effective_config(serve_args("--config", str(path)), {})
