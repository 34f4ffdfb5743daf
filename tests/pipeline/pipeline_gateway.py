"""The test playing a gateway process: exactly the records a gateway sends, and every
record it gets back, per session, in arrival order."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from voicegate.core import codec
from voicegate.core.audio import float32_to_pcm16, resample
from voicegate.core.clock import monotonic_ns
from voicegate.core.codec import Encoding
from voicegate.core.config import NodeConfig
from voicegate.core.kinds import Flag, Kind, session_id
from voicegate.core.payloads import VadEvent, VadEventType
from voicegate.ext import Record
from voicegate.workers.gateway_link import GatewayLink, Received

FRAME_MS = 20
_locals = itertools.count(1)


@dataclass
class Session:
    sid: int
    input: tuple[str, int]
    output: tuple[str, int]
    turn: int = 1
    seq: int = 0
    events: list[Received] = field(default_factory=list)  # vad -> gw
    records: list[Received] = field(default_factory=list)  # tts -> gw

    def vad_events(self) -> list[tuple[VadEventType | str, int]]:
        """The event path, as (event or kind name, turn)."""
        got: list[tuple[VadEventType | str, int]] = []
        for r in self.events:
            if r.kind == Kind.VAD_EVENT:
                got.append((VadEvent.unpack(r.payload).event, r.turn))
            else:
                got.append((Kind(r.kind).name, r.turn))
        return got

    def of(self, kind: Kind, turn: int | None = None) -> list[Received]:
        return [r for r in self.records if r.kind == kind and (turn is None or r.turn == turn)]

    def answer_done(self, turn: int) -> bool:
        return any(r.flags & Flag.LAST for r in self.of(Kind.AUDIO_OUT, turn))


class PlayingGateway:
    def __init__(self, config: NodeConfig, index: int) -> None:
        self.index = index
        self.link = GatewayLink(config, index)
        self.sessions: dict[int, Session] = {}

    def open(
        self,
        input: tuple[str, int] = ("pcm16", 16000),
        output: tuple[str, int] = ("pcm16", 16000),
        instructions: str | None = None,
    ) -> Session:
        sid = session_id(self.index, next(_locals))
        session = Session(sid, input, output)
        self.sessions[sid] = session
        params = {
            "input": {"encoding": input[0], "sample_rate": input[1]},
            "output": {"encoding": output[0], "sample_rate": output[1]},
            "instructions": instructions,
        }
        self._send(session, Kind.SESSION_OPEN, json.dumps(params).encode())
        return session

    def _send(self, session: Session, kind: int, payload: bytes = b"", flags: int = 0) -> None:
        session.seq += 1
        ok = self.link.send_wait(
            Record(
                kind=kind,
                session=session.sid,
                turn=session.turn,
                seq=session.seq,
                origin_ns=monotonic_ns(),
                payload=payload,
                flags=flags,
            ),
            timeout=30.0,
        )
        assert ok, "the ring to VAD stayed full for 30 s"

    def play(self, session: Session, pcm16k: np.ndarray) -> None:
        """Send 16 kHz PCM16 audio in the session's input format, 20 ms per frame, as fast
        as the ring takes it, reading what comes back in between."""
        encoding, rate = session.input
        audio = pcm16k.astype(np.float32) / 32768.0
        if rate != 16000:
            audio = resample(audio, 16000, rate)
        samples = float32_to_pcm16(audio)
        step = rate * FRAME_MS // 1000
        for start in range(0, len(samples), step):
            frame = samples[start : start + step]
            self._send(session, Kind.AUDIO_IN, codec.encode(frame, Encoding(encoding)))
            self.poll()

    def silence(self, ms: int) -> np.ndarray:
        return np.zeros(16 * ms, dtype=np.int16)

    def playback(self, session: Session, started: bool) -> None:
        self._send(session, Kind.PLAYBACK, b"\x01" if started else b"\x00")

    def text(self, session: Session, text: str) -> None:
        self._send(session, Kind.TEXT_INPUT, text.encode())

    def poll(self, timeout: float = 0.0) -> None:
        """Read everything waiting on the event and answer rings (the answer ring drops
        what does not fit, as a gateway that stops reading would see)."""
        while True:
            events = self.link.events(timeout=timeout)
            records = self.link.receive(timeout=0.0)
            for r in events:
                self._take(r, "events")
            for r in records:
                self._take(r, "records")
            if not events and not records:
                return
            timeout = 0.0

    def _take(self, r: Received, ring: str) -> None:
        session = self.sessions.get(r.session)
        if session is None:
            return  # a session an earlier test closed
        (session.events if ring == "events" else session.records).append(r)
        # A gateway stamps the highest turn it has seen.
        session.turn = max(session.turn, r.turn)

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                seen = {
                    s.sid: (s.vad_events(), [(Kind(r.kind).name, r.turn) for r in s.records])
                    for s in self.sessions.values()
                }
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}: {seen}")
            self.poll(timeout=0.02)

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            self._send(session, Kind.SESSION_CLOSE)
        self.wait(
            lambda: all(
                any(r.kind == Kind.SESSION_CLOSE for r in s.records) for s in self.sessions.values()
            ),
            "every SESSION_CLOSE to come back",
        )
        self.sessions.clear()


def play_together(gateway: PlayingGateway, sessions: list[Session], pcm16k: np.ndarray) -> None:
    """The same audio from many sessions at once: frame i of every session, then i + 1."""
    frames: list[list[bytes]] = []
    for session in sessions:
        encoding, rate = session.input
        audio = pcm16k.astype(np.float32) / 32768.0
        if rate != 16000:
            audio = resample(audio, 16000, rate)
        samples = float32_to_pcm16(audio)
        step = rate * FRAME_MS // 1000
        frames.append(
            [codec.encode(samples[i : i + step], Encoding(encoding))
             for i in range(0, len(samples), step)]
        )
    for i in range(max(len(f) for f in frames)):
        for session, own in zip(sessions, frames, strict=True):
            if i < len(own):
                gateway._send(session, Kind.AUDIO_IN, own[i])
        gateway.poll()
