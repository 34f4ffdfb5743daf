"""Chromium, driven by Selenium, with a WAV file as its microphone: shared by the talk
page's browser tests and ``bench web``.

Chromium plays ``--use-file-for-fake-audio-capture`` in a loop from the moment the page
opens the microphone. A file built by ``write_mic_wav`` therefore ends in a long silence,
so that the loop does not start talking again while a test or the bench is still looking.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[1]
MIC_RATE = 16000
TAIL_SILENCE_S = 40.0  # longer than anything that looks at one pass of the file


@dataclass(frozen=True)
class Browser:
    chromium: str
    chromedriver: str


def find_browser() -> Browser | None:
    """Debian's chromium and chromium-driver (or $VOICEGATE_CHROMIUM and
    $VOICEGATE_CHROMEDRIVER); None when either is missing."""
    chromium = os.environ.get("VOICEGATE_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
    )
    driver = os.environ.get("VOICEGATE_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        return None
    return Browser(chromium, driver)


def speech_dir() -> Path:
    override = os.environ.get("VOICEGATE_SPEECH_DIR")
    return Path(override) if override else REPO.parent / "shared" / "speech"


@dataclass(frozen=True)
class Utterance:
    file: str
    text: str
    speech: NDArray[np.int16]  # 16 kHz, from the first to the last sample of speech


def load_utterance(name: str) -> Utterance:
    """One utterance of the speech set, cut to its speech by the manifest."""
    root = speech_dir()
    items = json.loads((root / "manifest.json").read_text())["utterances"]
    item = next(i for i in items if i["file"] == name)
    with wave.open(str(root / name)) as w:
        if w.getframerate() != MIC_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{root / name}: expected 16 kHz mono 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    start = round(item["speech_start_s"] * MIC_RATE)
    end = round(item["speech_end_s"] * MIC_RATE)
    return Utterance(name, str(item["text"]), pcm[start:end].copy())


def silence(seconds: float) -> NDArray[np.int16]:
    return np.zeros(round(seconds * MIC_RATE), dtype=np.int16)


def write_mic_wav(path: Path, pieces: Sequence[NDArray[np.int16]]) -> float:
    """Write ``pieces`` then TAIL_SILENCE_S of silence as a 16 kHz WAV; returns where the
    last piece ends, in seconds."""
    pcm = np.concatenate([*pieces, silence(TAIL_SILENCE_S)]).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MIC_RATE)
        w.writeframes(pcm.tobytes())
    return sum(len(p) for p in pieces) / MIC_RATE


@contextlib.contextmanager
def chromium(
    browser: Browser, mic_wav: Path, *, headless: bool = True, grant: bool = True
) -> Iterator[WebDriver]:
    """Chromium whose microphone is ``mic_wav``, audio allowed to play without a gesture,
    and every page's microphone request granted (``grant``; else per origin with the
    ``Browser.setPermission`` command)."""
    options = webdriver.ChromeOptions()
    options.binary_location = browser.chromium
    flags = [
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic_wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,900",
        # Chromium's shared memory in /tmp: nothing of it can be left in /dev/shm.
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
    ]
    if grant:
        flags.append("--use-fake-ui-for-media-stream")
    if headless:
        flags.append("--headless=new")
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    for flag in flags:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Its profile and the directories of its process singleton go under a TMPDIR of its
    # own, removed after it quits: Chromium leaves the latter behind in /tmp otherwise.
    with tempfile.TemporaryDirectory(prefix="vg-chromium-", ignore_cleanup_errors=True) as tmp:
        service = Service(browser.chromedriver, env={**os.environ, "TMPDIR": tmp})
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield driver
        finally:
            driver.quit()


def page_stats(driver: WebDriver) -> dict[str, Any]:
    """The page's ``window.voicegateTalk`` as JSON (-Infinity and NaN become null)."""
    text = driver.execute_script("return JSON.stringify(window.voicegateTalk || null)")
    result = json.loads(text) if isinstance(text, str) else None
    return result if isinstance(result, dict) else {}


def wait_for(
    driver: WebDriver,
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float,
    what: str,
) -> dict[str, Any]:
    """Poll the page's figures until ``done`` holds; on timeout raise with what the page
    showed, so a failure says where the call stopped."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = page_stats(driver)
        if stats and done(stats):
            return stats
        if time.monotonic() > deadline:
            summary = {k: stats.get(k) for k in ("state", "message", "framesSent", "playedFrames")}
            events = stats.get("events") or []
            raise TimeoutError(
                f"waited {timeout_s:.0f} s for {what}; page: {summary}, "
                f"last events: {events[-8:]}, turns: {json.dumps(stats.get('turns'))[:1500]}"
            )
        time.sleep(0.1)


def answered_turn(stats: dict[str, Any]) -> dict[str, Any]:
    """The first turn with a final transcript (the node may have renumbered the turn it
    answers: a voided speculation continues under the next number), or {} when none."""
    turns = stats.get("turns") or {}
    finals = [t for t in turns.values() if isinstance(t, dict) and t.get("final") is not None]
    return min(finals, key=lambda t: int(t["turn"])) if finals else {}


def turn(stats: dict[str, Any], n: int) -> dict[str, Any]:
    found = (stats.get("turns") or {}).get(str(n))
    return found if isinstance(found, dict) else {}
