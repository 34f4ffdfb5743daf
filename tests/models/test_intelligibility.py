"""Intelligibility of the real voice: fixed answer texts spoken by the Piper voice, then
transcribed by Whisper, come back with a word error rate of at most 10% over the set;
and the WER itself, exactly.

The voice samples noise (VITS), so each run says the texts a little differently: the
bound is on the set, where one unlucky word costs about 1%, not on each text."""

from __future__ import annotations

from pathlib import Path

from voicegate.models import intelligibility
from voicegate.models.intelligibility import spoken_words, word_error_rate
from voicegate.models.wer import edit_distance

ANSWERS = [
    "Your order shipped yesterday and will arrive tomorrow.",
    "The store opens at 9:30 tomorrow morning and closes at eight.",
    "Your refund of $25 was sent on March 3rd.",
    "I have reset your password. Please check your email for the new link.",
    "Sure, I can connect you with an agent right away.",
    "Your new address is saved, and your next bill is due on the 15th.",
    "The total comes to $42.50, including tax.",
    "You can return any item within 30 days for a full refund.",
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
    edits = sum(edit_distance(spoken_words(h.text), spoken_words(h.heard)) for h in heard)
    words = sum(len(spoken_words(h.text)) for h in heard)
    assert edits / words <= MAX_WER, heard
    # Every answer was spoken: most of each was heard.
    assert all(item.wer <= 0.5 for item in heard), heard
