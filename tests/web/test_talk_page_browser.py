"""The talk page in a real Chromium against a real node.

`voicegate serve` on loopback (the page is on by default there) with the generated
default bundle, as the other serve tests run it; Debian's chromium driven by Selenium,
its microphone a file made from ../shared/speech. Chromium loops that file, so each file
ends in a long silence (bench/_browser.py).

Skipped only when chromium or chromedriver is not installed (.ci/run installs both).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from selenium.webdriver.common.by import By
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bench._browser import (
    Browser,
    answered_turn,
    chromium,
    find_browser,
    load_utterance,
    page_stats,
    silence,
    turn,
    wait_for,
    write_mic_wav,
)
from bench._e2e_procs import spawn_node
from voicegate.core.config import WebSettings
from voicegate.models.named_bundles import (
    SYNTHETIC_REPLY,
    SYNTHETIC_TRANSCRIPT,
    synthetic_bundle,
)
from voicegate.server.protocols.native import Accept, Close, SendText, StreamConnection
from voicegate.server.protocols.native_wire import DEFAULT_LIMITS, STREAM_PATH
from voicegate.server.web import web_routes

# A turn takes a few seconds of audio; this only bounds a node or page that hangs.
TURN_TIMEOUT_S = 60.0

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="chromium and chromedriver are not installed "
    "(apt-get install chromium chromium-driver; .ci/run does)",
)

@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("web-node")
    with pytest.MonkeyPatch.context() as mp:
        # The synthetic bundle is generated once, here, not in the user's cache.
        mp.setenv("VOICEGATE_CACHE", str(tmp / "cache"))
        bundle = synthetic_bundle(tmp / "cache")
        with spawn_node(bundle, (), f"web{os.getpid() % 100000}", tmp / "node.log") as (ws, _):
            yield ws.replace("ws://", "http://").removesuffix("/v1/stream")


@pytest.fixture
def browser() -> Browser:
    assert BROWSER is not None
    return BROWSER


def _connect(driver: Any, base: str) -> None:
    driver.get(base + "/")
    assert driver.current_url == base + "/talk"  # / redirects to the page
    wait_for(driver, lambda s: bool(s.get("ready")), 20, "the page's script")
    driver.find_element(By.ID, "connect").click()


def _card(driver: Any, n: int) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'.turn[data-turn="{n}"]')


def test_one_turn_transcript_answer_audio_and_latency_bar(
    node_url: str, browser: Browser, tmp_path: Path
) -> None:
    said = load_utterance("00_store_hours.wav")
    mic = tmp_path / "mic.wav"
    write_mic_wav(mic, [silence(1.0), said.speech])
    with chromium(browser, mic) as driver:
        _connect(driver, node_url)
        stats = wait_for(
            driver,
            lambda s: answered_turn(s).get("playback") == "done" and "segments" in answered_turn(s),
            TURN_TIMEOUT_S,
            "the utterance answered and its answer played",
        )
        first = answered_turn(stats)
        n = first["turn"]
        card = _card(driver, n)
        assert card.is_displayed()
        # The node's transcript (the scripted STT of the generated bundle) and its answer.
        transcript = card.find_element(By.CSS_SELECTOR, ".transcript")
        assert transcript.text.rstrip(".") == SYNTHETIC_TRANSCRIPT.rstrip(".")
        assert "partial" not in (transcript.get_attribute("class") or "")
        assert card.find_element(By.CSS_SELECTOR, ".answer").text == SYNTHETIC_REPLY
        # Answer audio went through the playback worklet: every 20 ms of it that arrived
        # was played (the count is of output samples, after resampling to the device).
        received_frames = first["receivedMs"] / 20
        assert received_frames > 10
        assert received_frames - 2 <= first["playedFrames"] <= received_frames + 2
        assert stats["playedFrames"] == first["playedFrames"]
        assert "cancelled" not in first
        # The latency chart has a bar for the turn, its segments from the node's breakdown.
        segments = card.find_elements(By.CSS_SELECTOR, f'.bar[data-turn="{n}"] .seg')
        keys = [s.get_attribute("data-key") for s in segments]
        assert "end_of_turn_silence" in keys
        assert segments[0].size["width"] > 0
        assert first["segments"]["end_of_turn_silence"] == first["latency"][
            "end_of_turn_silence"
        ]
        # The page's own voice-to-voice: from its end of speech to the first answer audio.
        assert first["speechEndSource"] in ("page", "node")
        assert first["v2vPlayedMs"] >= first["v2vReceivedMs"] > 0
        assert "voice-to-voice here" in card.find_element(By.CSS_SELECTOR, ".figures").text
        shot = tmp_path / "talk-page-one-turn.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        results = os.environ.get("VOICEGATE_WEB_SCREENSHOTS")
        if results:
            shutil.copy(shot, Path(results) / shot.name)
        # The pure parts of the page (protocol.js), run in this browser.
        messages = driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            import('/talk/static/protocol.js').then((p) => {
              const close = (code, opened, hungUp, lastError) =>
                p.describeClose({code, reason: '', opened, hungUp, lastError});
              const full = {code: 'at_capacity', message: 'full', fatal: true};
              const mulaw = new Uint8Array([0xff, 0x7f, 0x00, 0x80]).buffer;
              done({
                full: close(1013, true, false, full),
                drop: close(1006, true, false, null),
                hungUp: close(1000, true, true, null),
                handshake: close(1006, false, false, null),
                mulaw: Array.from(p.decodeAudio(mulaw, 'mulaw')),
                start: p.sessionStart({
                  input_rate: 16000,
                  output: {encoding: 'pcm16', sample_rate: 24000},
                  fallback: {encoding: 'mulaw', sample_rate: 8000},
                }, ''),
              });
            }).catch((e) => done({error: String(e)}));
            """
        )
        assert "error" not in messages, messages
        assert messages["full"].startswith("The node is full (1013)")
        assert messages["drop"].startswith("The connection to the node dropped (close 1006")
        assert messages["hungUp"] is None
        assert messages["handshake"] is None  # the page then asks /healthz why
        assert messages["mulaw"] == [0.0, 0.0, -32124 / 32768, 32124 / 32768]
        assert messages["start"] == {
            "type": "session.start",
            "input": {"encoding": "pcm16", "sample_rate": 16000},
            "output": {
                "encoding": "pcm16",
                "sample_rate": 24000,
                "fallback": {"encoding": "mulaw", "sample_rate": 8000},
            },
        }
        # Hang up: session.end, the node closes with 1000, no message for the user.
        driver.find_element(By.ID, "hangup").click()
        after = wait_for(driver, lambda s: s.get("state") == "idle", 20, "the hang-up")
        assert after["message"] is None
        assert not after["ignored"]  # every event the node sent is one the page knows


