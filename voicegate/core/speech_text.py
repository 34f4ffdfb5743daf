"""Text as it is spoken: numbers, money, times, dates, ordinals and common abbreviations
written out in words before a voice phonemizes them.

A Piper voice reads what espeak makes of its input: "$5" comes out as "dollar five",
"9:30" as "nine colon thirty" or worse, "3rd" letter by letter. ``speech_text`` rewrites
such tokens the way a person would say them, with num2words for the numbers themselves
(cardinals, ordinals, years), so that no number table is ours. It works on one clause
at a time (the TTS engine calls it on each clause it is about to synthesize), so the
first audio still starts at the first clause; the clause chunker never cuts inside a
token ("3.50", "9:30" and "e.g." hold no whitespace). The result holds no digits and
``speech_text(speech_text(x)) == speech_text(x)``.

This is not the LLM output filter (markdown, emoji): that one decides what of a reply is
meant to be heard at all, this one only how the words are said.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from num2words import num2words

MONTHS: Final[tuple[str, ...]] = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)  # fmt: skip
_MONTH_INDEX: Final[dict[str, int]] = {
    **{m.lower(): i for i, m in enumerate(MONTHS)},
    **{m[:3].lower(): i for i, m in enumerate(MONTHS)},
    "sept": 8,
}
CURRENCIES: Final[dict[str, tuple[str, str, str, str]]] = {
    # symbol: (unit, units, cent, cents)
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
}
SCALES: Final[dict[str, str]] = {
    "k": "thousand", "thousand": "thousand", "m": "million", "mn": "million",
    "million": "million", "b": "billion", "bn": "billion", "billion": "billion",
    "trillion": "trillion",
}  # fmt: skip
# Units read after a number: (singular, plural). A one-letter unit counts only when it
# touches the number ("5m", "10s"): "5 m" could be anything. "in" is left out: "at 5 in
# the morning", and "1990s" is a decade, not seconds.
UNITS: Final[dict[str, tuple[str, str]]] = {
    "km": ("kilometer", "kilometers"), "m": ("meter", "meters"),
    "cm": ("centimeter", "centimeters"), "mm": ("millimeter", "millimeters"),
    "mi": ("mile", "miles"), "ft": ("foot", "feet"),
    "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"), "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"), "oz": ("ounce", "ounces"), "l": ("liter", "liters"),
    "ml": ("milliliter", "milliliters"), "mph": ("mile per hour", "miles per hour"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "min": ("minute", "minutes"), "mins": ("minute", "minutes"),
    "hr": ("hour", "hours"), "hrs": ("hour", "hours"), "h": ("hour", "hours"),
    "sec": ("second", "seconds"), "secs": ("second", "seconds"),
    "ms": ("millisecond", "milliseconds"), "gb": ("gigabyte", "gigabytes"),
    "mb": ("megabyte", "megabytes"), "kb": ("kilobyte", "kilobytes"),
    "°c": ("degree Celsius", "degrees Celsius"), "°f": ("degree Fahrenheit",
                                                      "degrees Fahrenheit"),
    "°": ("degree", "degrees"),
}  # fmt: skip
# Abbreviations that are always read out the same way (matched case-sensitively for the
# titles, whose capital is part of what makes them abbreviations).
ABBREVIATIONS: Final[dict[str, str]] = {
    "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz", "Dr.": "Doctor", "Prof.": "Professor",
    "Jr.": "Junior", "Sr.": "Senior", "St.": "Street", "Ave.": "Avenue", "Rd.": "Road",
    "Blvd.": "Boulevard", "Mt.": "Mount", "Inc.": "Incorporated", "Ltd.": "Limited",
    "Co.": "Company", "Corp.": "Corporation", "Dept.": "Department", "vs.": "versus",
    "etc.": "et cetera", "e.g.": "for example", "i.e.": "that is", "approx.": "approximately",
    "appt.": "appointment", "est.": "estimated", "Jan.": "January", "Feb.": "February",
    "Mar.": "March", "Apr.": "April", "Aug.": "August", "Sep.": "September",
    "Sept.": "September", "Oct.": "October", "Nov.": "November", "Dec.": "December",
    "Mon.": "Monday", "Tue.": "Tuesday", "Tues.": "Tuesday", "Wed.": "Wednesday",
    "Thu.": "Thursday", "Thurs.": "Thursday", "Fri.": "Friday", "Sat.": "Saturday",
    "Sun.": "Sunday",
}  # fmt: skip
# a.m./p.m. in the one spelling espeak reads as letters ("ay em" is read "eye em").
_MERIDIEM: Final[dict[str, str]] = {"a": "AM", "p": "PM"}

_NUMBER: Final[str] = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_MERIDIEM_RE: Final[str] = r"(?P<ampm>[AaPp])\.?\s?[Mm]\b\.?"


def _words(text: str) -> str:
    # num2words separates groups with commas ("one thousand, two hundred"): a comma
    # would become a pause in the middle of a number.
    return text.replace(",", "")


def cardinal(value: int | float) -> str:
    return _words(num2words(value))


def ordinal(value: int) -> str:
    return _words(num2words(value, to="ordinal"))


def year(value: int) -> str:
    return _words(num2words(value, to="year"))


def number(text: str) -> str:
    """A written number ("1,200", "3.50", "007") in words."""
    plain = text.replace(",", "")
    whole, _, fraction = plain.partition(".")
    if len(whole) > 1 and whole.startswith("0"):
        # Leading zeros: an identifier (007, 0800), read digit by digit.
        return digits(whole) + (f" point {digits(fraction)}" if fraction else "")
    if len(whole) > 15:
        return digits(whole) + (f" point {digits(fraction)}" if fraction else "")
    spoken = cardinal(int(whole))
    if fraction:
        spoken += " point " + digits(fraction)
    return spoken


def digits(text: str) -> str:
    return " ".join("oh" if d == "0" else cardinal(int(d)) for d in text if d.isdigit())


def _money(match: re.Match[str]) -> str:
    unit, units, cent, cents = CURRENCIES[match["symbol"]]
    amount = match["amount"].replace(",", "")
    scale = match["scale"]
    whole, _, fraction = amount.partition(".")
    if scale:
        return f"{number(amount)} {SCALES[scale.lower()]} {units}"
    value = int(whole)
    parts: list[str] = []
    if value or not fraction or int(fraction.ljust(2, "0")[:2]) == 0:
        parts.append(f"{cardinal(value)} {unit if value == 1 else units}")
    if fraction:
        if len(fraction) > 2:  # "$1.999": not cents, read as a number
            return f"{number(amount)} {units}"
        minor = int(fraction.ljust(2, "0"))
        if minor:
            parts.append(f"{cardinal(minor)} {cent if minor == 1 else cents}")
    return " and ".join(parts)


def _clock(hour: int, minute: int, meridiem: str | None) -> str:
    if minute == 0:
        spoken = cardinal(hour) + ("" if meridiem else " o'clock")
    elif minute < 10:
        spoken = f"{cardinal(hour)} oh {cardinal(minute)}"
    else:
        spoken = f"{cardinal(hour)} {cardinal(minute)}"
    if meridiem:
        spoken += " " + _MERIDIEM[meridiem.lower()]
    return spoken


def _time(match: re.Match[str]) -> str:
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        return f"{cardinal(hour)} {cardinal(minute)}"
    return _clock(hour, minute, match["ampm"])


def _hour(match: re.Match[str]) -> str:
    hour = int(match["hour"])
    if not 1 <= hour <= 12:
        return f"{cardinal(hour)} {_MERIDIEM[match['ampm'].lower()]}"
    return _clock(hour, 0, match["ampm"])


def _date(month: int, day: int, year_text: str | None) -> str | None:
    if not (0 <= month < 12 and 1 <= day <= 31):
        return None
    spoken = f"{MONTHS[month]} {ordinal(day)}"
    if year_text:
        spoken += f", {year(int(year_text))}"
    return spoken


def _iso_date(match: re.Match[str]) -> str:
    spoken = _date(int(match["month"]) - 1, int(match["day"]), match["year"])
    return spoken if spoken is not None else number(match[0].replace("-", " "))


def _slash_date(match: re.Match[str]) -> str:
    year_text = match["year"]
    if year_text is not None and len(year_text) == 2:
        year_text = "20" + year_text
    spoken = _date(int(match["month"]) - 1, int(match["day"]), year_text)
    if spoken is None:
        return " slash ".join(number(part) for part in match[0].split("/"))
    return spoken


def _month_date(match: re.Match[str]) -> str:
    month = _MONTH_INDEX[match["month"].lower().rstrip(".")]
    spoken = _date(month, int(match["day"]), match["year"])
    if spoken is None:
        return f"{MONTHS[month]} {number(match['day'])}"
    return spoken


def _ordinal(match: re.Match[str]) -> str:
    return ordinal(int(match["value"].replace(",", "")))


def _percent(match: re.Match[str]) -> str:
    return f"{number(match['value'])} percent"


def _unit(match: re.Match[str]) -> str:
    value = match["value"]
    singular, plural = UNITS[match["unit"].lower()]
    return f"{number(value)} {singular if value == '1' else plural}"


def _signed(match: re.Match[str]) -> str:
    return "minus " + number(match["value"])


def _fraction(match: re.Match[str]) -> str:
    numerator, denominator = int(match["numerator"]), int(match["denominator"])
    if denominator == 2 and numerator == 1:
        return "one half"
    if 2 <= denominator <= 10 and 0 < numerator < denominator:
        # num2words' ordinals name the parts: "three fourths", "two thirds".
        part = ordinal(denominator)
        return f"{cardinal(numerator)} {part}{'s' if numerator > 1 else ''}"
    return f"{number(match['numerator'])} over {number(match['denominator'])}"


def _decade(match: re.Match[str]) -> str:
    century, decade = match["century"], int(match["decade"])
    spoken = year(int(century + match["decade"])) if century else cardinal(decade)
    # "nineteen ninety" -> "nineteen nineties"; "two thousand" -> "two thousands" is not
    # said, but the 2000s rarely come out of a reply.
    return spoken[:-1] + "ies" if spoken.endswith("y") else spoken + "s"


def _bare_number(match: re.Match[str]) -> str:
    spoken = number(match[0])
    # A number inside a word ("MP3", "B2B") is still a word of its own when spoken.
    text, start, end = match.string, match.start(), match.end()
    if start > 0 and text[start - 1].isalpha():
        spoken = " " + spoken
    if end < len(text) and text[end].isalpha():
        spoken += " "
    return spoken


def _abbreviation(match: re.Match[str]) -> str:
    return ABBREVIATIONS[match[0]]


def _number_sign(match: re.Match[str]) -> str:
    return f"number {number(match['value'])}"


_MONTH_NAMES: Final[str] = "|".join(
    [*MONTHS, *(m[:3] + r"\.?" for m in MONTHS), r"Sept\.?"]
)
_UNIT_NAMES: Final[str] = "|".join(
    re.escape(u) for u in sorted(UNITS, key=len, reverse=True) if len(u) > 1
)
_LETTER_UNITS: Final[str] = "".join(u for u in UNITS if len(u) == 1 and u.isalpha())
_ABBREVIATION_RE: Final[str] = "|".join(
    re.escape(a) for a in sorted(ABBREVIATIONS, key=len, reverse=True)
)
# Applied in this order: the specific shapes (dates, money, times) before the general
# ones (ordinals, units, bare numbers), each replacing its digits with words.
_RULES: Final[tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...]] = (
    (re.compile(r"\b(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})\b"), _iso_date),
    (re.compile(r"\b(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4}|\d{2})\b"),
     _slash_date),
    # Capitalized only: "may 5" is rarely a date.
    (re.compile(rf"\b(?P<month>{_MONTH_NAMES})\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\b"
                r"(?:,?\s+(?P<year>\d{4})\b)?"), _month_date),
    (re.compile(rf"(?P<symbol>[$€£])\s?(?P<amount>{_NUMBER})"
                r"(?:\s?(?P<scale>thousand|million|billion|trillion|mn|bn|[kmb])\b)?",
                re.IGNORECASE), _money),
    (re.compile(rf"\b(?P<hour>\d{{1,2}}):(?P<minute>\d{{2}})\b(?:\s?{_MERIDIEM_RE})?"), _time),
    (re.compile(rf"\b(?P<hour>\d{{1,2}})\s?{_MERIDIEM_RE}"), _hour),
    (re.compile(rf"(?P<value>{_NUMBER})\s?%"), _percent),
    (re.compile(r"\b(?P<value>\d{1,3}(?:,\d{3})+|\d+)(?:st|nd|rd|th)\b", re.IGNORECASE),
     _ordinal),
    (re.compile(rf"\b(?P<value>{_NUMBER})\s?(?P<unit>{_UNIT_NAMES})(?![\w/])", re.IGNORECASE),
     _unit),
    (re.compile(rf"\b(?P<value>{_NUMBER})(?P<unit>[{_LETTER_UNITS}])\b"), _unit),
    (re.compile(r"\b(?P<century>1\d|20)?(?P<decade>\d0)'?s\b"), _decade),
    (re.compile(r"\b(?P<numerator>\d+)/(?P<denominator>\d+)\b"), _fraction),
    (re.compile(rf"#\s?(?P<value>{_NUMBER})\b"), _number_sign),
    (re.compile(rf"\bNo\.\s?(?P<value>{_NUMBER})\b"), _number_sign),
    (re.compile(rf"(?<![\w.])-(?P<value>{_NUMBER})\b"), _signed),
    (re.compile(_NUMBER), _bare_number),
    (re.compile(rf"(?<![\w.])(?:{_ABBREVIATION_RE})(?!\w)"), _abbreviation),
    (re.compile(r"\s*&\s*"), lambda m: " and "),
    (re.compile(r"(?<=\w)\s*@\s*(?=\w)"), lambda m: " at "),
)


def speech_text(text: str) -> str:
    """``text`` with its numbers, amounts, times, dates, ordinals and abbreviations
    written out as they are spoken."""
    for pattern, replace in _RULES:
        text = pattern.sub(replace, text)
    return text
