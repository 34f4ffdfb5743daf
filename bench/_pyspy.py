"""py-spy profiles of the server's processes during a load level, summed up as the share
of samples that each function is on the stack of (inclusive) and on top of (self).

``python -m bench e2e --profile`` records every server process for the measured window of
each voicegate level (``py-spy record --nonblocking``: the target is never stopped, so
the profile does not slow what it measures beyond py-spy's own CPU) and keeps the raw
stacks beside the results. Boilerplate frames on (nearly) every sample of a process say
nothing about where its time goes and are left out of the summary.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_BOILERPLATE_SHARE = 0.97  # frames on more of the samples than this are the call path
# Process start-up and event-loop frames: on the stack of whatever a process does, so
# they say nothing about where its time goes; selectors.py is the event loop's idle wait.
_CALL_PATH_FILES = frozenset({
    "<string>", "spawn.py", "process.py", "gateway_process.py", "event_loop.py", "runners.py",
    "base_events.py", "events.py", "selectors.py",
})  # fmt: skip


def executable() -> str | None:
    """py-spy of this interpreter's environment (a venv's bin is not always on PATH)."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


class Recording:
    """One py-spy per process, for ``duration_s``, at ``rate`` samples per second."""

    def __init__(  # noqa: PLR0917 - what to record, where, for how long
        self,
        spy: str,
        processes: dict[int, str],
        folder: Path,
        stem: str,
        duration_s: float,
        rate: int,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Path] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        for pid, name in processes.items():
            path = folder / f"{stem}_{_slug(name)}_{pid}.txt"
            self.files[f"{name} [{pid}]"] = path
            self._procs.append(subprocess.Popen(
                [spy, "record", "--nonblocking", "-p", str(pid), "-d",
                 str(max(1, round(duration_s))), "-r", str(rate), "-f", "raw", "-o", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip

    def finish(self, timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
        for proc in self._procs:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return {
            name: summarize(path.read_text().splitlines())
            for name, path in self.files.items()
            if path.is_file()
        }


def summarize(lines: Sequence[str], top: int = 8) -> dict[str, Any]:
    """Samples, and the ``top`` functions by inclusive and by self share, from
    py-spy's raw (collapsed stack) output: ``frame;frame;... count`` per line."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_function(f) for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] += n
        own[frames[-1]] += n
    if not total:
        return {"samples": 0, "inclusive": [], "self": []}
    useful = [
        (f, n)
        for f, n in inclusive.most_common()
        if n < _BOILERPLATE_SHARE * total and _file(f) not in _CALL_PATH_FILES
    ]
    return {
        "samples": total,
        "inclusive": [[f, round(100 * n / total, 1)] for f, n in useful[:top]],
        "self": [[f, round(100 * n / total, 1)] for f, n in own.most_common(top)],
    }


def _function(frame: str) -> str:
    """``name (path/file.py:line)`` -> ``name (file.py)``."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1] if where else ""
    return f"{name} ({file})" if file else name


def _file(function: str) -> str:
    return function.rpartition(" (")[2].rstrip(")")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")[:40]
