"""Parsing of client messages (voicegate.server.protocols.native_wire): exact cases."""

from __future__ import annotations

import json

import pytest

from voicegate.core.codec import AudioFormat, Encoding
from voicegate.core.config import ProtocolLimits
from voicegate.server.protocols.native_wire import (
    CloseCode,
    ErrorCode,
    ProtocolError,
    SessionEnd,
    SessionStart,
    TextInput,
    parse_client_audio,
    parse_client_text,
)

PCM16_16K = AudioFormat(Encoding.PCM16, 16000)
MULAW_8K = AudioFormat(Encoding.MULAW, 8000)


def refused(text: str, limits: ProtocolLimits | None = None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_text(text, limits or ProtocolLimits())
    return info.value


def test_session_start_full() -> None:
    message = parse_client_text(
        json.dumps(
            {
                "type": "session.start",
                "input": {"encoding": "pcm16", "sample_rate": 48000},
                "output": {
                    "encoding": "pcm16",
                    "sample_rate": 24000,
                    "fallback": {"encoding": "mulaw", "sample_rate": 8000},
                },
                "instructions": "Be brief.",
            }
        )
    )
    assert message == SessionStart(
        input=AudioFormat(Encoding.PCM16, 48000),
        output=AudioFormat(Encoding.PCM16, 24000),
        fallback=MULAW_8K,
        instructions="Be brief.",
    )


def test_session_start_defaults() -> None:
    assert parse_client_text('{"type": "session.start"}') == SessionStart(
        PCM16_16K, PCM16_16K, None, None
    )
    # The output defaults to the input format, field by field.
    message = parse_client_text(
        '{"type": "session.start", "input": {"encoding": "mulaw", "sample_rate": 8000},'
        ' "output": {"sample_rate": 16000}}'
    )
    assert message == SessionStart(MULAW_8K, AudioFormat(Encoding.MULAW, 16000), None, None)
    # The fallback defaults to the output format, field by field.
    message = parse_client_text(
        '{"type": "session.start", "output": {"fallback": {"sample_rate": 8000}}}'
    )
    assert isinstance(message, SessionStart)
    assert message.fallback == AudioFormat(Encoding.PCM16, 8000)
    # null is the same as leaving a field out.
    message = parse_client_text(
        '{"type": "session.start", "input": null, "instructions": null,'
        ' "output": {"fallback": null}}'
    )
    assert message == SessionStart(PCM16_16K, PCM16_16K, None, None)


def test_text_input_and_session_end() -> None:
    assert parse_client_text('{"type": "text.input", "text": "héllo"}') == TextInput("héllo")
    assert parse_client_text('{"type": "session.end"}') == SessionEnd()


@pytest.mark.parametrize(
    ("text", "code", "needle"),
    [
        ("", ErrorCode.INVALID_JSON, "not valid JSON"),
        ("{", ErrorCode.INVALID_JSON, "not valid JSON"),
        ("[1, 2]", ErrorCode.INVALID_MESSAGE, "got array"),
        ('"session.start"', ErrorCode.INVALID_MESSAGE, "got string"),
        ("null", ErrorCode.INVALID_MESSAGE, "got null"),
        ("{}", ErrorCode.MISSING_FIELD, "'type'"),
        ('{"type": 1}', ErrorCode.INVALID_FIELD, "'type' must be a string, got number"),
        ('{"type": "session.begin"}', ErrorCode.UNKNOWN_TYPE, "'session.begin'"),
        (
            '{"type": "session.start", "input": {"sample_rte": 8000}}',
            ErrorCode.UNKNOWN_FIELD,
            "'session.start.input.sample_rte'",
        ),
        (
            '{"type": "session.start", "voice": "x"}',
            ErrorCode.UNKNOWN_FIELD,
            "'session.start.voice'",
        ),
        ('{"type": "session.end", "now": true}', ErrorCode.UNKNOWN_FIELD, "'session.end.now'"),
        (
            '{"type": "session.start", "input": "pcm16"}',
            ErrorCode.INVALID_FIELD,
            "'session.start.input' must be an object, got string",
        ),
        (
            '{"type": "session.start", "input": {"sample_rate": "16000"}}',
            ErrorCode.INVALID_FIELD,
            "'session.start.input.sample_rate' must be an integer, got string",
        ),
        (
            '{"type": "session.start", "input": {"sample_rate": 16000.0}}',
            ErrorCode.INVALID_FIELD,
            "must be an integer, got number",
        ),
        (
            '{"type": "session.start", "input": {"sample_rate": true}}',
            ErrorCode.INVALID_FIELD,
            "must be an integer, got boolean",
        ),
        (
            '{"type": "session.start", "input": {"sample_rate": 44100}}',
            ErrorCode.UNSUPPORTED_SAMPLE_RATE,
            "'session.start.input.sample_rate': sample rate 44100 is not supported",
        ),
        (
            '{"type": "session.start", "output": {"encoding": "opus"}}',
            ErrorCode.UNSUPPORTED_ENCODING,
            "'session.start.output.encoding': encoding 'opus' is not supported",
        ),
        (
            '{"type": "session.start", "output": {"fallback": {"encoding": "g722"}}}',
            ErrorCode.UNSUPPORTED_ENCODING,
            "'session.start.output.fallback.encoding'",
        ),
        (
            '{"type": "session.start", "output": {"fallback": {"encoding": "pcm16"}}}',
            ErrorCode.INVALID_FIELD,
            "fewer bytes per second than output (32000 >= 32000)",
        ),
        (
            '{"type": "session.start", "output": {"encoding": "mulaw", "sample_rate": 8000,'
            ' "fallback": {"sample_rate": 16000}}}',
            ErrorCode.INVALID_FIELD,
            "'session.start.output.fallback'",
        ),
        (
            '{"type": "session.start", "output": {"fallback": {"encoding": "mulaw", "x": 1}}}',
            ErrorCode.UNKNOWN_FIELD,
            "'session.start.output.fallback.x'",
        ),
        (
            '{"type": "session.start", "instructions": 5}',
            ErrorCode.INVALID_FIELD,
            "'session.start.instructions' must be a string, got number",
        ),
        ('{"type": "text.input"}', ErrorCode.MISSING_FIELD, "'text.input.text'"),
        (
            '{"type": "text.input", "text": ["a"]}',
            ErrorCode.INVALID_FIELD,
            "'text.input.text' must be a string, got array",
        ),
        (
            '{"type": "text.input", "text": "\\ud800"}',
            ErrorCode.INVALID_FIELD,
            "'text.input.text' is not valid Unicode",
        ),
    ],
)
def test_fatal_errors(text: str, code: ErrorCode, needle: str) -> None:
    error = refused(text)
    assert error.code is code
    assert error.close_code is CloseCode.POLICY_VIOLATION
    assert error.fatal
    assert needle in error.message


def test_deep_nesting_is_invalid_json() -> None:
    error = refused("[" * 100_000 + "]" * 100_000, ProtocolLimits(max_message_bytes=10**6))
    assert error.code is ErrorCode.INVALID_JSON


def test_text_problems_are_not_fatal() -> None:
    limits = ProtocolLimits(max_text_chars=5)
    assert parse_client_text('{"type": "text.input", "text": "12345"}', limits) == TextInput(
        "12345"
    )
    error = refused('{"type": "text.input", "text": "123456"}', limits)
    assert (error.code, error.close_code, error.fatal) == (ErrorCode.TEXT_TOO_LONG, None, False)
    assert "6 characters, more than the limit of 5" in error.message
    error = refused('{"type": "text.input", "text": " \\n "}')
    assert (error.code, error.fatal) == (ErrorCode.INVALID_FIELD, False)


def test_instructions_too_long_is_fatal() -> None:
    limits = ProtocolLimits(max_instructions_chars=3)
    assert parse_client_text('{"type": "session.start", "instructions": "abc"}', limits)
    error = refused('{"type": "session.start", "instructions": "abcd"}', limits)
    assert (error.code, error.close_code) == (ErrorCode.TEXT_TOO_LONG, CloseCode.POLICY_VIOLATION)


def test_text_message_too_big() -> None:
    limits = ProtocolLimits(max_message_bytes=40)
    ok = '{"type": "text.input", "text": "ab"}'
    assert len(ok.encode()) <= 40
    assert parse_client_text(ok, limits) == TextInput("ab")
    # 39 characters, but 'é' takes two bytes: 41 bytes.
    big = '{"type": "text.input", "text": "abcéé"}'
    assert len(big) < 40 < len(big.encode())
    error = refused(big, limits)
    assert (error.code, error.close_code) == (ErrorCode.MESSAGE_TOO_BIG, CloseCode.MESSAGE_TOO_BIG)
    assert "41 bytes" in error.message


@pytest.mark.parametrize(
    ("fmt", "nbytes", "duration_ms"),
    [
        (PCM16_16K, 320, 10),
        (PCM16_16K, 640, 20),
        (PCM16_16K, 32000, 1000),
        (MULAW_8K, 80, 10),
        (MULAW_8K, 160, 20),
        (AudioFormat(Encoding.PCM16, 48000), 960, 10),
        (AudioFormat(Encoding.MULAW, 24000), 720, 30),
    ],
)
def test_audio_accepted(fmt: AudioFormat, nbytes: int, duration_ms: int) -> None:
    audio = parse_client_audio(bytes(range(256)) * (nbytes // 256) + bytes(nbytes % 256), fmt)
    assert audio.duration_ms == duration_ms
    assert len(audio.data) == nbytes


@pytest.mark.parametrize(
    ("fmt", "nbytes", "needle"),
    [
        (PCM16_16K, 0, "empty binary message"),
        (PCM16_16K, 641, "pcm16 audio needs an even byte count"),
        (PCM16_16K, 318, "not a whole number of 10 ms frames (320 bytes each for pcm16 at 16000"),
        (PCM16_16K, 160, "not a whole number"),
        (MULAW_8K, 81, "(80 bytes each for mulaw at 8000 Hz)"),
        (AudioFormat(Encoding.PCM16, 8000), 320 + 2, "not a whole number"),
    ],
)
def test_audio_refused(fmt: AudioFormat, nbytes: int, needle: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_audio(bytes(nbytes), fmt)
    assert info.value.code is ErrorCode.BAD_AUDIO_FRAME
    assert info.value.close_code is CloseCode.POLICY_VIOLATION
    assert needle in info.value.message


def test_audio_too_big() -> None:
    limits = ProtocolLimits(max_message_bytes=640)
    assert parse_client_audio(bytes(640), PCM16_16K, limits).duration_ms == 20
    with pytest.raises(ProtocolError) as info:
        parse_client_audio(bytes(960), PCM16_16K, limits)
    assert info.value.code is ErrorCode.MESSAGE_TOO_BIG
    assert info.value.close_code is CloseCode.MESSAGE_TOO_BIG
    assert "960 bytes is larger than the limit of 640" in info.value.message


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="max_text_chars"):
        ProtocolLimits(max_text_chars=0)
    with pytest.raises(ValueError, match="max_message_bytes"):
        ProtocolLimits(max_message_bytes=True)


def test_messages_serialise_to_what_they_parse_from() -> None:
    start = SessionStart(
        AudioFormat(Encoding.MULAW, 8000), PCM16_16K, MULAW_8K, instructions="Speak slowly."
    )
    assert json.loads(start.to_json()) == {
        "type": "session.start",
        "input": {"encoding": "mulaw", "sample_rate": 8000},
        "output": {
            "encoding": "pcm16",
            "sample_rate": 16000,
            "fallback": {"encoding": "mulaw", "sample_rate": 8000},
        },
        "instructions": "Speak slowly.",
    }
    for message in (start, SessionStart(), TextInput("hi"), SessionEnd()):
        assert parse_client_text(message.to_json()) == message
