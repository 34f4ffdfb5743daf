"""Property tests of the client message parsers: nothing but ProtocolError ever escapes."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicegate.core.codec import SUPPORTED_SAMPLE_RATES, AudioFormat, Encoding
from voicegate.server.protocols.native_wire import (
    ClientMessage,
    ErrorCode,
    ProtocolError,
    ProtocolLimits,
    SessionEnd,
    SessionStart,
    TextInput,
    parse_client_audio,
    parse_client_text,
)

PROFILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LIMITS = ProtocolLimits(max_message_bytes=4096, max_text_chars=200, max_instructions_chars=300)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
# Objects that look like real messages, with fields right, wrong or unknown.
known_names = st.sampled_from(
    ["type", "input", "output", "fallback", "encoding", "sample_rate", "instructions", "text", "x"]
)
near_values = st.recursive(
    st.sampled_from(
        ["session.start", "text.input", "session.end", "pcm16", "mulaw", "opus", "", "hi"]
    )
    | st.sampled_from([8000, 16000, 24000, 48000, 44100, 0, -1, 16000.0, True])
    | json_scalars,
    lambda children: st.dictionaries(known_names, children, max_size=5),
    max_leaves=15,
)
near_messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["session.start", "text.input", "session.end", "nope"])},
    optional={
        "input": near_values,
        "output": near_values,
        "instructions": near_values,
        "text": near_values,
        "x": near_values,
    },
)

formats = st.builds(
    AudioFormat, st.sampled_from(list(Encoding)), st.sampled_from(SUPPORTED_SAMPLE_RATES)
)


@st.composite
def session_starts(draw: st.DrawFn) -> SessionStart:
    output = draw(formats)
    cheaper = [
        AudioFormat(e, r)
        for e in Encoding
        for r in SUPPORTED_SAMPLE_RATES
        if AudioFormat(e, r).bytes_per_second < output.bytes_per_second
    ]
    fallback = draw(st.none() | st.sampled_from(cheaper)) if cheaper else None
    instructions = draw(st.none() | st.text(max_size=LIMITS.max_instructions_chars))
    return SessionStart(draw(formats), output, fallback, instructions)


text_inputs = st.builds(
    TextInput,
    st.text(min_size=1, max_size=LIMITS.max_text_chars).filter(lambda t: bool(t.strip())),
)
valid_messages = session_starts() | text_inputs | st.just(SessionEnd())


def parse_or_refuse(text: str) -> ClientMessage | ProtocolError:
    try:
        return parse_client_text(text, LIMITS)
    except ProtocolError as exc:
        assert exc.message
        assert isinstance(exc.code, ErrorCode)
        return exc


@PROFILE
@given(st.text())
def test_any_text(text: str) -> None:
    parse_or_refuse(text)


@PROFILE
@given(json_values)
def test_any_json(value: object) -> None:
    result = parse_or_refuse(json.dumps(value))
    if not isinstance(value, dict):
        assert isinstance(result, ProtocolError)
        assert result.code is ErrorCode.INVALID_MESSAGE


@PROFILE
@given(near_messages)
def test_near_messages(value: dict[str, object]) -> None:
    result = parse_or_refuse(json.dumps(value))
    if not isinstance(result, ProtocolError):
        # Whatever was accepted serialises back to an equivalent message.
        assert parse_client_text(result.to_json(), LIMITS) == result


@PROFILE
@given(valid_messages)
def test_valid_messages_round_trip(message: ClientMessage) -> None:
    assert parse_client_text(message.to_json(), LIMITS) == message
    assert parse_client_text(json.dumps(message.to_dict(), ensure_ascii=True), LIMITS) == message


@PROFILE
@given(st.binary(max_size=5000), formats)
def test_any_bytes(data: bytes, fmt: AudioFormat) -> None:
    unit = fmt.frame_bytes(10)
    acceptable = 0 < len(data) <= LIMITS.max_message_bytes and len(data) % unit == 0
    try:
        audio = parse_client_audio(data, fmt, LIMITS)
    except ProtocolError as exc:
        assert not acceptable
        assert exc.code in (ErrorCode.BAD_AUDIO_FRAME, ErrorCode.MESSAGE_TOO_BIG)
        return
    assert acceptable
    assert audio.data == data
    assert audio.duration_ms == 10 * len(data) // unit