def test_speaking_over_the_answer_stops_playback(
    node_url: str, browser: Browser, tmp_path: Path
) -> None:
    first = load_utterance("00_store_hours.wav")
    second = load_utterance("02_reset_password.wav")
    mic = tmp_path / "mic.wav"
    # The second utterance starts 0.7 s after the first ends: after the end-of-turn
    # silence (turn 1 is committed and answered) and while its ~1.5 s answer plays.
    write_mic_wav(mic, [silence(1.0), first.speech, silence(0.7), second.speech])
    with chromium(browser, mic) as driver:
        _connect(driver, node_url)
        stats = wait_for(
            driver,
            lambda s: answered_turn(s).get("cancelled") is not None
            and answered_turn(s).get("playback") is not None,
            TURN_TIMEOUT_S,
            "the first answer cancelled by the second utterance",
        )
        answered = answered_turn(stats)
        n = answered["turn"]
        assert answered["cancelled"] == "barge_in"
        # Playback had started, and the worklet dropped what it still held.
        assert answered.get("playedAt") is not None
        assert answered["playback"] == "cancelled"
        assert answered["playedFrames"] < answered["receivedMs"] / 20
        assert not answered.get("done")
        phase = _card(driver, n).find_element(By.CSS_SELECTOR, ".phase")
        assert phase.text == "response.cancelled · barge_in"
        log = driver.find_element(By.ID, "log").text
        assert f"response.cancelled: barge_in (turn {n})" in log
        assert f"playback stopped (cancelled) (turn {n})" in log
        # Nothing more of that turn plays.
        played = answered["playedFrames"]
        later = wait_for(
            driver,
            lambda s: len(s.get("events") or []) > len(stats["events"]) + 3,
            TURN_TIMEOUT_S,
            "more events after the barge-in",
        )
        assert turn(later, n)["playedFrames"] == played
        assert turn(later, n)["playback"] == "cancelled"
        assert page_stats(driver)["message"] is None
        assert driver.save_screenshot(str(tmp_path / "talk-page-barge-in.png"))


