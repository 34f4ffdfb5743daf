"""``voicegate profile``: py-spy on a running node, the supervisor and all its workers.

- ``voicegate profile --duration S --out FILE`` records every process of the node
  (``py-spy record --subprocesses`` on the supervisor) into a flame graph SVG or a
  speedscope JSON file, chosen by ``--format`` or else by the file extension.
- ``voicegate profile --dump`` prints the current stack of every process of the node
  (``py-spy dump`` per pid), for a node that hangs.

The node is the supervisor given by ``--pid``, else the one holding the status block of
the node named by ``--node`` (else the configuration's ``node.name``). Its processes are
the supervisor and its descendants; each is shown with its title (``voicegate: <stage>``).

py-spy reads the target's memory with ptrace: it needs root, or the same user with
``kernel.yama.ptrace_scope`` 0 (or CAP_SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from voicegate.core.config import ConfigError, NodeConfig, NodeSettings, load_config
from voicegate.workers.runtime.status import Field, StatusBlock
from voicegate.workers.runtime.topology import Topology

FORMATS: Final[tuple[str, ...]] = ("flamegraph", "speedscope", "raw", "chrometrace")
_BY_EXTENSION: Final[dict[str, str]] = {".svg": "flamegraph", ".json": "speedscope", ".txt": "raw"}


class ProfileError(Exception):
    """The node or py-spy cannot be used; the message says why."""


@dataclass(frozen=True)
class NodeProcess:
    pid: int
    title: str


def py_spy_path() -> str:
    """The py-spy next to this interpreter (a venv's bin), else the one on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise ProfileError("py-spy not found next to the interpreter nor on PATH")
    return found


def find_supervisor(config: NodeConfig) -> int:
    """Pid of the live supervisor of ``config``'s node, read from its node status block."""
    name = Topology(config).node_block
    try:
        block = StatusBlock.attach(name)
    except FileNotFoundError:
        raise ProfileError(
            f"node {config.node.name!r} is not running (no status block {name!r})"
        ) from None
    except ValueError as exc:
        raise ProfileError(f"node {config.node.name!r}: {exc}") from None
    try:
        pid = block.get(Field.PID)
        alive = block.holder_alive()
    finally:
        block.close()
    if not alive:
        raise ProfileError(
            f"node {config.node.name!r} is not running (its supervisor pid {pid} is gone)"
        )
    return pid


def _parent_pids() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] not in (b"Z", b"X"):
            parents[int(entry)] = int(fields[1])
    return parents


def process_title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return "?"
    # setproctitle leaves the title as the whole command line, NUL-padded.
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def node_processes(supervisor: int) -> list[NodeProcess]:
    """The supervisor and its live descendants, parents before children."""
    parents = _parent_pids()
    if supervisor not in parents:
        raise ProfileError(f"no process with pid {supervisor}")
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    order: list[int] = []
    todo = [supervisor]
    while todo:
        pid = todo.pop(0)
        order.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return [NodeProcess(pid, process_title(pid)) for pid in order]


def output_format(out: Path, requested: str | None) -> str:
    if requested is not None:
        return requested
    for suffix, fmt in _BY_EXTENSION.items():
        if out.name.endswith(suffix):
            return fmt
    raise ProfileError(
        f"--out {str(out)!r}: cannot tell the format from the extension "
        f"(.svg: flamegraph, .json: speedscope, .txt: raw); give --format"
    )


def record_command(
    supervisor: int,
    out: Path,
    fmt: str,
    duration_s: int,
    *,
    rate: int = 100,
    idle: bool = False,
    native: bool = False,
    pause: bool = False,
) -> list[str]:
    command = [
        py_spy_path(),
        "record",
        "--pid",
        str(supervisor),
        "--subprocesses",
        "--duration",
        str(duration_s),
        "--rate",
        str(rate),
        "--format",
        fmt,
        "--output",
        str(out),
    ]
    if idle:
        command.append("--idle")
    if native:
        command.append("--native")
    if not pause:
        # A live node keeps serving: sample without stopping its processes.
        command.append("--nonblocking")
    return command


def dump(processes: list[NodeProcess], *, native: bool = False) -> tuple[str, bool]:
    """Stacks of every process, each under a header naming its pid and title; the flag
    is False when py-spy failed on any of them."""
    parts: list[str] = []
    ok = True
    for process in processes:
        command = [py_spy_path(), "dump", "--pid", str(process.pid)]
        if native:
            command.append("--native")
        result = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=120
        )
        parts.append(f"===== pid {process.pid}: {process.title} =====")
        if result.returncode == 0:
            parts.append(result.stdout.rstrip())
        elif _exited(process.pid):
            parts.append("(exited)")
        else:
            ok = False
            parts.append(f"py-spy dump failed ({result.returncode}): {result.stderr.strip()}")
        parts.append("")
    return "\n".join(parts), ok


def _exited(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "profile",
        help="profile a running node with py-spy (flame graph, speedscope, or --dump)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--pid", type=int, help="pid of the node's supervisor")
    target.add_argument("--node", help="node name (default: node.name of the configuration)")
    parser.add_argument("--config", help="TOML file (default: $VOICEGATE_CONFIG, else defaults)")
    parser.add_argument("--dump", action="store_true", help="print every process's stack now")
    parser.add_argument("--duration", type=int, help="seconds to record")
    parser.add_argument("--out", type=Path, help="output file (.svg flame graph, .json speedscope)")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: by extension)")
    parser.add_argument("--rate", type=int, default=100, help="samples per second (default 100)")
    parser.add_argument("--idle", action="store_true", help="include idle (waiting) stacks")
    parser.add_argument("--native", action="store_true", help="include C/Cython frames")
    parser.add_argument(
        "--pause", action="store_true", help="stop the processes at each sample (exact stacks)"
    )
    parser.set_defaults(handler=run_profile)


def _target_config(args: argparse.Namespace) -> NodeConfig:
    # Only the node name matters here: it names the node's status block.
    if args.node is not None:
        return NodeConfig(node=NodeSettings(name=args.node))
    return load_config(args.config)


def run_profile(args: argparse.Namespace) -> int:
    duration: int | None = args.duration
    out: Path | None = args.out
    try:
        if args.dump and (duration is not None or out is not None):
            raise ProfileError("--dump prints stacks now: it takes no --duration or --out")
        if not args.dump:
            if duration is None or out is None:
                raise ProfileError("recording needs --duration S and --out FILE (or use --dump)")
            if duration < 1:
                raise ProfileError(f"--duration {duration}: must be at least 1 second")
            if args.rate < 1:
                raise ProfileError(f"--rate {args.rate}: must be at least 1")
        supervisor = args.pid if args.pid is not None else find_supervisor(_target_config(args))
        processes = node_processes(supervisor)
        if duration is None or out is None:
            text, ok = dump(processes, native=args.native)
            sys.stdout.write(text)
            return 0 if ok else 1
        fmt = output_format(out, args.format)
        command = record_command(
            supervisor,
            out,
            fmt,
            duration,
            rate=args.rate,
            idle=args.idle,
            native=args.native,
            pause=args.pause,
        )
    except ConfigError as exc:
        print(f"voicegate: configuration error: {exc}", file=sys.stderr)
        return 2
    except ProfileError as exc:
        print(f"voicegate profile: {exc}", file=sys.stderr)
        return 2
    print(
        f"voicegate profile: recording {len(processes)} processes for {args.duration} s "
        f"into {out} ({fmt})",
        file=sys.stderr,
    )
    result = subprocess.run(command, check=False, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        print(f"voicegate profile: py-spy exited with {result.returncode}", file=sys.stderr)
        return 1
    return 0
