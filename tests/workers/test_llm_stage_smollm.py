"""The LLM stage on the default LLM (SmolLM2-135M-Instruct imported from GGUF, int4):
greedy answers to fixed caller questions, held as regression fixtures
(tests/data/llm_stage_answers.json; ``VOICEGATE_UPDATE_LLM_FIXTURES=1`` rewrites it after
a deliberate change), and a follow-up turn that reuses the conversation's cache."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from stage_test_support import Harness, context, msg, open_params

from voicegate.core.kinds import Flag, Kind
from voicegate.workers.stages.llm import LlmStage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from smollm import imported_bundle

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "llm_stage_answers.json"
# Caller turns from ../shared/speech/manifest.json.
QUESTIONS = (
    "Can you tell me where my order is? I placed it last Monday.",
    "I forgot my password and I cannot log in to my account.",
    "I would like a refund for the headphones I bought.",
)
MAX_TOKENS = 32


def answers(h: Harness, turn: int) -> dict[int, str]:
    texts: dict[int, str] = {}
    for r in h.out.take(Kind.LLM_TOKEN):
        if r.turn == turn:
            texts[r.session] = texts.get(r.session, "") + r.payload.decode()
    return texts


def finished(h: Harness, turn: int) -> set[int]:
    return {r.session for r in h.out.take(Kind.LLM_TOKEN)
            if r.turn == turn and r.flags & Flag.LAST}


def test_greedy_answers_to_caller_questions() -> None:
    llm = LlmStage(context("llm", imported_bundle("int4"), {"max_tokens": MAX_TOKENS,
                                                            "temperature": 0.0}))
    llm.load()
    h = Harness(llm)
    sessions = range(1, len(QUESTIONS) + 1)
    for sid in sessions:
        h.open(sid, 1, open_params())
    # All three callers at once: one batch of decode steps.
    for sid, question in zip(sessions, QUESTIONS, strict=True):
        h.send(msg(Kind.TRANSCRIPT_FINAL, sid, 1, question.encode()))
    for _ in range(400):
        if finished(h, 1) == set(sessions):
            break
        h.tick()
    got = {QUESTIONS[sid - 1]: text for sid, text in sorted(answers(h, 1).items())}
    assert llm.engine is not None
    assert llm.engine.counters.decode_tokens > 1.5 * llm.engine.counters.decode_calls
    # The second and third callers started from the shared system prompt's cache.
    system = len(llm.engine.system_tokens([]))
    assert llm.engine.counters.reused_tokens >= 2 * system
    # A follow-up turn prefills only its own tokens.
    before = llm.engine.counters.prefill_tokens
    h.send(msg(Kind.TRANSCRIPT_FINAL, 1, 2, b"Thanks. And when does the store open tomorrow?"))
    for _ in range(400):
        if 1 in finished(h, 2):
            break
        h.tick()
    follow_up = answers(h, 2)[1]
    assert llm.engine.counters.prefill_tokens - before < 40
    got["(follow-up) Thanks. And when does the store open tomorrow?"] = follow_up
    if os.environ.get("VOICEGATE_UPDATE_LLM_FIXTURES") == "1" or not FIXTURE.is_file():
        FIXTURE.write_text(json.dumps(got, indent=1) + "\n", encoding="utf-8")
    expected = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert got == expected
    assert all(len(text.split()) >= 3 for text in got.values())
