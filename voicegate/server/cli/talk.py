"""`voicegate talk`: stream a WAV file to ``/v1/stream`` like a microphone would.

The file goes out in real time, one frame every `frame_ms`, followed by silence until
the answer is complete, since a real microphone keeps streaming after the caller stops
talking. The client prints the server's events, saves the answer audio and measures
voice-to-voice latency its own way: the arrival of the first answer audio minus the
moment it sent the frame that holds the end of speech.

With ``--text "..."`` the turn is typed instead (a ``text.input`` message right after
``session.started``, while silence streams as from an open microphone); the latency is
then from sending the text to the first answer audio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import math
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from voicegate.core import codec
from voicegate.core.codec import FRAME_UNIT_MS, SUPPORTED_SAMPLE_RATES, AudioFormat, Encoding
from voicegate.core.wav import Wav, WavError, read_wav, write_wav
from voicegate.server.cli.talk_audio import (
    AnswerAudio,
    FramePacer,
    detect_speech_end,
    resample,
    speech_end_frame,
    speech_end_from_manifest,
    split_frames,
)
from voicegate.server.protocols.native_events import (
    ErrorEvent,
    EventFormatError,
    OutputDegraded,
    ResponseDone,
    ResponseTextDelta,
    ServerEvent,
    SessionStarted,
    TranscriptFinal,
    UnknownEvent,
    parse_server_event,
)
from voicegate.server.protocols.native_wire import STREAM_PATH, SessionEnd, SessionStart

DEFAULT_URL: Final[str] = f"ws://127.0.0.1:8000{STREAM_PATH}"
DEMO_WAV: Final[Path] = (
    Path(__file__).resolve().parents[2] / "data" / "demo" / "order_status.wav"
)


SEND_MARGIN_S: Final[float] = 10.0


class ExitCode(enum.IntEnum):
    OK = 0
    BAD_INPUT = 1  # the WAV file, its manifest or an option
    USAGE = 2  # argparse's own code
    CONNECT = 3  # cannot connect, or the handshake was refused
    SERVER_ERROR = 4  # the server sent an error event or a malformed message
    CLOSED = 5  # the server closed the connection before the answer was complete
    TIMEOUT = 6  # no response.done within --timeout after the file was sent


class TalkError(Exception):
    def __init__(self, exit_code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


@dataclass(frozen=True)
class TalkOptions:
    wav_path: Path
    url: str = DEFAULT_URL
    out: Path | None = Path("answer.wav")
    speech_end_s: float | None = None  # None: from a manifest.json next to the file, or detected
    input: AudioFormat = codec.PCM16_16K
    output: AudioFormat = codec.PCM16_16K
    fallback: AudioFormat | None = None
    instructions: str | None = None
    frame_ms: int = 20
    pace: float = 1.0  # > 1 streams faster than real time; for tests only
    timeout_s: float = 10.0
    text: str | None = None  # a typed turn instead of the file
    # Sent as "Authorization: Bearer KEY" (an API key or a session token); never printed.
    api_key: str | None = field(default=None, repr=False)
    cafile: Path | None = None  # CA bundle that signs a wss:// node's certificate

    def __post_init__(self) -> None:
        if self.text is not None and not self.text.strip():
            raise TalkError(ExitCode.BAD_INPUT, "--text must not be empty")
        if self.frame_ms <= 0 or self.frame_ms % FRAME_UNIT_MS:
            raise TalkError(
                ExitCode.BAD_INPUT,
                f"--frame-ms must be a positive multiple of {FRAME_UNIT_MS}, got {self.frame_ms}",
            )
        if not (math.isfinite(self.pace) and self.pace > 0):
            raise TalkError(ExitCode.BAD_INPUT, f"--pace must be > 0, got {self.pace}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise TalkError(ExitCode.BAD_INPUT, f"--timeout must be > 0, got {self.timeout_s}")


def resolve_speech_end(options: TalkOptions, wav: Wav) -> tuple[float, str]:
    """The end of speech in seconds and where it came from."""
    if options.speech_end_s is not None:
        end, source = options.speech_end_s, "--speech-end"
    else:
        try:
            from_manifest = speech_end_from_manifest(options.wav_path)
        except ValueError as exc:
            raise TalkError(ExitCode.BAD_INPUT, str(exc)) from None
        if from_manifest is not None:
            end, source = from_manifest, "manifest"
        else:
            try:
                end, source = detect_speech_end(wav), "detected"
            except ValueError as exc:
                raise TalkError(
                    ExitCode.BAD_INPUT, f"{options.wav_path}: {exc}; pass --speech-end"
                ) from None
    if not (math.isfinite(end) and 0 <= end <= wav.duration_s):
        raise TalkError(
            ExitCode.BAD_INPUT,
            f"speech end {end} s ({source}) is outside {options.wav_path} "
            f"(0 to {wav.duration_s:.3f} s)",
        )
    return end, source


@dataclass
class TalkReport:
    options: TalkOptions
    exit_code: ExitCode = ExitCode.OK
    message: str = ""
    session: str | None = None
    speech_end_s: float = 0.0
    speech_end_source: str = ""
    frame_bytes: int = 0
    file_frames: int = 0
    frames_sent: int = 0
    speech_end_frame: int = 0
    speech_end_sent_ns: int | None = None
    first_audio_ns: int | None = None
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    transcript: str | None = None
    answer_text: str = ""
    response_done: ResponseDone | None = None
    degraded_to: AudioFormat | None = None
    answer_samples: int = 0
    answer_messages: int = 0
    answer_bytes: int = 0
    close_code: int | None = None
    close_reason: str | None = None
    saved_to: Path | None = None

    @property
    def voice_to_voice_ms(self) -> float | None:
        if self.first_audio_ns is None or self.speech_end_sent_ns is None:
            return None
        return (self.first_audio_ns - self.speech_end_sent_ns) / 1e6

    def to_dict(self) -> dict[str, Any]:
        o = self.options
        done = self.response_done
        return {
            "exit_code": int(self.exit_code),
            "message": self.message,
            "url": o.url,
            "file": str(o.wav_path),
            "session": self.session,
            "input": o.input.to_dict(),
            "output": o.output.to_dict(),
            "fallback": None if o.fallback is None else o.fallback.to_dict(),
            "degraded_to": None if self.degraded_to is None else self.degraded_to.to_dict(),
            "frame_ms": o.frame_ms,
            "frame_bytes": self.frame_bytes,
            "pace": o.pace,
            "file_frames": self.file_frames,
            "frames_sent": self.frames_sent,
            "speech_end_s": self.speech_end_s,
            "speech_end_source": self.speech_end_source,
            "speech_end_frame": self.speech_end_frame,
            "voice_to_voice_ms": self.voice_to_voice_ms,
            "server_latency_ms": None if done is None else done.latency_ms.to_dict(),
            "speculative": None if done is None else done.speculative,
            "transcript": self.transcript,
            "answer_text": self.answer_text,
            "answer_audio_messages": self.answer_messages,
            "answer_audio_bytes": self.answer_bytes,
            "answer_audio_s": self.answer_samples / o.output.sample_rate,
            "answer_wav": None if self.saved_to is None else str(self.saved_to),
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "events": [{"t_ms": round(t, 3), **event} for t, event in self.events],
        }


EventCallback = Callable[[float, ServerEvent | UnknownEvent], None]


class _Session:
    """One run of the client over an open connection."""

    def __init__(
        self,
        ws: ClientConnection,
        options: TalkOptions,
        report: TalkReport,
        frames: list[bytes],
        on_event: EventCallback | None,
    ) -> None:
        self.ws = ws
        self.options = options
        self.report = report
        self.frames = frames
        self.on_event = on_event
        self.answer = AnswerAudio(options.output)
        self.finished = asyncio.Event()  # the answer is complete, or the session failed
        self.failed = asyncio.Event()  # the session failed: stop streaming at once
        self.file_done = asyncio.Event()  # the sender has sent the whole file, or stopped
        self.outcome: TalkError | None = None
        self.t0 = time.monotonic_ns()

    def _finish(self, outcome: TalkError | None) -> None:
        if not self.finished.is_set():
            self.outcome = outcome
            self.finished.set()
            if outcome is not None:
                self.failed.set()

    def _streaming(self, index: int) -> bool:
        # The whole file always goes out, then silence until the answer is complete.
        if self.failed.is_set():
            return False
        return index < len(self.frames) or not self.finished.is_set()

    def _record(self, now_ns: int, event: ServerEvent | UnknownEvent) -> None:
        t_ms = (now_ns - self.t0) / 1e6
        payload = event.payload if isinstance(event, UnknownEvent) else event.to_dict()
        self.report.events.append((t_ms, payload))
        if self.on_event is not None:
            self.on_event(t_ms, event)

    def _parse(self, text: str) -> ServerEvent | UnknownEvent:
        try:
            return parse_server_event(text)
        except EventFormatError as exc:
            raise TalkError(
                ExitCode.SERVER_ERROR, f"the server sent a malformed event: {exc}"
            ) from None

    async def start(self) -> None:
        start = SessionStart(
            self.options.input,
            self.options.output,
            self.options.fallback,
            self.options.instructions,
        )
        # If the server refuses at once (at capacity), its error event is still waiting
        # to be read even though sending fails.
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(start.to_json())
        try:
            async with asyncio.timeout(self.options.timeout_s):
                message = await self.ws.recv()
        except TimeoutError:
            raise TalkError(
                ExitCode.TIMEOUT, f"no session.started within {self.options.timeout_s} s"
            ) from None
        except ConnectionClosed:
            raise self._closed_error("before session.started") from None
        now = time.monotonic_ns()
        if isinstance(message, bytes):
            raise TalkError(ExitCode.SERVER_ERROR, "the server sent audio before session.started")
        event = self._parse(message)
        self._record(now, event)
        if isinstance(event, ErrorEvent):
            raise TalkError(ExitCode.SERVER_ERROR, f"server error {event.code}: {event.message}")
        if not isinstance(event, SessionStarted):
            raise TalkError(ExitCode.SERVER_ERROR, f"expected session.started, got {event.type}")
        self.report.session = event.session
        if self.options.text is not None:
            self.report.speech_end_sent_ns = time.monotonic_ns()
            await self.ws.send(json.dumps({"type": "text.input", "text": self.options.text}))

    async def send_audio(self) -> None:
        report = self.report
        silence = codec.silence(self.options.input, self.options.frame_ms)
        pacer = FramePacer(self.options.frame_ms / 1000.0 / self.options.pace)
        index = 0
        if not self.frames:  # a typed turn: only the open microphone's silence
            self.file_done.set()
        while self._streaming(index):
            await pacer.wait(index)
            if not self._streaming(index):
                break
            payload = self.frames[index] if index < len(self.frames) else silence
            if index == report.speech_end_frame and self.options.text is None:
                # Set before sending: the answer may arrive while the send is in progress.
                report.speech_end_sent_ns = time.monotonic_ns()
            await self.ws.send(payload)
            index += 1
            report.frames_sent = index
            if index == len(self.frames):
                self.file_done.set()

    async def receive(self) -> None:
        try:
            async for message in self.ws:
                self._on_message(message, time.monotonic_ns())
        except ConnectionClosed:
            pass  # any close code: reported below
        self._finish(self._closed_error("before the answer was complete"))

    def _closed_error(self, when: str) -> TalkError:
        code, reason = self.ws.close_code, self.ws.close_reason
        return TalkError(
            ExitCode.CLOSED,
            f"the server closed the connection with code {code}"
            + (f" ({reason})" if reason else "")
            + f" {when}",
        )

    def _on_message(self, message: str | bytes, now: int) -> None:
        report = self.report
        if isinstance(message, bytes):
            if report.first_audio_ns is None and report.speech_end_sent_ns is not None:
                report.first_audio_ns = now
            self.answer.add(message)
            return
        event = self._parse(message)
        self._record(now, event)
        if isinstance(event, ErrorEvent):
            self._finish(
                TalkError(ExitCode.SERVER_ERROR, f"server error {event.code}: {event.message}")
            )
        elif isinstance(event, OutputDegraded):
            report.degraded_to = event.format
            self.answer.switch(event.format)
        elif isinstance(event, TranscriptFinal):
            report.transcript = event.text
        elif isinstance(event, ResponseTextDelta):
            report.answer_text += event.delta
        elif isinstance(event, ResponseDone) and report.speech_end_sent_ns is not None:
            report.response_done = event
            report.answer_text = event.text
            self._finish(None)

    async def run(self) -> None:
        """Stream until the answer is done, the server fails, or the timeout runs out."""
        await self.start()
        tasks = [
            asyncio.create_task(self._guard(self.send_audio()), name="talk-send"),
            asyncio.create_task(self._guard(self.receive()), name="talk-receive"),
        ]
        # A server that stops reading would block the sender forever: the file must be
        # gone by the time it takes to play plus the timeout, with a margin for a loaded
        # client machine.
        interval_s = self.options.frame_ms / 1000.0 / self.options.pace
        deadline = asyncio.get_running_loop().time() + len(self.frames) * interval_s
        deadline += self.options.timeout_s + SEND_MARGIN_S
        try:
            await self._until(deadline, self.file_done)
            if not self.finished.is_set():
                try:
                    async with asyncio.timeout(self.options.timeout_s):
                        await self.finished.wait()
                except TimeoutError:
                    self._finish(
                        TalkError(
                            ExitCode.TIMEOUT,
                            f"no response.done within {self.options.timeout_s} s "
                            "after the file was sent",
                        )
                    )
            # An answer that completed early: the rest of the file still goes out.
            await self._until(deadline, self.file_done)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.report.answer_messages = self.answer.messages
            self.report.answer_bytes = self.answer.nbytes
        if self.outcome is not None:
            raise self.outcome

    async def _until(self, deadline: float, event: asyncio.Event) -> None:
        """Wait for `event` or a failure, at most until `deadline` (loop time)."""
        try:
            async with asyncio.timeout_at(deadline):
                await _first_of(event, self.failed)
        except TimeoutError:
            self._finish(
                TalkError(
                    ExitCode.TIMEOUT,
                    "the server stopped taking audio: the file was not sent in time",
                )
            )

    async def _guard(self, work: Awaitable[None]) -> None:
        try:
            await work
        except TalkError as exc:
            self._finish(exc)
        except ConnectionClosed:
            # A failed send means the server closed: the receiver reports how and why,
            # after it has read any error event that came before the close.
            pass
        finally:
            self.file_done.set()

    def save(self) -> None:
        samples = self.answer.samples()
        self.report.answer_samples = len(samples)
        if self.options.out is not None and len(samples):
            try:
                write_wav(self.options.out, samples, self.options.output.sample_rate)
            except WavError as exc:
                raise TalkError(ExitCode.BAD_INPUT, str(exc)) from None
            self.report.saved_to = self.options.out

    async def hang_up(self) -> None:
        """session.end, then the close handshake with 1000."""
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(self.options.timeout_s):
                await self.ws.send(SessionEnd().to_json())
        await self.ws.close(1000, "session ended")
        self.report.close_code = self.ws.close_code
        self.report.close_reason = self.ws.close_reason


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def prepare_frames(options: TalkOptions, report: TalkReport) -> list[bytes]:
    """The file as wire frames in the input format; fills in the report's speech end.
    A typed turn has no file: no frames."""
    if options.text is not None:
        report.speech_end_source = "text.input"
        report.frame_bytes = options.input.frame_bytes(options.frame_ms)
        return []
    try:
        wav = read_wav(options.wav_path)
    except WavError as exc:
        raise TalkError(ExitCode.BAD_INPUT, str(exc)) from None
    report.speech_end_s, report.speech_end_source = resolve_speech_end(options, wav)
    samples = resample(wav.samples, wav.sample_rate, options.input.sample_rate)
    frames = split_frames(samples, options.input, options.frame_ms)
    per_frame = options.input.samples_per_frame(options.frame_ms)
    report.frame_bytes = options.input.frame_bytes(options.frame_ms)
    report.file_frames = len(frames)
    report.speech_end_frame = min(
        speech_end_frame(report.speech_end_s, options.input.sample_rate, per_frame),
        len(frames) - 1,
    )
    return frames


async def talk(options: TalkOptions, on_event: EventCallback | None = None) -> TalkReport:
    """Stream the file, wait for the answer, hang up. Failures are in the report."""
    report = TalkReport(options)
    try:
        frames = prepare_frames(options, report)
        try:
            ws = await connect(
                options.url,
                open_timeout=options.timeout_s,
                close_timeout=min(options.timeout_s, 5.0),
                compression=None,  # audio does not deflate; it would only cost CPU
                max_size=None,
                **_security_kwargs(options),
            )
        except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
            raise TalkError(
                ExitCode.CONNECT, f"cannot connect to {options.url}: {exc or type(exc).__name__}"
            ) from None
        session = _Session(ws, options, report, frames, on_event)
        failure: TalkError | None = None
        try:
            await session.run()
        except TalkError as exc:
            failure = exc
        except ConnectionClosed as exc:
            failure = TalkError(ExitCode.CLOSED, f"the connection was closed: {exc}")
        finally:
            # Hang up properly on success and on timeout alike; after a close by the
            # server this only completes the close handshake.
            await session.hang_up()
        try:
            session.save()
        except TalkError as exc:
            failure = failure or exc
        if failure is not None:
            raise failure
    except TalkError as exc:
        report.exit_code = exc.exit_code
        report.message = exc.message
    return report


def _security_kwargs(options: TalkOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if options.api_key:
        kwargs["additional_headers"] = {"Authorization": f"Bearer {options.api_key}"}
    if options.cafile is not None and options.url.startswith("wss:"):
        kwargs["ssl"] = ssl.create_default_context(cafile=str(options.cafile))
    return kwargs


def _parse_format(text: str, flag: str) -> AudioFormat:
    encoding_name, _, rate_text = text.partition(":")
    try:
        return AudioFormat(Encoding(encoding_name), int(rate_text))
    except ValueError:
        raise TalkError(
            ExitCode.BAD_INPUT,
            f"{flag} must be ENCODING:RATE with ENCODING pcm16, mulaw or alaw and RATE one of "
            f"{', '.join(map(str, SUPPORTED_SAMPLE_RATES))}, got {text!r}",
        ) from None


def options_from_args(args: argparse.Namespace) -> TalkOptions:
    input_format = AudioFormat(Encoding(args.encoding), args.input_rate)
    output_format = AudioFormat(
        Encoding(args.output_encoding or args.encoding), args.output_rate or args.input_rate
    )
    fallback: AudioFormat | None
    if args.fallback == "none":
        fallback = None
    elif args.fallback == "auto":
        cheap = AudioFormat(Encoding.MULAW, 8000)
        fallback = cheap if cheap.bytes_per_second < output_format.bytes_per_second else None
    else:
        fallback = _parse_format(args.fallback, "--fallback")
    if args.text is not None and args.file is not None:
        raise TalkError(ExitCode.BAD_INPUT, "give a WAV file or --text, not both")
    return TalkOptions(
        wav_path=Path(args.file or DEMO_WAV),
        text=args.text,
        url=args.url,
        out=None if args.out == "" else Path(args.out),
        speech_end_s=args.speech_end,
        input=input_format,
        output=output_format,
        fallback=fallback,
        instructions=args.instructions,
        frame_ms=args.frame_ms,
        pace=args.pace,
        timeout_s=args.timeout,
        api_key=args.key or os.environ.get("VOICEGATE_API_KEY") or None,
        cafile=args.cafile,
    )


def _describe(event: ServerEvent | UnknownEvent) -> str:
    if isinstance(event, UnknownEvent):
        return f"{event.type} (unknown to this client)"
    fields = {k: v for k, v in event.to_dict().items() if k != "type"}
    if isinstance(event, ResponseDone):
        fields = {"turn": event.turn, "audio_ms": event.audio_ms, "speculative": event.speculative}
    return f"{event.type:<24} " + " ".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in fields.items()
    )


def _print_event(out: TextIO) -> EventCallback:
    def on_event(t_ms: float, event: ServerEvent | UnknownEvent) -> None:
        print(f"{t_ms / 1000:9.3f}s  {_describe(event)}", file=out, flush=True)

    return on_event


def _print_summary(report: TalkReport, out: TextIO) -> None:
    o = report.options
    print(file=out)
    if o.text is not None:
        print(f"text:            {o.text}", file=out)
    else:
        heard = report.transcript if report.transcript is not None else "-"
        print(f"transcript:      {heard}", file=out)
    print(f"answer:          {report.answer_text or '-'}", file=out)
    v2v = report.voice_to_voice_ms
    pace = "" if o.pace == 1.0 else f", streamed at {o.pace:g}x real time"
    if o.text is not None:
        print("text-to-voice:   " + ("-" if v2v is None else f"{v2v:.1f} ms")
              + " at the client (text.input sent to first answer audio)", file=out)  # fmt: skip
    else:
        print(
            "voice-to-voice:  "
            + ("-" if v2v is None else f"{v2v:.1f} ms")
            + f" at the client (speech end {report.speech_end_s:.3f} s "
            f"[{report.speech_end_source}], frame {report.speech_end_frame}{pace})",
            file=out,
        )
    if report.response_done is not None:
        lat = report.response_done.latency_ms.to_dict()
        after = ", ".join(
            f"{k} {lat[k]:.1f}"
            for k in ("vad", "stt", "llm_first_token", "tts_first_audio", "gateway")
        )
        print(
            f"server latency:  voice_to_voice {lat['voice_to_voice']:.1f} ms = "
            f"end_of_turn_silence {lat['end_of_turn_silence']:.1f} + after_end_of_turn "
            f"{lat['after_end_of_turn']:.1f} ({after})",
            file=out,
        )
    seconds = report.answer_samples / o.output.sample_rate
    where = str(report.saved_to) if report.saved_to is not None else "not saved"
    degraded = "" if report.degraded_to is None else ", degraded mid-answer"
    print(
        f"answer audio:    {where} ({seconds:.2f} s, {o.output.encoding.value} "
        f"{o.output.sample_rate} Hz{degraded})",
        file=out,
    )


def run(args: argparse.Namespace) -> int:
    """The `talk` subcommand."""
    try:
        options = options_from_args(args)
    except TalkError as exc:
        print(f"voicegate talk: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    on_event = None if args.json else _print_event(sys.stdout)
    report = asyncio.run(talk(options, on_event))
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=1))
    elif report.session is not None:
        _print_summary(report, sys.stdout)
    if report.exit_code is not ExitCode.OK:
        print(f"voicegate talk: {report.message}", file=sys.stderr)
    return int(report.exit_code)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "talk",
        help="stream a WAV file to a gateway and save the spoken answer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "exit codes: 0 ok, 1 bad input file or option, 2 usage, 3 cannot connect, "
            "4 server error event, 5 connection closed before the answer was complete, "
            "6 timeout"
        ),
    )
    parser.add_argument(
        "file",
        nargs="?",
        help="16-bit PCM mono WAV (default: the demo utterance shipped with voicegate)",
    )
    parser.add_argument(
        "--text", help="type the turn instead: sent as text.input (no WAV file then)"
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"default: {DEFAULT_URL}")
    parser.add_argument(
        "--out",
        default="answer.wav",
        help="where to save the answer audio (16-bit PCM at the output rate); '' to skip",
    )
    parser.add_argument(
        "--speech-end",
        type=float,
        metavar="SECONDS",
        help="exact end of speech in the file (default: speech_end_s from a manifest.json "
        "beside the file, else the end of the last 10 ms window at least 6 dB above the "
        "noise floor and above -50 dBFS)",
    )
    parser.add_argument(
        "--encoding",
        choices=[e.value for e in Encoding],
        default="pcm16",
        help="input encoding (and output encoding unless --output-encoding)",
    )
    parser.add_argument(
        "--input-rate",
        type=int,
        choices=SUPPORTED_SAMPLE_RATES,
        default=16000,
        help="the file is resampled to this rate before sending",
    )
    parser.add_argument("--output-encoding", choices=[e.value for e in Encoding])
    parser.add_argument("--output-rate", type=int, choices=SUPPORTED_SAMPLE_RATES)
    parser.add_argument(
        "--fallback",
        default="auto",
        metavar="ENCODING:RATE|auto|none",
        help="cheaper output format accepted if this client is too slow (default auto: "
        "mulaw:8000 when that is cheaper than the output format)",
    )
    parser.add_argument("--instructions", help="session instructions for the assistant")
    parser.add_argument(
        "--key",
        help="API key or session token (default: $VOICEGATE_API_KEY; keep it off "
        "the command line on shared hosts)",
    )
    parser.add_argument("--cafile", type=Path, help="CA certificate of a wss:// node")
    parser.add_argument("--frame-ms", type=int, default=20, help="audio per message (default 20)")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON report on stdout instead of text"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        # A real model's answer streams at the pace it is spoken: a long one is still
        # arriving well after the file has been sent.
        help="wait this long for the answer after the file was sent (default 60)",
    )
    parser.add_argument(
        "--pace",
        type=float,
        default=1.0,
        help="speed-up over real time; for tests only: the server's end-of-turn silence "
        "and the latency figures only mean something at 1",
    )
    parser.set_defaults(handler=run)
