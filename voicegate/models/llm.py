"""LLM engine: a decoder-only model in the optimum layout, serving many sessions at once.

Each session keeps the KV cache of the tokens it has fed so far. ``step`` runs one
batched decode call for every running generation (continuous batching: generations join
and leave between steps) and one batched prefill call for generations that have just
started. A new generation reuses the longest prefix its prompt shares with the tokens
already in the session's cache, so that the final prompt of a turn, which usually
extends the prompt of the speculative generation started during the user's pause, costs
only its new tokens; earlier turns of the conversation are never recomputed either.

Caches of different lengths are batched by left padding with a zero attention mask. After
a decode step, the outputs (``present.*``) become the next step's inputs as they are when
the batch has not changed; only a change in membership gathers the caches anew.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from voicegate.models.bpe_tokenizer import BpeTokenizer, JinjaChat, TemplateError
from voicegate.models.bundle import TableReader
from voicegate.models.errors import BundleError
from voicegate.models.graphs.llm import SIZES, LlmDims, build_random_llm, build_scripted_llm
from voicegate.models.runtime import BoundRunner, ExecutionConfig, create_session
from voicegate.models.sessions import session_of
from voicegate.models.sp_tokenizer import (
    CHAT_MARKERS,
    SentencePieceTokenizer,
    shipped_corpus,
    train_tokenizer,
)
from voicegate.models.spec import StageReport, TensorSpec, describe_io, verify_io

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

_PAST = r"past_key_values\.(\d+)\.(key|value)"
_PRESENT = r"present\.(\d+)\.(key|value)"
INPUTS = (
    TensorSpec("input_ids", "int64", (None, None)),
    TensorSpec("attention_mask", "int64", (None, None)),
    TensorSpec("position_ids", "int64", (None, None), optional=True),
    TensorSpec(_PAST, "float32", (None, None, None, None), pattern=True),
    TensorSpec("use_cache_branch", "bool", (1,), optional=True),
    # Imported graphs compute logits for the last positions only (llama_graph).
    TensorSpec("logits_to_keep", "int64", (1,), optional=True),
)
OUTPUTS = (
    TensorSpec("logits", "float32", (None, None, None)),
    TensorSpec(_PRESENT, "float32", (None, None, None, None), pattern=True),
)

# Worded for small models too: SmolLM2-135M answers the speech samples' questions best
# with this one among those tried (the answers are read aloud, so: short, no formatting).
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant for a store's phone support line. Keep answers short: "
    "one or two sentences, plain words, no lists or formatting."
)
SHARED_PREFIXES = 8  # system prompts whose keys and values the engine keeps for all sessions
FIRST_CHUNK = 64  # prompt tokens per step before the engine has timed a prefill
MIN_CHUNK = 32  # prompt tokens per step at least


class LlmTokenizer(Protocol):
    """What the engine needs of a tokenizer (SentencePiece or byte-level BPE)."""

    path: Path
    vocab_size: int

    @property
    def bos_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    def piece_id(self, piece: str) -> int | None: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_template(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class ChatTemplate:
    """How a conversation becomes prompt text. Each role template holds ``{content}``
    once; control pieces of the tokenizer written in a template (chat markers, ``</s>``)
    become their ids, while the same text inside a message stays plain text."""

    system: str = "<|system|>{content}<|end|>"
    user: str = "<|user|>{content}<|end|>"
    assistant: str = "<|assistant|>{content}<|end|>"
    generation_prompt: str = "<|assistant|>"
    add_bos: bool = True

    @classmethod
    def from_reader(cls, reader: TableReader) -> ChatTemplate:
        default = cls()
        template = cls(
            system=reader.string("system", default.system),
            user=reader.string("user", default.user),
            assistant=reader.string("assistant", default.assistant),
            generation_prompt=reader.string("generation_prompt", default.generation_prompt),
            add_bos=reader.boolean("add_bos", default.add_bos),
        )
        for role in ("system", "user", "assistant"):
            if getattr(template, role).count("{content}") != 1:
                raise reader.invalid(role, "a template with {content} exactly once",
                                     getattr(template, role))
        return template

    def to_table(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "user": self.user,
            "assistant": self.assistant,
            "generation_prompt": self.generation_prompt,
            "add_bos": self.add_bos,
        }

    def role_template(self, role: str) -> str:
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"unknown chat role {role!r}")
        template: str = getattr(self, role)
        return template

    def segments(self, messages: Sequence[Message],
                 add_generation_prompt: bool = True) -> list[tuple[str, bool]]:
        """(text, is_message_content) pieces of the prompt, as ``JinjaChat`` gives them."""
        parts: list[tuple[str, bool]] = []
        for message in messages:
            before, _, after = self.role_template(message.role).partition("{content}")
            parts += [(before, False), (message.content, True), (after, False)]
        if add_generation_prompt:
            parts.append((self.generation_prompt, False))
        return parts


@dataclass(frozen=True)
class Sampling:
    """Per-generation decoding settings. Temperature 0 is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if any(not s for s in self.stop):
            raise ValueError("stop sequences must not be empty")


