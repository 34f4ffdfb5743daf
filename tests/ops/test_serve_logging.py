"""Every process of a node logs as its [logging] section says: JSON lines from the
supervisor, the workers and the gateway alike, with the command line over the
environment over the file, and never the demo's transcript or answer text."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from voicegate.core.config import ConfigError, LoggingSettings, load_config
from voicegate.core.logs import Content, setup_logging, setup_node_logging
from voicegate.models.named_bundles import SYNTHETIC_REPLY, SYNTHETIC_TRANSCRIPT

REPO = Path(__file__).resolve().parents[2]
KEYS = {"time", "level", "logger", "pid", "message"}


def test_node_logs_json_lines_without_content(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    name = f"logs{os.getpid() % 100000}"
    # The file asks for plain WARNING, the environment for ERROR: the flags win.
    cfg.write_text(f'[node]\nname = "{name}"\n[logging]\nlevel = "WARNING"\njson = false\n')
    env = dict(os.environ, VOICEGATE_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    env["VOICEGATE_LOGGING_LEVEL"] = "ERROR"
    env["VOICEGATE_LOGGING_JSON"] = "false"
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as stderr:
        serve = subprocess.Popen(
            [sys.executable, "-m", "voicegate", "serve", "--config", str(cfg), "--port", "0",
             "--bundle", "synthetic", "--log-json", "--log-level", "info"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
        try:
            assert serve.stdout is not None
            port = 0
            for line in serve.stdout:
                found = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
                if found:
                    port = int(found.group(1))
                    break
            assert port, stderr_path.read_text()
            talk = subprocess.run(
                [sys.executable, "-m", "voicegate", "talk", "--json", "--url",
                 f"ws://127.0.0.1:{port}/v1/stream", "--out", str(tmp_path / "a.wav")],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert talk.returncode == 0, talk.stdout + talk.stderr
            # The pipeline did carry the demo's text: its absence from the logs means something.
            assert SYNTHETIC_REPLY in talk.stdout
        finally:
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=60) == 0
    lines = stderr_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(entry.keys() >= KEYS for entry in entries), lines
    loggers = {entry["logger"] for entry in entries}
    # Supervisor, workers and the gateway process all log in the node's format.
    assert {"voicegate.supervisor", "voicegate.worker", "voicegate.gateway"} <= loggers
    assert len({entry["pid"] for entry in entries}) >= 3
    assert any(entry["level"] == "INFO" for entry in entries)
    text = "\n".join(lines)
    for sentence in re.split(r"(?<=[.?]) ", SYNTHETIC_TRANSCRIPT + " " + SYNTHETIC_REPLY):
        assert sentence.rstrip(".?") not in text
    assert not [n for n in os.listdir("/dev/shm") if f"vg-{name}-" in n]


def test_logging_section_is_validated_and_env_overrides_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[logging]\nlevel = "warning"\njson = true\n')
    config = load_config(cfg, env={"VOICEGATE_LOGGING_LOG_CONTENT": "yes"})
    assert config.logging == LoggingSettings(level="WARNING", json=True, log_content=True)
    assert load_config(cfg, env={"VOICEGATE_LOGGING_JSON": "0"}).logging.json is False
    with pytest.raises(ConfigError, match=r"logging\.level = 'loud' \(from VOICEGATE_LOG"):
        load_config(cfg, env={"VOICEGATE_LOGGING_LEVEL": "loud"})
    cfg.write_text("[logging]\njson = 1\n")
    with pytest.raises(ConfigError, match=r"logging\.json = 1 \(from .*node\.toml\): must be true"):
        load_config(cfg, env={})
    cfg.write_text("[logging]\ncolour = true\n")
    with pytest.raises(ConfigError, match=r"logging\.colour .*unknown key"):
        load_config(cfg, env={})


@pytest.mark.parametrize("log_content", [False, True])
def test_log_content_setting_decides_whether_content_is_kept(log_content: bool) -> None:
    # Nothing in voicegate logs content deliberately: this is the filter path it would take.
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        redaction = setup_node_logging(
            LoggingSettings(json=True, log_content=log_content), stream=stream
        )
        log = logging.getLogger("voicegate.test")
        log.info("final transcript %s", Content(SYNTHETIC_TRANSCRIPT))
        log.info("answer", extra={"content": SYNTHETIC_REPLY, "session": 7})
    finally:
        setup_logging(logging.WARNING, stream=io.StringIO())
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entries[1]["session"] == 7
    if log_content:
        assert entries[0]["message"] == f"final transcript {SYNTHETIC_TRANSCRIPT}"
        assert entries[1]["content"] == SYNTHETIC_REPLY
        assert redaction.redacted == 0
    else:
        assert entries[0]["message"] == "final transcript [redacted]"
        assert entries[1]["content"] == "[redacted]"
        assert redaction.redacted == 2
