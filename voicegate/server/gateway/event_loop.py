"""The event loop a process of ours runs on: uvloop when it is installed (uvicorn's
``[standard]`` extra brings it), else asyncio's own, as uvicorn's ``loop="auto"`` picks.

The gateway starts its loop itself (it hands uvicorn a socket it bound, and runs admission
and the egress task beside the server), so uvicorn's choice never applies to it: this
makes the same choice. uvloop moves the selector, the transports and the timers to C,
which is most of what a process that only moves frames spends per frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

T = TypeVar("T")
LOOPS: Final[tuple[str, ...]] = ("auto", "uvloop", "asyncio")


def loop_factory(name: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the named loop; None for asyncio's default. ``uvloop`` raises
    ImportError when it is not installed, ``auto`` falls back to asyncio."""
    if name not in LOOPS:
        raise ValueError(f"event loop {name!r} is not one of {', '.join(LOOPS)}")
    if name == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        if name == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """``asyncio.run(main)`` on the named loop."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)
