"""The LLM stage in process, on the scripted LLM (it spells the known reply)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stage_test_support import REPLY, Harness, context, msg, open_params, scripted_bundle

from voicegate.core.config import ConfigError
from voicegate.core.kinds import Flag, Kind
from voicegate.workers.llm_stage import LlmSession, LlmStage

SID = 21


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scripted_bundle(tmp_path_factory.mktemp("llm-bundle"))


def stage(bundle: Path, **options: object) -> tuple[LlmStage, Harness]:
    llm = LlmStage(context("llm", bundle, options))
    llm.load()
    h = Harness(llm)
    h.open(SID, 1, open_params(instructions="Answer briefly."))
    return llm, h


def run_until_done(h: Harness, turn: int, limit: int = 500) -> None:
    for _ in range(limit):
        if any(r.flags & Flag.LAST for r in h.out.take(Kind.LLM_TOKEN) if r.turn == turn):
            return
        h.tick()
    raise AssertionError(f"turn {turn}: no last token after {limit} ticks")


def answer(h: Harness, turn: int) -> str:
    return "".join(r.payload.decode() for r in h.out.take(Kind.LLM_TOKEN) if r.turn == turn)


def test_speculation_on_the_provisional_is_kept_when_the_final_matches(bundle: Path) -> None:
    llm, h = stage(bundle)
    assert llm.engine is not None
    h.send(msg(Kind.TRANSCRIPT_PARTIAL, SID, 1, b"When do you open?", flags=Flag.PROVISIONAL,
               origin_ns=77, sent_ns=5))
    h.tick(3)
    prefills = llm.engine.counters.prefill_calls
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 1, b"When do you open?", origin_ns=77))
    run_until_done(h, 1)
    assert llm.engine.counters.prefill_calls == prefills  # not started again
    assert answer(h, 1) == REPLY
    tokens = h.out.take(Kind.LLM_TOKEN)
    assert all(r.origin_ns == 77 for r in tokens)
    assert [r.seq for r in tokens] == sorted(r.seq for r in tokens)
    # One timing record, before the first token; the transcripts are forwarded.
    kinds = [r.kind for r in h.out.take()]
    assert kinds.count(Kind.TURN_TIMING) == 1
    assert kinds.index(Kind.TURN_TIMING) < kinds.index(Kind.LLM_TOKEN)
    timing = json.loads(h.out.take(Kind.TURN_TIMING)[0].payload)
    assert timing["transcript_ns"] == 5 and timing["first_token_ns"] > 5
    state: LlmSession = h.states[SID]
    assert [(m.role, m.content) for m in state.history] == [
        ("user", "When do you open?"), ("assistant", REPLY)
    ]


def test_a_voided_speculation_stops_and_stays_out_of_the_history(bundle: Path) -> None:
    llm, h = stage(bundle)
    assert llm.engine is not None
    h.send(msg(Kind.TRANSCRIPT_PARTIAL, SID, 1, b"When do", flags=Flag.PROVISIONAL))
    h.tick(3)
    spoken = len(h.out.take(Kind.LLM_TOKEN))
    assert spoken > 0
    h.send(msg(Kind.CANCEL, SID, 2, flags=Flag.CONTINUE))
    assert not llm.engine.is_running(SID)
    h.tick(5)
    assert len(h.out.take(Kind.LLM_TOKEN)) == spoken
    assert h.states[SID].history == []


def test_barge_in_keeps_the_confirmed_turn_with_the_answer_so_far(bundle: Path) -> None:
    _, h = stage(bundle)
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 1, b"Tell me the hours."))
    h.tick(4)
    so_far = answer(h, 1)
    h.send(msg(Kind.BARGE_IN, SID, 2))
    history = h.states[SID].history
    assert [(m.role, m.content) for m in history] == [
        ("user", "Tell me the hours."), ("assistant", so_far)
    ]


def test_an_empty_transcript_closes_the_turn_with_an_empty_answer(bundle: Path) -> None:
    _, h = stage(bundle)
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 1, b""))
    (token,) = h.out.take(Kind.LLM_TOKEN)
    assert token.payload == b"" and token.flags & Flag.LAST


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 5}, "top_k"),
    ],
)
def test_bad_sampling_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        LlmStage(context("llm", None, options))
    assert exc.value.key == f"workers.llm.options.{key}"


def test_sampling_options_override_the_bundle(bundle: Path) -> None:
    llm, h = stage(bundle, max_tokens=3)
    assert llm.sampling is not None and llm.sampling.max_tokens == 3
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 1, b"Hours?"))
    run_until_done(h, 1)
    assert len(h.out.take(Kind.LLM_TOKEN)) <= 3
    assert REPLY.startswith(answer(h, 1))


def test_a_text_longer_than_the_context_is_answered(bundle: Path) -> None:
    # 4000 characters, every digit its own token: far over the bundle's 2048.
    text = " ".join(f"order {i:07d}" for i in range(300))[:4000]
    _, h = stage(bundle)
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 1, text.encode()))
    run_until_done(h, 1)
    assert answer(h, 1) == REPLY
    # The next turn still fits: the oldest turn gives way.
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 2, b"And the second?"))
    run_until_done(h, 2)
    assert answer(h, 2) == REPLY
