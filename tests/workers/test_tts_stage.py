"""The TTS stage in process, on the scripted Piper voice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stage_test_support import REPLY, Harness, context, msg, open_params, scripted_bundle

from voicegate.core.config import ConfigError
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import VadEvent, VadEventType
from voicegate.workers.tts_stage import TtsStage

SID = 31


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scripted_bundle(tmp_path_factory.mktemp("tts-bundle"))


def stage(bundle: Path, output: tuple[str, int]) -> Harness:
    tts = TtsStage(context("tts", bundle))
    tts.load()
    h = Harness(tts)
    h.open(SID, 1, open_params(output=output))
    return h


def reply(h: Harness, turn: int, text: str = REPLY, *, last: bool = True) -> None:
    words = text.split(" ")
    for i, word in enumerate(words):
        final = last and i == len(words) - 1
        piece = word if i == len(words) - 1 else word + " "
        h.send(msg(Kind.LLM_TOKEN, SID, turn, piece.encode(), flags=Flag.LAST if final else 0,
                   origin_ns=99))


def test_answer_audio_in_the_output_format_with_one_timing(bundle: Path) -> None:
    h = stage(bundle, ("mulaw", 8000))
    timing = {"transcript_ns": 10, "first_token_ns": 20}
    h.send(msg(Kind.VAD_EVENT, SID, 1, VadEvent(VadEventType.END_OF_TURN, 5).pack()))
    h.send(msg(Kind.TURN_TIMING, SID, 1, json.dumps(timing).encode()))
    reply(h, 1)
    h.tick(20)
    audio = h.out.take(Kind.AUDIO_OUT)
    assert len(audio) > 10
    assert all(len(r.payload) == 160 for r in audio[:-1])  # 20 ms of mu-law at 8 kHz
    assert len(audio[-1].payload) <= 160
    assert [bool(r.flags & Flag.LAST) for r in audio] == [False] * (len(audio) - 1) + [True]
    assert [r.seq for r in audio] == list(range(audio[0].seq, audio[0].seq + len(audio)))
    assert {r.origin_ns for r in audio} == {99}
    (sent,) = h.out.take(Kind.TURN_TIMING)
    stamps = json.loads(sent.payload)
    assert stamps["transcript_ns"] == 10 and stamps["first_token_ns"] == 20
    assert stamps["first_audio_ns"] > 20
    kinds = [r.kind for r in h.out.take()]
    assert kinds.index(Kind.TURN_TIMING) == kinds.index(Kind.AUDIO_OUT) + 1
    # The answer text goes to the gateway too; VAD events stop here.
    assert "".join(r.payload.decode() for r in h.out.take(Kind.LLM_TOKEN)) == REPLY
    assert not h.out.take(Kind.VAD_EVENT)


def test_first_clause_is_spoken_before_the_reply_is_complete(bundle: Path) -> None:
    h = stage(bundle, ("pcm16", 16000))
    reply(h, 1, "We open at nine, and close at eight and", last=False)
    h.tick(5)
    assert h.out.take(Kind.AUDIO_OUT)
    assert not any(r.flags & Flag.LAST for r in h.out.take(Kind.AUDIO_OUT))


def test_output_format_switch_applies_to_the_next_frames(bundle: Path) -> None:
    h = stage(bundle, ("pcm16", 24000))
    switch = json.dumps({"encoding": "mulaw", "sample_rate": 8000}).encode()
    h.send(msg(Kind.OUTPUT_FORMAT, SID, 1, switch))
    reply(h, 1)
    h.tick(20)
    audio = h.out.take(Kind.AUDIO_OUT)
    assert all(len(r.payload) == 160 for r in audio[:-1])
    assert h.out.take(Kind.OUTPUT_FORMAT)  # forwarded to the gateway


def test_a_new_turn_drops_the_old_answer(bundle: Path) -> None:
    h = stage(bundle, ("pcm16", 16000))
    reply(h, 1, "We open at nine, and close at eight, every day of the week", last=False)
    h.send(msg(Kind.BARGE_IN, SID, 2))
    count = len(h.out.take(Kind.AUDIO_OUT))
    h.tick(20)
    assert len(h.out.take(Kind.AUDIO_OUT)) == count
    reply(h, 2, "Sure.")
    h.tick(20)
    later = h.out.take(Kind.AUDIO_OUT)[count:]
    assert later and {r.turn for r in later} == {2} and later[-1].flags & Flag.LAST


def test_bad_frame_size_names_the_key(bundle: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        TtsStage(context("tts", bundle, {"frame_ms": 25}))
    assert exc.value.key == "workers.tts.options.frame_ms"
