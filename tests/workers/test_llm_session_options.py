"""The LLM stage's session options in process, on the scripted LLM (it spells the known
reply): conversation items without an answer, RESPONSE_CREATE, instructions, truncation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from stage_test_support import REPLY, Harness, context, msg, open_params, scripted_bundle
from test_llm_stage import answer, run_until_done

from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import SessionOptions, StageId, Truncation, TurnError, TurnErrorCode
from voicegate.models.llm import Message as ChatMessage
from voicegate.workers.llm_stage import LlmSession, LlmStage

SID = 31


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> LlmStage:
    stage = LlmStage(context("llm", scripted_bundle(tmp_path_factory.mktemp("llm-options"))))
    stage.load()
    return stage


@pytest.fixture
def h(llm: LlmStage) -> Iterator[Harness]:
    harness = Harness(llm)
    harness.open(SID, 1, open_params(instructions="Answer briefly."))
    yield harness
    llm.close_session(SID, harness.states[SID], harness.out)


def state(h: Harness) -> LlmSession:
    session: LlmSession = h.states[SID]
    return session


def options(h: Harness, turn: int, **fields: Any) -> None:
    h.send(msg(Kind.SESSION_UPDATE, SID, turn, SessionOptions(**fields).to_payload()))


def test_without_auto_respond_turns_are_items_until_response_create(h: Harness) -> None:
    options(h, 1, auto_respond=False)
    h.send(msg(Kind.TRANSCRIPT_PARTIAL, SID, 1, b"When do you open?", flags=Flag.PROVISIONAL))
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 1, b"When do you open?"))
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 2, b"And on Sunday?", flags=Flag.ITEM_ONLY))
    h.tick(20)
    assert not h.out.take(Kind.LLM_TOKEN) and not h.out.take(Kind.TURN_TIMING)
    assert state(h).history == [
        ChatMessage("user", "When do you open?"), ChatMessage("user", "And on Sunday?")
    ]
    h.send(msg(Kind.RESPONSE_CREATE, SID, 3))
    run_until_done(h, 3)
    assert answer(h, 3) == REPLY
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 4, b"Thanks.", flags=Flag.ITEM_ONLY))  # commits turn 3
    assert state(h).history[2:] == [
        ChatMessage("assistant", REPLY), ChatMessage("user", "Thanks.")
    ]
    # The records themselves go on to TTS, in order.
    kinds = [r.kind for r in h.out.take()]
    assert kinds.count(Kind.RESPONSE_CREATE) == 1
    assert kinds.index(Kind.RESPONSE_CREATE) < kinds.index(Kind.TURN_TIMING)


def test_respond_none_answers_nothing_and_refuses_response_create(h: Harness) -> None:
    options(h, 1, respond="none")
    h.send(msg(Kind.TRANSCRIPT_PARTIAL, SID, 1, b"When do you open?", flags=Flag.PROVISIONAL))
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 1, b"When do you open?"))
    h.send(msg(Kind.RESPONSE_CREATE, SID, 2))
    h.tick(20)
    assert not h.out.take(Kind.LLM_TOKEN)
    assert state(h).history == []  # a transcription session keeps no conversation
    (error,) = h.out.take(Kind.ERROR)
    assert error.turn == 2
    event = TurnError.unpack(error.payload)
    assert (event.code, event.stage) == (TurnErrorCode.BAD_INPUT, StageId.LLM)


def test_instructions_replace_the_sessions_from_the_next_generation(h: Harness) -> None:
    assert state(h).instructions == "Answer briefly."
    options(h, 1, instructions="Be terse.")
    assert state(h).instructions == "Be terse."
    options(h, 1, instructions="")  # the bundle's system prompt
    assert state(h).instructions is None
    options(h, 1)  # None: the instructions the session opened with
    assert state(h).instructions == "Answer briefly."


def test_truncate_keeps_only_the_heard_text_of_a_committed_answer(h: Harness) -> None:
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 1, b"When do you open?"))
    run_until_done(h, 1)
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 2, b"Hm.", flags=Flag.ITEM_ONLY))  # turn 1 commits
    assert state(h).history[:2] == [
        ChatMessage("user", "When do you open?"), ChatMessage("assistant", REPLY)
    ]
    h.send(msg(Kind.TRUNCATE, SID, 2, Truncation(1, 16).to_payload()))
    assert state(h).history == [
        ChatMessage("user", "When do you open?"),
        ChatMessage("assistant", REPLY[:16]),
        ChatMessage("user", "Hm."),
    ]


def test_truncate_before_the_answer_is_committed_applies_at_commit(h: Harness) -> None:
    h.send(msg(Kind.TRANSCRIPT_FINAL, SID, 1, b"When do you open?"))
    h.tick(2)
    h.send(msg(Kind.TRUNCATE, SID, 1, Truncation(1, 9).to_payload()))
    run_until_done(h, 1)
    assert answer(h, 1) == REPLY  # what was sent stays sent
    assert state(h).history == [
        ChatMessage("user", "When do you open?"), ChatMessage("assistant", REPLY[:9])
    ]
