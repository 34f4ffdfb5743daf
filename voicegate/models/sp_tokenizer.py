"""SentencePiece tokenizer for the LLM: training on the shipped corpus, and encoding that
keeps chat markers out of reach of user text.

Chat markers such as ``<|user|>`` are control pieces. Control pieces are never produced by
encoding text, so a transcript that happens to contain ``<|user|>`` is spelled out as
ordinary characters; only the chat template's own literal text is searched for them.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import sentencepiece as spm

from voicegate.models.errors import BundleError

CHAT_MARKERS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")


def shipped_corpus() -> str:
    """The small English text corpus that synthetic tokenizers are trained on."""
    corpus = resources.files("voicegate").joinpath("data", "corpus.txt")
    return corpus.read_text(encoding="utf-8")


def train_tokenizer(lines: Iterable[str], vocab_size: int) -> bytes:
    """Train a unigram SentencePiece model and return its serialized bytes.

    Byte fallback lets any text round-trip exactly, so a scripted reply can hold
    characters the corpus never saw; identity normalisation keeps text as written.
    ``vocab_size`` is an upper bound: a small corpus yields fewer pieces."""
    model = io.BytesIO()
    sentences = [line for line in (raw.strip() for raw in lines) if line]
    if not sentences:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        control_symbols=list(CHAT_MARKERS),
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        hard_vocab_limit=False,
        num_threads=1,  # one thread keeps training deterministic
        minloglevel=2,
    )
    return model.getvalue()


class SentencePieceTokenizer:
    """Encoding and decoding over a SentencePiece ``tokenizer.model``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise BundleError(path, "tokenizer file not found")
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.load(str(path))
        except (OSError, RuntimeError) as exc:
            raise BundleError(path, f"not a SentencePiece model: {exc}") from exc
        self.vocab_size: int = self._sp.get_piece_size()
        special = [
            self._sp.id_to_piece(i) for i in range(self.vocab_size) if self._sp.is_control(i)
        ]
        # Longest first, so that a marker that contains another one wins.
        special = sorted((p for p in special if p), key=len, reverse=True)
        self._special_re = (
            re.compile("(" + "|".join(re.escape(p) for p in special) + ")") if special else None
        )
        self._special = set(special)

    @property
    def bos_id(self) -> int:
        return int(self._sp.bos_id())

    @property
    def eos_id(self) -> int:
        return int(self._sp.eos_id())

    @property
    def pad_id(self) -> int:
        pad = int(self._sp.pad_id())
        return pad if pad >= 0 else 0

    def piece_id(self, piece: str) -> int | None:
        """The id of an exact piece, or None when the vocabulary lacks it."""
        pid = int(self._sp.piece_to_id(piece))
        if pid == self._sp.unk_id() and piece != self._sp.id_to_piece(pid):
            return None
        return pid

    def encode(self, text: str) -> list[int]:
        """Plain text: markers in it are spelled out, never turned into control ids."""
        if not text:
            return []
        ids: list[int] = self._sp.encode(text)
        return ids

    def encode_template(self, text: str) -> list[int]:
        """Template literal text: markers become their own ids, the rest is plain text."""
        if self._special_re is None:
            return self.encode(text)
        ids: list[int] = []
        for part in self._special_re.split(text):
            if part in self._special:
                ids.append(int(self._sp.piece_to_id(part)))
            elif part:
                ids.extend(self.encode(part))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self._sp.decode(list(ids))
        return text
