"""`voicegate talk` against a small fake gateway (Starlette under uvicorn on 127.0.0.1).

The fake gateway follows the protocol through `StreamConnection`, counts the frames it
receives and, at a scripted frame, sends a scripted answer. Streaming runs at --pace 10
so each run takes a fraction of a second; the pacing itself is tested with a fake clock.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from numpy.typing import NDArray
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from voicegate.core import codec
from voicegate.core.codec import AudioFormat, Encoding
from voicegate.core.wav import Wav, read_wav, write_wav
from voicegate.server import cli, talk, talk_audio
from voicegate.server.protocols.native import (
    Accept,
    Action,
    Close,
    CloseSession,
    ForwardAudio,
    ForwardText,
    OpenSession,
    SendText,
    StreamConnection,
    SwitchOutput,
)
from voicegate.server.protocols.native_events import (
    ResponseAudioStarted,
    ResponseDone,
    ResponseStarted,
    ResponseTextDelta,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TurnLatency,
)
from voicegate.server.protocols.native_wire import STREAM_PATH, CloseCode, SessionStart

RATE = 16000
SPEECH_START_S = 0.2
SPEECH_END_S = 0.8
DURATION_S = 1.2
FRAME = 320  # samples in 20 ms at 16 kHz
SPEECH_END_FRAME = int(SPEECH_END_S * RATE - 1) // FRAME  # 39
FILE_FRAMES = int(DURATION_S * RATE) // FRAME  # 60
LATENCY = TurnLatency(250.0, 1.0, 10.0, 0.0, 15.0, 0.5)


@dataclass
class Script:
    """What the fake gateway does, by received frame index."""

    answer_at_frame: int | None = SPEECH_END_FRAME + 20
    answer: NDArray[np.int16] = field(
        default_factory=lambda: ((np.arange(4800) * 37) % 20000 - 10000).astype(np.int16)
    )
    degrade: bool = False
    at_capacity: bool = False
    internal_error_at_frame: int | None = None
    close_at_frame: tuple[int, int] | None = None  # (frame, close code), no error event
    close_on_session_end: bool = False
    raw_text_at_frame: dict[int, str] = field(default_factory=dict)  # sent as is


@dataclass
class Record:
    """What the fake gateway saw."""

    start: SessionStart | None = None
    frames: list[bytes] = field(default_factory=list)
    recv_ns: list[int] = field(default_factory=list)
    answer_sent_ns: int | None = None
    session_end: bool = False
    disconnect_code: int | None = None
    done: threading.Event = field(default_factory=threading.Event)


class FakeGateway:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.record = Record()
        self.app = Starlette(routes=[WebSocketRoute(STREAM_PATH, self.stream)])

    async def stream(self, ws: WebSocket) -> None:
        try:
            await self._stream(ws)
        finally:
            self.record.done.set()

    async def _stream(self, ws: WebSocket) -> None:
        conn = StreamConnection("fake-1")
        output: AudioFormat | None = None
        record, script = self.record, self.script

        async def perform(actions: list[Action]) -> bool:
            nonlocal output
            for action in actions:
                if isinstance(action, Accept):
                    await ws.accept()
                elif isinstance(action, SendText):
                    await ws.send_text(action.text)
                elif isinstance(action, OpenSession):
                    record.start = action.start
                    output = action.start.output
                elif isinstance(action, SwitchOutput):
                    output = action.format
                elif isinstance(action, ForwardAudio):
                    if not await on_frame(action.audio.data):
                        return False
                elif isinstance(action, Close):
                    if action.code is CloseCode.NORMAL and not script.close_on_session_end:
                        record.session_end = True
                        continue  # wait for the client's own close
                    await ws.close(action.code, action.reason)
                    return False
                else:
                    assert isinstance(action, CloseSession | ForwardText)
            return True

        async def on_frame(data: bytes) -> bool:
            record.recv_ns.append(time.monotonic_ns())
            record.frames.append(data)
            index = len(record.frames) - 1
            if index in script.raw_text_at_frame:
                await ws.send_text(script.raw_text_at_frame[index])
            if index == script.internal_error_at_frame:
                return await perform(conn.internal_error("the STT worker stopped"))
            if script.close_at_frame is not None and index == script.close_at_frame[0]:
                await ws.close(script.close_at_frame[1])
                return False
            if index == script.answer_at_frame:
                await answer()
            return True

        async def answer() -> None:
            events = [SpeechStarted(1, 200), SpeechStopped(1, 800), TranscriptFinal(1, "hello")]
            events += [ResponseStarted(1), ResponseTextDelta(1, "Hi "), ResponseTextDelta(1, "!")]
            for event in events:
                await perform(conn.send_event(event))
            if script.degrade:
                await perform(conn.degrade_output())
            assert output is not None
            samples = talk_audio.resample(script.answer, RATE, output.sample_rate)
            await perform(
                conn.send_event(ResponseAudioStarted(1, output.encoding, output.sample_rate))
            )
            data = codec.encode(samples, output.encoding)
            chunk = output.frame_bytes(20)
            record.answer_sent_ns = time.monotonic_ns()
            for i in range(0, len(data), chunk):
                await ws.send_bytes(data[i : i + chunk])
            duration = 1000 * len(samples) / output.sample_rate
            await perform(conn.send_event(ResponseDone(1, "Hi!", duration, True, LATENCY)))

        if not await perform(conn.connect(at_capacity=script.at_capacity)):
            return
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                record.disconnect_code = message.get("code")
                await perform(conn.disconnected())
                return
            if message.get("text") is not None:
                actions = conn.receive_text(message["text"])
            else:
                actions = conn.receive_bytes(message["bytes"])
            if not await perform(actions):
                return


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Served:
    url: str
    gateway: FakeGateway

    @property
    def record(self) -> Record:
        """What the gateway saw, once its side of the connection has finished."""
        assert self.gateway.record.done.wait(timeout=30), "the fake gateway did not finish"
        return self.gateway.record


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(script: Script) -> Served:
        gateway = FakeGateway(script)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            gateway.app, ws="websockets-sansio", lifespan="off", log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "fake gateway did not start"
            time.sleep(0.01)
        return Served(f"ws://127.0.0.1:{port}{STREAM_PATH}", gateway)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=20)
        assert not thread.is_alive()


@pytest.fixture
def utterance(tmp_path: Path) -> Path:
    """0.2 s silence, 0.6 s of a 440 Hz tone at -12 dBFS, 0.4 s silence."""
    samples = np.zeros(int(DURATION_S * RATE), dtype=np.int16)
    t = np.arange(int((SPEECH_END_S - SPEECH_START_S) * RATE)) / RATE
    start = int(SPEECH_START_S * RATE)
    samples[start : start + len(t)] = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    path = tmp_path / "utterance.wav"
    write_wav(path, samples, RATE)
    return path


def run_talk(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = cli.main(["talk", *args, "--json", "--pace", "10", "--timeout", "5"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_streams_frames_and_saves_the_answer(
    serve: Any, utterance: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = serve(Script())
    out = tmp_path / "answer.wav"
    code, report, err = run_talk(
        capsys, str(utterance), "--url", served.url, "--out", str(out), "--speech-end", "0.8"
    )
    assert code == 0, err
    record = served.record
    # Every frame is 20 ms of pcm16 at 16 kHz; the file goes out whole, then silence.
    assert report["frame_bytes"] == 640
    assert report["file_frames"] == FILE_FRAMES
    assert report["frames_sent"] == len(record.frames) >= FILE_FRAMES
    assert {len(f) for f in record.frames} == {640}
    sent = np.frombuffer(b"".join(record.frames[:FILE_FRAMES]), dtype="<i2")
    assert sent.tolist() == read_wav(utterance).samples.tolist()
    assert all(f == bytes(640) for f in record.frames[FILE_FRAMES:]), "only silence after the file"
    assert record.start == SessionStart(
        codec.PCM16_16K, codec.PCM16_16K, AudioFormat(Encoding.MULAW, 8000), None
    )
    # Voice-to-voice is measured from the frame holding the end of speech: the client sent
    # it before the server got it, and got the answer after the server sent it.
    assert report["speech_end_frame"] == SPEECH_END_FRAME
    assert report["speech_end_source"] == "--speech-end"
    assert record.answer_sent_ns is not None
    server_side_ms = (record.answer_sent_ns - record.recv_ns[SPEECH_END_FRAME]) / 1e6
    assert report["voice_to_voice_ms"] >= server_side_ms > 0
    # The answer as sent, the server's breakdown, and a proper hang-up.
    assert read_wav(out).samples.tolist() == Script().answer.tolist()
    assert read_wav(out).sample_rate == RATE
    assert report["answer_wav"] == str(out)
    assert report["transcript"] == "hello"
    assert report["answer_text"] == "Hi!"
    assert report["server_latency_ms"] == LATENCY.to_dict()
    assert report["speculative"] is True
    assert [e["type"] for e in report["events"]][:2] == ["session.started", "speech.started"]
    assert report["events"][-1]["type"] == "response.done"
    assert record.session_end
    assert record.disconnect_code == 1000


def test_other_formats_and_detected_speech_end(
    serve: Any, utterance: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = serve(Script(answer_at_frame=SPEECH_END_FRAME + 2, close_on_session_end=True))
    out = tmp_path / "answer.wav"
    code, report, err = run_talk(
        capsys, str(utterance), "--url", served.url, "--out", str(out),
        "--encoding", "mulaw", "--input-rate", "8000", "--frame-ms", "30",
    )  # fmt: skip
    assert code == 0, err
    record = served.record
    mulaw_8k = AudioFormat(Encoding.MULAW, 8000)
    assert record.start == SessionStart(mulaw_8k, mulaw_8k, None, None)
    # 30 ms of mu-law at 8 kHz is 240 bytes; the file is resampled client side.
    assert {len(f) for f in record.frames} == {240}
    file_frames = -(-int(DURATION_S * 8000) // 240)
    assert report["file_frames"] == file_frames
    resampled = talk_audio.resample(read_wav(utterance).samples, RATE, 8000)
    padded = np.zeros(file_frames * 240, dtype=np.int16)
    padded[: len(resampled)] = resampled
    assert b"".join(record.frames[:file_frames]) == codec.mulaw_encode(padded)
    # The energy detector finds the end of the tone; 0.8 s at 8 kHz is in frame 26.
    assert report["speech_end_source"] == "detected"
    assert report["speech_end_s"] == pytest.approx(SPEECH_END_S, abs=0.01)
    assert report["speech_end_frame"] == (6400 - 1) // 240
    # The answer came as mu-law at 8 kHz and is saved as its decoded samples.
    expected = codec.mulaw_decode(
        codec.mulaw_encode(talk_audio.resample(Script().answer, RATE, 8000))
    )
    saved = read_wav(out)
    assert saved.sample_rate == 8000
    assert saved.samples.tolist() == expected.tolist()
    # The server closed normally after session.end.
    assert report["close_code"] == 1000


def test_degraded_output_is_saved_at_the_negotiated_rate(
    serve: Any, utterance: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = serve(Script(degrade=True))
    out = tmp_path / "answer.wav"
    code, report, err = run_talk(
        capsys, str(utterance), "--url", served.url, "--out", str(out), "--fallback", "mulaw:8000"
    )
    assert code == 0, err
    assert report["degraded_to"] == {"encoding": "mulaw", "sample_rate": 8000}
    assert [e["type"] for e in report["events"]].count("output.degraded") == 1
    # 4800 samples at 16 kHz went out as 2400 mu-law bytes at 8 kHz, and come back at 16 kHz.
    assert report["answer_audio_bytes"] == 2400
    saved = read_wav(out)
    assert saved.sample_rate == RATE
    assert len(saved.samples) == 4800


@pytest.mark.parametrize(
    "case",
    [
        (
            Script(internal_error_at_frame=5),
            talk.ExitCode.SERVER_ERROR,
            "server error internal_error: the STT worker stopped",
        ),
        (Script(close_at_frame=(5, 1011)), talk.ExitCode.CLOSED, "code 1011"),
        (Script(close_at_frame=(5, 1000)), talk.ExitCode.CLOSED, "code 1000"),
        (Script(at_capacity=True), talk.ExitCode.SERVER_ERROR, "at_capacity"),
        (
            Script(raw_text_at_frame={3: '{"type": "speech.started", "turn": "one"}'}),
            talk.ExitCode.SERVER_ERROR,
            "the server sent a malformed event: speech.started.turn must be an integer",
        ),
    ],
)
def test_server_failures(
    serve: Any,
    utterance: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: tuple[Script, talk.ExitCode, str],
) -> None:
    script, exit_code, needle = case
    served = serve(script)
    code, report, err = run_talk(
        capsys, str(utterance), "--url", served.url, "--out", str(tmp_path / "a.wav")
    )
    assert code == exit_code
    assert needle in report["message"]
    assert needle in err
    # It stopped streaming: the server saw no frame after the failure.
    if script.internal_error_at_frame is not None:
        assert len(served.record.frames) == script.internal_error_at_frame + 1


def test_unknown_events_are_skipped(
    serve: Any, utterance: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = serve(Script(raw_text_at_frame={3: '{"type": "server.news", "turn": 1, "x": [1]}'}))
    code, report, err = run_talk(
        capsys, str(utterance), "--url", served.url, "--out", str(tmp_path / "a.wav")
    )
    assert code == 0, err
    assert {"type": "server.news", "turn": 1, "x": [1]}.items() <= report["events"][1].items()


def test_timeout_still_hangs_up(
    serve: Any, utterance: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = serve(Script(answer_at_frame=None))
    code = cli.main(
        ["talk", str(utterance), "--url", served.url, "--out", str(tmp_path / "a.wav"),
         "--json", "--pace", "10", "--timeout", "0.2"]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == talk.ExitCode.TIMEOUT
    assert "no response.done within 0.2 s" in report["message"]
    # Silence kept flowing while it waited, then session.end and close 1000.
    assert len(served.record.frames) > FILE_FRAMES
    assert served.record.session_end
    assert served.record.disconnect_code == 1000
    assert report["voice_to_voice_ms"] is None


def test_connection_failures(utterance: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = run_talk(capsys, str(utterance), "--url", f"ws://127.0.0.1:{port}/v1/stream")
    assert code == talk.ExitCode.CONNECT
    assert f"cannot connect to ws://127.0.0.1:{port}/v1/stream" in err
    code, _, err = run_talk(capsys, str(utterance), "--url", "http://x")
    assert code == talk.ExitCode.CONNECT


def test_handshake_refused(serve: Any, utterance: Path, capsys: pytest.CaptureFixture[str]) -> None:
    served = serve(Script())
    code, report, _ = run_talk(capsys, str(utterance), "--url", served.url + "/nope")
    assert code == talk.ExitCode.CONNECT
    assert "cannot connect" in report["message"]


def test_bad_input_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = run_talk(capsys, str(tmp_path / "missing.wav"))
    assert code == report["exit_code"] == talk.ExitCode.BAD_INPUT
    assert "missing.wav: no such file" in err
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(6400))
    code, _, err = run_talk(capsys, str(stereo))
    assert code == talk.ExitCode.BAD_INPUT
    assert "expected mono, got 2 channels" in err
    silent = tmp_path / "silent.wav"
    write_wav(silent, np.zeros(1600, dtype=np.int16), 16000)
    code, _, err = run_talk(capsys, str(silent))
    assert code == talk.ExitCode.BAD_INPUT
    assert "no speech found; pass --speech-end" in err
    code, _, err = run_talk(capsys, str(silent), "--speech-end", "0.5")
    assert code == talk.ExitCode.BAD_INPUT
    assert "speech end 0.5 s (--speech-end) is outside" in err


def test_bad_options(utterance: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["talk", str(utterance), "--frame-ms", "15"]) == talk.ExitCode.BAD_INPUT
    assert "--frame-ms must be a positive multiple of 10" in capsys.readouterr().err
    assert cli.main(["talk", str(utterance), "--fallback", "opus:8000"]) == talk.ExitCode.BAD_INPUT
    assert "--fallback must be ENCODING:RATE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["talk", str(utterance), "--input-rate", "44100"])
    assert info.value.code == talk.ExitCode.USAGE


def test_human_output(
    serve: Any, utterance: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = serve(Script())
    code = cli.main(
        ["talk", str(utterance), "--url", served.url, "--out", str(tmp_path / "a.wav"),
         "--pace", "10"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert any("session.started" in line and '"fake-1"' in line for line in lines)
    assert any("transcript.final" in line and '"hello"' in line for line in lines)
    assert "transcript:      hello" in lines
    assert "answer:          Hi!" in lines
    assert any(
        line.startswith("voice-to-voice:  ") and " ms at the client" in line for line in lines
    )
    assert any(
        line.startswith("server latency:  voice_to_voice 276.5 ms = end_of_turn_silence 250.0")
        for line in lines
    )


# Speech end, without a server.


def test_detect_speech_end_on_synthetic_signals() -> None:
    rng = np.random.default_rng(7)
    samples = np.zeros(16000, dtype=np.int16)
    samples[3200:9600] = (rng.standard_normal(6400) * 3000).astype(np.int16)
    assert talk_audio.detect_speech_end(Wav(samples, 16000)) == 0.6
    # Over a noise floor, speech must stand 6 dB above it.
    noisy = samples + (rng.standard_normal(16000) * 30).astype(np.int16)
    assert talk_audio.detect_speech_end(Wav(noisy, 16000)) == 0.6
    with pytest.raises(ValueError, match="no speech found"):
        talk_audio.detect_speech_end(Wav(np.zeros(800, dtype=np.int16), 8000))


def test_demo_utterance_speech_end() -> None:
    wav = read_wav(talk.DEMO_WAV)
    manifest = json.loads((talk.DEMO_WAV.parent / "manifest.json").read_text())
    expected = manifest["utterances"][0]["speech_end_s"]
    assert talk_audio.speech_end_from_manifest(talk.DEMO_WAV) == expected
    assert talk_audio.detect_speech_end(wav) == pytest.approx(expected, abs=0.01)


def test_manifest_lookup(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    assert talk_audio.speech_end_from_manifest(wav) is None
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"utterances": [{"file": "b.wav", "speech_end_s": 1.0}]}))
    assert talk_audio.speech_end_from_manifest(wav) is None
    manifest.write_text(json.dumps({"utterances": [{"file": "a.wav", "speech_end_s": 1.25}]}))
    assert talk_audio.speech_end_from_manifest(wav) == 1.25
    manifest.write_text(json.dumps({"utterances": [{"file": "a.wav", "speech_end_s": "x"}]}))
    with pytest.raises(ValueError, match=r"utterances\[0\]\.speech_end_s"):
        talk_audio.speech_end_from_manifest(wav)
    manifest.write_text("{")
    with pytest.raises(ValueError, match=r"manifest\.json: cannot read"):
        talk_audio.speech_end_from_manifest(wav)


@pytest.mark.parametrize(
    ("end_s", "rate", "per_frame", "frame"),
    [(0.0, 16000, 320, 0), (0.02, 16000, 320, 0), (0.0201, 16000, 320, 1), (0.8, 8000, 240, 26)],
)
def test_speech_end_frame(end_s: float, rate: int, per_frame: int, frame: int) -> None:
    assert talk_audio.speech_end_frame(end_s, rate, per_frame) == frame


# Pacing, with a fake clock.


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacer_sends_each_frame_on_its_deadline() -> None:
    clock = FakeClock()
    pacer = talk_audio.FramePacer(0.02, clock=clock, sleep=clock.sleep)
    sent_at = []

    async def stream() -> None:
        for i in range(50):
            await pacer.wait(i)
            sent_at.append(clock.now)
            clock.now += 0.003  # sending takes time; it must not add up

    asyncio.run(stream())
    assert sent_at == pytest.approx([100.0 + 0.02 * i for i in range(50)], abs=1e-9)


def test_pacer_catches_up_after_a_stall() -> None:
    clock = FakeClock()
    pacer = talk_audio.FramePacer(0.02, clock=clock, sleep=clock.sleep)
    sent_at = []

    async def stream() -> None:
        for i in range(10):
            await pacer.wait(i)
            sent_at.append(clock.now)
            if i == 2:
                clock.now += 0.1  # a 100 ms stall: frames 3..6 are overdue

    asyncio.run(stream())
    assert sent_at == pytest.approx(
        [100.0, 100.02, 100.04, 100.14, 100.14, 100.14, 100.14, 100.14, 100.16, 100.18]
    )
