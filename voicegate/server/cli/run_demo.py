"""What ``make run`` does: start ``voicegate serve`` on a free local port with the real
bundle (built from the installed weight packages on first use), wait until it is ready,
talk to it with the shipped demo utterance (what it heard, the answer text, the latency
breakdown, the answer WAV), then stop it with SIGTERM. Exit status: that of ``voicegate
talk``, or 1 if the bundle could not be built, the server did not come up or did not
stop cleanly."""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from voicegate.models import named_bundles
from voicegate.models.bundle import load_bundle
from voicegate.models.errors import BundleError

_READY_TIMEOUT_S = 300.0  # the first start loads the models (and maybe generates them)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voicegate.server.cli.run_demo")
    parser.add_argument("--out", default="answer.wav", help="where to write the answer audio")
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--bundle", default=named_bundles.REAL,
                        help="'real' (default), 'synthetic' or a bundle directory")
    parser.add_argument("--file", help="the WAV to say (default: the demo utterance)")
    args = parser.parse_args(argv)
    try:
        bundle = named_bundles.resolve(args.bundle, progress=sys.stderr)
        name = load_bundle(bundle, require=()).name
    except BundleError as exc:
        print(f"run_demo: {exc}", file=sys.stderr)
        return 1
    print(f"bundle: {name} at {bundle}", flush=True)
    serve = subprocess.Popen(
        [sys.executable, "-m", "voicegate", "serve", "--port", "0", "--bundle", str(bundle),
         "--gateways", str(args.gateways)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        port = _wait_ready(serve)
        if port is None:
            print("run_demo: the server did not become ready", file=sys.stderr)
            return 1
        talk = subprocess.run(
            [sys.executable, "-m", "voicegate", "talk", "--url",
             f"ws://127.0.0.1:{port}/v1/stream", "--out", args.out,
             *([args.file] if args.file else [])],
            check=False,
        )  # fmt: skip
        code = talk.returncode
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            stopped = serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            stopped = serve.wait()
    if stopped != 0:
        print(f"run_demo: voicegate serve exited with {stopped}", file=sys.stderr)
        return code or 1
    return code


def _wait_ready(serve: subprocess.Popen[str]) -> int | None:
    assert serve.stdout is not None
    port = None
    for line in serve.stdout:
        found = re.search(r"serving on http://127\.0\.0\.1:(\d+)", line)
        if found:
            port = int(found.group(1))
            break
    if port is None:
        return None
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if json.load(r).get("ready"):
                    return port
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if serve.poll() is not None:
            return None
        time.sleep(0.1)
    return None


if __name__ == "__main__":
    sys.exit(main())