class RefusingNode:
    """The page's routes and a `/v1/stream` that fails the way a node can: a wrong key
    (refused at the handshake), full (1013 after `at_capacity`, through StreamConnection as
    the gateway does), or a session that breaks after it started."""

    def __init__(self) -> None:
        self.mode = "key"
        self.tokens: list[str | None] = []
        routes: list[Any] = [
            Route("/healthz", self._healthz),
            WebSocketRoute(STREAM_PATH, self._stream),
            *web_routes(WebSettings(page="on")),
        ]
        self.app = Starlette(routes=routes)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def _stream(self, websocket: WebSocket) -> None:
        self.tokens.append(websocket.query_params.get("token"))
        if self.mode == "key":
            await websocket.close(code=1008)  # before accept: HTTP 403, as keys will be
            return
        conn = StreamConnection("fake0001", DEFAULT_LIMITS)
        if self.mode == "full":
            await self._perform(websocket, conn.connect(at_capacity=True))
            return
        await self._perform(websocket, conn.connect())
        await self._perform(websocket, conn.receive_text(await websocket.receive_text()))
        raise RuntimeError("the session breaks")  # the socket closes without a close frame

    async def _perform(self, websocket: WebSocket, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Accept):
                await websocket.accept()
            elif isinstance(action, SendText):
                await websocket.send_text(action.text)
            elif isinstance(action, Close):
                await websocket.close(int(action.code), action.reason)


@pytest.fixture
def refusing_node() -> Iterator[tuple[str, RefusingNode]]:
    node = RefusingNode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(node.app, ws="websockets-sansio", lifespan="off", log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "fake node did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}", node
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
    assert not thread.is_alive()


def test_messages_for_a_wrong_key_a_full_node_a_dropped_call_and_a_denied_microphone(
    refusing_node: tuple[str, RefusingNode], browser: Browser, tmp_path: Path
) -> None:
    base, node = refusing_node
    mic = tmp_path / "mic.wav"
    write_mic_wav(mic, [silence(0.5)])

    def call(path: str, expect: str) -> dict[str, Any]:
        driver.get(base + path)
        wait_for(driver, lambda s: bool(s.get("ready")), 20, "the page's script")
        driver.find_element(By.ID, "connect").click()
        stats = wait_for(driver, lambda s: s.get("state") == "failed", 20, f"'{expect}'")
        shown = driver.find_element(By.ID, "message")
        assert shown.is_displayed()
        assert shown.text.startswith(expect), shown.text
        assert stats["message"] == shown.text
        # The call is over: Connect works again, Hang up and Mute do not.
        assert driver.find_element(By.ID, "connect").is_enabled()
        assert not driver.find_element(By.ID, "hangup").is_enabled()
        return stats

    def microphone(setting: str) -> None:
        driver.execute_cdp_cmd(
            "Browser.setPermission",
            {"permission": {"name": "microphone"}, "setting": setting, "origin": base},
        )

    with chromium(browser, mic, grant=False) as driver:
        microphone("granted")
        # The token of the page's own address goes to the stream as ?token=.
        call("/talk?token=not-a-key", "The node refused this page's key")
        assert node.tokens == ["not-a-key"]
        call("/talk", "The node refused the connection. It may require a key")
        node.mode = "full"
        call("/talk", "The node is full (1013)")
        node.mode = "drop"
        call("/talk", "The connection to the node dropped (close 1006")
        assert node.tokens[1:] == [None, None, None]
        microphone("denied")
        call("/talk", "Microphone access was denied")
        assert len(node.tokens) == 4  # denied before any connection
