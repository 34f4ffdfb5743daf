"""Server events of the native protocol (protocols.native_events): exact wire form, latency
breakdown, parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.core.codec import AudioFormat, Encoding
from voicegate.server.protocols.native_events import (
    ErrorEvent,
    EventFormatError,
    OutputDegraded,
    ResponseAudioStarted,
    ResponseCancelled,
    ResponseDone,
    ResponseStarted,
    ResponseTextDelta,
    ServerEvent,
    SessionStarted,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
    TurnLatency,
    TurnTimeline,
    UnknownEvent,
    parse_server_event,
)
from voicegate.server.protocols.native_wire import ProtocolLimits

MS = 1_000_000  # ns

LATENCY = TurnLatency(
    end_of_turn_silence=300.0,
    vad=1.5,
    stt=12.25,
    llm_first_token=0.0,
    tts_first_audio=20.0,
    gateway=0.125,
)


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (
            SessionStarted(
                "s-1",
                AudioFormat(Encoding.PCM16, 16000),
                AudioFormat(Encoding.PCM16, 24000),
                AudioFormat(Encoding.MULAW, 8000),
                ProtocolLimits(max_message_bytes=1000, max_text_chars=50),
            ),
            {
                "type": "session.started",
                "session": "s-1",
                "input": {"encoding": "pcm16", "sample_rate": 16000},
                "output": {
                    "encoding": "pcm16",
                    "sample_rate": 24000,
                    "fallback": {"encoding": "mulaw", "sample_rate": 8000},
                },
                "limits": {"max_message_bytes": 1000, "max_text_chars": 50},
            },
        ),
        (SpeechStarted(1, 500), {"type": "speech.started", "turn": 1, "audio_start_ms": 500}),
        (SpeechStopped(1, 2670), {"type": "speech.stopped", "turn": 1, "audio_end_ms": 2670}),
        (
            TranscriptPartial(2, "what time"),
            {"type": "transcript.partial", "turn": 2, "text": "what time"},
        ),
        (
            TranscriptFinal(2, "What time?"),
            {"type": "transcript.final", "turn": 2, "text": "What time?"},
        ),
        (ResponseStarted(2), {"type": "response.started", "turn": 2}),
        (
            ResponseTextDelta(2, "We open "),
            {"type": "response.text.delta", "turn": 2, "delta": "We open "},
        ),
        (
            ResponseAudioStarted(2, Encoding.PCM16, 16000),
            {
                "type": "response.audio.started",
                "turn": 2,
                "encoding": "pcm16",
                "sample_rate": 16000,
            },
        ),
        (
            ResponseDone(2, "We open at nine.", 1840.0, True, LATENCY),
            {
                "type": "response.done",
                "turn": 2,
                "text": "We open at nine.",
                "audio_ms": 1840.0,
                "speculative": True,
                "latency_ms": {
                    "end_of_turn_silence": 300.0,
                    "after_end_of_turn": 33.875,
                    "vad": 1.5,
                    "stt": 12.25,
                    "llm_first_token": 0.0,
                    "tts_first_audio": 20.0,
                    "gateway": 0.125,
                    "voice_to_voice": 333.875,
                },
            },
        ),
        (
            ResponseCancelled(3, "barge_in"),
            {"type": "response.cancelled", "turn": 3, "reason": "barge_in"},
        ),
        (
            OutputDegraded(Encoding.MULAW, 8000, "slow_client"),
            {
                "type": "output.degraded",
                "encoding": "mulaw",
                "sample_rate": 8000,
                "reason": "slow_client",
            },
        ),
        (
            ErrorEvent("at_capacity", "try again later", fatal=True),
            {"type": "error", "code": "at_capacity", "message": "try again later", "fatal": True},
        ),
    ],
)
def test_wire_form_and_parse(event: ServerEvent, wire: dict[str, object]) -> None:
    assert json.loads(event.to_json()) == wire
    assert parse_server_event(event.to_json()) == event


def test_session_started_without_fallback() -> None:
    fmt = AudioFormat(Encoding.PCM16, 16000)
    event = SessionStarted("s", fmt, fmt, None, ProtocolLimits())
    assert json.loads(event.to_json())["output"]["fallback"] is None
    assert parse_server_event(event.to_json()) == event


def test_latency_from_timeline_speculative() -> None:
    # The LLM and TTS finished before the turn was decided: they add nothing.
    timeline = TurnTimeline(
        speech_end=1000 * MS,
        silence_complete=1300 * MS,
        turn_end=1302 * MS,
        transcript_final=1310 * MS,
        first_token=1250 * MS,
        first_audio=1290 * MS,
        audio_sent=1311 * MS,
    )
    latency = TurnLatency.from_timeline(timeline)
    assert latency == TurnLatency(300.0, 2.0, 8.0, 0.0, 0.0, 1.0)
    assert latency.after_end_of_turn == 11.0
    assert latency.voice_to_voice == 311.0


def test_latency_from_timeline_sequential() -> None:
    timeline = TurnTimeline(
        speech_end=0,
        silence_complete=250 * MS,
        turn_end=251 * MS,
        transcript_final=271 * MS,
        first_token=311 * MS,
        first_audio=336 * MS + 500_000,
        audio_sent=337 * MS,
    )
    latency = TurnLatency.from_timeline(timeline)
    assert latency == TurnLatency(250.0, 1.0, 20.0, 40.0, 25.5, 0.5)
    assert latency.voice_to_voice == 337.0
    assert latency.to_dict()["after_end_of_turn"] == 87.0


def test_latency_timeline_out_of_order() -> None:
    with pytest.raises(ValueError, match="speech_end <= silence_complete <= turn_end"):
        TurnLatency.from_timeline(TurnTimeline(10, 5, 20, 20, 20, 20, 20))
    with pytest.raises(ValueError, match="audio_sent 25 is before"):
        TurnLatency.from_timeline(TurnTimeline(0, 5, 10, 20, 20, 30, 25))


def test_latency_validation() -> None:
    with pytest.raises(ValueError, match=r"latency_ms\.vad must be finite and >= 0"):
        TurnLatency(1.0, -0.5, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"latency_ms\.gateway must be finite"):
        TurnLatency(1.0, 0.0, 0.0, 0.0, 0.0, float("inf"))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nope", "not valid JSON"),
        ("[]", "JSON object with a string 'type'"),
        ('{"type": "speech.started", "turn": 1}', "speech.started: missing field 'audio_start_ms'"),
        ('{"type": "speech.started", "turn": "1", "audio_start_ms": 0}', "turn must be an integer"),
        ('{"type": "error", "code": "x", "message": "m", "fatal": 1}', "fatal must be a boolean"),
        (
            '{"type": "response.audio.started", "turn": 1, "encoding": "opus",'
            ' "sample_rate": 8000}',
            "unknown encoding 'opus'",
        ),
        (
            '{"type": "output.degraded", "encoding": "mulaw", "sample_rate": 11025, "reason": "x"}',
            "sample_rate 11025 is not supported",
        ),
        (
            '{"type": "response.done", "turn": 1, "text": "", "audio_ms": 0, "speculative": false,'
            ' "latency_ms": {"vad": 1}}',
            "latency_ms.end_of_turn_silence must be a number",
        ),
        ('{"type": "session.started", "session": 5}', "session.started.session must be a string"),
    ],
)
def test_malformed_events(text: str, needle: str) -> None:
    with pytest.raises(EventFormatError) as info:
        parse_server_event(text)
    assert needle in str(info.value)


def test_unknown_events_and_fields_are_tolerated() -> None:
    assert parse_server_event('{"type": "rate_limits.updated", "x": 1}') == UnknownEvent(
        "rate_limits.updated", {"type": "rate_limits.updated", "x": 1}
    )
    event = parse_server_event('{"type": "response.started", "turn": 4, "new_field": [1]}')
    assert event == ResponseStarted(4)


finite_ms = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
latencies = st.builds(TurnLatency, finite_ms, finite_ms, finite_ms, finite_ms, finite_ms, finite_ms)
turns = st.integers(min_value=1, max_value=2**32 - 1)
formats = st.builds(AudioFormat, st.sampled_from(list(Encoding)), st.sampled_from([8000, 16000]))
events = st.one_of(
    st.builds(SpeechStarted, turns, st.integers(min_value=0)),
    st.builds(SpeechStopped, turns, st.integers(min_value=0)),
    st.builds(TranscriptPartial, turns, st.text()),
    st.builds(TranscriptFinal, turns, st.text()),
    st.builds(ResponseTextDelta, turns, st.text()),
    st.builds(ResponseCancelled, turns, st.sampled_from(["barge_in", "session_end"])),
    st.builds(ErrorEvent, st.text(), st.text(), st.booleans()),
    st.builds(ResponseDone, turns, st.text(), finite_ms, st.booleans(), latencies),
    st.builds(
        lambda turn, fmt: ResponseAudioStarted(turn, fmt.encoding, fmt.sample_rate), turns, formats
    ),
    st.builds(
        SessionStarted,
        st.text(),
        formats,
        formats,
        st.none() | formats,
        st.builds(ProtocolLimits, st.integers(1, 10**6), st.integers(1, 10**6)),
    ),
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_events_round_trip(event: ServerEvent) -> None:
    parsed = parse_server_event(event.to_json())
    if isinstance(event, ResponseDone):
        # Latencies travel at microsecond resolution; the JSON is then stable.
        assert isinstance(parsed, ResponseDone)
        assert parsed.to_json() == event.to_json()
        assert parse_server_event(parsed.to_json()) == parsed
        for name in ("vad", "stt", "gateway"):
            assert abs(getattr(parsed.latency_ms, name) - getattr(event.latency_ms, name)) <= 5e-4
    else:
        assert parsed == event