class FinishReason(Enum):
    EOS = "eos"  # the model produced an end token
    STOP = "stop"  # a stop sequence appeared; the text ends before it
    LENGTH = "length"  # max_tokens or the context limit


@dataclass(frozen=True)
class LlmEvent:
    """New text of one generation after a step; ``finished`` is set on its last event."""

    sid: int
    text: str
    finished: FinishReason | None
    tokens: int  # tokens generated so far
    prompt_tokens: int
    reused_tokens: int  # prompt tokens whose keys and values came from the cache


@dataclass
class LlmCounters:
    prefill_calls: int = 0
    prefill_tokens: int = 0  # prompt tokens computed (not reused)
    reused_tokens: int = 0
    decode_calls: int = 0
    decode_tokens: int = 0
    regathers: int = 0  # decode steps whose batch had to be rebuilt


@dataclass(frozen=True)
class _ModelLayout:
    layers: int
    kv_heads: int
    head_dim: int
    vocab: int | None  # the logits width, when the graph fixes it
    position_ids: bool
    use_cache_branch: bool


class _KvBatch:
    """Caches of one batched call: ``present`` arrays [B, H, T, D] and the mask [B, T]
    that says which columns of each row hold real tokens."""

    __slots__ = ("arrays", "mask")

    def __init__(self, arrays: list[FloatArray], mask: IntArray) -> None:
        self.arrays = arrays
        self.mask = mask

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])


@dataclass
class _Generation:
    prompt: list[int]
    sampling: Sampling
    rng: np.random.Generator
    shared: tuple[int, ...] = ()  # the system prompt's tokens, whose cache all sessions share
    generated: list[int] = field(default_factory=list)
    emitted: str = ""
    next_token: int | None = None  # sampled, to be fed on the next decode step
    prefilled: bool = False
    begun: bool = False  # the first prefill chunk chose where the cache comes from
    fed: int = 0  # prompt tokens in the cache so far (prefill goes in chunks)
    reused: int = 0


class _Session:
    __slots__ = ("gen", "kv", "row", "sid", "tokens")

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.tokens: list[int] = []  # the tokens whose keys and values the cache holds
        self.kv: _KvBatch | None = None
        self.row = 0
        self.gen: _Generation | None = None


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def inspect_model(session: ort.InferenceSession, path: Path, reader: TableReader) -> _ModelLayout:
    """Check the model's tensors and derive the cache layout from them."""
    verify_io(session, path, INPUTS, OUTPUTS)
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    layers = sorted({int(m.group(1)) for n in inputs if (m := re.fullmatch(_PAST, n))})
    for i in range(max(layers) + 1):
        for kind in ("key", "value"):
            if f"past_key_values.{i}.{kind}" not in inputs:
                raise BundleError(path, "missing input", tensor=f"past_key_values.{i}.{kind}",
                                  expected=f"key and value for each of {max(layers) + 1} layers",
                                  found=sorted(n for n in inputs if n.startswith("past_")))
            if f"present.{i}.{kind}" not in outputs:
                raise BundleError(path, "missing output", tensor=f"present.{i}.{kind}",
                                  expected=f"key and value for each of {max(layers) + 1} layers",
                                  found=sorted(n for n in outputs if n.startswith("present.")))
    shape = inputs["past_key_values.0.key"].shape
    kv_heads = shape[1] if isinstance(shape[1], int) else reader.integer("num_kv_heads",
                                                                         minimum=1)
    head_dim = shape[3] if isinstance(shape[3], int) else reader.integer("head_dim", minimum=1)
    logits_shape = next(o.shape for o in session.get_outputs() if o.name == "logits")
    vocab = logits_shape[2] if isinstance(logits_shape[2], int) else None
    return _ModelLayout(
        layers=max(layers) + 1,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=vocab,
        position_ids="position_ids" in inputs,
        use_cache_branch="use_cache_branch" in inputs,
    )


