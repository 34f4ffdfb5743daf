"""Shared by the ring tests (a uniquely named module: tests/ has no packages, so names
like ``conftest`` or ``helpers`` would clash across test folders)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from voicegate.ext._ring import Ring
from voicegate.ext.reference import ReferenceRing
from voicegate.ext.ring_format import SHM_DIR

# Every object a test creates is named under this prefix (the test process's pid).
PREFIX = f"vg-test{os.getpid()}-"

IMPLEMENTATIONS: list[Any] = [
    pytest.param(Ring, id="cython"),
    pytest.param(ReferenceRing, id="reference"),
]


def shm_leftovers(prefix: str) -> list[str]:
    return sorted(
        entry
        for entry in os.listdir(SHM_DIR)
        if entry.startswith(prefix) or entry.startswith("sem." + prefix)
    )
