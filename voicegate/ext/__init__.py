"""voicegate.ext: the native core, shared-memory SPSC rings linking the worker processes.

``Ring`` and ``Record`` (the one record type of the node, which the reference ring
returns too) come from the compiled extension (``_ring.pyx``); they are loaded on first
use, so the pure-Python parts (``ReferenceRing``'s module, errors, ``cleanup_stale``) can
be imported before the extension is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from voicegate.ext.errors import PeerDied, RingClosed, RingError, RingLayoutError
from voicegate.ext.reference import ReferenceRing
from voicegate.ext.ring_format import Role
from voicegate.ext.segment import cleanup_stale

if TYPE_CHECKING:
    from voicegate.ext._ring import Record, Ring, monotonic_ns

__all__ = [
    "PeerDied",
    "Record",
    "ReferenceRing",
    "Ring",
    "RingClosed",
    "RingError",
    "RingLayoutError",
    "Role",
    "cleanup_stale",
    "monotonic_ns",
]

_NATIVE = ("Ring", "Record", "monotonic_ns")


def __getattr__(name: str) -> Any:
    if name in _NATIVE:
        try:
            native = importlib.import_module("voicegate.ext._ring")
        except ImportError as exc:
            raise ImportError(
                "the voicegate.ext._ring extension is not built; run "
                "`python setup.py build_ext --inplace` (or `make build`)"
            ) from exc
        return getattr(native, name)
    raise AttributeError(f"module 'voicegate.ext' has no attribute {name!r}")
