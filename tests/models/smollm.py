"""The default LLM (SmolLM2-135M-Instruct GGUF) imported once and kept between test runs,
under ``$VOICEGATE_TEST_CACHE`` (default ``~/.cache/voicegate/test-imports``): importing
takes tens of seconds on a small machine. A changed file or importer imports again."""

from __future__ import annotations

import os
from pathlib import Path

from voicegate.models.importers.gguf_llm import import_cached
from voicegate.models.weights import SMOLLM2_135M


def cache_root() -> Path:
    override = os.environ.get("VOICEGATE_TEST_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "voicegate" / "test-imports"


def imported_bundle(weights: str) -> Path:
    """A bundle directory holding only [llm], imported from the default GGUF file."""
    return import_cached(SMOLLM2_135M.path(), cache_root(), weights=weights)
