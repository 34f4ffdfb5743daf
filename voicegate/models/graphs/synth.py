"""Write a complete model bundle: every stage's files and the bundle.toml naming them.

Each stage module writes its own files (``<stage>.synth``); this module only creates the
directory, passes the seed, size and scripted content on, and writes bundle.toml. Stage
modules are imported when needed, so a bundle of some stages can be written while the
others are unavailable.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from voicegate.models.bundle import BUNDLE_FILE, STAGES, write_bundle


@dataclass(frozen=True)
class Scripted:
    """Content of scripted models; None leaves that stage with random weights."""

    reply: str | None = None  # LLM: the reply it spells
    transcript: str | None = None  # STT: the transcript it emits
    tts: bool = False  # TTS: audio that encodes its input ids

    @property
    def any(self) -> bool:
        return self.reply is not None or self.transcript is not None or self.tts

    def for_stage(self, stage: str) -> object | None:
        if stage == "llm":
            return self.reply
        if stage == "stt":
            return self.transcript
        if stage == "tts":
            return True if self.tts else None
        return None


def stage_module(stage: str) -> ModuleType:
    """The module of a stage, with a clear error when it is not installed."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    name = f"voicegate.models.{stage}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise RuntimeError(f"stage module {name} is not available in this installation") from exc


def synth_bundle(
    out_dir: Path,
    *,
    seed: int = 0,
    size: str = "tiny",
    scripted: Scripted | None = None,
    stages: Sequence[str] = STAGES,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle into ``out_dir`` and return the path of its bundle.toml."""
    scripted = scripted or Scripted()
    if size not in ("tiny", "base"):
        raise ValueError(f"bundle size {size!r} is not 'tiny' or 'base'")
    if (out_dir / BUNDLE_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out_dir / BUNDLE_FILE} exists; pass overwrite to replace it")
    modules = {stage: stage_module(stage) for stage in STAGES if stage in stages}
    out_dir.mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict[str, Any]] = {}
    for stage, module in modules.items():
        tables[stage] = module.synth(
            out_dir, seed=seed, scripted=scripted.for_stage(stage), size=size
        )
    kind = "scripted" if scripted.any else "synthetic"
    return write_bundle(out_dir, name=name or f"{kind}-{size}", seed=seed, tables=tables)
