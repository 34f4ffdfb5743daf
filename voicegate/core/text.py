"""Clause chunking of streamed reply text for text-to-speech.

The LLM produces text a few characters at a time; TTS should start speaking as soon as
the first clause is complete rather than wait for the whole reply. A clause ends at
punctuation followed by whitespace (so "3.50" and "e.g." do not split) or, failing that,
when it reaches a word limit; the first clause of a reply may use a lower limit so that
the first audio comes sooner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from voicegate.core.speakable import speakable

# Punctuation after which a clause may end. Commas and colons end clauses too: a short
# pause there sounds natural, and an early first clause is what buys latency.
CLAUSE_END: Final[frozenset[str]] = frozenset(".!?;:,\u2026\u3002\uff01\uff1f")
SENTENCE_END: Final[frozenset[str]] = frozenset(".!?\u2026\u3002\uff01\uff1f")
# Closing quotes and brackets that belong to the clause they follow.
_CLOSERS: Final[str] = "\"')]}\u201d\u2019\u00bb"
# Words ending in "." that do not end a sentence.
ABBREVIATIONS: Final[frozenset[str]] = frozenset({
    "mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "sr.", "jr.", "vs.", "e.g.", "i.e.",
    "no.", "approx.", "dept.", "inc.", "ltd.", "co.", "mt.", "ft.", "fig.",
})
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Clause:
    """A piece of reply text to synthesize in one model call."""

    text: str
    ends_sentence: bool  # ends in sentence punctuation: TTS may add a sentence pause


def _ends_clause(word: str) -> bool:
    stripped = word.rstrip(_CLOSERS)
    if not stripped or stripped[-1] not in CLAUSE_END:
        return False
    if stripped[-1] == ".":
        lowered = stripped.lower()
        if lowered in ABBREVIATIONS:
            return False
        # A single-letter initial ("J.") is not a sentence end.
        if len(stripped) == 2 and stripped[0].isalpha():
            return False
    return True


def _is_speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _sentence_end(word: str) -> bool:
    stripped = word.rstrip(_CLOSERS)
    return bool(stripped) and stripped[-1] in SENTENCE_END


@dataclass
class ClauseChunker:
    """Accumulates streamed text and hands out complete clauses.

    ``push`` returns the clauses completed by the new text; ``flush`` ends the reply and
    returns what is left. Clause text goes through ``speakable`` (no markdown, emoji or
    symbols without a sound); clauses without a letter or digit are then dropped: there
    is nothing in them to speak.
    """

    max_words: int = 12
    first_max_words: int = 6
    _buffer: str = field(default="", init=False)
    _emitted: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.max_words < 1 or self.first_max_words < 1:
            raise ValueError(
                f"word limits must be >= 1, found max_words={self.max_words}, "
                f"first_max_words={self.first_max_words}"
            )

    @property
    def clauses_emitted(self) -> int:
        return self._emitted

    @property
    def pending_text(self) -> str:
        return self._buffer

    def reset(self) -> None:
        """Forget buffered text and start a new reply."""
        self._buffer = ""
        self._emitted = 0

    def push(self, text: str) -> list[Clause]:
        self._buffer += text
        return self._drain(final=False)

    def flush(self) -> list[Clause]:
        """End of the reply: everything buffered becomes clauses."""
        clauses = self._drain(final=True)
        self._emitted = 0
        return clauses

    def _limit(self) -> int:
        return self.first_max_words if self._emitted == 0 else self.max_words

    def _drain(self, *, final: bool) -> list[Clause]:
        clauses: list[Clause] = []
        while True:
            cut = self._find_cut(final=final)
            if cut is None:
                break
            end, ends_sentence = cut
            piece = speakable(self._buffer[:end])
            self._buffer = self._buffer[end:]
            if _is_speakable(piece):
                clauses.append(Clause(piece, ends_sentence))
                self._emitted += 1
        if final:
            rest = speakable(self._buffer)
            self._buffer = ""
            if _is_speakable(rest):
                clauses.append(Clause(rest, _sentence_end(rest.split()[-1])))
                self._emitted += 1
        return clauses

    def _find_cut(self, *, final: bool) -> tuple[int, bool] | None:
        """End offset of the first complete clause in the buffer, and whether it ends a
        sentence. A word counts as complete only once whitespace follows it (or at the
        end of the reply), since the next chunk could still extend it ("3." -> "3.5")."""
        limit = self._limit()
        for words, match in enumerate(_WORD.finditer(self._buffer), start=1):
            complete = match.end() < len(self._buffer) or final
            if not complete:
                return None
            word = match.group()
            if _ends_clause(word):
                return match.end(), _sentence_end(word)
            if words >= limit:
                return match.end(), False
        return None
