"""The Realtime session configuration: defaults, merging session.update, the pipeline's view."""

from __future__ import annotations

import json

import pytest

from voicegate.core.codec import Encoding
from voicegate.server.protocols.realtime_config import (
    OPENAI_VOICES,
    PCM_24K,
    PCMA_8K,
    PCMU_8K,
    Modality,
    PipelineOptions,
    SessionConfig,
    SessionType,
    Transcription,
    TurnDefaults,
    TurnDetection,
    VadType,
    VoiceCatalog,
    apply_patch,
    default_config,
    format_json,
    pipeline_options,
)
from voicegate.server.protocols.realtime_events import SessionUpdate, parse_client_event
from voicegate.server.protocols.realtime_fields import ErrorCode, RealtimeError

TURNS = TurnDefaults(threshold=0.5, prefix_padding_ms=200, silence_duration_ms=300)
CATALOG = VoiceCatalog(("joe", "amy"))


def update(config: SessionConfig, session: dict[str, object], **kw: bool) -> SessionConfig:
    event = parse_client_event(json.dumps({"type": "session.update", "session": session}))
    assert isinstance(event, SessionUpdate)
    return apply_patch(config, event.session, turns=TURNS, catalog=CATALOG, **kw)


def fresh() -> SessionConfig:
    return default_config(SessionType.REALTIME, "gpt-realtime", TURNS, CATALOG)


def test_defaults_are_the_node_turn_taking_and_24k_pcm() -> None:
    config = fresh()
    assert config.input_format == config.output_format == PCM_24K
    assert config.turn_detection == TurnDetection(VadType.SERVER, 0.5, 200, 300)
    assert config.voice == "joe" and config.modality is Modality.AUDIO
    assert config.transcription is None and config.max_output_tokens is None
    options = pipeline_options(config, TURNS, CATALOG)
    assert options == PipelineOptions(
        "audio", None, "joe", "", "server", 0.5, 200, 300, auto_respond=True, audio_marks=True
    )
    # the SESSION_UPDATE payload's fields (docs/pipeline.md, "Session options")
    assert list(options.to_json()) == [
        "respond", "max_output_tokens", "voice", "instructions", "turn_detection",
        "vad_threshold", "prefix_padding_ms", "silence_duration_ms", "auto_respond",
        "audio_marks",
    ]


def test_formats() -> None:
    assert (PCM_24K.encoding, PCM_24K.sample_rate) == (Encoding.PCM16, 24000)
    assert (PCMU_8K.encoding, PCMA_8K.encoding) == (Encoding.MULAW, Encoding.ALAW)
    assert format_json(PCMA_8K) == {"type": "audio/pcma"}
    config = update(fresh(), {"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcmu"}}, "output": {"format": {"type": "audio/pcma"}}}})
    assert (config.input_format, config.output_format) == (PCMU_8K, PCMA_8K)
    session = config.to_json("sess_1")
    audio = session["audio"]
    assert isinstance(audio, dict)
    assert audio["input"]["format"] == {"type": "audio/pcmu"}
    assert audio["output"]["format"] == {"type": "audio/pcma"}


def test_partial_updates_keep_everything_else() -> None:
    config = update(fresh(), {"type": "realtime", "instructions": "Be brief.",
                              "max_output_tokens": 120})
    config = update(config, {"type": "realtime", "audio": {"input": {"turn_detection": {
        "type": "server_vad", "silence_duration_ms": 700}}}})
    assert config.instructions == "Be brief." and config.max_output_tokens == 120
    assert config.turn_detection == TurnDetection(VadType.SERVER, 0.5, 200, 700)
    # the fields of turn_detection left out keep their value while the type stays
    config = update(config, {"type": "realtime", "audio": {"input": {"turn_detection": {
        "type": "server_vad", "threshold": 0.8, "create_response": False}}}})
    assert config.turn_detection == TurnDetection(
        VadType.SERVER, 0.8, 200, 700, create_response=False
    )
    # "" clears the instructions, "inf" the token limit
    config = update(config, {"type": "realtime", "instructions": "", "max_output_tokens": "inf"})
    assert config.instructions is None and config.max_output_tokens is None


