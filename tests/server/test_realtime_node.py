"""/v1/realtime on a live node (the synthetic bundle, real sockets), driven by the official
``openai`` SDK exactly as an existing Realtime client is: ``AsyncOpenAI(base_url=...,
api_key=...).realtime.connect(model=...)``. One node, with API keys on, for the module."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from gateway_node import synthetic_node
from openai import AsyncOpenAI
from realtime_sdk import sdk_event

from voicegate.core.audio import float32_to_pcm16, pcm16_to_float32, resample
from voicegate.core.wav import read_wav
from voicegate.server.security.keys import create_key

REPO = Path(__file__).resolve().parents[2]
SPEECH = REPO.parent / "shared" / "speech"
CHUNK = 960  # 20 ms of 24 kHz PCM16


class RealtimeNode:
    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key

    def client(self, key: str | None = None) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=key or self.key)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealtimeNode]:
    tmp = tmp_path_factory.mktemp("realtime")
    keys_file = tmp / "keys.json"
    key, _ = create_key(keys_file, "realtime-tests")
    saved = os.environ.get("VOICEGATE_SECURITY_KEYS_FILE")
    os.environ["VOICEGATE_SECURITY_KEYS_FILE"] = str(keys_file)
    try:
        with synthetic_node(tmp, f"realtime{os.getpid() % 100000}") as (port, _):
            yield RealtimeNode(port, key)
    finally:
        if saved is None:
            os.environ.pop("VOICEGATE_SECURITY_KEYS_FILE", None)
        else:
            os.environ["VOICEGATE_SECURITY_KEYS_FILE"] = saved


def utterance_24k(index: int = 0, silence_after_s: float = 1.5) -> tuple[bytes, str]:
    """An utterance of ../shared/speech as 24 kHz PCM16 (the Realtime API's rate), with
    ``silence_after_s`` of silence after the speech, and its text."""
    item = json.loads((SPEECH / "manifest.json").read_text())["utterances"][index]
    wav = read_wav(SPEECH / item["file"])
    speech = wav.samples[int(item["speech_start_s"] * wav.sample_rate) :
                         int(item["speech_end_s"] * wav.sample_rate)]  # fmt: skip
    at_24k = float32_to_pcm16(resample(pcm16_to_float32(speech), wav.sample_rate, 24000))
    line = np.concatenate([np.zeros(4800, np.int16), at_24k,
                           np.zeros(int(24000 * silence_after_s), np.int16)])  # fmt: skip
    return line.astype("<i2").tobytes(), str(item["text"])


async def stream(conn: Any, audio: bytes, pace_s: float = 0.02) -> None:
    for i in range(0, len(audio), CHUNK):
        await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i : i + CHUNK]).decode())
        await asyncio.sleep(pace_s)


async def events_until(
    conn: Any, stop: str, seen: list[dict[str, Any]], timeout: float = 90
) -> None:
    async with asyncio.timeout(timeout):
        while True:
            raw = await conn.recv_bytes()
            event = json.loads(raw)
            sdk_event(event)  # every event the node sends is one the SDK's types accept
            seen.append(event)
            if event["type"] == stop:
                return


async def linger(conn: Any, seen: list[dict[str, Any]], seconds: float) -> None:
    """Whatever else comes within ``seconds``."""
    with contextlib.suppress(TimeoutError):
        await events_until(conn, "(none)", seen, timeout=seconds)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_the_sdk_holds_a_spoken_turn(node: RealtimeNode) -> None:
    audio, _ = utterance_24k(0)

    async def main() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with node.client().realtime.connect(model="voicegate") as conn:
            await events_until(conn, "session.created", seen)
            await conn.session.update(session={
                "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}})
            await events_until(conn, "session.updated", seen)
            sender = asyncio.create_task(stream(conn, audio))
            await events_until(conn, "response.done", seen)
            sender.cancel()
        return seen

    seen = asyncio.run(main())
    kinds = types(seen)
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
             "conversation.item.input_audio_transcription.completed",
             "response.output_audio.delta", "response.done"]  # fmt: skip
    positions = [kinds.index(k) for k in order]
    assert positions == sorted(positions), kinds
    done = seen[-1]["response"]
    assert done["status"] == "completed"
    assert float(done["metadata"]["voicegate.latency_ms.voice_to_voice"]) > 0
    audio_out = b"".join(base64.b64decode(e["delta"]) for e in seen
                         if e["type"] == "response.output_audio.delta")  # fmt: skip
    assert len(audio_out) >= 24000 * 2 * 0.2  # at least 200 ms of answer


def test_a_wrong_or_missing_key_is_refused_at_the_handshake(node: RealtimeNode) -> None:
    async def main(key: str | None) -> int:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(
                f"ws://127.0.0.1:{node.port}/v1/realtime?model=m", additional_headers=headers
            ):
                pass
        return refused.value.response.status_code

    assert asyncio.run(main(None)) == 401
    assert asyncio.run(main("vg_" + "x" * 43)) == 401


def test_a_barge_in_cancels_the_answer(node: RealtimeNode) -> None:
    first, _ = utterance_24k(0)
    second, _ = utterance_24k(1)

    async def main() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with node.client().realtime.connect(model="voicegate") as conn:
            await events_until(conn, "session.created", seen)
            sender = asyncio.create_task(stream(conn, first))
            await events_until(conn, "response.output_audio.delta", seen)
            sender.cancel()
            # The caller speaks over the answer.
            sender = asyncio.create_task(stream(conn, second))
            await events_until(conn, "response.done", seen)
            # Anything of the cancelled answer would come now.
            await linger(conn, seen, 1.5)
            sender.cancel()
        return seen

    seen = asyncio.run(main())
    done_at = next(i for i, e in enumerate(seen) if e["type"] == "response.done")
    done = seen[done_at]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"
    started = [e for e in seen[:done_at] if e["type"] == "input_audio_buffer.speech_started"]
    assert len(started) == 2  # the first turn's, then the barge-in's
    assert not [e for e in seen[done_at:] if e["type"] == "response.output_audio.delta"
                and e["response_id"] == done["id"]]  # fmt: skip


def test_manual_commit_with_turn_detection_null(node: RealtimeNode) -> None:
    audio, _ = utterance_24k(0, silence_after_s=0.3)

    async def main() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with node.client().realtime.connect(model="voicegate") as conn:
            await events_until(conn, "session.created", seen)
            await conn.session.update(session={
                "type": "realtime", "audio": {"input": {"turn_detection": None}}})
            await events_until(conn, "session.updated", seen)
            await stream(conn, audio, pace_s=0.02)
            await conn.input_audio_buffer.commit()
            await events_until(conn, "input_audio_buffer.committed", seen)
            await conn.response.create()
            await events_until(conn, "response.done", seen)
        return seen

    seen = asyncio.run(main())
    kinds = types(seen)
    assert "input_audio_buffer.speech_started" not in kinds  # manual: no VAD events
    assert "input_audio_buffer.speech_stopped" not in kinds
    assert seen[-1]["response"]["status"] == "completed"
    assert "response.output_audio.delta" in kinds


def test_a_transcription_session_streams_transcripts(node: RealtimeNode) -> None:
    audio, _ = utterance_24k(0)

    async def main() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with node.client().realtime.connect(
            model="voicegate", extra_query={"intent": "transcription"}
        ) as conn:
            await events_until(conn, "session.created", seen)
            await conn.session.update(session={"type": "transcription", "audio": {"input": {
                "transcription": {"model": "gpt-4o-transcribe"}}}})  # fmt: skip
            await events_until(conn, "session.updated", seen)
            sender = asyncio.create_task(stream(conn, audio))
            await events_until(
                conn, "conversation.item.input_audio_transcription.completed", seen
            )
            await linger(conn, seen, 1.5)
            sender.cancel()
        return seen

    seen = asyncio.run(main())
    assert seen[0]["session"]["type"] == "transcription"
    kinds = types(seen)
    assert "conversation.item.input_audio_transcription.delta" in kinds
    completed = next(e for e in seen
                     if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert completed["transcript"]
    assert not [k for k in kinds if k.startswith("response.")]


def test_refused_and_unknown_events_get_the_documented_error(node: RealtimeNode) -> None:
    refused = [
        ({"type": "session.update", "event_id": "e1", "session": {"type": "realtime", "tools": [
            {"type": "function", "name": "lookup", "parameters": {}}]}},
         "unsupported_feature"),
        ({"type": "conversation.item.create", "event_id": "e2", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}},
         "unsupported_feature"),
        ({"type": "conversation.item.delete", "event_id": "e3", "item_id": "x"},
         "unsupported_feature"),
        ({"type": "no.such.event", "event_id": "e4"}, "unknown_event_type"),
        ({"type": "session.update", "event_id": "e5", "session": {
            "type": "realtime", "audio": {"output": {"voice": "nobody"}}}}, "invalid_value"),
    ]  # fmt: skip

    async def main() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with node.client().realtime.connect(model="voicegate") as conn:
            await events_until(conn, "session.created", seen)
            for event, _ in refused:
                await conn.send_raw(json.dumps(event))
                await events_until(conn, "error", seen)
            await conn.send_raw("not json")
            await events_until(conn, "error", seen)
            # the session is still there
            await conn.session.update(session={"type": "realtime", "instructions": "Brief."})
            await events_until(conn, "session.updated", seen)
        return seen

    seen = asyncio.run(main())
    errors = [e["error"] for e in seen if e["type"] == "error"]
    assert [(e["event_id"], e["code"]) for e in errors[:-1]] == [
        (event["event_id"], code) for event, code in refused
    ]
    assert errors[-1]["code"] == "invalid_json"
    assert seen[-1]["session"]["instructions"] == "Brief."


def test_a_typed_item_and_a_written_answer(node: RealtimeNode) -> None:
    async def main() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with node.client().realtime.connect(model="voicegate") as conn:
            await events_until(conn, "session.created", seen)
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await events_until(conn, "session.updated", seen)
            await conn.conversation.item.create(item={
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "What time do you open?"}]})  # fmt: skip
            await events_until(conn, "conversation.item.done", seen)
            await conn.response.create()
            await events_until(conn, "response.done", seen)
        return seen

    seen = asyncio.run(main())
    kinds = types(seen)
    assert "response.output_text.delta" in kinds
    assert "response.output_audio.delta" not in kinds
    done = seen[-1]["response"]
    assert done["status"] == "completed" and done["output_modalities"] == ["text"]
    assert done["output"][0]["content"][0]["text"]


def test_a_browser_sends_its_key_as_a_subprotocol(node: RealtimeNode) -> None:
    async def main() -> tuple[str | None, dict[str, Any]]:
        offered = ["realtime", f"openai-insecure-api-key.{node.key}"]
        async with websockets.connect(
            f"ws://127.0.0.1:{node.port}/v1/realtime?model=m",
            subprotocols=offered,  # type: ignore[arg-type]
        ) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            return ws.subprotocol, first

    accepted, first = asyncio.run(main())
    assert accepted == "realtime"  # never the credential
    assert first["type"] == "session.created"
