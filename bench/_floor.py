"""The kernel's own floors for a cross-process ping-pong, measured by a tiny C program the
bench compiles: futex wait/wake (what a parked ring side sleeps in: glibc semaphores are
futexes), a blocking pipe, and a shared-memory spin (the hardware's cache-line round trip).

The futex ping-pong is the fair floor for a parked consumer: the ring parks in
``sem_clockwait`` and is woken by ``sem_post``, both one futex system call, so anything the
ring costs above this floor is its own overhead (Python, the record, the flag handshake).
The program pins each process to its CPU, as the bench does for every peer.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

C_SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    _Alignas(128) _Atomic uint32_t ping;
    _Alignas(128) _Atomic uint32_t pong;
} words_t;

static void pin(int cpu) {
    cpu_set_t set; CPU_ZERO(&set); CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set)) { perror("sched_setaffinity"); exit(3); }
}
static int64_t now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static void fwait(_Atomic uint32_t *w, uint32_t seen) {
    /* Shared (not PRIVATE) futex: the two sides are separate processes. */
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, seen, NULL, NULL, 0);
}
static void fwake(_Atomic uint32_t *w) {
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0);
}
static void relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: floor futex|pipe|spin CPU_A CPU_B ITERS OUT\n");
        return 2;
    }
    const char *mode = argv[1];
    int cpu_a = atoi(argv[2]), cpu_b = atoi(argv[3]);
    long iters = atol(argv[4]), warm = iters / 10 + 100, total = iters + warm;
    words_t *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int to_child[2], to_parent[2];
    if (w == MAP_FAILED || pipe(to_child) || pipe(to_parent)) { perror("setup"); return 3; }
    atomic_store(&w->ping, 0); atomic_store(&w->pong, 0);
    char byte = 0;
    pid_t pid = fork();
    if (pid == 0) {
        pin(cpu_b);
        for (uint32_t i = 1; i <= (uint32_t)total; i++) {
            if (!strcmp(mode, "futex")) {
                uint32_t v;
                while ((v = atomic_load(&w->ping)) != i) fwait(&w->ping, v);
                atomic_store(&w->pong, i); fwake(&w->pong);
            } else if (!strcmp(mode, "pipe")) {
                if (read(to_child[0], &byte, 1) != 1) _exit(4);
                if (write(to_parent[1], &byte, 1) != 1) _exit(4);
            } else {
                while (atomic_load_explicit(&w->ping, memory_order_acquire) != i) relax();
                atomic_store_explicit(&w->pong, i, memory_order_release);
            }
        }
        _exit(0);
    }
    pin(cpu_a);
    int64_t *rtt = malloc(sizeof(int64_t) * iters);
    for (uint32_t i = 1; i <= (uint32_t)total; i++) {
        int64_t t0 = now_ns();
        if (!strcmp(mode, "futex")) {
            atomic_store(&w->ping, i); fwake(&w->ping);
            uint32_t v;
            while ((v = atomic_load(&w->pong)) != i) fwait(&w->pong, v);
        } else if (!strcmp(mode, "pipe")) {
            if (write(to_child[1], &byte, 1) != 1 || read(to_parent[0], &byte, 1) != 1) return 4;
        } else {
            atomic_store_explicit(&w->ping, i, memory_order_release);
            while (atomic_load_explicit(&w->pong, memory_order_acquire) != i) relax();
        }
        int64_t t1 = now_ns();
        if ((long)i > warm) rtt[i - warm - 1] = t1 - t0;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    FILE *out = fopen(argv[5], "wb");
    if (!out || fwrite(rtt, sizeof(int64_t), iters, out) != (size_t)iters) {
        perror("write");
        return 5;
    }
    fclose(out);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 6;
}
"""

MODES = ("futex", "pipe", "spin")


def build(workdir: Path) -> Path:
    """Compile the floor program into ``workdir``; returns the executable."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise RuntimeError("no C compiler (cc) found: the bench compiles its floor program")
    source = workdir / "floor.c"
    source.write_text(C_SOURCE)
    binary = workdir / "floor"
    subprocess.run(
        [compiler, "-O2", "-std=gnu11", "-o", str(binary), str(source)],
        check=True,
        capture_output=True,
    )
    return binary


def one_way_ns(
    binary: Path, mode: str, cpus: tuple[int, int], iters: int, workdir: Path
) -> npt.NDArray[np.float64]:
    """One-way latencies (round trip / 2) in ns of ``iters`` ping-pongs in ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    out = workdir / f"floor-{mode}.bin"
    subprocess.run(
        [str(binary), mode, str(cpus[0]), str(cpus[1]), str(iters), str(out)],
        check=True,
        timeout=600,
    )
    samples = np.fromfile(out, dtype=np.int64).astype(np.float64) / 2.0
    out.unlink()
    return samples
