"""Shared by the ring tests (a uniquely named module: tests/ has no packages, so names
like ``conftest`` or ``helpers`` would clash across test folders)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import voicegate.ext
from voicegate.ext.protocol import SHM_DIR
from voicegate.ext.reference import ReferenceRing

# Every object a test creates is named under this prefix (the test process's pid).
PREFIX = f"vg-test{os.getpid()}-"

IMPLEMENTATIONS: list[Any] = [pytest.param(ReferenceRing, id="reference")]
if Path(voicegate.ext.__file__).with_name("_ring.pyx").exists():
    # Once the extension's source exists, a missing build is a failure, not a skip.
    from voicegate.ext._ring import Ring

    IMPLEMENTATIONS.insert(0, pytest.param(Ring, id="cython"))


def shm_leftovers(prefix: str) -> list[str]:
    return sorted(
        entry
        for entry in os.listdir(SHM_DIR)
        if entry.startswith(prefix) or entry.startswith("sem." + prefix)
    )
