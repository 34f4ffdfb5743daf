"""The default LLM (SmolLM2-135M-Instruct GGUF) imported once and kept between test runs.

Importing takes tens of seconds on a small machine, so the bundles are cached under
``$VOICEGATE_TEST_CACHE`` (default ``~/.cache/voicegate/test-imports``), keyed by the GGUF
file and the importer's source: a change to either imports again."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from voicegate.models import llama_graph
from voicegate.models.bundle import merge_stage_table
from voicegate.models.importers import gguf_llm
from voicegate.models.importers.gguf_llm import import_gguf
from voicegate.models.weights import SMOLLM2_135M


def cache_root() -> Path:
    override = os.environ.get("VOICEGATE_TEST_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "voicegate" / "test-imports"


def imported_bundle(weights: str) -> Path:
    """A bundle directory holding only [llm], imported from the default GGUF file."""
    source = SMOLLM2_135M.path()
    stat = source.stat()
    digest = hashlib.sha256(f"{source.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for module in (llama_graph, gguf_llm):
        assert module.__file__ is not None
        digest.update(Path(module.__file__).read_bytes())
    target = cache_root() / f"smollm2-{weights}-{digest.hexdigest()[:16]}"
    if (target / "bundle.toml").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        merge_stage_table(work, "llm", import_gguf(source, work, weights=weights))
        work.rename(target)
    except OSError:
        if not (target / "bundle.toml").is_file():  # not another run's copy won the race
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
