"""The LLM stage: transcripts in, answer text out.

A generation starts on the provisional transcript (TRANSCRIPT_PARTIAL with
``Flag.PROVISIONAL``, made when the caller paused): the speculation runs under the turn
while the end-of-turn silence elapses. TRANSCRIPT_FINAL with the same text confirms it
and the running generation goes on untouched; another text (a typed turn, or a final
that arrived without a provisional) starts the generation then. A new turn cancels what
runs for the old one (the KV cache stays for prefix reuse). Decode steps run on
``tick``, one batched step for all sessions at a time, for at most ``step_budget_ms``
per tick so that ring reads are never starved.

The answer streams as LLM_TOKEN text deltas, ``Flag.LAST`` on the last (possibly empty).
One TURN_TIMING goes to TTS per generation: JSON ``{"transcript_ns", "first_token_ns"}``
(CLOCK_MONOTONIC), which TTS completes (docs/pipeline.md).

Prompts: the bundle's system prompt (a spoken support assistant: short answers, no
markdown, no lists), or the session's ``instructions`` in its place, then the
conversation. Each session's keys and values stay cached across turns, so a turn
prefills only its new tokens; the system prompt's are computed once and shared by every
session with the same one. A conversation longer than the context drops its oldest
turns (the engine recomputes from there), never fails. Prompt prefill goes in chunks
under the step budget, so a long prompt never stalls the other sessions' streams.

History: the user's text and the answer are appended to the session's conversation only
for a confirmed turn (TRANSCRIPT_FINAL seen), when the answer completes or when a later
turn interrupts it (a barge-in). An interrupted answer is kept as far as it was
generated: this stage does not know how much of it was heard.

Session options (SESSION_UPDATE, docs/pipeline.md) act from the next generation:
``instructions`` replace the session's, ``max_output_tokens`` caps the answer,
``respond`` "none" or ``auto_respond`` false make a finished user turn (and any
TEXT_INPUT with ``Flag.ITEM_ONLY``) a conversation item without an answer: no
speculation, no LLM_TOKEN. RESPONSE_CREATE answers from the conversation as it stands,
under its own turn. TRUNCATE cuts an answer in the history to the text the caller heard
(the gateway reckons it from TTS's AUDIO_MARKs).

Options ([workers.llm.options]) override the bundle's sampling:
    max_tokens, temperature, top_p; step_budget_ms (20)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from voicegate.core.clock import monotonic_ns
from voicegate.core.config import ConfigError
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import (
    SessionOptions,
    SessionParams,
    StageId,
    Truncation,
    TurnError,
    TurnErrorCode,
    TurnTiming,
    decode_text,
    encode_text,
)
from voicegate.models.llm import LlmEngine, Sampling
from voicegate.models.llm import Message as ChatMessage
from voicegate.workers.stages.stage import Batch, Output, Record, Stage, StageContext
from voicegate.workers.stages.support import (
    StageOptions,
    bundle_table,
    emit_timing,
    execution_config,
)

_OPTIONS = ("max_tokens", "temperature", "top_p", "step_budget_ms")


@dataclass
class LlmSession:
    turn: int
    instructions: str | None
    history: list[ChatMessage] = field(default_factory=list)
    gen_turn: int | None = None  # the turn of the generation (running or done)
    user_text: str = ""
    answer: str = ""
    emitted: bool = False  # LLM_TOKEN records went out for gen_turn
    finished: bool = False
    confirmed: bool = False
    committed: bool = False
    origin_ns: int = 0
    transcript_ns: int = 0
    seq: int = 0
    opened_instructions: str | None = None  # SESSION_OPEN's, which options may replace
    options: SessionOptions = field(default_factory=SessionOptions)
    response: bool = False  # gen_turn answers RESPONSE_CREATE: no user text of its own
    answers: dict[int, int] = field(default_factory=dict)  # turn -> its answer in history
    truncations: dict[int, int] = field(default_factory=dict)  # turn -> chars heard

    def answering(self) -> bool:
        """A finished user turn gets an answer without a RESPONSE_CREATE."""
        return self.options.respond != "none" and self.options.auto_respond


class LlmStage(Stage[LlmSession]):
    tick_interval_s = 0.01

    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        options = StageOptions(context, _OPTIONS)
        self._overrides: dict[str, float | int] = {}
        if "temperature" in context.options:
            self._overrides["temperature"] = options.number("temperature", 0.0)
        if "top_p" in context.options:
            top_p = options.number("top_p", 1.0)
            if not 0.0 < top_p <= 1.0:
                raise ConfigError(f"{options.prefix}.top_p", top_p, "must be in (0, 1]")
            self._overrides["top_p"] = top_p
        if "max_tokens" in context.options:
            self._overrides["max_tokens"] = options.integer("max_tokens", 1, minimum=1)
        self.step_budget_ns = int(options.number("step_budget_ms", 20.0) * 1e6)
        self.engine: LlmEngine | None = None
        self.sampling: Sampling | None = None

    def load(self) -> None:
        table, base = bundle_table(self.context, "llm")
        self.engine = LlmEngine.from_table(table, base, execution_config(self.context))
        # Half of a tick's budget for prompt chunks, so the running streams' decode step
        # still fits beside a long prompt's prefill.
        self.engine.prefill_step_ns = self.step_budget_ns // 2
        base_sampling = self.engine.sampling
        try:
            self.sampling = Sampling(
                temperature=float(self._overrides.get("temperature", base_sampling.temperature)),
                top_p=float(self._overrides.get("top_p", base_sampling.top_p)),
                max_tokens=int(self._overrides.get("max_tokens", base_sampling.max_tokens)),
                stop=base_sampling.stop,
                seed=base_sampling.seed,
            )
        except ValueError as exc:
            raise ConfigError("workers.llm.options", dict(self._overrides), str(exc)) from None

    def _engine(self) -> LlmEngine:
        if self.engine is None:
            raise RuntimeError("LlmStage used before load()")
        return self.engine

    # -- sessions -------------------------------------------------------------------

    def open_session(self, session: int, turn: int, params: memoryview) -> LlmSession:
        instructions = SessionParams.unpack_or_default(params)[0].instructions
        self._engine().open_session(session)
        return LlmSession(turn, instructions, opened_instructions=instructions)

    def close_session(self, session: int, state: LlmSession, out: Output) -> None:
        self._engine().close_session(session)

    def new_turn(self, session: int, turn: int, state: LlmSession) -> None:
        self._engine().cancel(session)
        self._commit(state)
        state.turn = turn
        state.gen_turn = None

    # -- records --------------------------------------------------------------------

    def on_records(
        self, batch: Batch, states: Mapping[int, LlmSession], out: Output
    ) -> None:
        for m in batch:
            out.emit(m)
            state = states[m.session]
            if m.kind == Kind.TRANSCRIPT_PARTIAL and m.flags & Flag.PROVISIONAL:
                if state.answering():
                    self._start(m, state, decode_text(Kind.TRANSCRIPT_PARTIAL, m.payload), out)
            elif m.kind == Kind.TRANSCRIPT_FINAL:
                text = decode_text(Kind.TRANSCRIPT_FINAL, m.payload)
                if state.gen_turn != m.turn and (
                    not state.answering() or m.flags & Flag.ITEM_ONLY
                ):
                    self._add_item(state, text)
                    continue
                same = state.gen_turn == m.turn and state.user_text == text
                if not same and not (state.gen_turn == m.turn and state.emitted):
                    self._start(m, state, text, out)
                # A final that differs after the speculation already spoke keeps it: with
                # VAD's cuts the final is decoded from the provisional's audio, so this
                # does not happen in this pipeline.
                state.confirmed = True
                if state.finished:
                    self._commit(state)
            elif m.kind in (Kind.SESSION_UPDATE, Kind.RESPONSE_CREATE, Kind.TRUNCATE):
                self._on_session_control(m, state, out)

    def _on_session_control(self, m: Record[memoryview], state: LlmSession, out: Output) -> None:
        if m.kind == Kind.SESSION_UPDATE:
            state.options = SessionOptions.from_payload(m.payload)
            given = state.options.instructions
            state.instructions = state.opened_instructions if given is None else given or None
        elif m.kind == Kind.RESPONSE_CREATE:
            if state.options.respond == "none":
                why = "RESPONSE_CREATE in a session with respond none"
                detail = TurnError(TurnErrorCode.BAD_INPUT, StageId.LLM, why).pack()
                out.emit(
                    Record(
                        kind=Kind.ERROR,
                        session=m.session,
                        turn=m.turn,
                        origin_ns=m.origin_ns,
                        payload=detail,
                    )
                )
                return
            self._start(m, state, None, out)
            state.response = state.confirmed = True
        else:
            cut = Truncation.from_payload(m.payload)
            state.truncations[cut.turn] = cut.text_chars
            index = state.answers.get(cut.turn)
            if index is not None:
                heard = state.history[index].content[: cut.text_chars]
                state.history[index] = ChatMessage("assistant", heard)

    def _add_item(self, state: LlmSession, text: str) -> None:
        """A user turn that gets no answer of its own joins the conversation now (not in
        a transcription-only session, which has no conversation to keep)."""
        if text.strip() and state.options.respond != "none":
            state.history.append(ChatMessage("user", text))

    def _start(
        self, m: Record[memoryview], state: LlmSession, text: str | None, out: Output
    ) -> None:
        """Answer ``text`` (None: answer the conversation as it stands)."""
        engine = self._engine()
        engine.cancel(m.session)
        state.gen_turn, state.user_text, state.answer = m.turn, text or "", ""
        state.emitted = state.finished = state.confirmed = state.committed = False
        state.response = False
        state.origin_ns = m.origin_ns
        state.transcript_ns = m.sent_ns or monotonic_ns()
        if text is not None and not text.strip():
            # Nothing was understood: an empty answer closes the turn downstream.
            self._token(m.session, state, "", True, out)
            return
        messages: list[ChatMessage] = []
        if state.instructions:
            messages.append(ChatMessage("system", state.instructions))
        messages += state.history
        if text is not None:
            messages.append(ChatMessage("user", text))
        engine.start(m.session, messages, self._sampling(state))

    def _sampling(self, state: LlmSession) -> Sampling | None:
        cap = state.options.max_output_tokens
        if cap is None or self.sampling is None:
            return self.sampling
        return replace(self.sampling, max_tokens=cap)

    def _token(self, sid: int, state: LlmSession, text: str, last: bool, out: Output) -> None:
        assert state.gen_turn is not None
        if not state.emitted:
            timing = TurnTiming(state.transcript_ns, first_token_ns=monotonic_ns())
            emit_timing(out, sid, state.gen_turn, state.origin_ns, timing)
            state.emitted = True
        state.seq += 1
        state.answer += text
        out.emit(
            Record(
                kind=Kind.LLM_TOKEN,
                session=sid,
                turn=state.gen_turn,
                seq=state.seq,
                origin_ns=state.origin_ns,
                payload=encode_text(text),
                flags=Flag.LAST if last else 0,
            ),
        )
        if last:
            state.finished = True
            if state.confirmed:
                self._commit(state)

    def _commit(self, state: LlmSession) -> None:
        """Append a confirmed turn to the conversation, once."""
        if state.gen_turn is None or not state.confirmed or state.committed:
            return
        if state.user_text.strip():
            state.history.append(ChatMessage("user", state.user_text))
        elif not state.response:
            return
        heard = state.truncations.pop(state.gen_turn, len(state.answer))
        state.answers = {state.gen_turn: len(state.history)}  # only the latest is truncated
        state.history.append(ChatMessage("assistant", state.answer[:heard]))
        state.committed = True

    def tick(self, now_ns: int, states: Mapping[int, LlmSession], out: Output) -> None:
        engine = self._engine()
        deadline = now_ns + self.step_budget_ns
        counters = engine.counters
        while engine.running and monotonic_ns() < deadline:
            calls, tokens = counters.decode_calls, counters.decode_tokens
            events = engine.step()
            if counters.decode_calls > calls:  # one token per session decoded
                self.context.record_batch(counters.decode_tokens - tokens)
            for event in events:
                state = states.get(event.sid)
                if state is None or state.gen_turn is None:
                    continue
                if not event.text and event.finished is None:
                    continue  # text held back (a possible stop sequence)
                self._token(event.sid, state, event.text, event.finished is not None, out)
