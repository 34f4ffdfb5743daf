"""Whisper's tokenizer files for generated bundles: a byte-level BPE ``tokenizer.json``
with Whisper's special tokens, plus the Hugging Face ``config.json`` and
``generation_config.json`` that an optimum export ships next to its ONNX files.

Real Whisper uses GPT-2's byte-level BPE followed by its special tokens in a fixed
order (<|endoftext|>, <|startoftranscript|>, one token per language, the task tokens,
<|notimestamps|>); a generated bundle keeps that order and layout, with merges learned
from a small corpus instead of GPT-2's.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Final

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from voicegate.models.errors import BundleError

# Whisper's language tokens, in the order of openai/whisper's LANGUAGES table.
LANGUAGES: Final[tuple[str, ...]] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar",
    "sv", "it", "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu",
    "ta", "no", "th", "ur", "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa",
    "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy", "ne", "mn",
    "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc",
    "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn",
    "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw",
    "su",
)
EOT: Final[str] = "<|endoftext|>"
SOT: Final[str] = "<|startoftranscript|>"
TRANSLATE: Final[str] = "<|translate|>"
TRANSCRIBE: Final[str] = "<|transcribe|>"
NO_TIMESTAMPS: Final[str] = "<|notimestamps|>"
MAX_TARGET_POSITIONS: Final[int] = 448
MAX_SOURCE_POSITIONS: Final[int] = 1500


def special_tokens() -> list[str]:
    return [
        EOT, SOT, *(f"<|{code}|>" for code in LANGUAGES), TRANSLATE, TRANSCRIBE,
        "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", NO_TIMESTAMPS,
    ]


def shipped_corpus() -> list[str]:
    """The project's training text for generated Whisper tokenizers (comments dropped)."""
    text = (resources.files("voicegate") / "data" / "stt_corpus.txt").read_text("utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def build_tokenizer(lines: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE on ``lines`` and append Whisper's special tokens.

    Whisper encodes transcripts with a leading space, so each line is trained on in that
    form too."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = special_tokens()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - len(specials), 256),
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((" " + line.strip() for line in lines), trainer)
    tokenizer.add_special_tokens(specials)
    return tokenizer


def token_id(tokenizer: Tokenizer, token: str, file: Path) -> int:
    found = tokenizer.token_to_id(token)
    if found is None:
        raise BundleError(file, f"tokenizer lacks Whisper's special token {token}")
    return int(found)


def hf_model_config(dims: Any, *, eot: int, sot: int) -> dict[str, Any]:
    """config.json in the Hugging Face Whisper schema, for generated and imported models."""
    return {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "d_model": dims.d_model,
        "encoder_layers": dims.encoder_layers,
        "decoder_layers": dims.decoder_layers,
        "encoder_attention_heads": dims.n_heads,
        "decoder_attention_heads": dims.n_heads,
        "encoder_ffn_dim": dims.ffn_dim,
        "decoder_ffn_dim": dims.ffn_dim,
        "num_mel_bins": dims.n_mels,
        "vocab_size": dims.vocab_size,
        "max_source_positions": MAX_SOURCE_POSITIONS,
        "max_target_positions": MAX_TARGET_POSITIONS,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "activation_function": "gelu",
        "scale_embedding": False,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def hf_configs(tokenizer: Tokenizer, dims: Any, *, scripted: bool) -> tuple[
    dict[str, Any], dict[str, Any]
]:
    """config.json and generation_config.json in the Hugging Face Whisper schema."""
    ids = {tok: tokenizer.token_to_id(tok) for tok in special_tokens()}
    eot, sot = ids[EOT], ids[SOT]
    if eot is None or sot is None:
        raise ValueError("the tokenizer lacks Whisper's start or end of transcript token")
    config = hf_model_config(dims, eot=eot, sot=sot)
    space = tokenizer.token_to_id("\u0120")  # the byte-level BPE's space symbol
    generation = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": MAX_TARGET_POSITIONS,
        "is_multilingual": True,
        "lang_to_id": {f"<|{code}|>": ids[f"<|{code}|>"] for code in LANGUAGES},
        "task_to_id": {"transcribe": ids[TRANSCRIBE], "translate": ids[TRANSLATE]},
        "no_timestamps_token_id": ids[NO_TIMESTAMPS],
        "forced_decoder_ids": [[1, ids["<|en|>"]], [2, ids[TRANSCRIBE]], [3, ids[NO_TIMESTAMPS]]],
        # Whisper's own: no leading space and no immediate end. A scripted model must be
        # free to end at once (no audio -> empty transcript), so it suppresses nothing.
        "begin_suppress_tokens": [] if scripted else [space, eot],
        # As Whisper's own list does for the task tokens: no special token but the end
        # token belongs in a transcript.
        "suppress_tokens": [ids[tok] for tok in special_tokens() if tok != EOT],
    }
    return config, generation
