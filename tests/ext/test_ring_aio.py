"""asyncio consumers: records awaited through the doorbell fd, several rings on one loop
without threads, timeouts, a dead producer and a closed ring."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import ring_children as children

from voicegate.ext import Record
from voicegate.ext.aio import AsyncRingReader
from voicegate.ext.errors import PeerDied, RingClosed

SPAWN = mp.get_context("spawn")


def _impl_name(cls: Any) -> str:
    return {"Ring": "cython", "ReferenceRing": "reference"}[cls.__name__]


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    started: list[Any] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()
            proc.join(timeout=30)


def test_awaits_records_from_several_rings_without_threads(
    impl: Any, ring_name: str, procs: list[Any]
) -> None:
    count = 40
    names = [ring_name + "a", ring_name + "b"]
    rings = [impl.create(n, 1 << 12, role="consumer", spin_us=0) for n in names]
    try:
        for n in names:
            proc = SPAWN.Process(
                target=children.paced_producer, args=(_impl_name(impl), n, count, 0.002)
            )
            proc.start()
            procs.append(proc)

        async def consume(ring: Any) -> list[int]:
            seqs: list[int] = []
            async with AsyncRingReader(ring) as reader:
                while len(seqs) < count:
                    for rec in await reader.read_batch(8, timeout=30.0):
                        assert bytes(rec.payload) == rec.seq.to_bytes(4, "little")
                        seqs.append(rec.seq)
                ring.release()
            return seqs

        async def main() -> list[list[int]]:
            threads = threading.active_count()
            results = await asyncio.gather(*(consume(r) for r in rings))
            assert threading.active_count() == threads  # no waiter threads
            return list(results)

        assert asyncio.run(main()) == [list(range(count))] * 2
        for ring in rings:
            stats = ring.stats()
            # The consumer parked on the doorbell and the producer rang it.
            assert stats["consumer_parks"] > 0 and stats["wakeups_sent"] > 0
    finally:
        gc.collect()
        for ring in rings:
            ring.close()


def test_wait_times_out(impl: Any, ring_name: str) -> None:
    with impl.create(ring_name, 1 << 12, role="consumer") as ring:
        producer = impl.attach(ring_name, "producer")

        async def main() -> None:
            async with AsyncRingReader(ring, park_slice_s=0.01) as reader:
                assert not await reader.wait(timeout=0.05)
                assert await reader.read(timeout=0) is None
                producer.try_write(Record(kind=1, session=0, turn=0, seq=5))
                rec = await reader.read(timeout=1.0)
                assert rec is not None and rec.seq == 5

        asyncio.run(main())
        producer.close()


def test_dead_producer_raises(impl: Any, ring_name: str, procs: list[Any]) -> None:
    with impl.create(ring_name, 1 << 12, role="consumer") as ring:
        ready = SPAWN.Event()
        proc = SPAWN.Process(
            target=children.hold_role,
            args=(_impl_name(impl), ring_name, "producer", ready, 1, 0),
        )
        proc.start()
        procs.append(proc)
        assert ready.wait(60)
        pid = proc.pid
        assert pid is not None

        async def main() -> None:
            async with AsyncRingReader(ring, park_slice_s=0.02) as reader:
                assert (await reader.read(timeout=5.0)) is not None
                loop = asyncio.get_running_loop()
                loop.call_later(0.05, lambda: os.kill(pid, signal.SIGKILL))
                with pytest.raises(PeerDied):
                    await reader.wait(timeout=None)

        asyncio.run(main())


def test_owner_close_wakes_the_reader(impl: Any, ring_name: str) -> None:
    owner = impl.create(ring_name, 1 << 12)
    consumer = impl.attach(ring_name, "consumer")

    async def main() -> None:
        async with AsyncRingReader(consumer, park_slice_s=3600.0) as reader:
            asyncio.get_running_loop().call_later(0.05, owner.close)
            with pytest.raises(RingClosed):
                await reader.wait(timeout=None)  # only the doorbell can end this wait

    asyncio.run(main())
    consumer.close()
