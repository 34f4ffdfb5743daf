# ruff: noqa: E501 - strategies and expected messages read best on one line
"""Payload codecs: every kind with a payload has one, each round-trips (hypothesis), and
bad bytes are a ValueError naming the kind and the field."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from voicegate.core import codec
from voicegate.core.codec import SUPPORTED_SAMPLE_RATES, AudioFormat, Encoding
from voicegate.core.kinds import Kind
from voicegate.core.payloads import (
    AUDIO_KINDS,
    CODECS,
    NO_PAYLOAD,
    RESPOND_MODES,
    TEXT_KINDS,
    TURN_DETECTION_MODES,
    AudioCodec,
    AudioMark,
    Codec,
    DrainEvent,
    RestartReason,
    SessionOptions,
    SessionParams,
    StageId,
    Truncation,
    TurnError,
    TurnErrorCode,
    TurnTiming,
    VadEvent,
    VadEventType,
    WorkerRestarted,
    decode_audio,
    decode_output_format,
    decode_playback,
    decode_text,
    encode_audio,
    encode_output_format,
    encode_playback,
    encode_text,
)

INT64 = st.integers(-(2**63), 2**63 - 1)
NS = st.integers(0, 2**62)
formats = st.builds(AudioFormat, st.sampled_from(Encoding), st.sampled_from(SUPPORTED_SAMPLE_RATES))
samples = arrays(np.int16, st.integers(0, 400))
# Text that UTF-8 can carry: no lone surrogates.
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)

VALUES = {
    Kind.VAD_EVENT: st.builds(VadEvent, st.sampled_from(VadEventType), INT64),
    Kind.ERROR: st.builds(TurnError, st.sampled_from(TurnErrorCode), st.sampled_from(StageId), texts),
    Kind.WORKER_RESTARTED: st.builds(
        WorkerRestarted,
        st.sampled_from(StageId),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.sampled_from(RestartReason),
        st.integers(-(2**31), 2**31 - 1),
    ),
    Kind.DRAIN: st.builds(DrainEvent, INT64),
    Kind.TURN_TIMING: st.builds(TurnTiming, NS, NS, NS),
    Kind.SESSION_OPEN: st.builds(SessionParams, formats, formats, st.none() | texts.filter(bool)),
    Kind.OUTPUT_FORMAT: formats,
    Kind.PLAYBACK: st.booleans(),
    Kind.SESSION_UPDATE: st.builds(
        SessionOptions,
        respond=st.sampled_from(RESPOND_MODES),
        max_output_tokens=st.none() | st.integers(1, 4096),
        voice=st.none() | texts,
        instructions=st.none() | texts,
        turn_detection=st.sampled_from(TURN_DETECTION_MODES),
        vad_threshold=st.none() | st.floats(0.01, 0.99),
        prefix_padding_ms=st.none() | st.integers(0, 60_000),
        silence_duration_ms=st.none() | st.integers(0, 60_000),
        auto_respond=st.booleans(),
        audio_marks=st.booleans(),
    ),
    Kind.TRUNCATE: st.builds(Truncation, st.integers(0, 2**31), st.integers(0, 2**31)),
    Kind.AUDIO_MARK: st.builds(AudioMark, st.integers(0, 2**31), st.integers(0, 2**31)),
    **{kind: texts for kind in TEXT_KINDS},
}


def test_every_kind_with_a_payload_has_one_codec() -> None:
    assert set(CODECS).isdisjoint(NO_PAYLOAD)
    assert set(CODECS) | NO_PAYLOAD == set(Kind)
    for kind, entry in CODECS.items():
        assert entry.kind is kind
    assert {k for k, e in CODECS.items() if isinstance(e, AudioCodec)} == AUDIO_KINDS
    # Every plain codec has a round-trip strategy below: a new one cannot go untested.
    assert {k for k, e in CODECS.items() if isinstance(e, Codec)} == set(VALUES)


@given(st.data())
def test_every_codec_round_trips(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(VALUES)))
    entry = CODECS[kind]
    assert isinstance(entry, Codec)
    value = data.draw(VALUES[kind])
    assert entry.decode(entry.encode(value)) == value


@given(st.sampled_from(sorted(VALUES)), st.binary(max_size=80))
def test_any_bytes_decode_or_raise_value_error_naming_the_kind(kind: Kind, payload: bytes) -> None:
    entry = CODECS[kind]
    assert isinstance(entry, Codec)
    try:
        value = entry.decode(payload)
    except ValueError as exc:
        assert kind.name in str(exc)
        return
    assert entry.decode(entry.encode(value)) == value


@given(st.sampled_from(sorted(AUDIO_KINDS)), st.sampled_from(Encoding), samples)
def test_audio_round_trips_in_either_encoding(kind: Kind, encoding: Encoding, pcm: np.ndarray) -> None:
    entry = CODECS[kind]
    assert isinstance(entry, AudioCodec)
    payload = bytes(entry.encode(pcm, encoding))
    assert len(payload) == pcm.size * encoding.bytes_per_sample
    decoded = entry.decode(payload, encoding)
    if encoding is Encoding.PCM16:
        assert np.array_equal(decoded, pcm)
    else:  # G.711 is lossy: it must match what the G.711 code gives
        assert np.array_equal(decoded, codec.decode(codec.encode(pcm, encoding), encoding))


def test_pcm16_audio_is_sent_without_a_copy() -> None:
    pcm = np.arange(8, dtype=np.int16)
    view = encode_audio(pcm, Encoding.PCM16)
    pcm[0] = 7
    assert bytes(view)[:2] == (7).to_bytes(2, "little")


def test_bad_audio_names_the_kind() -> None:
    with pytest.raises(ValueError, match="AUDIO_IN payload: 3 bytes is not a whole number of pcm16"):
        decode_audio(Kind.AUDIO_IN, b"abc", Encoding.PCM16)
    assert decode_audio(Kind.AUDIO_IN, b"abc", Encoding.MULAW).size == 3
    with pytest.raises(ValueError, match="audio payload: samples must be int16"):
        encode_audio(np.zeros(4, dtype=np.float32), Encoding.PCM16)  # type: ignore[arg-type]


def test_text_rejects_invalid_utf8_naming_the_kind() -> None:
    with pytest.raises(ValueError, match="LLM_TOKEN payload: text is not UTF-8"):
        decode_text(Kind.LLM_TOKEN, b"ok \xff")
    with pytest.raises(ValueError, match="TEXT_INPUT payload: text is not UTF-8"):
        decode_text(Kind.TEXT_INPUT, memoryview(b"\xc3"))
    with pytest.raises(ValueError, match="text payload"):
        encode_text("\ud800")
    assert decode_text(Kind.TRANSCRIPT_FINAL, encode_text("héllo ✓")) == "héllo ✓"


def test_fixed_payloads_name_kind_and_field() -> None:
    with pytest.raises(ValueError, match="WORKER_RESTARTED payload is 3 bytes"):
        WorkerRestarted.unpack(b"abc")
    bad_stage = WorkerRestarted(StageId.VAD, 1, 1, RestartReason.EXITED, 0).pack()
    bad_stage = (99).to_bytes(2, "little") + bad_stage[2:]
    with pytest.raises(ValueError, match="stage 99 is not a StageId"):
        WorkerRestarted.unpack(bad_stage)
    with pytest.raises(ValueError, match="VAD_EVENT payload: event 9"):
        VadEvent.unpack((9).to_bytes(2, "little") + bytes(14))
    with pytest.raises(ValueError, match="ERROR payload: detail is not UTF-8"):
        TurnError.unpack(TurnError(TurnErrorCode.INTERNAL, StageId.LLM).pack() + b"\xff")
    with pytest.raises(ValueError, match="ERROR payload: code 9 is not a TurnErrorCode"):
        TurnError.unpack((9).to_bytes(2, "little") + (1).to_bytes(2, "little"))
    with pytest.raises(ValueError, match="DRAIN payload: deadline_ns out of range"):
        DrainEvent(2**64).pack()


def test_playback_is_one_byte() -> None:
    assert encode_playback(True) == b"\x01" and encode_playback(False) == b"\x00"
    assert decode_playback(b"\x01") is True and decode_playback(memoryview(b"\x00")) is False
    with pytest.raises(ValueError, match="PLAYBACK payload is 0 bytes, expected 1"):
        decode_playback(b"")
    with pytest.raises(ValueError, match="PLAYBACK payload: playing 2 is not 0 or 1"):
        decode_playback(b"\x02")


def test_turn_timing_is_the_json_the_gateway_reads() -> None:
    doc = json.loads(TurnTiming(1, 2, 3).pack())
    assert doc == {"transcript_ns": 1, "first_token_ns": 2, "first_audio_ns": 3}
    # LLM's partial timing (no first_audio_ns yet) and marks added later both decode.
    assert TurnTiming.unpack(b'{"transcript_ns": 5, "first_token_ns": 6}') == TurnTiming(5, 6, 0)
    assert TurnTiming.unpack(b'{"first_audio_ns": 7, "tts_queue_ns": 1}') == TurnTiming(0, 0, 7)
    with pytest.raises(ValueError, match="TURN_TIMING payload: first_token_ns 'x' is not an integer"):
        TurnTiming.unpack(b'{"first_token_ns": "x"}')
    with pytest.raises(ValueError, match="TURN_TIMING payload is not JSON"):
        TurnTiming.unpack(b"not json")
    with pytest.raises(ValueError, match="TURN_TIMING payload: must be a JSON object"):
        TurnTiming.unpack(b"[1]")


def test_session_open_names_the_field() -> None:
    params = SessionParams(AudioFormat(Encoding.MULAW, 8000), codec.PCM16_16K, "be brief")
    assert json.loads(params.pack()) == {
        "input": {"encoding": "mulaw", "sample_rate": 8000},
        "output": {"encoding": "pcm16", "sample_rate": 16000},
        "instructions": "be brief",
    }
    bad = b'{"input": {"encoding": "opus", "sample_rate": 8000}, "output": {}}'
    with pytest.raises(ValueError, match=r"SESSION_OPEN payload: input\.encoding: 'opus'"):
        SessionParams.unpack(bad)
    fallback, problem = SessionParams.unpack_or_default(bad)
    assert fallback.input == codec.PCM16_16K and problem is not None and "input.encoding" in problem
    with pytest.raises(ValueError, match="SESSION_OPEN payload: instructions must be a string"):
        SessionParams.unpack(
            b'{"input": {"encoding": "pcm16", "sample_rate": 16000}, '
            b'"output": {"encoding": "pcm16", "sample_rate": 16000}, "instructions": 3}'
        )


def test_output_format_names_the_field() -> None:
    fmt = AudioFormat(Encoding.PCM16, 24000)
    assert decode_output_format(encode_output_format(fmt)) == fmt
    with pytest.raises(ValueError, match=r"OUTPUT_FORMAT payload\.sample_rate: '8000' is not an integer"):
        decode_output_format(b'{"encoding": "pcm16", "sample_rate": "8000"}')
    with pytest.raises(ValueError, match="OUTPUT_FORMAT payload: JSON text is not UTF-8"):
        decode_output_format(b"\xff")
