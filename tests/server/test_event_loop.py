"""The event loop the gateway (and the bench's servers) run on."""

from __future__ import annotations

import asyncio

import pytest

from voicegate.core.config import ConfigError, GatewaySettings
from voicegate.server.gateway import event_loop


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_takes_uvloop_when_installed_and_asyncio_on_request() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert event_loop.loop_factory("auto") is uvloop.new_event_loop
    assert event_loop.run(_loop_type(), "auto").startswith("uvloop")
    assert event_loop.loop_factory("asyncio") is None
    assert event_loop.run(_loop_type(), "asyncio").startswith("asyncio")


def test_an_unknown_loop_is_refused_in_code_and_in_config() -> None:
    with pytest.raises(ValueError, match="not one of auto, uvloop, asyncio"):
        event_loop.loop_factory("trio")
    with pytest.raises(ConfigError, match=r"gateway\.event_loop"):
        GatewaySettings(event_loop="trio")
