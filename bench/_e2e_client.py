"""The load generator of `bench e2e`: client processes, each running several sessions on
one asyncio loop, each session replaying the utterances of a speech manifest in real time
as turns of one conversation. The sessions are raw WebSocket protocols (``bench._wsraw``)
paced by one timer per process, so the generator's CPU stays small next to the server's.

A session streams an utterance frame by frame, keeps streaming silence (as a microphone
would) until the answer's ``response.done``, stays silent for the pause between turns,
then speaks the next utterance. Voice-to-voice is measured the way ``voicegate talk``
measures it: first answer audio received minus the moment the frame holding the
utterance's ``speech_end_s`` was sent.

``ClientPlan.protocol`` picks the wire protocol: ``stream`` (voicegate's own, binary audio
frames) or ``realtime`` (OpenAI's Realtime API on ``/v1/realtime``: base64 audio in
``input_audio_buffer.append`` events, answer audio in ``response.output_audio.delta``,
the server's breakdown in ``response.done``'s metadata). Both replay the same speech.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import json
import multiprocessing
import os
import ssl
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench._wsraw import OP_BINARY, OP_TEXT, HandshakeError, RawWebSocket, client_frame, connect
from voicegate.core import codec
from voicegate.core.codec import AudioFormat, Encoding
from voicegate.core.wav import WavError, read_wav
from voicegate.server.cli.talk_audio import resample, speech_end_frame, split_frames
from voicegate.server.protocols.native_events import (
    ErrorEvent,
    EventFormatError,
    ResponseCancelled,
    ResponseDone,
    SessionStarted,
    parse_server_event,
)
from voicegate.server.protocols.native_wire import SessionEnd, SessionStart

FRAME_MS = 20
FORMAT = codec.PCM16_16K


@dataclass(frozen=True)
class Utterance:
    file: str
    frames: list[bytes]
    speech_end_frame: int


def load_manifest(speech_dir: Path, fmt: AudioFormat = FORMAT) -> list[Utterance]:
    """The manifest's utterances as audio frames in ``fmt``; errors name the file and
    field."""
    manifest = speech_dir / "manifest.json"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{manifest}: cannot read ({exc})") from None
    entries = data.get("utterances") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{manifest}: field 'utterances' must be a non-empty list")
    per_frame = fmt.samples_per_frame(FRAME_MS)
    out: list[Utterance] = []
    for i, entry in enumerate(entries):
        name = entry.get("file") if isinstance(entry, dict) else None
        end = entry.get("speech_end_s") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise ValueError(f"{manifest}: field 'utterances[{i}].file' must be a string")
        if isinstance(end, bool) or not isinstance(end, int | float) or end < 0:
            raise ValueError(f"{manifest}: field 'utterances[{i}].speech_end_s' must be >= 0")
        try:
            wav = read_wav(speech_dir / name)
        except WavError as exc:
            raise ValueError(str(exc)) from None
        samples = resample(wav.samples, wav.sample_rate, fmt.sample_rate)
        frames = split_frames(samples, fmt, FRAME_MS)
        last = min(speech_end_frame(float(end), fmt.sample_rate, per_frame), len(frames) - 1)
        out.append(Utterance(name, frames, last))
    return out


@dataclass
class TurnResult:
    session: int
    file: str
    start_s: float  # since the run's common start
    voice_to_voice_ms: float | None = None
    server_ms: dict[str, float] | None = None
    speculative: bool | None = None
    error: str | None = None
    extra_answers: int = 0  # response.done for a turn the server split off before speech end


@dataclass
class ClientPlan:
    url: str
    speech_dir: str
    sessions: list[int]  # global session indices run by this process
    total_sessions: int
    duration_s: float
    pause_s: float
    timeout_s: float
    start_at: float  # time.time() when every process starts its sessions
    cpus: list[int] = field(default_factory=list)
    api_key: str = ""  # sent as Authorization: Bearer on the handshake
    cafile: str = ""  # CA of a wss:// node's certificate
    protocol: str = "stream"  # or "realtime" (plan.url is then the /v1/realtime URL)
    sample_rate: int = FORMAT.sample_rate  # of the PCM16 audio sent and asked for

    @property
    def format(self) -> AudioFormat:
        return AudioFormat(Encoding.PCM16, self.sample_rate)


@dataclass
class ClientOutcome:
    pid: int
    turns: list[dict[str, Any]]
    late_frames: int  # frames sent more than one frame late: the load generator lagged
    connect_errors: list[str]


class _Replay(RawWebSocket):
    """One session: connection, handshake and the replay, driven frame by frame by the
    process's ``_Pacer`` (``tick``) and by the server's messages (``on_message``)."""

    def __init__(  # noqa: PLR0917 - one session's whole plan
        self, host: str, path: str, index: int, plan: ClientPlan,
        utterances: list[Utterance], t0: float, silence: bytes,
    ) -> None:  # fmt: skip
        auth = {"Authorization": f"Bearer {plan.api_key}"} if plan.api_key else None
        super().__init__(host, path, auth)
        self.silence = silence  # one frame of it, as sent
        self.index = index
        self.plan = plan
        self.utterances = utterances
        self.t0 = t0  # loop time of the common start
        self.end = t0 + plan.duration_s  # no turn starts after this
        self.loop = asyncio.get_running_loop()
        self.started: asyncio.Future[None] = self.loop.create_future()
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.results: list[TurnResult] = []
        self.turn: TurnResult | None = None
        self.speech_end_sent_ns: int | None = None
        self.answer_done = False
        self.late_frames = 0
        self._k = index  # each session starts at a different utterance
        self._utt = utterances[0]
        self._frame = 0
        self._phase = _Phase.STARTING
        self._phase_ends = 0.0

    # -- the server's side -----------------------------------------------------------

    def on_open(self) -> None:
        fmt = self.plan.format
        self.send(OP_TEXT, SessionStart(fmt, fmt, None, None).to_json().encode())

    def on_message(self, opcode: int, payload: bytes, now_ns: int) -> None:
        turn = self.turn
        if opcode == OP_BINARY:
            self._answer_audio(now_ns)
            return
        try:
            event = parse_server_event(payload.decode("utf-8", "replace"))
        except EventFormatError as exc:
            if not self.started.done():
                self._not_started(f"malformed first event ({exc})")
            elif turn is not None:
                turn.error = f"malformed event: {exc}"
                self.answer_done = True
            return
        if not self.started.done():
            if isinstance(event, SessionStarted):
                self.started.set_result(None)
            else:
                self._not_started(f"expected session.started, got {event.type}")
            return
        if turn is None:
            return
        if isinstance(event, ErrorEvent):
            turn.error = f"server error {event.code}"
            self.answer_done = True
        elif isinstance(event, ResponseDone):
            if self.speech_end_sent_ns is None:
                turn.extra_answers += 1
            else:
                turn.server_ms = event.latency_ms.to_dict()
                turn.speculative = event.speculative
                self.answer_done = True
        elif isinstance(event, ResponseCancelled) and self.speech_end_sent_ns is not None:
            turn.error = f"response cancelled ({event.reason})"
            self.answer_done = True

    def _not_started(self, why: str) -> None:
        self.started.set_exception(ConnectionError(why))
        self.fail(ConnectionError(why))

    def on_close(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(exc or ConnectionError("closed before session.started"))
        turn = self.turn
        if (
            self._phase in (_Phase.SPEAKING, _Phase.WAITING)
            and turn is not None
            and turn.server_ms is None
            and turn.error is None
        ):
            turn.error = f"connection closed ({self.close_code})"
        self._finish()

    # -- the caller's side: one frame per tick -----------------------------------------

    def tick(self, now: float, due: float) -> None:
        """Send the frame due at ``due`` (loop time); ``now`` is the loop's time."""
        if now - due > FRAME_MS / 1000:
            self.late_frames += 1
        if self._phase is _Phase.STARTING:
            self._next_turn(now)
        elif self._phase is _Phase.WAITING and (self.answer_done or now >= self._phase_ends):
            if not self.answer_done and self.turn is not None:
                self.turn.error = f"no response.done within {self.plan.timeout_s} s"
            self._phase, self._phase_ends = _Phase.PAUSE, now + self.plan.pause_s
        elif self._phase is _Phase.PAUSE and now >= self._phase_ends:
            if now >= self.end:
                self._say_goodbye()
                return
            self._next_turn(now)
        if self._phase is _Phase.SPEAKING:
            utt = self._utt
            if self._frame == utt.speech_end_frame:
                self.speech_end_sent_ns = time.monotonic_ns()
            self.write(utt.frames[self._frame])
            self._frame += 1
            if self._frame == len(utt.frames):
                self._phase, self._phase_ends = _Phase.WAITING, now + self.plan.timeout_s
        elif self._phase in (_Phase.WAITING, _Phase.PAUSE):
            self.write(self.silence)

    @property
    def streaming(self) -> bool:
        return self.started.done() and not self.finished.done()

    def _next_turn(self, now: float) -> None:
        self._utt = self.utterances[self._k % len(self.utterances)]
        self._k += 1
        self.turn = TurnResult(self.index, self._utt.file, now - self.t0)
        self.results.append(self.turn)
        self.speech_end_sent_ns = None
        self.answer_done = False
        self._frame = 0
        self._phase = _Phase.SPEAKING

    def _say_goodbye(self) -> None:
        self.send(OP_TEXT, SessionEnd().to_json().encode())
        self.close(1000)
        self._finish()

    def _answer_audio(self, now_ns: int) -> None:
        turn = self.turn
        if (
            turn is not None
            and turn.voice_to_voice_ms is None
            and self.speech_end_sent_ns is not None
        ):
            turn.voice_to_voice_ms = (now_ns - self.speech_end_sent_ns) / 1e6

    def _finish(self) -> None:
        self._phase = _Phase.DONE
        if not self.finished.done():
            self.finished.set_result(None)


