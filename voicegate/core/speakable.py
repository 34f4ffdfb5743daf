"""What of a model's text a voice can say: markdown, emoji and symbols taken out.

A language model writes for screens even when told not to: ``**bold**``, ``# headings``,
``- lists``, ``[links](url)``, code in backticks, emoji. Read aloud these become noise
("asterisk asterisk") or silence where the synthesizer has no sound. ``speakable`` is
applied to each clause on its way to TTS; the text events still carry what the model
wrote. It is one function, so that other normalizations (numbers, money, times) can be
chained before or after it.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

_FENCE: Final = re.compile(r"`{3,}(?:[A-Za-z][\w+#-]*(?=\n))?")
_IMAGE: Final = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK: Final = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_URL_ANGLE: Final = re.compile(r"<(https?://[^>\s]+)>")
_HEADING: Final = re.compile(r"(?m)^[ \t]*#{1,6}[ \t]+")
_QUOTE: Final = re.compile(r"(?m)^[ \t]*(?:>[ \t]?)+")
_BULLET: Final = re.compile(r"(?m)^[ \t]*[-*+\u2022\u25aa\u25cf\u2013][ \t]+")
_NUMBERED: Final = re.compile(r"(?m)^[ \t]*\d{1,3}[.)][ \t]+(?=[^\W\d_])")
_RULE: Final = re.compile(r"(?m)^[ \t]*([-*_=])(?:[ \t]*\1){2,}[ \t]*$")
_EMPHASIS: Final = re.compile(r"(\*{1,3}|~~)(?=\S)(.+?)(?<=\S)\1")
_UNDERSCORE: Final = re.compile(r"(?<![\w])(_{1,3})(?=\S)(.+?)(?<=\S)\1(?![\w])")
_TABLE_RULE: Final = re.compile(r"(?m)^[ \t]*\|?(?:[ \t]*:?-{2,}:?[ \t]*\|)+[ \t]*:?-*:?[ \t]*$")
_SPACES: Final = re.compile(r"[ \t]+")
_BLANK_LINES: Final = re.compile(r"\s*\n\s*")
_SPACE_BEFORE_PUNCT: Final = re.compile(r"\s+([,.;:!?])")

# Markup characters that have no sound; what is left of them after the patterns above
# is dropped (a stray "*" or "#"). "#" in "order #123" goes too: "order 123" reads well.
_MARKUP: Final[frozenset[str]] = frozenset("*_`~#|^\\<>{}[]\u2022")
# Symbols of category So that a voice says (or a normalizer turns into words).
_SAYABLE_SYMBOLS: Final[frozenset[str]] = frozenset("\u00b0")  # degree sign


def _drop_char(ch: str) -> bool:
    if ch in _MARKUP:
        return True
    category = unicodedata.category(ch)
    if category == "So":  # emoji, pictographs, dingbats, arrows in So
        return ch not in _SAYABLE_SYMBOLS
    # Modifier symbols (skin tones), format characters (zero-width joiner, variation
    # selectors are Mn), private use and surrogates.
    if category in ("Sk", "Cf", "Co", "Cs", "Cn") and ch not in "\n":
        return True
    if category == "Mn" and 0xFE00 <= ord(ch) <= 0xFE0F:
        return True
    if category == "Sm" and ch not in "+=%<>":
        return "\u2190" <= ch <= "\u21ff" or "\u27f0" <= ch <= "\u2bff"  # arrows
    return ch == "\u20e3"  # combining keycap


def speakable(text: str) -> str:
    """``text`` without markdown syntax, emoji and symbols the voice cannot say; words,
    digits and ordinary punctuation are kept as they are."""
    for _ in range(4):  # what one pass uncovers ("-*1" -> "- 1") goes in the next
        cleaned = _one_pass(text)
        if cleaned == text:
            break
        text = cleaned
    return text


def _one_pass(text: str) -> str:
    text = _FENCE.sub(" ", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _URL_ANGLE.sub(r"\1", text)
    text = _TABLE_RULE.sub(" ", text)
    text = _RULE.sub(" ", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    text = _NUMBERED.sub("", text)
    previous = None
    while previous != text:  # nested emphasis: ***a** b*
        previous = text
        text = _EMPHASIS.sub(r"\2", text)
        text = _UNDERSCORE.sub(r"\2", text)
    text = text.replace("|", ", ")
    text = "".join(" " if _drop_char(ch) else ch for ch in text)
    text = _BLANK_LINES.sub(" ", text)
    text = _SPACES.sub(" ", text)
    text = re.sub(r",(?:\s+,)+", ",", text)  # empty table cells
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return re.sub(r"^[\s,]+", "", text).rstrip()
