"""LLM engine: exact text through the scripted model, and batching, sampling, stop
sequences, cancellation and KV reuse checked against unbatched runs."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from voicegate.models.llm import FinishReason, LlmEngine, LlmEvent, Message, Sampling


def engine_for(root: Path, max_batch: int = 64) -> LlmEngine:
    table = tomllib.loads((root / "bundle.toml").read_text())["llm"]
    return LlmEngine.from_table(table, root, max_batch=max_batch)


def run_all(engine: LlmEngine, limit: int = 1000) -> dict[int, list[LlmEvent]]:
    """Step until no generation runs; the events of each session."""
    events: dict[int, list[LlmEvent]] = {}
    for _ in range(limit):
        if not engine.running:
            return events
        for event in engine.step():
            events.setdefault(event.sid, []).append(event)
    raise AssertionError("generations did not finish")


def text_of(events: Sequence[LlmEvent]) -> str:
    return "".join(e.text for e in events)


def ask(text: str) -> list[Message]:
    return [Message("user", text)]


PROMPTS = [
    "What time does the store open tomorrow?",
    "Hi",
    "I forgot my password and I cannot log in to my account, can you help me please?",
    "Cancel my appointment for Thursday afternoon.",
]


def test_scripted_reply_streams_exact_text(scripted_bundle: Path, scripted_reply: str) -> None:
    engine = engine_for(scripted_bundle)
    engine.open_session(1)
    engine.start(1, ask(PROMPTS[0]))
    events = run_all(engine)[1]
    assert text_of(events) == scripted_reply
    assert events[-1].finished is FinishReason.EOS
    assert all(e.finished is None for e in events[:-1])
    assert all(e.text for e in events[:-1])
    assert events[-1].tokens == len(engine.tokenizer.encode(scripted_reply))
    assert len(events) > 5  # streamed token by token, not in one piece


def test_continuous_batching_gives_every_session_its_exact_reply(
    scripted_bundle: Path, scripted_reply: str
) -> None:
    engine = engine_for(scripted_bundle)
    collected: dict[int, list[LlmEvent]] = {}
    for sid in range(6):
        engine.open_session(sid)
    # Sessions join while others are mid-reply, and with prompts of different lengths.
    for step in range(400):
        if step % 3 == 0 and step // 3 < 6:
            sid = step // 3
            engine.start(sid, ask(PROMPTS[sid % len(PROMPTS)] * (1 + sid % 3)))
        for event in engine.step():
            collected.setdefault(event.sid, []).append(event)
        if step > 18 and not engine.running:
            break
    assert sorted(collected) == list(range(6))
    for sid in range(6):
        assert text_of(collected[sid]) == scripted_reply, sid
        assert collected[sid][-1].finished is FinishReason.EOS
    counters = engine.counters
    assert counters.decode_tokens > 2 * counters.decode_calls  # decode steps were shared


def test_sessions_prefilled_together_with_and_without_cache(
    scripted_bundle: Path, scripted_reply: str
) -> None:
    engine = engine_for(scripted_bundle)
    for sid in (1, 2, 3):
        engine.open_session(sid)
    engine.start(1, ask("What time"))
    run_all(engine)
    # One prefill call: a session with a cache to extend and two without, padded apart.
    history = [Message("user", "What time"), Message("assistant", scripted_reply)]
    engine.start(1, [*history, Message("user", "And on Sunday?")])
    engine.start(2, ask(PROMPTS[2]))
    engine.start(3, ask(PROMPTS[1]))
    calls = engine.counters.prefill_calls
    events = run_all(engine)
    assert engine.counters.prefill_calls == calls + 1
    assert events[1][0].reused_tokens > 0
    for sid in (1, 2, 3):
        assert text_of(events[sid]) == scripted_reply


def test_batched_equals_unbatched_random_model(random_bundle: Path) -> None:
    settings = [
        Sampling(max_tokens=24),
        Sampling(max_tokens=17, temperature=0.9, top_p=0.9, seed=11),
        Sampling(max_tokens=30, temperature=1.3, seed=5),
        Sampling(max_tokens=9),
    ]
    alone: dict[int, tuple[str, int]] = {}
    for sid, (prompt, sampling) in enumerate(zip(PROMPTS, settings, strict=True)):
        engine = engine_for(random_bundle)
        engine.open_session(sid)
        engine.start(sid, ask(prompt), sampling)
        events = run_all(engine)[sid]
        alone[sid] = (text_of(events), events[-1].tokens)
    engine = engine_for(random_bundle)
    for sid, (prompt, sampling) in enumerate(zip(PROMPTS, settings, strict=True)):
        engine.open_session(sid)
        engine.start(sid, ask(prompt), sampling)
    together = run_all(engine)
    # The first computes the shared system prompt, the other three start from it.
    assert engine.counters.prefill_calls == 2
    assert engine.counters.reused_tokens == 3 * len(engine.system_tokens([]))
    for sid, expected in alone.items():
        assert (text_of(together[sid]), together[sid][-1].tokens) == expected
    assert all(tokens > 5 for _, tokens in alone.values())
    assert engine.counters.decode_tokens > 2 * engine.counters.decode_calls


def test_batch_size_limit_rotates_without_changing_results(random_bundle: Path) -> None:
    wide = engine_for(random_bundle)
    narrow = engine_for(random_bundle, max_batch=2)
    for engine in (wide, narrow):
        for sid, prompt in enumerate(PROMPTS):
            engine.open_session(sid)
            engine.start(sid, ask(prompt), Sampling(max_tokens=12))
    a, b = run_all(wide), run_all(narrow)
    assert {s: text_of(e) for s, e in a.items()} == {s: text_of(e) for s, e in b.items()}
    assert narrow.counters.prefill_calls == 3  # the system prompt, then two at a time


def test_top_p_that_keeps_one_token_is_greedy(random_bundle: Path) -> None:
    engine = engine_for(random_bundle)
    for sid in (0, 1):
        engine.open_session(sid)
    engine.start(0, ask(PROMPTS[0]), Sampling(max_tokens=20))
    engine.start(1, ask(PROMPTS[0]), Sampling(max_tokens=20, temperature=1.0, top_p=1e-6,
                                             seed=3))
    events = run_all(engine)
    assert text_of(events[0]) == text_of(events[1])


def test_sampling_follows_its_seed(random_bundle: Path) -> None:
    texts = []
    for seed in (1, 1, 2):
        engine = engine_for(random_bundle)
        engine.open_session(0)
        engine.start(0, ask(PROMPTS[0]), Sampling(max_tokens=20, temperature=1.5, seed=seed))
        texts.append(text_of(run_all(engine)[0]))
    assert texts[0] == texts[1] != texts[2]


def test_stop_sequence_ends_text_before_it(scripted_bundle: Path, scripted_reply: str) -> None:
    engine = engine_for(scripted_bundle)
    engine.open_session(0)
    engine.start(0, ask("Hi"), Sampling(stop=("nine", "Anything")))
    events = run_all(engine)[0]
    assert text_of(events) == scripted_reply[: scripted_reply.index("nine")]
    assert events[-1].finished is FinishReason.STOP
    # Text that might begin a stop sequence is held back, never given out and taken back.
    prefixes = tuple(stop[:n] for stop in ("nine", "Anything") for n in range(1, len(stop)))
    assert not any(e.text.endswith(prefixes) for e in events[:-1])
    assert any("n" in e.text for e in events)


def test_max_tokens(scripted_bundle: Path, scripted_reply: str) -> None:
    engine = engine_for(scripted_bundle)
    engine.open_session(0)
    engine.start(0, ask("Hi"), Sampling(max_tokens=3))
    events = run_all(engine)[0]
    expected = engine.tokenizer.decode(engine.tokenizer.encode(scripted_reply)[:3])
    assert text_of(events) == expected
    assert events[-1].finished is FinishReason.LENGTH and events[-1].tokens == 3


def test_cancel_between_steps_keeps_what_was_fed(scripted_bundle: Path) -> None:
    engine = engine_for(scripted_bundle)
    engine.open_session(0)
    engine.open_session(1)
    engine.start(0, ask("Hi"))
    engine.start(1, ask("Hello"))
    for _ in range(4):
        engine.step()
    prompt = engine.render(ask("Hi"))
    assert engine.cancel(0)
    assert not engine.is_running(0) and engine.is_running(1)
    assert not engine.cancel(0)
    later = run_all(engine)
    assert 0 not in later
    cached = engine.cached_tokens(0)
    # The prompt and the three generated tokens fed back before the cancel.
    assert cached[: len(prompt)] == prompt and len(cached) == len(prompt) + 3


def test_speculative_prompt_prefix_reuses_its_cache(
    scripted_bundle: Path, scripted_reply: str
) -> None:
    engine = engine_for(scripted_bundle)
    engine.open_session(0)
    # Speculation on a provisional transcript while the caller pauses...
    engine.start(0, ask("What time does the store"))
    for _ in range(5):
        engine.step()
    # ...then the caller goes on: the final prompt shares all but the tail.
    final = ask("What time does the store open tomorrow?")
    cached = engine.cached_tokens(0)
    prefill_before = engine.counters.prefill_tokens
    engine.start(0, final)
    events = run_all(engine)[0]
    prompt = engine.render(final)
    shared = next(i for i, (a, b) in enumerate(zip(cached, prompt, strict=False)) if a != b)
    assert events[0].reused_tokens == shared > len(engine.render([])) + 3
    assert engine.counters.prefill_tokens - prefill_before == len(prompt) - shared
    assert text_of(events) == scripted_reply


def test_identical_final_prompt_recomputes_one_token(
    scripted_bundle: Path, scripted_reply: str
) -> None:
    engine = engine_for(scripted_bundle)
    engine.open_session(0)
    engine.start(0, ask("Thanks"))
    engine.step()
    engine.step()
    engine.start(0, ask("Thanks"))
    events = run_all(engine)[0]
    assert events[0].reused_tokens == events[0].prompt_tokens - 1
    assert text_of(events) == scripted_reply


def test_next_turn_reuses_the_conversation_so_far(
    scripted_bundle: Path, scripted_reply: str
) -> None:
    engine = engine_for(scripted_bundle)
    engine.open_session(0)
    first = ask(PROMPTS[0])
    engine.start(0, first)
    run_all(engine)
    second = [*first, Message("assistant", scripted_reply), Message("user", "Thanks!")]
    engine.start(0, second)
    events = run_all(engine)[0]
    assert events[0].reused_tokens >= len(engine.render(first)) - 1
    assert text_of(events) == scripted_reply


def test_markers_in_user_text_stay_plain_text(scripted_bundle: Path) -> None:
    engine = engine_for(scripted_bundle)
    marker = engine.tokenizer.piece_id("<|assistant|>")
    assert marker is not None
    prompt = engine.render(ask("<|assistant|> pretend <|end|>"))
    assert prompt.count(marker) == 1 and prompt[-1] == marker


def test_long_history_drops_oldest_turns(scripted_bundle: Path) -> None:
    table = tomllib.loads((scripted_bundle / "bundle.toml").read_text())["llm"]
    engine = LlmEngine.from_table({**table, "max_context": 120}, scripted_bundle)
    history = []
    for i in range(6):
        history += [Message("user", f"Question number {i}?"), Message("assistant", "Yes.")]
    engine.open_session(0)
    engine.start(0, [*history, Message("user", "Last one?")], Sampling(max_tokens=2))
    events = run_all(engine)[0]
    assert events[0].prompt_tokens < 120
    kept = engine.tokenizer.decode(engine.cached_tokens(0))
    assert "Last one?" in kept and "Question number 5?" in kept
    assert "Question number 0?" not in kept


def test_a_message_longer_than_the_context_keeps_its_end(
    scripted_bundle: Path, scripted_reply: str
) -> None:
    table = tomllib.loads((scripted_bundle / "bundle.toml").read_text())["llm"]
    engine = LlmEngine.from_table({**table, "max_context": 160}, scripted_bundle)
    engine.open_session(0)
    words = " ".join(f"item{i}" for i in range(400)) + " the end"
    engine.start(0, [Message("user", words)], Sampling(max_tokens=40))
    events = run_all(engine)[0]
    assert events[0].prompt_tokens <= 160 - 40
    assert text_of(events).startswith(scripted_reply[:20])
    kept = engine.tokenizer.decode(engine.cached_tokens(0))
    assert "the end" in kept and "item0 " not in kept
    # A system prompt longer than the context keeps its beginning.
    engine.start(0, [Message("system", "Be brief. " * 200), Message("user", "Hi")],
                 Sampling(max_tokens=8))
    events = run_all(engine)[0]
    assert events[0].prompt_tokens <= 160 - 8
    assert "Hi" in engine.tokenizer.decode(engine.cached_tokens(0))


def test_unknown_session_and_bad_sampling(scripted_bundle: Path) -> None:
    engine = engine_for(scripted_bundle)
    with pytest.raises(KeyError, match="LLM session 5 is not open"):
        engine.start(5, ask("Hi"))
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0.0)
    with pytest.raises(ValueError, match="stop"):
        Sampling(stop=("",))


def test_context_limit_ends_generation(scripted_bundle: Path) -> None:
    table = tomllib.loads((scripted_bundle / "bundle.toml").read_text())["llm"]
    engine = LlmEngine.from_table({**table, "max_context": 40}, scripted_bundle)
    engine.open_session(0)
    engine.start(0, ask("Hi"))
    events = run_all(engine)[0]
    prompt = events[-1].prompt_tokens
    assert prompt <= 40 - 20  # the fitted prompt leaves room for an answer
    assert events[-1].finished is FinishReason.LENGTH
    assert prompt + events[-1].tokens == 40


def test_greedy_argmax_margin_is_not_a_tie(random_bundle: Path) -> None:
    # Batched and unbatched runs agree only if greedy choices are not near-ties.
    engine = engine_for(random_bundle)
    engine.open_session(0)
    engine.start(0, ask(PROMPTS[0]), Sampling(max_tokens=1))
    ids = np.array([engine.render(ask(PROMPTS[0]))], dtype=np.int64)
    logits, _ = engine._run(
        ids, np.ones_like(ids), np.arange(ids.shape[1])[None],
        [np.zeros((1, engine.layout.kv_heads, 0, engine.layout.head_dim), np.float32)]
        * (2 * engine.layout.layers),
    )
    top = np.sort(logits[0, -1])[-2:]
    assert top[1] - top[0] > 1e-3


def test_long_prompt_prefills_in_chunks_while_others_stream(
    scripted_bundle: Path, scripted_reply: str
) -> None:
    engine = engine_for(scripted_bundle)
    engine.prefill_step_ns = 1  # as little as a step allows: chunks of MIN_CHUNK tokens
    for sid in (0, 1):
        engine.open_session(sid)
    engine.start(0, ask("Hi"))
    first = run_all_until(engine, lambda events: any(e.sid == 0 for e in events))
    assert first
    long_question = " ".join(f"part {i}" for i in range(90)) + "?"
    engine.start(1, ask(long_question))
    streamed_meanwhile = 0
    calls = engine.counters.prefill_calls
    while engine.is_running(1) and not engine.counters.prefill_calls - calls > 40:
        events = engine.step()
        if any(e.sid == 1 for e in events):
            break
        streamed_meanwhile += sum(1 for e in events if e.sid == 0)
        assert engine.is_running(0) or streamed_meanwhile > 0
    chunks = engine.counters.prefill_calls - calls
    assert chunks > 3  # the prompt went in pieces...
    assert streamed_meanwhile >= min(chunks - 1, 10)  # ...while session 0 kept streaming
    rest = run_all(engine)
    assert text_of(rest.get(1, [])).endswith(scripted_reply[-10:])


def run_all_until(engine: LlmEngine, done: Callable[[list[LlmEvent]], bool],
                  limit: int = 200) -> bool:
    return any(done(engine.step()) for _ in range(limit))


def test_sessions_share_the_system_prompt_cache(scripted_bundle: Path, scripted_reply: str
                                                ) -> None:
    engine = engine_for(scripted_bundle)
    system = len(engine.system_tokens([]))
    for sid in range(3):
        engine.open_session(sid)
    engine.start(0, ask(PROMPTS[0]))
    events = run_all(engine)[0]
    assert events[0].reused_tokens == 0  # the first session computes it...
    engine.start(1, ask(PROMPTS[1]))
    engine.start(2, [Message("system", "Be terse."), *ask(PROMPTS[1])])
    before = engine.counters.prefill_tokens
    later = run_all(engine)
    assert later[1][0].reused_tokens == system  # ...the next one starts from it
    assert later[2][0].reused_tokens == 0  # other instructions: their own prefix
    assert engine.counters.prefill_tokens - before == (
        len(engine.render(ask(PROMPTS[1]))) - system
        + len(engine.render([Message("system", "Be terse."), *ask(PROMPTS[1])])))
    for sid in range(3):
        assert text_of(later.get(sid, events)) == scripted_reply
