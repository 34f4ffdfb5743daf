"""Rate-limited logging: a burst passes, then one record per interval, and the next one
that passes says how many were held back."""

from __future__ import annotations

import logging

import pytest

from voicegate.core.log_limit import ClientErrorFilter, LogLimiter


def test_a_burst_then_one_per_interval_with_the_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limiter = LogLimiter(
        logging.getLogger("t.limit"), burst=3, interval_s=1.0, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="t.limit"):
        passed = [limiter.warning("bad client %d", i) for i in range(200)]
        assert passed.count(True) == 3
        now[0] += 1.0
        assert limiter.warning("bad client %d", 200)
        assert not limiter.warning("bad client %d", 201)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == ["bad client 0", "bad client 1", "bad client 2"]
    assert messages[3] == "bad client 200 (197 similar records suppressed)"
    assert len(messages) == 4 and limiter.suppressed_total == 198


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        LogLimiter(logging.getLogger("t"), burst=0)


def test_client_errors_lose_their_traceback_and_are_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("t.uvicorn")
    flt = ClientErrorFilter(burst=2, interval_s=3600)
    logger.addFilter(flt)
    try:
        with caplog.at_level(logging.INFO, logger="t.uvicorn"):
            for _ in range(200):
                try:
                    b"\xff".decode()
                except UnicodeDecodeError:
                    logger.exception("Invalid UTF-8 sequence received from client.")
            try:
                raise RuntimeError("a real bug")
            except RuntimeError:
                logger.exception("Exception in ASGI application")
    finally:
        logger.removeFilter(flt)
    client = [r for r in caplog.records if r.getMessage().startswith("Invalid UTF-8")]
    assert len(client) == 2 and all(r.exc_info is None for r in client)
    assert all(r.levelname == "WARNING" for r in client)
    assert flt.suppressed_total == 198
    [bug] = [r for r in caplog.records if r.getMessage() == "Exception in ASGI application"]
    assert bug.exc_info is not None  # a server error keeps its traceback
