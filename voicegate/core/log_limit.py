"""Rate-limited logging for what callers can cause: one bad client (or one session's
input that a stage cannot take) must not be able to fill the operator's logs.

``LogLimiter`` lets a burst of records through, then at most one per ``interval_s``; the
next record that passes says how many were held back since the last one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class LogLimiter:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or interval_s <= 0:
            raise ValueError(f"burst must be >= 1 and interval_s > 0, got {burst}, {interval_s}")
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.suppressed = 0  # held back since the last record that passed
        self.suppressed_total = 0

    def allow(self) -> bool:
        """Whether a record may go out now (a token bucket of ``burst`` tokens, refilled
        at one per ``interval_s``)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) / self.interval_s)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        self.suppressed_total += 1
        return False

    def log(self, level: int, msg: str, *args: object) -> bool:
        if not self.allow():
            return False
        if self.suppressed:
            msg = f"{msg} ({self.suppressed} similar records suppressed)"
            self.suppressed = 0
        self.logger.log(level, msg, *args)
        return True

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)

    def info(self, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, msg, *args)


# What uvicorn logs (at ERROR, with a traceback) when a client sends bytes it cannot
# parse: the client's fault, not the server's, and one line each is plenty.
CLIENT_ERROR_MESSAGES: frozenset[str] = frozenset(
    {
        "Invalid UTF-8 sequence received from client.",
        "Invalid HTTP request received.",
        "Unsupported upgrade request.",
    }
)


class ClientErrorFilter(logging.Filter):
    """On a server library's logger (``uvicorn.error``): records about what a client
    sent lose their traceback and are rate-limited (a burst, then one per interval); the
    others pass untouched, a real server error keeps its traceback."""

    def __init__(self, *, burst: int = 10, interval_s: float = 1.0) -> None:
        super().__init__()
        self._limiter = LogLimiter(logging.getLogger(__name__), burst=burst, interval_s=interval_s)

    @property
    def suppressed_total(self) -> int:
        return self._limiter.suppressed_total

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() not in CLIENT_ERROR_MESSAGES:
            return True
        if not self._limiter.allow():
            return False
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        if self._limiter.suppressed:
            record.msg = f"{record.getMessage()} ({self._limiter.suppressed} similar suppressed)"
            record.args = None
            self._limiter.suppressed = 0
        return True