def test_manual_turns_and_semantic_vad() -> None:
    manual = update(fresh(), {"type": "realtime", "audio": {"input": {"turn_detection": None}}})
    assert manual.turn_detection is None
    options = pipeline_options(manual, TURNS, CATALOG)
    assert (options.turn_detection, options.auto_respond) == ("manual", False)
    assert options.vad_threshold is None and options.silence_duration_ms is None
    semantic = update(manual, {"type": "realtime", "audio": {"input": {"turn_detection": {
        "type": "semantic_vad", "eagerness": "low"}}}})
    options = pipeline_options(semantic, TURNS, CATALOG)
    # the node's own end of turn, whatever the eagerness
    assert (options.turn_detection, options.vad_threshold, options.silence_duration_ms) == (
        "server", 0.5, 300,
    )
    assert semantic.turn_detection is not None
    assert semantic.turn_detection.to_json() == {
        "type": "semantic_vad", "create_response": True, "interrupt_response": True,
        "eagerness": "low",
    }


def test_text_only_and_transcription_sessions() -> None:
    text = update(fresh(), {"type": "realtime", "output_modalities": ["text"]})
    options = pipeline_options(text, TURNS, CATALOG)
    assert (options.respond, options.audio_marks) == ("text", False)
    # the pipeline's VAD threshold is strictly between 0 and 1
    edge = update(fresh(), {"type": "realtime", "audio": {"input": {"turn_detection": {
        "type": "server_vad", "threshold": 1.0}}}})
    assert pipeline_options(edge, TURNS, CATALOG).vad_threshold == 0.99
    transcription = update(fresh(), {"type": "transcription", "audio": {"input": {
        "transcription": {"model": "gpt-4o-transcribe"}, "turn_detection": None}}})
    assert transcription.type is SessionType.TRANSCRIPTION
    assert transcription.transcription == Transcription("gpt-4o-transcribe")
    options = pipeline_options(transcription, TURNS, CATALOG)
    assert (options.respond, options.turn_detection, options.auto_respond) == (
        "none", "manual", False,
    )
    # server VAD in a transcription session commits turns but never answers
    vad = update(transcription, {"type": "transcription", "audio": {"input": {
        "turn_detection": {"type": "server_vad"}}}})
    options = pipeline_options(vad, TURNS, CATALOG)
    assert (options.respond, options.turn_detection, options.auto_respond) == (
        "none", "server", False,
    )
    assert "output" not in json.dumps(vad.to_json("s"))


def test_voices_map_onto_the_bundle() -> None:
    assert CATALOG.resolve("joe") == "joe" and CATALOG.resolve("amy") == "amy"
    mapped = {CATALOG.resolve(v) for v in OPENAI_VOICES}
    assert mapped == {"joe", "amy"}  # OpenAI's names spread over the bundle's voices
    config = update(fresh(), {"type": "realtime", "audio": {"output": {"voice": "marin"}}})
    assert config.voice == "marin"  # reported as the client named it
    assert pipeline_options(config, TURNS, CATALOG).voice == CATALOG.resolve("marin")
    with pytest.raises(RealtimeError) as info:
        update(fresh(), {"type": "realtime", "audio": {"output": {"voice": "nobody"}}})
    assert (info.value.code, info.value.param) == (
        ErrorCode.INVALID_VALUE, "session.audio.output.voice",
    )
    assert "joe" in info.value.message
    with pytest.raises(RealtimeError) as info:
        update(fresh(), {"type": "realtime", "audio": {"output": {"voice": "amy"}}},
               voice_locked=True)
    assert info.value.code is ErrorCode.VOICE_LOCKED
    # the same voice again is no change
    assert update(fresh(), {"type": "realtime", "audio": {"output": {"voice": "joe"}}},
                  voice_locked=True).voice == "joe"
    with pytest.raises(ValueError, match="one voice"):
        VoiceCatalog(())


def test_effective_config_round_trips_as_an_update() -> None:
    config = update(fresh(), {"type": "realtime", "instructions": "Hi.", "output_modalities":
                              ["text"], "audio": {"input": {"transcription": {"model": "m"}}}})
    session = config.to_json("sess_1")
    # What the server reports is a valid update that changes nothing (less the ids).
    echo = {k: v for k, v in session.items() if k not in ("id", "object")}
    assert update(config, echo) == config
