from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.core.text import Clause, ClauseChunker


def _stream(chunker: ClauseChunker, text: str, step: int) -> list[Clause]:
    out: list[Clause] = []
    for i in range(0, len(text), step):
        out += chunker.push(text[i : i + step])
    return out + chunker.flush()


def test_clauses_end_at_punctuation_followed_by_space() -> None:
    chunker = ClauseChunker(max_words=20, first_max_words=20)
    text = "Sure! The store opens at 9.30 tomorrow, and closes at six. See you then"
    assert _stream(chunker, text, 4) == [
        Clause("Sure!", True),
        Clause("The store opens at 9.30 tomorrow,", False),
        Clause("and closes at six.", True),
        Clause("See you then", False),
    ]


def test_a_clause_is_released_only_when_whitespace_follows_its_punctuation() -> None:
    chunker = ClauseChunker()
    assert chunker.push("It costs 3.") == []  # could still become "3.50"
    assert chunker.push("50 dollars. ") == [Clause("It costs 3.50 dollars.", True)]
    assert chunker.pending_text == " "


def test_abbreviations_and_initials_do_not_split() -> None:
    chunker = ClauseChunker(max_words=30, first_max_words=30)
    text = "Mr. Smith and J. Doe met Dr. Who, e.g. at noon. Done."
    assert _stream(chunker, text, 3) == [
        Clause("Mr. Smith and J. Doe met Dr. Who,", False),
        Clause("e.g. at noon.", True),
        Clause("Done.", True),
    ]


def test_word_limits_cut_long_clauses_and_the_first_clause_is_shorter() -> None:
    chunker = ClauseChunker(max_words=4, first_max_words=2)
    text = "one two three four five six seven eight nine"
    assert [c.text for c in _stream(chunker, text, 5)] == [
        "one two", "three four five six", "seven eight nine",
    ]


def test_flush_resets_for_the_next_reply_and_drops_unspeakable_pieces() -> None:
    chunker = ClauseChunker(max_words=10, first_max_words=1)
    assert chunker.push("... ") == []
    assert chunker.flush() == []
    assert chunker.push("Hello there ") == [Clause("Hello", False)]
    assert chunker.flush() == [Clause("there", False)]
    assert chunker.clauses_emitted == 0
    assert chunker.push("Again? ") == [Clause("Again?", True)]
    chunker.reset()
    assert chunker.pending_text == ""


def test_quotes_after_punctuation_stay_with_their_clause() -> None:
    chunker = ClauseChunker(max_words=20, first_max_words=20)
    assert _stream(chunker, 'He said "stop." Then left.', 2) == [
        Clause('He said "stop."', True), Clause("Then left.", True),
    ]


def test_invalid_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="word limits"):
        ClauseChunker(max_words=0)


_WORDS = st.sampled_from(["hi", "the", "3.5", "Mr.", "ok,", "yes.", "no!", "why?", "a;", "b:"])


@settings(max_examples=60, deadline=None)
@given(st.lists(_WORDS, min_size=1, max_size=40), st.integers(1, 9), st.integers(1, 5),
       st.integers(1, 5))
def test_clauses_cover_the_text_whatever_the_chunking(
    words: list[str], step: int, first: int, limit: int
) -> None:
    text = " ".join(words)
    clauses = _stream(ClauseChunker(max_words=limit, first_max_words=first), text, step)
    assert " ".join(c.text for c in clauses).split() == text.split()
    assert all(len(c.text.split()) <= max(first, limit) for c in clauses)
    assert len(clauses[0].text.split()) <= first
    # The same text pushed whole gives the same clauses.
    whole = ClauseChunker(max_words=limit, first_max_words=first)
    assert whole.push(text) + whole.flush() == clauses
