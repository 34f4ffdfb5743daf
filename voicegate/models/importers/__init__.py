"""Importers: the model formats people already have on disk, turned into bundle stages.

Each module converts one format into one stage of a bundle in the project's ONNX layout,
and is reached as ``voicegate models import FORMAT SRC OUT``. A module named in
``FORMATS`` provides ``add_arguments(parser)``, which declares its options beyond SRC and
OUT, and ``run(args) -> int``, which writes the stage's files under OUT, merges its table
into OUT/bundle.toml (``bundle.merge_stage_table``) and returns the exit status. Errors
name the file and the field or variable, never a traceback.

Modules:
    ct2       A reader of CTranslate2's ``model.bin`` in numpy, without the ctranslate2 package
    gguf_llm  ``voicegate models import gguf FILE OUT``: a Llama-family GGUF file (llama.cpp,
              Ollama, LM Studio) into the LLM stage of a bundle
    whisper   ``voicegate models import whisper SRC OUT``
"""

from __future__ import annotations

from typing import Final

# format name -> (module under voicegate.models.importers, help text)
FORMATS: Final[dict[str, tuple[str, str]]] = {
    "whisper": ("whisper", "a CTranslate2 Whisper directory (faster-whisper) -> [stt]"),
    "gguf": ("gguf_llm", "a Llama-family GGUF file (llama.cpp, Ollama, LM Studio) -> [llm]"),
}
