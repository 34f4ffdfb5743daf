# ruff: noqa: E501 - strategies read best on one line
"""The session-option payloads (SESSION_UPDATE, TRUNCATE, AUDIO_MARK), fed anything
(hypothesis): a value that survives its own round trip, or ValueError naming the field,
never another exception that would fail a stage's turn as an internal error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicegate.core.payloads import (
    RESPOND_MODES,
    TURN_DETECTION_MODES,
    AudioMark,
    SessionOptions,
    Truncation,
    heard_chars,
)

CODECS: tuple[Any, ...] = (SessionOptions, Truncation, AudioMark)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
optional_ms = st.none() | st.integers(min_value=0, max_value=60_000)
valid_options = st.builds(
    SessionOptions,
    respond=st.sampled_from(RESPOND_MODES),
    max_output_tokens=st.none() | st.integers(min_value=1, max_value=4096),
    voice=st.none() | st.text(max_size=20),
    instructions=st.none() | st.text(max_size=200),
    turn_detection=st.sampled_from(TURN_DETECTION_MODES),
    vad_threshold=st.none() | st.floats(min_value=0.01, max_value=0.99),
    prefix_padding_ms=optional_ms,
    silence_duration_ms=optional_ms,
    auto_respond=st.booleans(),
    audio_marks=st.booleans(),
)
option_docs = st.fixed_dictionaries(
    {},
    optional={
        "respond": json_values | st.sampled_from(RESPOND_MODES),
        "max_output_tokens": json_values,
        "voice": json_values,
        "turn_detection": json_values | st.sampled_from(TURN_DETECTION_MODES),
        "vad_threshold": json_values,
        "silence_duration_ms": json_values,
        "auto_respond": json_values,
        "unknown": json_values,
    },
)


@given(valid_options)
def test_session_options_round_trip(options: SessionOptions) -> None:
    assert SessionOptions.from_payload(options.to_payload()) == options


def test_an_empty_session_update_is_todays_behaviour() -> None:
    options = SessionOptions.from_payload(b"{}")
    assert options == SessionOptions()
    assert (options.respond, options.turn_detection, options.auto_respond) == (
        "audio", "server", True
    )
    assert options.max_output_tokens is options.voice is options.instructions is None


@given(option_docs)
def test_session_update_documents_parse_or_name_the_field(doc: dict[str, Any]) -> None:
    try:
        options = SessionOptions.from_payload(json.dumps(doc).encode())
    except ValueError as exc:
        assert str(exc).startswith("SESSION_UPDATE payload")
        assert any(name in str(exc) for name in doc) or "JSON" in str(exc)
        return
    assert set(doc) <= {
        "respond", "max_output_tokens", "voice", "turn_detection", "vad_threshold",
        "silence_duration_ms", "auto_respond",
    }
    assert SessionOptions.from_payload(options.to_payload()) == options


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.__name__)
@given(payload=st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_payload_parses_or_raises_value_error(codec: Any, payload: bytes) -> None:
    try:
        value = codec.from_payload(payload)
    except ValueError:
        return
    assert codec.from_payload(value.to_payload()) == value


@given(st.integers(min_value=0, max_value=1 << 40), st.integers(min_value=0, max_value=1 << 40))
def test_truncation_and_marks_round_trip(a: int, b: int) -> None:
    assert Truncation.from_payload(Truncation(a, b).to_payload()) == Truncation(a, b)
    assert AudioMark.from_payload(AudioMark(a, b).to_payload()) == AudioMark(a, b)


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 500)), max_size=8),
    st.integers(0, 12_000),
    st.integers(0, 12_000),
)
def test_heard_chars_is_the_text_of_the_clauses_played_to_their_end(
    pairs: list[tuple[int, int]], end_ms: int, later_ms: int
) -> None:
    marks = [AudioMark(ms, chars) for ms, chars in sorted(pairs)]
    heard = heard_chars(marks, end_ms)
    assert heard == max((m.text_chars for m in marks if m.audio_ms <= end_ms), default=0)
    assert heard_chars(marks, max(end_ms, later_ms)) >= heard