class _Phase(enum.Enum):
    STARTING = enum.auto()  # connected, the first turn starts at the next tick
    SPEAKING = enum.auto()  # the utterance's frames
    WAITING = enum.auto()  # silence, as a microphone sends, until the answer is done
    PAUSE = enum.auto()  # silence between turns
    DONE = enum.auto()


class _Pacer:
    """The process's one timer: session slot ``i`` of ``n`` is due at
    ``t0 + i * 20 ms / n + k * 20 ms``; sessions not streaming yet (or any more) are
    skipped. One timer instead of one sleep per session and frame is what keeps the
    load generator's CPU small next to the server's."""

    def __init__(self, sessions: list[_Replay | None], t0: float) -> None:
        self.sessions = sessions  # filled in as the sessions connect
        self._period = FRAME_MS / 1000
        self._step = self._period / max(1, len(sessions))
        self._t0 = t0
        self._slot = 0  # slots since t0
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = self._loop.call_at(self._t0, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _tick(self) -> None:
        now = self._loop.time()
        sessions = self.sessions
        n = len(sessions)
        due = self._t0 + self._slot * self._step
        while due <= now:
            session = sessions[self._slot % n]
            if session is not None and session.streaming:
                session.tick(now, due)
            self._slot += 1
            due = self._t0 + self._slot * self._step
        self._handle = self._loop.call_at(due, self._tick)


async def _session(
    index: int, slot: int, plan: ClientPlan, utterances: list[Utterance], t0: float, *,
    pacer: _Pacer, silence: bytes,
) -> tuple[_Replay | None, str | None]:  # fmt: skip
    loop = asyncio.get_running_loop()
    # Stagger the sessions' first turns over one average turn so they do not all speak
    # at once; the stagger is part of the run's duration.
    mean_turn_s = sum(len(u.frames) for u in utterances) * FRAME_MS / 1000.0 / len(utterances)
    await asyncio.sleep(max(0.0, t0 + mean_turn_s * index / plan.total_sessions - loop.time()))
    url = urlsplit(plan.url)
    secure = url.scheme == "wss"
    host, port = url.hostname or "127.0.0.1", url.port or (443 if secure else 80)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kind = _RealtimeReplay if plan.protocol == "realtime" else _Replay
    replay = kind(f"{host}:{port}", path, index, plan, utterances, t0, silence)
    tls = ssl.create_default_context(cafile=plan.cafile or None) if secure else None
    try:
        await connect(replay, host, port, plan.timeout_s, tls)
    except (OSError, TimeoutError, HandshakeError) as exc:
        return None, f"session {index}: cannot connect ({type(exc).__name__})"
    try:
        await asyncio.wait_for(asyncio.shield(replay.started), plan.timeout_s)
    except (ConnectionError, TimeoutError) as exc:
        replay.fail(exc)
        return None, f"session {index}: {exc or type(exc).__name__} before the first turn"
    pacer.sessions[slot] = replay
    # A session's turns end by themselves; this bound only catches a bug.
    give_up = plan.duration_s + 2 * plan.timeout_s + mean_turn_s + 30.0
    try:
        await asyncio.wait_for(asyncio.shield(replay.finished), give_up)
    except TimeoutError:
        replay.fail(TimeoutError())
        return replay, f"session {index}: still running {give_up:.0f} s after its start"
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(replay.closed), 5.0)
    if replay.transport is not None and not replay.closed.done():
        replay.transport.abort()
    return replay, None


