"""Intelligibility of the real voice: fixed answer texts spoken by the Piper voice, then
transcribed by Whisper, come back with a word error rate of at most 10%; and the WER
itself, exactly."""

from __future__ import annotations

from pathlib import Path

from voicegate.models import intelligibility
from voicegate.models.intelligibility import spoken_words, word_error_rate

ANSWERS = [
    "Your order shipped yesterday and will arrive tomorrow.",
    "The store opens at 9:30 tomorrow morning and closes at eight.",
    "Your refund of $25 was sent on March 3rd.",
    "I have reset your password. Please check your email for the new link.",
    "Sure, I can connect you with an agent right away.",
]
MAX_WER = 0.10


def test_word_error_rate_counts_edits_over_the_reference() -> None:
    assert word_error_rate("the store opens at nine", "the store opens at nine") == 0.0
    assert word_error_rate("the store opens at nine", "the shop opens at nine") == 0.2
    assert word_error_rate("the store opens at nine", "the store opens") == 0.4
    assert word_error_rate("open", "open now please") == 2.0
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("", "hello") == 1.0


def test_words_are_compared_as_spoken() -> None:
    # Whisper writes "$25" where the voice said "twenty-five dollars".
    assert word_error_rate("a refund of twenty-five dollars", "A refund of $25.") == 0.0
    assert spoken_words("It's 9:30, Dr. Smith!") == ["it's", "nine", "thirty", "doctor", "smith"]


def test_fixed_answers_survive_the_round_trip(real_bundle: Path) -> None:
    engine, model = intelligibility.load_engines(real_bundle)
    heard = intelligibility.round_trip(engine, model, ANSWERS)
    for item in heard:
        assert item.wer <= MAX_WER, item
    # Every answer was spoken: something was heard for each.
    assert all(item.heard for item in heard)
