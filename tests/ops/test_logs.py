"""Structured logging and the redaction guard, through the real logging machinery."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import numpy as np
import pytest

from voicegate.core.logs import REDACTED, Content, RedactionFilter, session_context, setup_logging

AUDIO = b"\x01\x02RIFFaudio"
TRANSCRIPT = "where is my order number four two"


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def configure(json_lines: bool, log_content: bool = False) -> tuple[io.StringIO, RedactionFilter]:
    stream = io.StringIO()
    guard = setup_logging(
        logging.DEBUG, json_lines=json_lines, log_content=log_content, stream=stream
    )
    return stream, guard


def json_records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.usefixtures("restore_root")
def test_json_lines_carry_session_from_extra_and_context() -> None:
    stream, _ = configure(json_lines=True)
    log = logging.getLogger("voicegate.test")
    log.info("opened %d", 7, extra={"session": 7})
    with session_context(42):
        log.warning("turn %s done", "t3")
        log.info("other", extra={"session": 5})
    log.info("no session")
    records = json_records(stream)
    assert [r["message"] for r in records] == ["opened 7", "turn t3 done", "other", "no session"]
    assert [r.get("session") for r in records] == [7, 42, 5, None]
    assert records[1]["level"] == "WARNING"
    assert records[1]["logger"] == "voicegate.test"
    assert isinstance(records[0]["pid"], int)


@pytest.mark.usefixtures("restore_root")
def test_plain_text_names_the_session() -> None:
    stream, _ = configure(json_lines=False)
    with session_context(9):
        logging.getLogger("voicegate.test").info("frame dropped")
    line = stream.getvalue().strip()
    assert line.endswith("session=9 frame dropped")
    assert " INFO voicegate.test[" in line


@pytest.mark.usefixtures("restore_root")
def test_audio_and_content_are_redacted_by_default() -> None:
    stream, guard = configure(json_lines=True)
    log = logging.getLogger("voicegate.test")
    pcm = np.arange(8, dtype=np.int16)
    log.info("got %r and %s", AUDIO, memoryview(AUDIO))
    log.info("samples %s %s", pcm, bytearray(AUDIO))
    log.info("heard %s", Content(TRANSCRIPT))
    log.info("final transcript", extra={"content": TRANSCRIPT})
    log.info(AUDIO)  # the mistake the guard exists for
    log.info("%(text)s", {"text": Content(TRANSCRIPT)})
    text = stream.getvalue()
    assert TRANSCRIPT not in text
    assert "RIFF" not in text and "\\x01" not in text
    assert "[0 1 2" not in text
    messages = [r["message"] for r in json_records(stream)]
    assert messages == [
        f"got '{REDACTED}' and {REDACTED}",
        f"samples {REDACTED} {REDACTED}",
        f"heard {REDACTED}",
        "final transcript",
        REDACTED,
        REDACTED,
    ]
    assert json_records(stream)[3]["content"] == REDACTED
    assert guard.redacted == 8


@pytest.mark.usefixtures("restore_root")
def test_content_is_kept_when_the_operator_enables_it() -> None:
    stream, guard = configure(json_lines=True, log_content=True)
    log = logging.getLogger("voicegate.test")
    log.info("heard %s", Content(TRANSCRIPT), extra={"content": TRANSCRIPT})
    record = json_records(stream)[0]
    assert record["message"] == f"heard {TRANSCRIPT}"
    assert record["content"] == TRANSCRIPT
    assert guard.redacted == 0


@pytest.mark.usefixtures("restore_root")
def test_plain_arguments_pass_untouched() -> None:
    stream, guard = configure(json_lines=False)
    log = logging.getLogger("voicegate.test")
    log.info("%d sessions, %.1f ms, %s", np.int64(3), np.float32(2.5), "ok")
    assert stream.getvalue().rstrip().endswith("3 sessions, 2.5 ms, ok")
    assert guard.redacted == 0
