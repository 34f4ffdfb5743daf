"""``speakable``: markdown, emoji and soundless symbols out of what TTS reads; words,
digits and punctuation kept."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.core.speakable import speakable
from voicegate.core.text import ClauseChunker


@pytest.mark.parametrize(
    ("written", "spoken"),
    [
        ("**Sure!** Here are the steps:", "Sure! Here are the steps:"),
        ("1. Open the app 📱", "Open the app"),
        ("- Go to *Settings* → Account", "Go to Settings Account"),
        ("# Your order\nIt shipped on `Monday`.", "Your order It shipped on Monday."),
        ("See [our help page](https://example.com/help).", "See our help page."),
        ("![logo](a.png) Welcome back!", "logo Welcome back!"),
        ("> Quoted reply\n> more", "Quoted reply more"),
        ("```python\nprint(1)\n```", "print(1)"),
        ("It costs $5 & 10% off, at 20°C.", "It costs $5 & 10% off, at 20°C."),
        ("Great job! 👍🏽✨ See you ❤️", "Great job! See you"),
        ("| Plan | Price |\n|---|---|\n| Basic | $5 |", "Plan, Price, Basic, $5,"),
        ("___", ""),
        ("Call us at 555-0100, ok?", "Call us at 555-0100, ok?"),
    ],
)
def test_what_the_voice_reads(written: str, spoken: str) -> None:
    assert speakable(written) == spoken


_PLAIN = st.text(st.sampled_from(list("abcdefghij XYZ0123456789.,;:!?'-$%")), max_size=60)
_NOISE = st.lists(st.sampled_from([*"*_`~#|>[]()!-\n 😀👍🏽✨→•™", "**", "```", "# "]),
                  max_size=12).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_PLAIN, _NOISE), max_size=6))
def test_no_markup_survives_and_words_do(parts: list[tuple[str, str]]) -> None:
    text = "".join(plain + noise for plain, noise in parts)
    out = speakable(text)
    assert not set(out) & set("*_`~#|[]😀👍✨→•™\n")
    before = ""  # the text before this plain text
    for plain, noise in parts:
        words = plain.split()
        if before.endswith("```") and plain[:1].isalpha():
            # A word right after an opening fence is its language tag ("```python"): not
            # said, as a reader of the rendered text would not see it either.
            words = words[1:]
        for word in words:
            core = word.strip(".,;:!?'-$%")
            if core.isalnum():
                assert core in out
        before += plain + noise
    assert speakable(out) == out  # idempotent


@settings(max_examples=100, deadline=None)
@given(st.text(st.sampled_from(list("abc xyz.!?")), max_size=80))
def test_plain_text_keeps_its_words_and_punctuation(text: str) -> None:
    expected = " ".join(text.split())
    expected = expected.replace(" .", ".").replace(" !", "!").replace(" ?", "?")
    assert speakable(text) == expected.lstrip()


def test_clauses_for_the_voice_leave_markdown_out() -> None:
    chunker = ClauseChunker(max_words=12, first_max_words=12)
    clauses = chunker.push("**Good news:** your *order* ships today 🚚. ") + chunker.flush()
    assert [c.text for c in clauses] == ["Good news: your order ships today."]
