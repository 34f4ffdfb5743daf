"""The servers `bench e2e` compares voicegate with: by name, each a function that starts
one on a bundle directory and yields its stream URL.

A peer is ``start(bundle: Path) -> AbstractContextManager[str]``: it starts a server of
voicegate's WebSocket protocol on ``bundle`` (the same models voicegate runs), yields
``ws://127.0.0.1:PORT/v1/stream`` once it is ready, and stops it on exit. When the URL
is a ``bench.baselines.ServerURL`` (a ``str`` with ``pid``), that process and its
children are measured for CPU.

Peers live in ``PEERS`` as ``"module:function"``, imported only when they run, so a
peer whose optional dependencies are missing is reported as not available instead of
breaking the bench. A new peer is one more entry here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Final

PeerStarter = Callable[[Path], AbstractContextManager[str]]

PEERS: Final[dict[str, str]] = {
    # Request-response: each turn's stages one after another, after the end of the turn.
    "sequential": "bench.baselines:start_sequential",
    # voicegate's pipeline and speculation with every model in one process, on threads.
    "single_process": "bench.baselines:start_single_process",
    # A Pipecat pipeline around the same engines and weights (needs pipecat-ai).
    "pipecat": "bench.pipecat_peer:start_pipecat",
}
DEFAULT: Final[tuple[str, ...]] = tuple(PEERS)


def load(name: str) -> PeerStarter:
    """The starter of a peer; ``LookupError`` saying why when it cannot run here."""
    if name not in PEERS:
        raise LookupError(f"unknown peer {name!r}; peers are {', '.join(PEERS)}")
    module_name, _, function = PEERS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise LookupError(f"not available ({exc.name} is not installed)") from None
    starter: PeerStarter = getattr(module, function)
    return starter


def parse(text: str) -> tuple[str, ...]:
    """``--peers`` as a tuple of names; ValueError naming an unknown one."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer {unknown[0]!r}; peers are {', '.join(PEERS)}")
    return names
