"""The two baseline designs: how the same four stages are connected.

- ``SingleProcessPipeline``: voicegate's streaming and speculative logic unchanged, every
  stage on its own thread of the server's process, linked by in-process queues: the
  common framework design (every model competes with the WebSocket loop for the GIL).
- ``SequentialPipeline``: the request-response design. The VAD still streams (the end of
  a turn is decided by the same engine and the same silence rule), but nothing is done
  with the utterance until the turn has ended: then STT on the whole utterance, the
  whole LLM reply, TTS of the whole reply, and only then is the audio sent. Turns are
  served one at a time, in the order they ended.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.baselines.runtime import Deliver, StageRunner, load_stages
from voicegate.core.kinds import Flag, Kind
from voicegate.core.payloads import VadEvent, VadEventType
from voicegate.ext import Record
from voicegate.workers.gateway_link import Received

log = logging.getLogger("bench.baselines")

_IDLE_WAIT_S = 0.05
_STOP = object()
# A turn the stages have not finished in this long is abandoned (a bug, not a result).
_TURN_GIVE_UP_S = 60.0


class Pipeline(ABC):
    """Records in from the connections (``submit``, any thread); records for the
    connections out through ``deliver`` (called on pipeline threads)."""

    def __init__(self, bundle: Path, deliver: Deliver) -> None:
        self.deliver = deliver
        self.runners = load_stages(bundle, deliver)
        self.end_of_turn_ms = float(getattr(self.runners[0].stage, "end_of_turn_ms", 300.0))
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @abstractmethod
    def submit(self, record: Received) -> None: ...

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5.0)


def _drain(inbox: queue.Queue[object], first: object) -> tuple[list[Received], bool]:
    """``first`` and whatever else is queued now: one batch, as a ring read gives."""
    batch: list[Received] = []
    stop = False
    item = first
    while True:
        if item is _STOP:
            stop = True
        elif isinstance(item, Record):
            batch.append(item)
        try:
            item = inbox.get_nowait()
        except queue.Empty:
            return batch, stop


class SingleProcessPipeline(Pipeline):
    def __init__(self, bundle: Path, deliver: Deliver) -> None:
        super().__init__(bundle, deliver)
        self._inboxes: list[queue.Queue[object]] = [queue.Queue() for _ in self.runners]
        for index, runner in enumerate(self.runners):
            self._spawn(f"stage-{index}", functools.partial(self._run, index, runner))

    def submit(self, record: Received) -> None:
        self._inboxes[0].put(record)

    def stop(self) -> None:
        for inbox in self._inboxes:
            inbox.put(_STOP)
        super().stop()

    def _forward(self, index: int, records: Sequence[Received]) -> None:
        if not records:
            return
        if index + 1 < len(self._inboxes):
            inbox = self._inboxes[index + 1]
            for r in records:
                inbox.put(r)
        else:
            for r in records:
                self.deliver(r)

    def _run(self, index: int, runner: StageRunner) -> None:
        inbox = self._inboxes[index]
        interval = runner.tick_interval_s
        next_tick = time.monotonic() + (interval or 0.0)
        while True:
            timeout = max(0.0, next_tick - time.monotonic()) if interval else _IDLE_WAIT_S
            try:
                first = inbox.get(timeout=timeout)
            except queue.Empty:
                first = None
            if first is not None:
                batch, stop = _drain(inbox, first)
                if stop:
                    return
                self._forward(index, runner.handle(batch))
            if interval and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + interval
                self._forward(index, runner.tick())


def _vad_event(r: Received) -> VadEventType | None:
    return VadEvent.unpack(r.payload).event if r.kind == Kind.VAD_EVENT else None


def _ends_request(r: Received) -> bool:
    return r.kind in (Kind.TEXT_INPUT, Kind.SESSION_CLOSE) or (
        _vad_event(r) is VadEventType.END_OF_TURN
    )


def _is_pause(r: Received) -> bool:
    return _vad_event(r) is VadEventType.SPEECH_PAUSE


class SequentialPipeline(Pipeline):
    def __init__(self, bundle: Path, deliver: Deliver) -> None:
        super().__init__(bundle, deliver)
        self._vad_inbox: queue.Queue[object] = queue.Queue()
        self._requests: queue.Queue[object] = queue.Queue()
        self._pending: dict[int, list[Received]] = {}  # per session, until its turn ends
        self._spawn("vad", self._run_vad)
        self._spawn("turns", self._run_turns)

    def submit(self, record: Received) -> None:
        self._vad_inbox.put(record)

    def stop(self) -> None:
        self._vad_inbox.put(_STOP)
        self._requests.put(_STOP)
        super().stop()

    def _run_vad(self) -> None:
        vad = self.runners[0]
        while True:
            batch, stop = _drain(self._vad_inbox, self._vad_inbox.get())
            if stop:
                return
            for r in vad.handle(batch):
                if _is_pause(r):
                    continue  # no speculation in this design: the turn must end first
                pending = self._pending.setdefault(r.session, [])
                pending.append(r)
                if _ends_request(r):
                    self._requests.put(pending[:])
                    pending.clear()

    def _run_turns(self) -> None:
        while True:
            item = self._requests.get()
            if item is _STOP:
                return
            assert isinstance(item, list)
            self._serve(item)

    def _serve(self, records: list[Received]) -> None:
        """One request, start to finish: each stage completes before the next starts."""
        _, stt, llm, tts = self.runners
        transcribed = stt.handle(records)
        if not any(r.kind == Kind.TRANSCRIPT_FINAL for r in transcribed):
            for r in tts.handle(llm.handle(transcribed)):  # control only: no reply owed
                self.deliver(r)
            return
        replied = _until(llm, llm.handle(transcribed), Kind.LLM_TOKEN)
        spoken = _until(tts, tts.handle(replied), Kind.AUDIO_OUT)
        for r in spoken:
            self.deliver(r)


def _until(runner: StageRunner, out: list[Received], kind: Kind) -> list[Received]:
    """Tick ``runner`` until it emitted the LAST record of ``kind`` (the whole reply, the
    whole audio), keeping everything it emitted in order."""
    give_up = time.monotonic() + _TURN_GIVE_UP_S
    while not any(r.kind == kind and r.flags & Flag.LAST for r in out):
        if time.monotonic() > give_up:
            log.error("%s did not finish a turn in %.0f s", runner.stage.context.name,
                      _TURN_GIVE_UP_S)
            break
        out.extend(runner.tick())
    return out
