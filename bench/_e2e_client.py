"""The load generator of `bench e2e`: client processes, each running several sessions on
one asyncio loop, each session replaying the utterances of a speech manifest in real time
as turns of one conversation.

A session streams an utterance frame by frame, keeps streaming silence (as a microphone
would) until the answer's ``response.done``, stays silent for the pause between turns,
then speaks the next utterance. Voice-to-voice is measured the way ``voicegate talk``
measures it: first answer audio received minus the moment the frame holding the
utterance's ``speech_end_s`` was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from voicegate.core import codec
from voicegate.core.wav import WavError, read_wav
from voicegate.server.events import (
    ErrorEvent,
    EventFormatError,
    ResponseCancelled,
    ResponseDone,
    SessionStarted,
    parse_server_event,
)
from voicegate.server.protocol import SessionEnd, SessionStart
from voicegate.server.talk_audio import FramePacer, resample, speech_end_frame, split_frames

FRAME_MS = 20
FORMAT = codec.PCM16_16K


@dataclass(frozen=True)
class Utterance:
    file: str
    frames: list[bytes]
    speech_end_frame: int


def load_manifest(speech_dir: Path) -> list[Utterance]:
    """The manifest's utterances as wire frames; errors name the file and field."""
    manifest = speech_dir / "manifest.json"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{manifest}: cannot read ({exc})") from None
    entries = data.get("utterances") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{manifest}: field 'utterances' must be a non-empty list")
    per_frame = FORMAT.samples_per_frame(FRAME_MS)
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
        samples = resample(wav.samples, wav.sample_rate, FORMAT.sample_rate)
        frames = split_frames(samples, FORMAT, FRAME_MS)
        last = min(speech_end_frame(float(end), FORMAT.sample_rate, per_frame), len(frames) - 1)
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


@dataclass
class ClientOutcome:
    pid: int
    turns: list[dict[str, Any]]
    late_frames: int  # frames sent more than one frame late: the load generator lagged
    connect_errors: list[str]


class _Replay:
    def __init__(self, ws: ClientConnection, index: int, plan: ClientPlan, t0: float) -> None:
        self.ws = ws
        self.index = index
        self.plan = plan
        self.t0 = t0  # loop time of the common start
        self.silence = codec.silence(FORMAT, FRAME_MS)
        self.turn: TurnResult | None = None
        self.speech_end_sent_ns: int | None = None
        self.answer_done = asyncio.Event()
        self.closed = asyncio.Event()
        self.late_frames = 0
        self.first_due: float | None = None

    async def receive(self) -> None:
        try:
            async for message in self.ws:
                now = time.monotonic_ns()
                turn = self.turn
                if isinstance(message, bytes):
                    if (
                        turn is not None
                        and turn.voice_to_voice_ms is None
                        and self.speech_end_sent_ns is not None
                    ):
                        turn.voice_to_voice_ms = (now - self.speech_end_sent_ns) / 1e6
                    continue
                try:
                    event = parse_server_event(message)
                except EventFormatError as exc:
                    if turn is not None:
                        turn.error = f"malformed event: {exc}"
                    self.answer_done.set()
                    continue
                if turn is None:
                    continue
                if isinstance(event, ErrorEvent):
                    turn.error = f"server error {event.code}"
                    self.answer_done.set()
                elif isinstance(event, ResponseDone):
                    if self.speech_end_sent_ns is None:
                        turn.extra_answers += 1
                    else:
                        turn.server_ms = event.latency_ms.to_dict()
                        turn.speculative = event.speculative
                        self.answer_done.set()
                elif isinstance(event, ResponseCancelled) and self.speech_end_sent_ns is not None:
                    turn.error = f"response cancelled ({event.reason})"
                    self.answer_done.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self.answer_done.set()

    async def run(self, utterances: list[Utterance]) -> list[TurnResult]:
        loop = asyncio.get_running_loop()
        end = self.t0 + self.plan.duration_s
        pacer = FramePacer(FRAME_MS / 1000.0)
        sent = 0
        results: list[TurnResult] = []
        k = self.index  # each session starts at a different utterance
        while loop.time() < end and not self.closed.is_set():
            utt = utterances[k % len(utterances)]
            k += 1
            turn = TurnResult(self.index, utt.file, loop.time() - self.t0)
            self.turn, self.speech_end_sent_ns = turn, None
            self.answer_done.clear()
            results.append(turn)
            for i, frame in enumerate(utt.frames):
                sent = await self._send(pacer, sent, frame, mark=i == utt.speech_end_frame)
            deadline = loop.time() + self.plan.timeout_s
            while not self.answer_done.is_set() and loop.time() < deadline:
                sent = await self._send(pacer, sent, self.silence)
            if self.closed.is_set() and turn.server_ms is None and turn.error is None:
                turn.error = f"connection closed ({self.ws.close_code})"
            elif not self.answer_done.is_set():
                turn.error = f"no response.done within {self.plan.timeout_s} s"
            pause_end = loop.time() + self.plan.pause_s
            while loop.time() < pause_end and not self.closed.is_set():
                sent = await self._send(pacer, sent, self.silence)
        return results

    async def _send(self, pacer: FramePacer, index: int, frame: bytes, mark: bool = False) -> int:
        if self.first_due is None:
            self.first_due = time.monotonic()
        await pacer.wait(index)
        if time.monotonic() - (self.first_due + index * pacer.interval_s) > pacer.interval_s:
            self.late_frames += 1
        if mark:
            self.speech_end_sent_ns = time.monotonic_ns()
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(frame)
        return index + 1


