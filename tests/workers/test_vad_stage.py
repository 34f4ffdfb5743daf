"""The VAD stage in process, on real speech and the real Silero model."""

from __future__ import annotations

import dataclasses
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from stage_test_support import SPEECH, Harness, Out, context, msg, open_params

from voicegate.core import codec
from voicegate.core.audio import float32_to_pcm16, resample
from voicegate.core.config import END_OF_TURN_SILENCE_MS, ConfigError, end_of_turn_silence_ms
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import TurnError, TurnErrorCode, VadEvent, VadEventType
from voicegate.core.wav import read_wav
from voicegate.models.graphs.synth import synth_bundle
from voicegate.workers.stages.vad import VadStage


@pytest.fixture(scope="module")
def vad_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vad-bundle")
    synth_bundle(root, stages=("vad",))
    return root


@pytest.fixture(scope="module")
def store_hours() -> np.ndarray:
    item = next(
        u for u in json.loads((SPEECH / "manifest.json").read_text())["utterances"]
        if u["file"] == "00_store_hours.wav"
    )
    return read_wav(SPEECH / item["file"]).samples


def stage(bundle: Path, **options: object) -> VadStage:
    vad = VadStage(context("vad", bundle, options))
    vad.load()
    return vad


def play(h: Harness, sid: int, pcm: np.ndarray, frame: int, turn: int = 1) -> None:
    for i, start in enumerate(range(0, len(pcm), frame)):
        h.send(msg(Kind.AUDIO_IN, sid, turn, codec.pcm16_to_bytes(pcm[start : start + frame]),
                   seq=i, origin_ns=1000 + i))


def events(records: list[Out]) -> list[tuple[VadEventType, int, int]]:
    return [
        (VadEvent.unpack(r.payload).event, VadEvent.unpack(r.payload).at_sample, r.turn)
        for r in records if r.kind == Kind.VAD_EVENT
    ]


def test_turn_decisions_and_forwarded_audio_are_exact(
    vad_bundle: Path, store_hours: np.ndarray
) -> None:
    h = Harness(stage(vad_bundle))
    h.open(7, 1, open_params())
    play(h, 7, store_hours, 320)
    got = events(h.out.take(event_path=True))
    assert [(e, t) for e, _, t in got] == [
        (VadEventType.SPEECH_START, 1), (VadEventType.SPEECH_PAUSE, 1),
        (VadEventType.END_OF_TURN, 1),
    ]
    # The same decisions go downstream, in order with the audio of the utterance:
    # exactly the caller's samples from the start's at_sample on.
    down = h.out.take()
    assert events(down) == got
    start = got[0][1]
    audio = np.concatenate([
        np.frombuffer(r.payload, np.int16) for r in down if r.kind == Kind.AUDIO_IN
    ])
    np.testing.assert_array_equal(audio, store_hours[start : start + len(audio)])
    pause_at = got[1][1]
    assert start + len(audio) >= pause_at  # the pause's cut is all there before the event
    # Gathered in records of at least forward_ms (100 ms) while the caller talks; only
    # the one that a decision sends first may be shorter.
    pieces = [r for r in down if r.kind in (Kind.AUDIO_IN, Kind.VAD_EVENT)]
    for record, after in pairwise(pieces):
        if record.kind == Kind.AUDIO_IN and after.kind == Kind.AUDIO_IN:
            assert len(record.payload) >= 2 * 1600
    # The manifest: speech from 0.5 s to 2.67 s; the start comes with pre-roll.
    assert 0.2 * 16000 < start < 0.5 * 16000 and 2.6 * 16000 < pause_at < 2.9 * 16000
    # The speech-end reference point: the frame in which the speech ended (the pause's
    # at_sample less the 30 ms pad); frame i arrived at 1000 + i.
    pause, end = h.out.take(Kind.VAD_EVENT, event_path=True)[1:]
    assert pause.origin_ns == end.origin_ns == 1000 + (pause_at - 480) // 320


def test_decisions_do_not_depend_on_frame_size(vad_bundle: Path, store_hours: np.ndarray) -> None:
    got = []
    for frame in (160, 320, 1600):
        h = Harness(stage(vad_bundle))
        h.open(1, 1, open_params())
        play(h, 1, store_hours, frame)
        got.append(events(h.out.take(event_path=True)))
    assert got[0] == got[1] == got[2]


@pytest.mark.parametrize("encoding", [codec.Encoding.MULAW, codec.Encoding.ALAW])
def test_mulaw_at_8khz_is_heard_too(
    vad_bundle: Path, store_hours: np.ndarray, encoding: codec.Encoding
) -> None:
    h = Harness(stage(vad_bundle))
    h.open(2, 1, open_params(input=(encoding.value, 8000)))
    narrow = float32_to_pcm16(resample(store_hours.astype(np.float32) / 32768, 16000, 8000))
    coded = codec.encode(narrow, encoding)
    for i in range(0, len(coded), 160):
        h.send(msg(Kind.AUDIO_IN, 2, 1, coded[i : i + 160]))
    kinds = [e for e, _, _ in events(h.out.take(event_path=True))]
    assert kinds[0] is VadEventType.SPEECH_START and kinds[-1] is VadEventType.END_OF_TURN


def test_turns_follow_the_gateway_and_typed_turns_take_the_next(
    vad_bundle: Path, store_hours: np.ndarray
) -> None:
    h = Harness(stage(vad_bundle))
    h.open(3, 5, open_params())
    play(h, 3, store_hours, 320, turn=5)
    assert {r.turn for r in h.out.take(Kind.VAD_EVENT, event_path=True)} == {5}
    h.send(msg(Kind.TEXT_INPUT, 3, 5, b"hello"))
    (typed,) = h.out.take(Kind.TEXT_INPUT)
    assert (typed.turn, typed.payload) == (6, b"hello")
    h.out.clear()
    play(h, 3, store_hours, 320, turn=9)  # a gateway that has seen turn 9
    assert events(h.out.take(event_path=True))[0][::2] == (VadEventType.SPEECH_START, 9)


