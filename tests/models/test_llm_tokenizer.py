"""The SentencePiece tokenizer trained on the shipped corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.models.errors import BundleError
from voicegate.models.sp_tokenizer import (
    CHAT_MARKERS,
    SentencePieceTokenizer,
    shipped_corpus,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> SentencePieceTokenizer:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    path.write_bytes(train_tokenizer(shipped_corpus().splitlines(), 1000))
    return SentencePieceTokenizer(path)


def test_training_is_deterministic() -> None:
    lines = shipped_corpus().splitlines()
    assert train_tokenizer(lines, 500) == train_tokenizer(lines, 500)
    with pytest.raises(ValueError, match="empty corpus"):
        train_tokenizer(["", "  "], 100)


# SentencePiece writes spaces as U+2581, so that one character cannot survive.
@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_characters="\u2581", exclude_categories=["Cs"]),
               max_size=40))
def test_any_text_round_trips(tokenizer: SentencePieceTokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_markers_are_ids_only_in_templates(tokenizer: SentencePieceTokenizer) -> None:
    ids = [tokenizer.piece_id(m) for m in CHAT_MARKERS]
    assert None not in ids
    templated = tokenizer.encode_template("<|user|>hello<|end|>")
    assert templated[0] == ids[1] and templated[-1] == ids[3]
    assert not set(ids) & set(tokenizer.encode("<|user|>hello<|end|>"))
    assert tokenizer.decode(templated) == "hello"  # control pieces print nothing
    assert tokenizer.piece_id("no such piece") is None
    assert tokenizer.vocab_size <= 1000


def test_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"not a sentencepiece model")
    with pytest.raises(BundleError, match="not a SentencePiece model"):
        SentencePieceTokenizer(bad)
    with pytest.raises(BundleError, match="tokenizer file not found"):
        SentencePieceTokenizer(tmp_path / "missing.model")
