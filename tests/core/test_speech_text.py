"""speech_text: what the TTS voice is given to say, exact for the common shapes and
checked by properties for the rest (no digits left, idempotent, plain words untouched)."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicegate.core.speech_text import speech_text

EXACT = [
    ("$5", "five dollars"),
    ("$1", "one dollar"),
    ("$5.50 please", "five dollars and fifty cents please"),
    ("It costs $1,200.", "It costs one thousand two hundred dollars."),
    ("$0.99", "ninety-nine cents"),
    ("$0.01", "one cent"),
    ("$2.5 million", "two point five million dollars"),
    ("£3", "three pounds"),
    ("€20", "twenty euros"),
    ("9:30", "nine thirty"),
    ("9:05", "nine oh five"),
    ("9:00", "nine o'clock"),
    ("at 9:30 a.m.", "at nine thirty AM"),
    ("12:05 PM", "twelve oh five PM"),
    ("10pm", "ten PM"),
    ("open at 8 am", "open at eight AM"),
    ("on March 3rd, 2025", "on March third, twenty twenty-five"),
    ("May 4", "May fourth"),
    ("Dec. 25", "December twenty-fifth"),
    ("2024-03-15", "March fifteenth, twenty twenty-four"),
    ("3/15/2024", "March fifteenth, twenty twenty-four"),
    ("the 21st", "the twenty-first"),
    ("your 2nd order", "your second order"),
    ("50%", "fifty percent"),
    ("3.5", "three point five"),
    ("1,234", "one thousand two hundred and thirty-four"),
    ("-5", "minus five"),
    ("call 007", "call oh oh seven"),
    ("the 1990s", "the nineteen nineties"),
    ("5 km", "five kilometers"),
    ("1 mile", "one mile"),
    ("30 min", "thirty minutes"),
    ("5kg", "five kilograms"),
    ("1/2 cup", "one half cup"),
    ("MP3", "MP three"),
    ("order #42", "order number forty-two"),
    ("No. 7", "number seven"),
    ("Dr. Smith", "Doctor Smith"),
    ("Mr. Jones vs. Mrs. Jones", "Mister Jones versus Missus Jones"),
    ("e.g. this", "for example this"),
    ("B&B", "B and B"),
    ("at 5 in the morning", "at five in the morning"),
    ("It arrives tomorrow.", "It arrives tomorrow."),
]


@pytest.mark.parametrize(("text", "spoken"), EXACT)
def test_written_out_as_spoken(text: str, spoken: str) -> None:
    assert speech_text(text) == spoken


def _suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


_PIECES = st.one_of(
    st.integers(-10**12, 10**12).map(str),
    st.integers(0, 10**9).map(lambda n: f"{n:,}"),
    st.tuples(st.integers(0, 99999), st.integers(0, 99)).map(lambda p: f"${p[0]}.{p[1]:02d}"),
    st.integers(0, 10**6).map(lambda n: f"${n:,}"),
    st.tuples(st.integers(0, 23), st.integers(0, 59)).map(lambda p: f"{p[0]}:{p[1]:02d}"),
    st.tuples(st.integers(1, 12), st.sampled_from(["am", "pm", "a.m.", "PM"]))
    .map(lambda p: f"{p[0]} {p[1]}"),
    st.integers(1, 10**6).map(lambda n: f"{n}{_suffix(n)}"),
    st.tuples(st.integers(1, 12), st.integers(1, 28), st.integers(1900, 2099))
    .map(lambda p: f"{p[2]}-{p[0]:02d}-{p[1]:02d}"),
    st.floats(0, 1e6, allow_nan=False).map(lambda f: f"{f:.2f}"),
    st.integers(0, 1000).map(lambda n: f"{n}%"),
    st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),
)


@given(st.lists(_PIECES, min_size=1, max_size=6))
def test_no_digit_is_left_and_a_second_pass_changes_nothing(pieces: list[str]) -> None:
    text = " ".join(pieces) + "."
    spoken = speech_text(text)
    assert not re.search(r"\d", spoken), (text, spoken)
    assert speech_text(spoken) == spoken


@given(st.text(alphabet=string.ascii_letters + " ,;!?'", max_size=60))
def test_plain_words_are_left_as_they_are(text: str) -> None:
    assert speech_text(text) == text


@given(st.integers(0, 10**15))
def test_every_integer_is_read_in_words(value: int) -> None:
    spoken = speech_text(f"I counted {value} of them")
    assert spoken.startswith("I counted ") and spoken.endswith(" of them")
    assert re.fullmatch(r"[a-z -]+", spoken.removeprefix("I counted ").removesuffix(" of them"))