async def _run_plan(plan: ClientPlan, utterances: list[Utterance]) -> ClientOutcome:
    loop = asyncio.get_running_loop()
    t0 = loop.time() + max(0.0, plan.start_at - time.time())
    wire = realtime_frame if plan.protocol == "realtime" else binary_frame
    framed = [
        Utterance(u.file, [wire(f) for f in u.frames], u.speech_end_frame) for u in utterances
    ]
    silence = wire(codec.silence(plan.format, FRAME_MS))
    pacer = _Pacer([None] * len(plan.sessions), t0)
    pacer.start()
    try:
        outcomes = await asyncio.gather(*[
            _session(index, slot, plan, framed, t0, pacer=pacer, silence=silence)
            for slot, index in enumerate(plan.sessions)
        ])  # fmt: skip
    finally:
        pacer.stop()
    turns = [asdict(t) for replay, _ in outcomes if replay is not None for t in replay.results]
    errors = [e for _, e in outcomes if e is not None]
    late = sum(replay.late_frames for replay, _ in outcomes if replay is not None)
    return ClientOutcome(os.getpid(), turns, late, errors)


def binary_frame(audio: bytes) -> bytes:
    """A /v1/stream audio frame."""
    return client_frame(OP_BINARY, audio)


def realtime_frame(audio: bytes) -> bytes:
    """A /v1/realtime ``input_audio_buffer.append`` frame."""
    b64 = base64.b64encode(audio).decode("ascii")
    return client_frame(OP_TEXT, f'{{"type":"input_audio_buffer.append","audio":"{b64}"}}'.encode())


