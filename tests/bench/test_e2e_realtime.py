"""`bench e2e --protocol realtime`: its URL, its comparison and the Realtime replay's
reading of server events, on hand-made inputs."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from typing import Any

import pytest

from bench import e2e
from bench._e2e_client import (
    ClientPlan,
    TurnResult,
    Utterance,
    _RealtimeReplay,
    realtime_frame,
)
from bench._wsraw import MASK


def _level(sessions: int, p95: float, gateway_cpu: float, errors: int = 0) -> dict[str, Any]:
    return {
        "sessions": sessions,
        "v2v_ms": {"p95": p95},
        "errors": errors,
        "cpu": [
            {"role": "server", "name": "voicegate: gateway 0", "cpu_pct": gateway_cpu},
            {"role": "server", "name": "voicegate: vad", "cpu_pct": 50.0},
        ],
    }


def test_realtime_url() -> None:
    assert e2e.realtime_url("ws://127.0.0.1:8123/v1/stream") == (
        "ws://127.0.0.1:8123/v1/realtime?model=voicegate"
    )
    assert e2e.realtime_url("wss://node:443/v1/stream?token=x", "m") == (
        "wss://node:443/v1/realtime?model=m"
    )


def test_protocol_comparison() -> None:
    stream = {"levels": [_level(4, 300.0, 8.0), _level(8, 320.0, 16.0)]}
    realtime = {"levels": [_level(4, 306.5, 10.0, errors=1), _level(16, 400.0, 40.0)]}
    (level,) = e2e.protocol_comparison(stream, realtime)["levels"]
    assert level["sessions"] == 4
    assert level["v2v_p95_delta_ms"] == 6.5
    assert level["gateway_cpu_pct_per_session"] == {"stream": 2.0, "realtime": 2.5}
    assert level["gateway_cpu_ratio"] == pytest.approx(1.25)
    assert level["errors"] == {"stream": 0, "realtime": 1}
    nan = e2e.protocol_comparison(
        {"levels": [_level(4, math.nan, 8.0)]}, {"levels": [_level(4, 300.0, 8.0)]}
    )
    assert nan["levels"][0]["v2v_p95_delta_ms"] is None
    assert "x1.2" in e2e._protocol_line({"levels": [level]})


SPEECH = [Utterance("a.wav", [b""], 0)]


def _unmask(frame: bytes) -> bytes:
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4 if length == 126 else 10
    payload = frame[start + 4 :]
    key = (MASK * (len(payload) // 4 + 1))[: len(payload)]
    return bytes(a ^ b for a, b in zip(payload, key, strict=True))


def test_realtime_frame_is_an_append_event() -> None:
    audio = bytes(range(256)) * 4
    frame = realtime_frame(audio)
    assert frame[0] == 0x81  # FIN, text
    event = json.loads(_unmask(frame))
    assert event == {"type": "input_audio_buffer.append",
                     "audio": base64.b64encode(audio).decode()}  # fmt: skip


def test_realtime_replay_reads_the_server_events() -> None:
    async def scenario() -> TurnResult:
        plan = ClientPlan("ws://x/v1/realtime?model=m", "", [0], 1, 1.0, 0.0, 1.0, 0.0,
                          protocol="realtime", sample_rate=24000)  # fmt: skip
        replay = _RealtimeReplay("x:80", "/v1/realtime?model=m", 0, plan, SPEECH, 0.0, b"")
        replay.on_message(1, b'{"type":"session.created","event_id":"e","session":{}}', 0)
        assert not replay.started.done()
        replay.on_message(1, b'{"type":"session.updated","event_id":"e","session":{}}', 0)
        assert replay.started.done()
        replay.turn = TurnResult(0, "a.wav", 0.0)
        replay.speech_end_sent_ns = 1_000_000_000
        delta = b'{"type":"response.output_audio.delta","event_id":"e","delta":"AAAA"}'
        replay.on_message(1, delta, 1_250_000_000)
        replay.on_message(1, delta, 1_400_000_000)
        done = {"type": "response.done", "event_id": "e", "response": {
            "status": "completed", "metadata": {
                "voicegate.turn": "1", "voicegate.speculative": "true",
                "voicegate.latency_ms.voice_to_voice": "249.5",
                "voicegate.latency_ms.end_of_turn_silence": "200"}}}  # fmt: skip
        replay.on_message(1, json.dumps(done).encode(), 1_500_000_000)
        assert replay.answer_done
        return replay.turn

    turn = asyncio.run(scenario())
    assert turn.voice_to_voice_ms == 250.0  # the first audio delta
    assert turn.server_ms == {"voice_to_voice": 249.5, "end_of_turn_silence": 200.0}
    assert turn.speculative is True and turn.error is None


def test_realtime_replay_counts_cancelled_answers_and_errors() -> None:
    async def scenario() -> list[TurnResult]:
        plan = ClientPlan("ws://x/", "", [0], 1, 1.0, 0.0, 1.0, 0.0, protocol="realtime")
        replay = _RealtimeReplay("x:80", "/", 0, plan, SPEECH, 0.0, b"")
        replay.started.set_result(None)
        turns = []
        for event in (
            {"type": "response.done", "response": {
                "status": "cancelled", "status_details": {"reason": "turn_detected"}}},
            {"type": "error", "error": {"code": "invalid_value"}},
        ):  # fmt: skip
            replay.turn = TurnResult(0, "a.wav", 0.0)
            replay.speech_end_sent_ns = 1
            replay.on_message(1, json.dumps(event).encode(), 2)
            turns.append(replay.turn)
        return turns

    cancelled, error = asyncio.run(scenario())
    assert cancelled.error == "response cancelled (turn_detected)"
    assert error.error == "server error invalid_value"