def test_barge_in_needs_playback_and_goes_both_ways(
    vad_bundle: Path, store_hours: np.ndarray
) -> None:
    h = Harness(stage(vad_bundle))
    h.open(4, 1, open_params())
    h.send(msg(Kind.PLAYBACK, 4, 1, b"\x01"))
    play(h, 4, store_hours, 320)
    fast = h.out.take(event_path=True)
    assert fast[0].kind == Kind.BARGE_IN and fast[0].turn == 1
    assert events(fast)[0][0] is VadEventType.SPEECH_START
    assert [r.kind for r in h.out.take()][:3] == [Kind.PLAYBACK, Kind.BARGE_IN, Kind.VAD_EVENT]
    assert not any(r.flags & Flag.CONTINUE for r in fast)


def test_bad_input_is_reported_to_the_gateway_and_the_stage_goes_on(
    vad_bundle: Path, store_hours: np.ndarray
) -> None:
    h = Harness(stage(vad_bundle))
    h.open(5, 1, b'{"input": {"encoding": "opus", "sample_rate": 16000}}')
    h.open(6, 1, open_params())
    h.send(msg(Kind.AUDIO_IN, 6, 1, b"\x00\x01\x02"))  # half a sample
    h.send(msg(Kind.AUDIO_IN, 5, 1, b"\x00\x00"))
    reported = h.out.take(Kind.ERROR, event_path=True)
    errors = {r.session: TurnError.unpack(r.payload) for r in reported}
    assert errors[5].code is TurnErrorCode.BAD_INPUT and "input.encoding" in errors[5].detail
    assert errors[6].code is TurnErrorCode.BAD_INPUT and "frame" in errors[6].detail
    play(h, 6, store_hours, 320)
    assert events(h.out.take(event_path=True))[0][0] is VadEventType.SPEECH_START


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"end_of_turn_silence_ms": "long"}, "workers.vad.options.end_of_turn_silence_ms"),
        ({"pause_ms": 500}, "workers.vad.options.pause_ms"),
        ({"barge_in_min_speech_ms": -1}, "workers.vad.options.barge_in_min_speech_ms"),
        ({"silence": 3}, "workers.vad.options.silence"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        VadStage(context("vad", None, options))
    assert exc.value.key == key


@pytest.mark.parametrize("options", [{}, {"end_of_turn_silence_ms": 450}])
def test_the_gateway_and_the_stage_read_one_end_of_turn_silence(options: dict[str, object]) -> None:
    expected = options.get("end_of_turn_silence_ms", END_OF_TURN_SILENCE_MS)
    assert VadStage(context("vad", None, options)).end_of_turn_ms == expected
    assert end_of_turn_silence_ms(options) == expected


def test_a_missing_bundle_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"node\.bundle"):
        VadStage(context("vad", None)).load()


def test_commit_ends_the_turn_at_once(vad_bundle: Path, store_hours: np.ndarray) -> None:
    h = Harness(stage(vad_bundle))
    h.open(8, 1, open_params())
    play(h, 8, store_hours[: 16000 + 8000], 320)  # cut off mid-sentence
    h.send(msg(Kind.COMMIT, 8, 1))
    got = events(h.out.take(event_path=True))
    assert [e for e, _, _ in got] == [
        VadEventType.SPEECH_START, VadEventType.SPEECH_PAUSE, VadEventType.END_OF_TURN
    ]
    assert got[1][1] == got[2][1] == 24000
    assert h.out.take()[-1].kind == Kind.COMMIT


def test_records_in_one_batch_act_in_ring_order(vad_bundle: Path, store_hours: np.ndarray) -> None:
    h = Harness(stage(vad_bundle))
    h.open(9, 1, open_params())
    speech = store_hours[: 16000 + 16000]  # the first second of speech
    frames = [
        msg(Kind.AUDIO_IN, 9, 1, codec.pcm16_to_bytes(speech[i : i + 320]))
        for i in range(0, len(speech), 320)
    ]
    # The speech started before the answer began to play: a turn, not a barge-in.
    h.send_batch([*frames, msg(Kind.PLAYBACK, 9, 1, b"\x01")])
    fast = h.out.take(event_path=True)
    assert [r.kind for r in fast] == [Kind.VAD_EVENT]
    assert [r.kind for r in h.out.take()][-1] == Kind.PLAYBACK


def test_batch_sizes_are_the_rows_of_each_model_call(vad_bundle: Path) -> None:
    sizes: list[int] = []
    vad = VadStage(dataclasses.replace(context("vad", vad_bundle), batch_sink=sizes.append))
    vad.load()
    h = Harness(vad)
    h.open(1, 1, open_params())
    h.open(2, 1, open_params())
    quiet = np.zeros(512, dtype=np.float32)
    chunk = codec.pcm16_to_bytes(float32_to_pcm16(quiet))
    # Session 1 has three chunks queued, session 2 one: one call over both, then one
    # call for each chunk of session 1's backlog.
    h.send_batch([msg(Kind.AUDIO_IN, 1, 1, chunk * 3), msg(Kind.AUDIO_IN, 2, 1, chunk)])
    assert sizes == [2, 1, 1]
    h.send_batch([msg(Kind.AUDIO_IN, 2, 1, chunk)])
    assert sizes == [2, 1, 1, 1]