# What voicegate's /v1/realtime begins every audio delta with (one per answer frame):
# recognised without parsing the JSON, so the client's CPU stays small.
_AUDIO_DELTA = b'{"type":"response.output_audio.delta"'
_LATENCY_PREFIX = "voicegate.latency_ms."


class _RealtimeReplay(_Replay):
    """The same replay over OpenAI's Realtime protocol: the session starts at
    ``session.created`` and is set to transcribe its input (as /v1/stream always does)."""

    def on_open(self) -> None:
        update = {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {
                "transcription": {"model": "whisper-1"}}}},
        }  # fmt: skip
        self.send(OP_TEXT, json.dumps(update).encode())

    def on_message(self, opcode: int, payload: bytes, now_ns: int) -> None:
        if payload.startswith(_AUDIO_DELTA):
            self._answer_audio(now_ns)
            return
        try:
            event = json.loads(payload)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            event, kind = {}, "malformed"
        if not self.started.done():
            if kind == "session.updated":
                self.started.set_result(None)
            elif kind != "session.created":
                self._not_started(f"expected session.created/updated, got {kind}")
            return
        turn = self.turn
        if turn is None:
            return
        if kind in ("error", "malformed"):
            error = event.get("error") if isinstance(event, dict) else None
            code = error.get("code") if isinstance(error, dict) else kind
            turn.error = f"server error {code}"
            self.answer_done = True
        elif kind == "response.done":
            self._response_done(turn, event.get("response") or {})

    def _response_done(self, turn: TurnResult, response: dict[str, Any]) -> None:
        if self.speech_end_sent_ns is None:
            turn.extra_answers += 1
            return
        status = response.get("status")
        if status != "completed":
            details = response.get("status_details") or {}
            turn.error = f"response {status} ({details.get('reason')})"
        else:
            metadata = response.get("metadata") or {}
            turn.server_ms = {
                k[len(_LATENCY_PREFIX) :]: float(v)
                for k, v in metadata.items()
                if k.startswith(_LATENCY_PREFIX)
            }
            turn.speculative = metadata.get("voicegate.speculative") == "true"
        self.answer_done = True

    def _say_goodbye(self) -> None:
        self.close(1000)  # the Realtime protocol has no goodbye event
        self._finish()


def client_main(plan: ClientPlan, results: Queue[ClientOutcome | str]) -> None:
    """Entry point of one client process."""
    try:
        if plan.cpus:
            os.sched_setaffinity(0, plan.cpus)
        utterances = load_manifest(Path(plan.speech_dir), plan.format)
        # asyncio's own loop: the pacer's sub-millisecond timers busy-spin under uvloop,
        # whose timers have millisecond resolution.
        results.put(asyncio.run(_run_plan(plan, utterances)))
    except Exception as exc:  # the parent reports it; a traceback here would be lost
        results.put(f"client {os.getpid()}: {type(exc).__name__}: {exc}")


def spawn_clients(
    plans: list[ClientPlan],
) -> tuple[list[multiprocessing.process.BaseProcess], Queue[ClientOutcome | str]]:
    ctx = multiprocessing.get_context("spawn")
    results: Queue[ClientOutcome | str] = ctx.Queue()
    procs = [ctx.Process(target=client_main, args=(p, results), daemon=True) for p in plans]
    for proc in procs:
        proc.start()
    return list(procs), results
