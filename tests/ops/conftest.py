"""The ops tests run real nodes with the worker tests' helpers (tests/ has no packages)."""

from __future__ import annotations

import sys
from pathlib import Path

WORKER_TESTS = str(Path(__file__).resolve().parents[1] / "workers")
if WORKER_TESTS not in sys.path:
    sys.path.insert(0, WORKER_TESTS)
