"""Fixtures for the ring tests: both implementations, unique names, and a check that no
test leaves an object in /dev/shm."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest
from ring_impls import IMPLEMENTATIONS, PREFIX, shm_leftovers

from voicegate.ext.ring_format import SHM_DIR

_counter = itertools.count()


@pytest.fixture
def ring_name() -> Iterator[str]:
    """A fresh ring name; fails the test if any object of that name is left behind."""
    name = f"{PREFIX}{next(_counter)}"
    yield name
    left = shm_leftovers(name)
    for entry in left:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{SHM_DIR}/{entry}")
    assert not left, f"objects left in {SHM_DIR}: {left}"


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> Any:
    """The ring class under test: the Cython ring and the reference ring."""
    return request.param


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers_after_suite() -> Iterator[None]:
    yield
    left = shm_leftovers(PREFIX)
    assert not left, f"objects left in {SHM_DIR} after the suite: {left}"
