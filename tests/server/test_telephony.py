"""The raw audio protocol for telephony bridges (protocols/telephony.py, ``/v1/pcm``): its
state machine and query parser, then a live node on the synthetic bundle over real
sockets: a spoken turn from ../shared/speech gets answer audio in the caller's format,
and bad query parameters or frames get a close code with a reason that names them."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import websockets
from gateway_node import synthetic_node
from hypothesis import given
from hypothesis import strategies as st

from voicegate.core import codec
from voicegate.core.audio import float32_to_pcm16, pcm16_to_float32, resample
from voicegate.core.codec import SUPPORTED_SAMPLE_RATES, AudioFormat, Encoding
from voicegate.core.config import DEFAULT_LIMITS
from voicegate.core.wav import read_wav
from voicegate.server.protocols.base import (
    Accept,
    Close,
    CloseSession,
    ConnectionState,
    ForwardAudio,
    OpenSession,
    Refusal,
)
from voicegate.server.protocols.native_events import (
    ResponseDone,
    ResponseStarted,
    TurnLatency,
)
from voicegate.server.protocols.telephony import (
    BadParameterError,
    PcmClose,
    PcmConnection,
    PcmOptions,
    parse_options,
)

REPO = Path(__file__).resolve().parents[2]
SPEECH = REPO.parent / "shared" / "speech"
MULAW_8K = AudioFormat(Encoding.MULAW, 8000)


def _connection(query: dict[str, str] | None = None) -> PcmConnection:
    return PcmConnection("00000001", query or {}, DEFAULT_LIMITS)


# -- the state machine ------------------------------------------------------------------


def test_first_frame_opens_the_session_with_the_query_options() -> None:
    conn = _connection({"encoding": "pcm16", "sample_rate": "16000", "output_encoding": "mulaw",
                        "output_sample_rate": "8000", "instructions": "Be brief."})  # fmt: skip
    assert conn.connect() == [Accept()]
    assert conn.state is ConnectionState.CONNECTED
    actions = conn.receive_bytes(bytes(640))
    options = PcmOptions(AudioFormat(Encoding.PCM16, 16000), MULAW_8K, "Be brief.")
    assert actions[0] == OpenSession("00000001", options)
    assert isinstance(actions[1], ForwardAudio)
    assert actions[1].audio.duration_ms == 20 and actions[1].stream_ms == 0
    second = conn.receive_bytes(bytes(320))
    assert len(second) == 1 and isinstance(second[0], ForwardAudio)
    assert second[0].stream_ms == 20
    assert conn.state is ConnectionState.STARTED


def test_defaults_are_mulaw_at_8k_both_ways() -> None:
    assert parse_options({}, DEFAULT_LIMITS) == PcmOptions(MULAW_8K, MULAW_8K, None)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"encoding": "opus"}, "encoding"),
        ({"sample_rate": "11025"}, "sample_rate"),
        ({"sample_rate": "8k"}, "sample_rate"),
        ({"output_encoding": "g722"}, "output_encoding"),
        ({"output_sample_rate": "-1"}, "output_sample_rate"),
        ({"volume": "3"}, "volume"),
        ({"instructions": "x" * (DEFAULT_LIMITS.max_instructions_chars + 1)}, "instructions"),
    ],
)
def test_a_bad_query_parameter_closes_with_1008_naming_it(
    query: dict[str, str], named: str
) -> None:
    conn = _connection(query)
    actions = conn.connect()
    assert actions[0] == Accept()
    close = actions[-1]
    assert isinstance(close, Close) and close.code == PcmClose.POLICY_VIOLATION
    assert named in close.reason
    assert conn.state is ConnectionState.CLOSED
    assert conn.receive_bytes(bytes(160)) == []  # nothing opens after the close


def test_bad_frames_and_text_close_with_their_codes() -> None:
    conn = _connection()
    conn.connect()
    odd = conn.receive_bytes(bytes(81))  # not a whole 10 ms at 8 kHz mu-law
    assert isinstance(odd[-1], Close) and odd[-1].code == PcmClose.POLICY_VIOLATION
    assert "81 bytes" in odd[-1].reason

    conn = _connection()
    conn.connect()
    conn.receive_bytes(bytes(160))
    text = conn.receive_text('{"type": "session.start"}')
    assert text == [CloseSession("00000001"), Close(PcmClose.UNSUPPORTED_DATA, text[-1].reason)]

    conn = _connection()
    conn.connect()
    big = conn.receive_bytes(bytes(DEFAULT_LIMITS.max_message_bytes + 80))
    assert isinstance(big[-1], Close) and big[-1].code == PcmClose.MESSAGE_TOO_BIG


def test_capacity_refusals_and_slow_clients() -> None:
    full = _connection()
    assert full.connect(at_capacity=True) == [
        Accept(),
        Close(PcmClose.TRY_AGAIN_LATER, "at capacity"),
    ]
    filled_meanwhile = _connection()
    filled_meanwhile.admit = lambda: False
    filled_meanwhile.connect()
    refused = filled_meanwhile.receive_bytes(bytes(160))
    assert refused == [Close(PcmClose.TRY_AGAIN_LATER, "at capacity")]

    crowded = _connection()
    crowded.connect()
    closed = crowded.refuse(Refusal.TOO_MANY_CONNECTIONS, "too many connections")
    assert closed == [Close(PcmClose.TRY_AGAIN_LATER, "too many connections")]

    slow = _connection()
    slow.connect()
    slow.receive_bytes(bytes(160))
    degraded = slow.degrade_output()  # no fallback format: the caller is closed
    assert degraded[0] == CloseSession("00000001")
    assert isinstance(degraded[1], Close) and degraded[1].code == PcmClose.POLICY_VIOLATION


def test_drain_lets_the_answer_in_flight_finish() -> None:
    conn = _connection()
    conn.connect()
    conn.receive_bytes(bytes(160))
    assert conn.send_event(ResponseStarted(1)) == []
    assert conn.begin_shutdown() == []
    assert conn.state is ConnectionState.ENDING
    assert conn.receive_bytes(bytes(160)) == []  # the caller's audio runs on until the close
    latency = TurnLatency(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    closed = conn.send_event(ResponseDone(1, "hi", 400.0, False, latency))
    assert closed == [CloseSession("00000001"), Close(PcmClose.GOING_AWAY, "server shutting down")]
    assert conn.disconnected() == []


@given(st.dictionaries(st.sampled_from(["encoding", "sample_rate", "output_encoding",
                                        "output_sample_rate", "instructions", "token", "x"]),
                       st.text(max_size=30)))  # fmt: skip
def test_the_query_parser_accepts_or_names_the_parameter(query: dict[str, str]) -> None:
    try:
        options = parse_options(query, DEFAULT_LIMITS)
    except BadParameterError as exc:
        assert any(name in str(exc) for name in query)
        return
    assert options.input.sample_rate in SUPPORTED_SAMPLE_RATES
    assert options.output.encoding in tuple(Encoding)
    assert "x" not in query


# -- a live node on the synthetic bundle --------------------------------------------------


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with synthetic_node(tmp_path_factory.mktemp("pcm"), f"pcm{os.getpid() % 100000}") as (
        port,
        _,
    ):
        yield port


def _caller_audio() -> bytes:
    """An utterance of ../shared/speech as a phone line carries it: 8 kHz mu-law, with
    the speech only and 1.5 s of silence after it (the end of the turn)."""
    item = json.loads((SPEECH / "manifest.json").read_text())["utterances"][0]
    wav = read_wav(SPEECH / item["file"])
    speech = wav.samples[int(item["speech_start_s"] * 16000) : int(item["speech_end_s"] * 16000)]
    at_8k = float32_to_pcm16(resample(pcm16_to_float32(speech), 16000, 8000))
    line = np.concatenate([np.zeros(2400, np.int16), at_8k, np.zeros(12000, np.int16)])
    return codec.mulaw_encode(line)


def test_a_spoken_turn_gets_answer_audio_in_the_callers_format(port: int) -> None:
    audio = _caller_audio()
    frame = 160  # 20 ms of 8 kHz mu-law

    async def main() -> list[bytes | str]:
        url = f"ws://127.0.0.1:{port}/v1/pcm?encoding=mulaw&sample_rate=8000"
        got: list[bytes | str] = []
        async with websockets.connect(url) as ws:

            async def speak() -> None:
                for i in range(0, len(audio) - frame + 1, frame):
                    await ws.send(audio[i : i + frame])
                    await asyncio.sleep(0.02)

            sender = asyncio.create_task(speak())
            async with asyncio.timeout(90):
                # The answer's audio, until a second without any (the answer ended).
                while True:
                    try:
                        got.append(await asyncio.wait_for(ws.recv(), 1.0 if got else 60))
                    except TimeoutError:
                        break
            sender.cancel()
        return got

    got = asyncio.run(main())
    assert got, "no answer audio"
    assert all(isinstance(g, bytes) for g in got)  # nothing but audio comes back
    answer = b"".join(g for g in got if isinstance(g, bytes))
    assert len(answer) >= 8000 * 0.2  # at least 200 ms of answer
    samples = codec.mulaw_decode(answer)
    assert np.abs(samples.astype(np.int32)).max() > 1000  # a voice, not silence


@pytest.mark.parametrize(
    ("query", "named"),
    [("encoding=opus", "encoding"), ("sample_rate=11025", "sample_rate"), ("codec=g729", "codec")],
)
def test_bad_query_parameters_get_a_clear_close(port: int, query: str, named: str) -> None:
    async def main() -> websockets.ConnectionClosed:
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/pcm?{query}") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(30):
                    await ws.recv()
            return closed.value

    closed = asyncio.run(main())
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1008
    assert named in closed.rcvd.reason


def test_a_text_frame_gets_1003(port: int) -> None:
    async def main() -> websockets.ConnectionClosed:
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/pcm") as ws:
            await ws.send(bytes(160))
            await ws.send('{"type": "session.start"}')
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(30):
                    while True:
                        await ws.recv()
            return closed.value

    closed = asyncio.run(main())
    assert closed.rcvd is not None and closed.rcvd.code == 1003
    assert "binary" in closed.rcvd.reason


def test_every_wire_protocol_can_be_named_in_a_key() -> None:
    # A key limited to some protocols names them by the registry's names; one missing
    # from the key store's list could never be granted (/v1/pcm was).
    from voicegate.server.protocols import PROTOCOLS as WIRE  # noqa: PLC0415
    from voicegate.server.security.keys import PROTOCOLS  # noqa: PLC0415

    assert {p.name for p in WIRE} == set(PROTOCOLS)
