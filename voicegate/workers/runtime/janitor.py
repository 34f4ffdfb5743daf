"""The node's janitor: removes what a supervisor killed with -9 left in /dev/shm.

The supervisor starts it right after claiming the node name, with a pipe on its stdin
that only the supervisor holds. The janitor waits for that pipe to close: the supervisor
exited, cleanly (it removed everything itself: nothing is left to do) or killed (its
workers and gateways die with it, by PR_SET_PDEATHSIG). It then unlinks the rings,
semaphores, doorbells and status blocks under the node's prefix whose creator is gone,
and exits. A supervisor that claimed the node name again in between is alive, so
nothing of its node is touched.

Run as ``python -m voicegate.workers.runtime.janitor PREFIX``; SIGINT and SIGTERM are ignored (a
Ctrl-C or a service stop reaches the whole process group, and the supervisor's own
shutdown closes the pipe).
"""

from __future__ import annotations

import signal
import subprocess
import sys


def start(prefix: str) -> subprocess.Popen[bytes]:
    """Start the janitor of the node whose shared-memory names begin with ``prefix``;
    close its stdin (``stop``) to let it finish."""
    return subprocess.Popen(
        [sys.executable, "-m", "voicegate.workers.runtime.janitor", prefix],
        stdin=subprocess.PIPE,
        close_fds=True,
    )


def stop(janitor: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Close the janitor's pipe and reap it."""
    if janitor.stdin is not None:
        janitor.stdin.close()
    try:
        janitor.wait(timeout_s)
    except subprocess.TimeoutExpired:
        janitor.kill()
        janitor.wait()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(argv) != 1 or not argv[0].startswith("vg-"):
        print("usage: python -m voicegate.workers.runtime.janitor vg-<node>-", file=sys.stderr)
        return 2
    prefix = argv[0]
    while sys.stdin.buffer.read(4096):
        pass
    # Imported only now: the janitor costs next to nothing while the node runs.
    from voicegate.workers.runtime.rings import cleanup_stale  # noqa: PLC0415
    from voicegate.workers.runtime.status import remove_stale_blocks  # noqa: PLC0415

    removed = remove_stale_blocks(prefix) + cleanup_stale(prefix)
    if removed:
        print(
            f"voicegate janitor: removed {len(removed)} shared-memory objects a stopped "
            f"supervisor left under {prefix}",
            file=sys.stderr,
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
