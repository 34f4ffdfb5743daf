"""Importers: the model formats people already have on disk, turned into bundle stages.

Each module converts one format into one stage of a bundle in the project's ONNX layout,
and is reached as ``voicegate models import FORMAT SRC OUT``. A module named in
``FORMATS`` provides ``add_arguments(parser)``, which declares its options beyond SRC and
OUT, and ``run(args) -> int``, which writes the stage's files under OUT, merges its table
into OUT/bundle.toml (``bundle.merge_stage_table``) and returns the exit status. Errors
name the file and the field or variable, never a traceback.
"""

from __future__ import annotations

from typing import Final

# format name -> (module under voicegate.models.importers, help text), e.g.
# "whisper": ("whisper", "a CTranslate2 Whisper directory (faster-whisper) -> [stt]")
FORMATS: Final[dict[str, tuple[str, str]]] = {
    "gguf": ("gguf_llm", "a Llama-family GGUF file (llama.cpp, Ollama, LM Studio) -> [llm]"),
    "whisper": ("whisper", "a CTranslate2 Whisper directory (faster-whisper) -> [stt]"),
}