async def _session(
    index: int, plan: ClientPlan, utterances: list[Utterance], t0: float, late: list[int]
) -> tuple[list[TurnResult], str | None]:
    loop = asyncio.get_running_loop()
    # Stagger the sessions' first turns over one average turn so they do not all speak
    # at once; the stagger is part of the run's duration.
    mean_turn_s = sum(len(u.frames) for u in utterances) * FRAME_MS / 1000.0 / len(utterances)
    await asyncio.sleep(max(0.0, t0 + mean_turn_s * index / plan.total_sessions - loop.time()))
    try:
        ws = await connect(plan.url, open_timeout=plan.timeout_s, compression=None, max_size=None)
    except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
        return [], f"session {index}: cannot connect ({type(exc).__name__})"
    try:
        await ws.send(SessionStart(FORMAT, FORMAT, None, None).to_json())
        async with asyncio.timeout(plan.timeout_s):
            first = await ws.recv()
        event = parse_server_event(first) if isinstance(first, str) else None
        if not isinstance(event, SessionStarted):
            kind = "audio" if event is None else event.type
            return [], f"session {index}: expected session.started, got {kind}"
        replay = _Replay(ws, index, plan, t0)
        receiver = asyncio.create_task(replay.receive())
        try:
            results = await replay.run(utterances)
        finally:
            late.append(replay.late_frames)
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                async with asyncio.timeout(5):
                    await ws.send(SessionEnd().to_json())
            await ws.close(1000, "bench done")
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        return results, None
    except (ConnectionClosed, TimeoutError, EventFormatError) as exc:
        return [], f"session {index}: {type(exc).__name__} before the first turn"
    finally:
        await ws.close()


async def _run_plan(plan: ClientPlan, utterances: list[Utterance]) -> ClientOutcome:
    loop = asyncio.get_running_loop()
    t0 = loop.time() + max(0.0, plan.start_at - time.time())
    late: list[int] = []
    outcomes = await asyncio.gather(
        *[_session(i, plan, utterances, t0, late) for i in plan.sessions]
    )
    turns = [asdict(t) for results, _ in outcomes for t in results]
    errors = [e for _, e in outcomes if e is not None]
    return ClientOutcome(os.getpid(), turns, sum(late), errors)


def client_main(plan: ClientPlan, results: Queue[ClientOutcome | str]) -> None:
    """Entry point of one client process."""
    try:
        if plan.cpus:
            os.sched_setaffinity(0, plan.cpus)
        utterances = load_manifest(Path(plan.speech_dir))
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
