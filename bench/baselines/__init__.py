"""The designs voicegate is compared with, as servers of the same protocol on the same
bundle: ``start_sequential`` (request-response) and ``start_single_process`` (every
model in the server's own process, on threads), and the peers: other frameworks serving
the same protocol on the same engines (``start_pipecat``: a Pipecat 1.14 pipeline per
caller, ``bench.baselines.pipecat_peer``). Each starts the server in its own subprocess
and yields its WebSocket URL (``ws://127.0.0.1:PORT/v1/stream``, a ``str`` whose ``pid``
is the server's process: every model runs in it, on threads)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench._stop import stop_server

__all__ = [
    "PEERS",
    "BaselineError",
    "ServerURL",
    "start_pipecat",
    "start_sequential",
    "start_single_process",
]

_READY_PREFIX = "baseline: serving on "
_START_TIMEOUT_S = 120.0  # model loading on a busy 2-core machine
_STOP_TIMEOUT_S = 10.0
_REPO_ROOT = Path(__file__).resolve().parents[2]


class BaselineError(RuntimeError):
    """A baseline server did not start."""


class ServerURL(str):
    """The server's WebSocket URL; ``pid`` is its process, for CPU accounting."""

    pid: int

    def __new__(cls, url: str, pid: int) -> ServerURL:
        self = super().__new__(cls, url)
        self.pid = pid
        return self


@contextlib.contextmanager
def start_sequential(bundle: Path, port: int = 0) -> Iterator[ServerURL]:
    with _start("sequential", bundle, port) as url:
        yield url


@contextlib.contextmanager
def start_single_process(bundle: Path, port: int = 0) -> Iterator[ServerURL]:
    with _start("single_process", bundle, port) as url:
        yield url


@contextlib.contextmanager
def start_pipecat(bundle: Path, port: int = 0) -> Iterator[ServerURL]:
    """The Pipecat peer (needs the ``bench`` extra's ``pipecat-ai``)."""
    if importlib.util.find_spec("pipecat") is None:
        raise BaselineError("the Pipecat peer needs pipecat-ai: pip install -e '.[bench]'")
    with _start("pipecat", bundle, port, module="bench.baselines.pipecat_peer") as url:
        yield url


# Other frameworks, by the name `bench e2e --peers` takes.
PEERS: dict[str, Callable[[Path], contextlib.AbstractContextManager[ServerURL]]] = {
    "pipecat": start_pipecat,
}


@contextlib.contextmanager
def _start(
    design: str, bundle: Path, port: int, module: str = "bench.baselines.server"
) -> Iterator[ServerURL]:
    if not Path(bundle).is_dir():
        raise BaselineError(f"bundle {bundle}: not a directory")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    # Pipecat logs a banner through loguru as it is imported, before the peer can set
    # its level: loguru's default handler takes the level from the environment.
    env.setdefault("LOGURU_LEVEL", "WARNING")
    which = [] if module != "bench.baselines.server" else ["--design", design]
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *which, "--bundle", str(bundle), "--port", str(port)],
        stdout=subprocess.PIPE, text=True, env=env, cwd=_REPO_ROOT,
    )
    try:
        yield _wait_ready(proc, design)
    finally:
        stop_server(proc, _STOP_TIMEOUT_S)


def _wait_ready(proc: subprocess.Popen[str], design: str) -> ServerURL:
    assert proc.stdout is not None
    deadline = time.monotonic() + _START_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(_READY_PREFIX):
                return ServerURL(line[len(_READY_PREFIX):].strip(), proc.pid)
    raise BaselineError(
        f"{design} baseline server did not start (exit status {proc.poll()}); "
        "its stderr above says why"
    )