class LlmEngine:
    """Generations for many sessions, advanced together by ``step``."""

    def __init__(
        self,
        model_path: Path,
        tokenizer: LlmTokenizer,
        *,
        config: ExecutionConfig | None = None,
        template: ChatTemplate | JinjaChat | None = None,
        add_bos: bool | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        end_tokens: Sequence[int] = (),
        sampling: Sampling | None = None,
        max_context: int = 2048,
        max_batch: int = 64,
        prefill_budget: int = 2048,
        reader: TableReader | None = None,
    ) -> None:
        self.config = config or ExecutionConfig()
        self.model_path = model_path
        self.tokenizer = tokenizer
        self.session = create_session(model_path, self.config)
        reader = reader or TableReader({}, model_path.parent, "llm")
        self.layout = inspect_model(self.session, model_path, reader)
        if self.layout.vocab is not None and self.layout.vocab < tokenizer.vocab_size:
            raise BundleError(model_path, "logits narrower than the tokenizer's vocabulary",
                              tensor="logits", expected=f">= {tokenizer.vocab_size}",
                              found=self.layout.vocab)
        self.runner = BoundRunner(self.session, self.config)
        self.template: ChatTemplate | JinjaChat = template or ChatTemplate()
        if add_bos is None:
            add_bos = self.template.add_bos if isinstance(self.template, ChatTemplate) else False
        self.add_bos = add_bos and tokenizer.bos_id >= 0
        self.system_prompt = system_prompt
        self.end_tokens = frozenset(end_tokens) or frozenset({tokenizer.eos_id})
        self.sampling = sampling or Sampling()
        self.max_context = max_context
        self.max_batch = max_batch
        self.prefill_budget = prefill_budget
        # With a time budget a step computes as many prompt tokens as fit in it, from the
        # measured cost per token, so that a long prompt never stalls the running streams.
        self.prefill_step_ns: int | None = None
        self._ns_per_prompt_token: float | None = None
        self._shared: OrderedDict[tuple[int, ...], _KvBatch] = OrderedDict()
        self.share_system_prompt = True  # False: every session computes its own
        self._system_cache: dict[str, tuple[int, ...]] = {}
        self._has_keep = "logits_to_keep" in {i.name for i in self.session.get_inputs()}
        self.counters = LlmCounters()
        self._sessions: dict[int, _Session] = {}
        self._active: dict[int, _Session] = {}  # sessions with a generation, oldest first
        self._rotation = 0
        self._past_names = [
            f"past_key_values.{i}.{kind}"
            for i in range(self.layout.layers)
            for kind in ("key", "value")
        ]
        self._present_index = [
            self.runner.output_names.index(f"present.{i}.{kind}")
            for i in range(self.layout.layers)
            for kind in ("key", "value")
        ]
        self._logits_index = self.runner.output_names.index("logits")

    @classmethod
    def from_table(
        cls,
        table: Mapping[str, Any],
        base: Path,
        config: ExecutionConfig | None = None,
        *,
        max_batch: int = 64,
        prefill_budget: int = 2048,
    ) -> LlmEngine:
        reader = TableReader(table, base, "llm")
        model = reader.path("model")
        tokenizer_path = reader.path("tokenizer")
        tokenizer: LlmTokenizer
        template: ChatTemplate | JinjaChat
        add_bos: bool | None = None
        if tokenizer_path.suffix == ".json":
            tokenizer = BpeTokenizer(tokenizer_path, bos_token=reader.string("bos_token", None),
                                     eos_token=reader.string("eos_token"))
            template_path = reader.path("chat_template")
            try:
                template = JinjaChat(template_path.read_text(encoding="utf-8"),
                                     bos_token=reader.string("bos_token", ""),
                                     eos_token=reader.string("eos_token"))
            except (OSError, UnicodeDecodeError, TemplateError) as exc:
                raise BundleError(template_path, f"chat template: {exc}") from None
            add_bos = reader.boolean("add_bos", False)
        else:
            tokenizer = SentencePieceTokenizer(tokenizer_path)
            template = ChatTemplate.from_reader(reader.subtable("chat", required=False))
        end_tokens = []
        for piece in reader.strings("end_tokens", (reader.string("eos_token", "</s>"),)):
            token = tokenizer.piece_id(piece)
            if token is None:
                raise reader.invalid("end_tokens", "pieces of the tokenizer's vocabulary", piece)
            end_tokens.append(token)
        sampling_reader = reader.subtable("sampling", required=False)
        default = Sampling()
        try:
            sampling = Sampling(
                temperature=sampling_reader.number("temperature", default.temperature,
                                                   minimum=0),
                top_p=sampling_reader.number("top_p", default.top_p, minimum=0, maximum=1),
                max_tokens=sampling_reader.integer("max_tokens", default.max_tokens, minimum=1),
                stop=sampling_reader.strings("stop", default.stop),
            )
        except ValueError as exc:
            raise BundleError(reader.file, f"[llm.sampling] {exc}") from exc
        return cls(
            model,
            tokenizer,
            config=config,
            template=template,
            add_bos=add_bos,
            system_prompt=reader.string("system_prompt", DEFAULT_SYSTEM_PROMPT),
            end_tokens=end_tokens,
            sampling=sampling,
            max_context=reader.integer("max_context", 2048, minimum=2),
            max_batch=max_batch,
            prefill_budget=prefill_budget,
            reader=reader,
        )

    # Sessions -----------------------------------------------------------------------

    def open_session(self, sid: int) -> None:
        self._sessions[sid] = _Session(sid)

    def close_session(self, sid: int) -> None:
        self._sessions.pop(sid, None)
        self._active.pop(sid, None)

    def __contains__(self, sid: int) -> bool:
        return sid in self._sessions

    def _session(self, sid: int) -> _Session:
        return session_of(self._sessions, sid, "LLM")

    def is_running(self, sid: int) -> bool:
        return self._session(sid).gen is not None

    @property
    def running(self) -> int:
        return len(self._active)

    def cached_tokens(self, sid: int) -> list[int]:
        """The tokens whose keys and values the session's cache holds."""
        return list(self._session(sid).tokens)

    # Prompts ------------------------------------------------------------------------

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True
               ) -> list[int]:
        """Prompt ids for a conversation; the bundle's system prompt comes first unless
        the messages bring their own. Template text may hold special tokens, message
        text never does."""
        ids = [self.tokenizer.bos_id] if self.add_bos else []
        if not messages or messages[0].role != "system":
            messages = [Message("system", self.system_prompt), *messages]
        try:
            parts = self.template.segments(messages, add_generation_prompt)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        for text, is_content in parts:
            ids += self.tokenizer.encode(text) if is_content else \
                self.tokenizer.encode_template(text)
        return ids

    def system_tokens(self, messages: Sequence[Message]) -> tuple[int, ...]:
        """The prompt's leading system block, the part that sessions share."""
        text = messages[0].content if messages and messages[0].role == "system" else \
            self.system_prompt
        tokens = self._system_cache.get(text)
        if tokens is None:
            tokens = tuple(self.render([Message("system", text)], add_generation_prompt=False))
            if len(self._system_cache) >= 64:
                self._system_cache.clear()
            self._system_cache[text] = tokens
        return tokens

    def _fit(self, messages: Sequence[Message], max_tokens: int) -> list[int]:
        """The prompt, made to leave room for an answer: the oldest turns are dropped
        first; a single message too long for the context keeps its end (the user's
        last words), and the system prompt its beginning. Never an error."""
        limit = max(self.max_context - min(max_tokens, self.max_context // 2), 1)
        kept = list(messages)
        if not kept or kept[0].role != "system":
            kept.insert(0, Message("system", self.system_prompt))
        while True:
            prompt = self.render(kept)
            over = len(prompt) - limit
            if over <= 0:
                return prompt
            if len(kept) > 2:
                del kept[1]
                while len(kept) > 2 and kept[1].role != "user":
                    del kept[1]
                continue
            # One message is left: a system prompt over half the room gives way first.
            system, last = kept[0], kept[-1]
            excess = len(self.render(kept[:1], add_generation_prompt=False)) - limit // 2
            if system.content and (excess > 0 or len(kept) < 2 or not last.content):
                ids = self.tokenizer.encode(system.content)
                cut = max(len(ids) - max(excess, over) - 1, 0)
                kept[0] = Message("system", self.tokenizer.decode(ids[:cut]))
                continue
            if len(kept) == 2 and last.content:
                ids = self.tokenizer.encode(last.content)
                kept[-1] = Message(last.role, self.tokenizer.decode(ids[over + 1 :]).lstrip())
                continue
            return prompt  # the template alone overflows: the answer ends at the limit

    # Generations --------------------------------------------------------------------

    def start(
        self, sid: int, messages: Sequence[Message], sampling: Sampling | None = None
    ) -> None:
        """Begin a generation for a session, replacing any running one. It is computed
        from the next ``step`` on."""
        session = self._session(sid)
        self.cancel(sid)
        sampling = sampling or self.sampling
        prompt = self._fit(messages, sampling.max_tokens)
        shared = self.system_tokens(messages) if self.share_system_prompt else ()
        session.gen = _Generation(
            prompt=prompt,
            sampling=sampling,
            rng=np.random.default_rng(sampling.seed),
            shared=shared if tuple(prompt[: len(shared)]) == shared else (),
        )
        self._active[sid] = session

    def cancel(self, sid: int) -> bool:
        """Stop a session's generation; what it fed stays cached for reuse."""
        session = self._session(sid)
        if session.gen is None:
            return False
        session.gen = None
        del self._active[sid]
        self._detach(session)
        return True

    def step(self) -> list[LlmEvent]:
        """One decode step for running generations and one prefill for new ones."""
        running = [s for s in self._active.values() if s.gen and s.gen.prefilled]
        waiting = [s for s in self._active.values() if s.gen and not s.gen.prefilled]
        events: list[LlmEvent] = []
        if running:
            events += self._decode(self._take_batch(running))
        if waiting:
            chosen: list[tuple[_Session, int]] = []
            budget = self._prefill_tokens()
            computing: set[tuple[int, ...]] = set()  # system prompts this call computes
            for s in waiting[: self.max_batch]:
                assert s.gen is not None
                if chosen and budget <= 0:
                    break
                if not s.gen.begun:  # as late as possible: a shared prefix may be ready
                    if s.gen.shared in computing:
                        continue  # next step it starts from the shared copy
                    self._begin(s)
                    if s.gen.shared and s.gen.shared not in self._shared:
                        computing.add(s.gen.shared)
                cost = len(s.gen.prompt) - s.gen.fed
                take = min(cost, max(budget, 1))
                chosen.append((s, take))
                budget -= take
            events += self._prefill(chosen)
        return events

    def _prefill_tokens(self) -> int:
        """Prompt tokens one step may compute."""
        if self.prefill_step_ns is None:
            return self.prefill_budget
        if self._ns_per_prompt_token is None:
            return min(FIRST_CHUNK, self.prefill_budget)
        fit = int(self.prefill_step_ns / self._ns_per_prompt_token)
        # Below a few dozen tokens a chunk costs about what a decode step does (the
        # weights are read either way): smaller chunks would only slow the prompt down.
        return max(MIN_CHUNK, min(fit, self.prefill_budget))

    def _begin(self, s: _Session) -> None:
        """Where a prompt's cache starts: the session's own cache as far as it matches
        the prompt, or the shared system prompt's when that reaches further."""
        gen = s.gen
        assert gen is not None
        keep = min(common_prefix(s.tokens, gen.prompt), len(gen.prompt) - 1)
        shared = self._shared.get(gen.shared) if gen.shared else None
        if shared is not None and keep < len(gen.shared) <= len(gen.prompt) - 1:
            self._shared.move_to_end(gen.shared)
            s.kv, s.row, keep = shared, 0, len(gen.shared)
        s.tokens = list(gen.prompt[:keep])
        gen.reused = gen.fed = keep
        gen.begun = True
        self.counters.reused_tokens += keep

    def _take_batch(self, running: list[_Session]) -> list[_Session]:
        if len(running) <= self.max_batch:
            return running
        # Over capacity every generation still advances, in turns.
        start = self._rotation % len(running)
        self._rotation += self.max_batch
        return (running[start:] + running[:start])[: self.max_batch]

    # Model calls --------------------------------------------------------------------

    def _run(
        self, ids: IntArray, mask: IntArray, positions: IntArray, past: list[FloatArray]
    ) -> tuple[FloatArray, list[FloatArray]]:
        feeds: dict[str, npt.NDArray[Any]] = {"input_ids": ids, "attention_mask": mask}
        if self.layout.position_ids:
            feeds["position_ids"] = positions
        if self.layout.use_cache_branch:
            feeds["use_cache_branch"] = np.array([past[0].shape[2] > 0], dtype=np.bool_)
        if self._has_keep:
            feeds["logits_to_keep"] = np.array([1], dtype=np.int64)
        feeds.update(zip(self._past_names, past, strict=True))
        outputs = self.runner.run(feeds)
        return outputs[self._logits_index], [outputs[i] for i in self._present_index]

    def _gather(self, parts: Sequence[tuple[_KvBatch | None, int, int]]) -> tuple[
        list[FloatArray], IntArray
    ]:
        """Left-padded caches [B, H, L, D] and mask [B, L] from (batch, row, length)."""
        width = max((length for _, _, length in parts), default=0)
        shape = (len(parts), self.layout.kv_heads, width, self.layout.head_dim)
        arrays = [np.zeros(shape, dtype=np.float32) for _ in self._past_names]
        mask = np.zeros((len(parts), width), dtype=np.int64)
        for row, (batch, source_row, length) in enumerate(parts):
            if batch is None or length == 0:
                continue
            columns = np.flatnonzero(batch.mask[source_row])[:length]
            first = int(columns[0])
            picked: slice | npt.NDArray[np.intp] = (
                slice(first, first + length) if columns[-1] == first + length - 1 else columns
            )
            for target, source in zip(arrays, batch.arrays, strict=True):
                target[row, :, width - length :, :] = source[source_row][:, picked, :]
            mask[row, width - length :] = 1
        return arrays, mask

    def _detach(self, session: _Session) -> None:
        """Copy a session's cache out of a shared batch, so that the batch can be freed
        while the session waits for its next turn."""
        if session.kv is None or (session.kv.rows == 1 and bool(session.kv.mask.all())):
            return
        arrays, mask = self._gather([(session.kv, session.row, len(session.tokens))])
        session.kv, session.row = _KvBatch(arrays, mask), 0

    def _prefill(self, chosen: list[tuple[_Session, int]]) -> list[LlmEvent]:
        """One chunk of each chosen prompt; a prompt whose last chunk this is samples its
        first token."""
        parts: list[tuple[_KvBatch | None, int, int]] = []
        fresh: list[list[int]] = []
        for s, take in chosen:
            assert s.gen is not None
            parts.append((s.kv, s.row, s.gen.fed))
            fresh.append(s.gen.prompt[s.gen.fed : s.gen.fed + take])
        past, past_mask = self._gather(parts)
        rows = len(chosen)
        width = max(len(f) for f in fresh)
        ids = np.full((rows, width), self.tokenizer.pad_id, dtype=np.int64)
        new_mask = np.zeros((rows, width), dtype=np.int64)
        positions = np.zeros((rows, width), dtype=np.int64)
        for row, (tokens, (_, _, keep)) in enumerate(zip(fresh, parts, strict=True)):
            ids[row, width - len(tokens) :] = tokens
            new_mask[row, width - len(tokens) :] = 1
            positions[row, width - len(tokens) :] = np.arange(keep, keep + len(tokens))
        mask = np.concatenate([past_mask, new_mask], axis=1)
        began = time.perf_counter_ns()
        logits, present = self._run(ids, mask, positions, past)
        cost = (time.perf_counter_ns() - began) / (rows * width)
        self._ns_per_prompt_token = cost if self._ns_per_prompt_token is None else (
            0.7 * self._ns_per_prompt_token + 0.3 * cost)
        batch = _KvBatch(present, mask)
        self.counters.prefill_calls += 1
        events = []
        for row, (s, _) in enumerate(chosen):
            gen = s.gen
            assert gen is not None
            s.kv, s.row = batch, row
            gen.fed += len(fresh[row])
            s.tokens = list(gen.prompt[: gen.fed])
            self.counters.prefill_tokens += len(fresh[row])
            self._share(s)
            if gen.fed < len(gen.prompt):
                continue
            gen.prefilled = True
            event = self._accept(s, logits[row, -1])
            if event is not None:
                events.append(event)
        return events

    def _share(self, s: _Session) -> None:
        """Keep a copy of the system prompt's keys and values the first time a session
        computes them (causal attention: they do not depend on what follows)."""
        gen = s.gen
        assert gen is not None and s.kv is not None
        key = gen.shared
        if not key or key in self._shared or gen.fed < len(key):
            return
        arrays, mask = self._gather([(s.kv, s.row, len(key))])
        self._shared[key] = _KvBatch(arrays, mask)
        while len(self._shared) > SHARED_PREFIXES:
            self._shared.popitem(last=False)

    def _decode(self, sessions: list[_Session]) -> list[LlmEvent]:
        first = sessions[0].kv
        unchanged = (
            first is not None
            and first.rows == len(sessions)
            and all(s.kv is first and s.row == row for row, s in enumerate(sessions))
        )
        if unchanged:
            assert first is not None
            past, past_mask = first.arrays, first.mask
        else:
            self.counters.regathers += 1
            past, past_mask = self._gather([(s.kv, s.row, len(s.tokens)) for s in sessions])
        ids = np.array([[s.gen.next_token] for s in sessions if s.gen], dtype=np.int64)
        positions = np.array([[len(s.tokens)] for s in sessions], dtype=np.int64)
        mask = np.concatenate([past_mask, np.ones((len(sessions), 1), np.int64)], axis=1)
        logits, present = self._run(ids, mask, positions, past)
        batch = _KvBatch(present, mask)
        self.counters.decode_calls += 1
        self.counters.decode_tokens += len(sessions)
        events = []
        for row, s in enumerate(sessions):
            assert s.gen is not None and s.gen.next_token is not None
            s.kv, s.row = batch, row
            s.tokens.append(s.gen.next_token)
            event = self._accept(s, logits[row, -1])
            if event is not None:
                events.append(event)
        return events

    # Tokens to text -----------------------------------------------------------------

    def _sample(self, gen: _Generation, logits: FloatArray) -> int:
        logits = logits[: self.tokenizer.vocab_size]
        sampling = gen.sampling
        if sampling.temperature == 0.0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / sampling.temperature
        p = np.exp(z - z.max())
        order = np.argsort(-p, kind="stable")
        cumulative = np.cumsum(p[order])
        cumulative /= cumulative[-1]
        if sampling.top_p < 1.0:
            # The smallest set of most likely tokens whose mass reaches top_p.
            keep = int(np.searchsorted(cumulative, sampling.top_p)) + 1
            order, cumulative = order[:keep], cumulative[:keep] / cumulative[keep - 1]
        pick = int(np.searchsorted(cumulative, gen.rng.random(), side="right"))
        return int(order[min(pick, len(order) - 1)])

    def _accept(self, session: _Session, logits: FloatArray) -> LlmEvent | None:
        gen = session.gen
        assert gen is not None
        token = self._sample(gen, logits)
        if token in self.end_tokens:
            return self._finish(session, FinishReason.EOS, self.tokenizer.decode(gen.generated))
        gen.generated.append(token)
        text = self.tokenizer.decode(gen.generated)
        hits = [i for i in (text.find(s) for s in gen.sampling.stop) if i >= 0]
        if hits:
            return self._finish(session, FinishReason.STOP, text[: min(hits)])
        if (
            len(gen.generated) >= gen.sampling.max_tokens
            or len(session.tokens) + 1 >= self.max_context
        ):
            return self._finish(session, FinishReason.LENGTH, text)
        gen.next_token = token
        safe = _releasable(text, gen.sampling.stop)
        if len(safe) <= len(gen.emitted) or not safe.startswith(gen.emitted):
            return None
        delta, gen.emitted = safe[len(gen.emitted) :], safe
        return self._event(session, delta, None)

    def _finish(self, session: _Session, reason: FinishReason, text: str) -> LlmEvent:
        gen = session.gen
        assert gen is not None
        delta = text[len(gen.emitted) :] if text.startswith(gen.emitted) else ""
        event = self._event(session, delta, reason)
        session.gen = None
        del self._active[session.sid]
        self._detach(session)
        return event

    def _event(self, session: _Session, delta: str, reason: FinishReason | None) -> LlmEvent:
        gen = session.gen
        assert gen is not None
        return LlmEvent(session.sid, delta, reason, len(gen.generated), len(gen.prompt),
                        gen.reused)


def _releasable(text: str, stops: Sequence[str]) -> str:
    """The part of the text that can be given out now: not an incomplete character, and
    not a tail that could still grow into a stop sequence."""
    if text.endswith("\ufffd"):
        text = text.rstrip("\ufffd")
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                hold = max(hold, n)
                break
    return text[: len(text) - hold]


# Bundle ---------------------------------------------------------------------------------

TOKENIZER_FILE = "tokenizer.model"
MODEL_FILE = "model.onnx"
_VOCAB = {"tiny": 1000, "base": 4000}


def synth(
    out_dir: Path, *, seed: int, scripted: str | None = None, size: str = "tiny"
) -> dict[str, Any]:
    """Write ``out_dir/llm/`` (tokenizer trained on the shipped corpus, and a random or,
    with ``scripted`` reply text, a scripted model) and return the [llm] table."""
    if size not in SIZES:
        raise ValueError(f"LLM size {size!r} is not one of {sorted(SIZES)}")
    target = out_dir / "llm"
    target.mkdir(parents=True, exist_ok=True)
    tokenizer_path = target / TOKENIZER_FILE
    tokenizer_path.write_bytes(train_tokenizer(shipped_corpus().splitlines(), _VOCAB[size]))
    tokenizer = SentencePieceTokenizer(tokenizer_path)
    dims = LlmDims(vocab=tokenizer.vocab_size, **SIZES[size])
    template = ChatTemplate()
    end_piece = "<|end|>"
    end_id = tokenizer.piece_id(end_piece)
    start_id = tokenizer.piece_id("<|assistant|>")
    assert end_id is not None and start_id is not None, CHAT_MARKERS
    if scripted is None:
        model = build_random_llm(dims, seed)
        kind = "random"
    else:
        reply = tokenizer.encode(scripted)
        if tokenizer.decode(reply) != scripted:
            raise ValueError(f"scripted reply does not survive tokenization: {scripted!r}")
        model = build_scripted_llm(vocab=dims.vocab, layers=dims.layers, heads=dims.heads,
                                   head_dim=dims.head_dim, start_id=start_id,
                                   reply_ids=reply, end_id=end_id)
        kind = "scripted"
    (target / MODEL_FILE).write_bytes(model.SerializeToString())
    return {
        "model": f"llm/{MODEL_FILE}",
        "tokenizer": f"llm/{TOKENIZER_FILE}",
        "kind": kind,
        "system_prompt": DEFAULT_SYSTEM_PROMPT,
        "end_tokens": [end_piece, "</s>"],
        "max_context": 2048,
        "chat": template.to_table(),
        "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 128, "stop": []},
    }


def check(
    table: Mapping[str, Any], base: Path, config: ExecutionConfig
) -> list[StageReport]:
    """Validate the [llm] table, tokenizer and model, and time one prefill of the system
    prompt."""
    engine = LlmEngine.from_table(table, base, config)
    inputs, outputs = describe_io(engine.session)
    engine.open_session(0)
    engine.start(0, [], Sampling(max_tokens=1))
    began = time.perf_counter()
    engine.step()
    elapsed_ms = (time.perf_counter() - began) * 1000.0
    layout = engine.layout
    parameters: dict[str, object] = {
        "layers": layout.layers,
        "kv_heads": layout.kv_heads,
        "head_dim": layout.head_dim,
        "vocab": engine.tokenizer.vocab_size,
        "max_context": engine.max_context,
        "end_tokens": sorted(engine.end_tokens),
        "system_prompt_tokens": len(engine.render([])),
        "temperature": engine.sampling.temperature,
        "top_p": engine.sampling.top_p,
        "max_tokens": engine.sampling.max_tokens,
    }
    return [
        StageReport("llm", engine.model_path, inputs, outputs, parameters, elapsed_ms),
        StageReport("llm", engine.tokenizer.path, [], [],
                    {"pieces": engine.tokenizer.vocab_size}, None),
    ]
