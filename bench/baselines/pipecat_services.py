"""Pipecat services around voicegate's engines: the same bundle, the same model code,
driven the way Pipecat drives local models.

``Engines`` loads each model once for the whole server through voicegate's own stage
classes (so any bundle voicegate serves, this serves); every session's pipeline gets its
own service objects on top of them:

- ``BundleSTTService`` is a ``SegmentedSTTService``: Pipecat buffers the caller's audio
  between its VAD's start and stop and hands over the whole segment, which is
  transcribed by the Whisper engine on a thread (``asyncio.to_thread``, as Pipecat's own
  local Whisper service does). No partials, no speculation: one call per segment.
- ``BundleLLMService`` is an ``LLMService`` that answers each final transcript with the
  conversation so far. Generations go to ``LlmServer``: one thread stepping the LLM
  engine for every session with a generation in flight (continuous batching), the way a
  Pipecat deployment calls a local inference server (llama.cpp, vLLM, Ollama).
- ``BundleTTSService`` is a ``TTSService``: Pipecat aggregates the answer text into
  sentences and calls ``run_tts`` per sentence; the Piper voice synthesizes it on a
  thread and Pipecat's resampler brings it to the session's rate.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TranscriptionFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings, STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.utils.time import time_now_iso8601

from voicegate.core.audio import float32_to_pcm16, pcm16_to_float32
from voicegate.core.config import NodeConfig, NodeSettings
from voicegate.models.llm import FinishReason, LlmEngine, LlmEvent, Sampling
from voicegate.models.llm import Message as ChatMessage
from voicegate.models.stt import WhisperModel
from voicegate.models.tts import PiperVoice
from voicegate.workers.stages.llm import LlmStage
from voicegate.workers.stages.stage import Stage, StageContext
from voicegate.workers.stages.stt import SttStage
from voicegate.workers.stages.tts import TtsStage
from voicegate.workers.stages.vad import VadStage

log = logging.getLogger("bench.baselines.pipecat")

_IDLE_WAIT_S = 0.05


@dataclass
class Engines:
    stt: WhisperModel
    llm: LlmServer
    voice: PiperVoice
    end_of_turn_s: float  # voicegate's end-of-turn silence, Pipecat's VAD stop_secs

    @classmethod
    def load(cls, bundle: Path) -> Engines:
        """The bundle's models, loaded as voicegate's workers load them (one thread per
        model call, as the baselines)."""
        config = NodeConfig(node=NodeSettings(bundle=bundle))

        def stage(name: str, kind: type[Stage[Any]], load: bool = True) -> Any:
            made = kind(StageContext(name, config, dict(config.workers[name].options), (0,), 1))
            if load:
                made.load()
            return made

        vad: VadStage = stage("vad", VadStage, load=False)
        stt: SttStage = stage("stt", SttStage)
        llm: LlmStage = stage("llm", LlmStage)
        tts: TtsStage = stage("tts", TtsStage)
        assert stt.model is not None and llm.engine is not None and llm.sampling is not None
        assert tts.engine is not None
        return cls(stt.model, LlmServer(llm.engine, llm.sampling), tts.engine.voice,
                   float(vad.end_of_turn_ms) / 1000.0)  # fmt: skip

    def close(self) -> None:
        self.llm.stop()


Deliver = Callable[[LlmEvent], None]


class LlmServer:
    """The LLM engine on its own thread: generations in, text deltas out (delivered on
    the thread; callers hop back to their loop)."""

    def __init__(self, engine: LlmEngine, sampling: Sampling) -> None:
        self.engine = engine
        self.sampling = sampling
        self._commands: queue.Queue[tuple[str, int, Any]] = queue.Queue()
        self._deliver: dict[int, Deliver] = {}
        self._thread = threading.Thread(target=self._run, name="llm-server", daemon=True)
        self._thread.start()

    def open(self, sid: int) -> None:
        self._commands.put(("open", sid, None))

    def close(self, sid: int) -> None:
        self._commands.put(("close", sid, None))

    def generate(self, sid: int, messages: list[ChatMessage], deliver: Deliver) -> None:
        self._commands.put(("start", sid, (messages, deliver)))

    def stop(self) -> None:
        self._commands.put(("stop", 0, None))
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        engine = self.engine
        while True:
            try:
                command = self._commands.get(timeout=None if not engine.running else 0.0)
            except queue.Empty:
                command = None
            while command is not None:
                if not self._apply(*command):
                    return
                try:
                    command = self._commands.get_nowait()
                except queue.Empty:
                    command = None
            if engine.running:
                try:
                    events = engine.step()
                except Exception:  # one bad step must not leave every caller waiting
                    log.exception("LLM step failed; the answers in flight end here")
                    events = []
                    for sid in list(self._deliver):
                        if sid in engine and engine.cancel(sid):
                            events.append(LlmEvent(sid, "", FinishReason.LENGTH, 0, 0, 0))
                for event in events:
                    deliver = self._deliver.get(event.sid)
                    if deliver is not None:
                        deliver(event)

    def _apply(self, what: str, sid: int, arg: Any) -> bool:
        engine = self.engine
        if what == "stop":
            return False
        if what == "open":
            engine.open_session(sid)
        elif what == "close":
            self._deliver.pop(sid, None)
            engine.close_session(sid)
        elif what == "start" and sid in engine:
            messages, deliver = arg
            self._deliver[sid] = deliver
            try:
                engine.start(sid, messages, self.sampling)
            except ValueError as exc:  # a prompt that cannot fit the context
                log.warning("session %d: %s", sid, exc)
                deliver(LlmEvent(sid, "", FinishReason.LENGTH, 0, 0, 0))
        return True


class BundleSTTService(SegmentedSTTService):
    def __init__(self, model: WhisperModel, **kwargs: Any) -> None:
        settings = STTSettings(model="voicegate-whisper", language=model.params.language)
        # ttfs_p99_latency only feeds turn-stop strategies, which this pipeline leaves out
        # (the VAD's stop ends the turn); Pipecat's own default, said explicitly.
        super().__init__(settings=settings, ttfs_p99_latency=1.0, **kwargs)
        self._model = model

    @property
    def wants_wav_segments(self) -> bool:
        return False  # the engine reads 16 kHz PCM, not a WAV file

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        samples = pcm16_to_float32(audio)
        tokens = await asyncio.to_thread(self._model.transcribe, [samples])
        text = self._model.text(tokens[0])
        yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), finalized=True)


class BundleLLMService(LLMService):
    """One session's LLM: each final transcript starts an answer on the LLM server; the
    conversation (instructions, then user and assistant turns) is kept here."""

    def __init__(self, server: LlmServer, sid: int, instructions: str | None,
                 **kwargs: Any) -> None:  # fmt: skip
        sampling = server.sampling
        settings = LLMSettings(
            model="voicegate-llm", system_instruction=instructions,
            temperature=sampling.temperature, max_tokens=sampling.max_tokens,
            top_p=sampling.top_p, top_k=None, frequency_penalty=None, presence_penalty=None,
            seed=sampling.seed, filter_incomplete_user_turns=False,
            user_turn_completion_config=None,
        )  # fmt: skip
        super().__init__(settings=settings, **kwargs)
        self._server = server
        self._sid = sid
        self._history: list[ChatMessage] = []
        if instructions:
            self._history.append(ChatMessage("system", instructions))
        server.open(sid)

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        self._server.close(self._sid)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            if frame.text.strip():
                await self._answer(frame.text)
            else:  # nothing understood: an empty answer closes the turn, as voicegate's
                await self.push_frame(LLMFullResponseStartFrame())
                await self.push_frame(LLMFullResponseEndFrame())

    async def _answer(self, text: str) -> None:
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[LlmEvent] = asyncio.Queue()
        messages = [*self._history, ChatMessage("user", text)]

        def deliver(event: LlmEvent) -> None:  # on the LLM server's thread
            loop.call_soon_threadsafe(deltas.put_nowait, event)

        self._server.generate(self._sid, messages, deliver)
        await self.push_frame(LLMFullResponseStartFrame())
        answer = ""
        while True:
            event = await deltas.get()
            if event.text:
                answer += event.text
                await self._push_llm_text(event.text)
            if event.finished is not None:
                break
        await self.push_frame(LLMFullResponseEndFrame())
        self._history += [ChatMessage("user", text), ChatMessage("assistant", answer)]


class BundleTTSService(TTSService):
    def __init__(self, voice: PiperVoice, **kwargs: Any) -> None:
        super().__init__(push_start_frame=True, push_stop_frames=True,
                         settings=TTSSettings(model="voicegate-piper", voice=None, language=None),
                         **kwargs)  # fmt: skip
        self._voice = voice

    def can_generate_metrics(self) -> bool:
        return False

    def _synthesize(self, text: str) -> bytes:
        ids = self._voice.text_ids(text)
        if len(ids) <= 2:  # nothing but the start and end ids: nothing to say
            return b""
        audio = self._voice.synthesize([ids])[0]
        return float32_to_pcm16(np.asarray(audio, dtype=np.float32)).tobytes()

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        try:
            pcm = await asyncio.to_thread(self._synthesize, text)
        except Exception as exc:  # reported in the pipeline, as Pipecat's services do
            yield ErrorFrame(error=f"TTS failed: {exc}")
            return

        async def one_piece() -> AsyncIterator[bytes]:
            if pcm:
                yield pcm

        async for frame in self._stream_audio_frames_from_iterator(
            one_piece(), in_sample_rate=self._voice.sample_rate, context_id=context_id
        ):
            yield frame
