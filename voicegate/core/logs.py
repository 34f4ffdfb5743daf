"""Logging setup: plain text or JSON lines, session ids on every record, and a guard that
keeps audio and transcripts out of the logs.

The guard is a handler filter, so it sees every record that reaches the output whichever
logger emitted it. Unless the operator set ``log_content``:

- message arguments that are raw data (``bytes``, ``bytearray``, ``memoryview``, numpy
  arrays) or marked as content (``Content("...")``) are replaced with ``[redacted]``; a
  message whose format string itself is such an object is replaced whole. Pass content
  as an argument: an f-string turns a ``Content`` into a plain string before the guard
  can see it;
- the ``content`` extra (``log.info("final transcript", extra={"content": text})``), the
  one sanctioned place for transcript text, is replaced with ``[redacted]``.

Every replacement is counted (``RedactionFilter.redacted``), so a test or a metric can
see that something tried. The session id comes from the ``session`` extra or, when
absent, from the ``current_session`` context variable that ``session_context`` sets
around the handling of one session.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Final, TextIO

import numpy as np

from voicegate.core.config import LoggingSettings

REDACTED: Final[str] = "[redacted]"
PLAIN_FORMAT: Final[str] = (
    "%(asctime)s %(levelname)s %(name)s[%(process)d] %(session_tag)s%(message)s"
)

current_session: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "voicegate_session", default=None
)


class Content(str):
    """Text that is user content (a transcript, an answer): logged only with
    ``log_content`` on. Wrap it where it is produced and it stays marked."""

    __slots__ = ()


@contextlib.contextmanager
def session_context(session: int) -> Iterator[None]:
    """Records logged inside the block carry ``session`` unless they name another."""
    token = current_session.set(session)
    try:
        yield
    finally:
        current_session.reset(token)


def _is_content(value: object) -> bool:
    # A numpy scalar (a count, a level) is not content and may meet %d or %.1f.
    return isinstance(value, bytes | bytearray | memoryview | np.ndarray | Content)


class RedactionFilter(logging.Filter):
    """Replaces audio and transcript content in records unless ``log_content``."""

    def __init__(self, log_content: bool = False) -> None:
        super().__init__()
        self.log_content = log_content
        self._lock = threading.Lock()
        self.redacted = 0  # values replaced since creation

    def filter(self, record: logging.LogRecord) -> bool:
        if self.log_content:
            return True
        replaced = 0
        if _is_content(record.msg):
            record.msg = REDACTED
            record.args = None
            replaced += 1
        args = record.args
        if isinstance(args, Mapping):
            clean_map = {k: REDACTED if _is_content(v) else v for k, v in args.items()}
            replaced += sum(1 for v in args.values() if _is_content(v))
            record.args = clean_map
        elif isinstance(args, tuple):
            replaced += sum(1 for v in args if _is_content(v))
            record.args = tuple(REDACTED if _is_content(v) else v for v in args)
        if "content" in record.__dict__:
            record.content = REDACTED
            replaced += 1
        if replaced:
            with self._lock:
                self.redacted += replaced
        return True


class SessionFilter(logging.Filter):
    """Sets ``record.session`` (from the extra, else the context variable, else None)
    and ``record.session_tag`` for the plain format."""

    def filter(self, record: logging.LogRecord) -> bool:
        session = record.__dict__.get("session", current_session.get())
        record.session = session
        record.session_tag = f"session={session} " if session is not None else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, session, message, and the
    ``content`` extra when it was kept."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        session = record.__dict__.get("session")
        if session is not None:
            entry["session"] = session
        if "content" in record.__dict__:
            entry["content"] = str(record.__dict__["content"])
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(
    level: int | str = logging.INFO,
    *,
    json_lines: bool = False,
    log_content: bool = False,
    stream: TextIO | None = None,
) -> RedactionFilter:
    """Replace the root logger's handlers with one writing to ``stream`` (stderr) in the
    chosen format, guarded by a ``RedactionFilter`` that is returned for its count."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    redaction = RedactionFilter(log_content)
    # Redaction first: the session filter and the formatter only ever see clean records.
    handler.addFilter(redaction)
    handler.addFilter(SessionFilter())
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return redaction


def setup_node_logging(settings: LoggingSettings, stream: TextIO | None = None) -> RedactionFilter:
    """``setup_logging`` as the node's ``[logging]`` section says: every process of a
    node (supervisor, workers, gateways) calls it with the same settings."""
    return setup_logging(
        settings.level, json_lines=settings.json, log_content=settings.log_content, stream=stream
    )
