"""Word error rate: word-level edit distance over the reference's word count.

Both texts are normalised the same simple way first (lower case, hyphens and slashes
as spaces, punctuation other than inner apostrophes dropped), so that "log in." and
"Log in" agree while "log into" and "log in to" do not. Numbers are left as written:
"472" against "four seven two" counts as errors, as a caller hearing it would.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_SEPARATORS = re.compile(r"[-/]")
_DROP = re.compile(r"[^\w\s']")


def words(text: str) -> list[str]:
    cleaned = _DROP.sub(" ", _SEPARATORS.sub(" ", text.lower()))
    return [w.strip("'") for w in cleaned.split() if w.strip("'")]


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Substitutions + deletions + insertions turning ``reference`` into ``hypothesis``."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i]
        for j, hyp in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Total edits over total reference words (0.0 for no reference words)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = total = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        ref_words = words(ref)
        edits += edit_distance(ref_words, words(hyp))
        total += len(ref_words)
    return edits / total if total else 0.0
