"""The transports the ring bench compares, behind one small interface, and the bodies of
the bench's child processes (spawned, so they live in an importable module that avoids
heavy imports).

Every transport carries the same 640-byte frames between two pinned processes:
voicegate's ring, multiprocessing.Queue, multiprocessing.Pipe, faster-fifo and a pyzmq
PAIR socket over ipc://. ``recv`` blocks in the transport's own way (the consumer is
parked); ``recv_spin`` polls the non-blocking API in a loop (the consumer spins).
Throughput loops call each transport's own bound methods directly, so the harness adds
the same small cost to every transport.
"""

from __future__ import annotations

import abc
import functools
import itertools
import os
import queue
import tempfile
import time
from collections.abc import Callable
from typing import Any

from voicegate.ext import Record

FRAME_BYTES = 640  # 20 ms of 16 kHz PCM16
BATCH = 64
STOP = b""
KIND_FRAME = 1
KIND_STOP = 2

_names = itertools.count()


class Endpoint(abc.ABC):
    """One process's end of a two-way (latency) or one-way (throughput) channel."""

    @abc.abstractmethod
    def send(self, frame: Any) -> None: ...

    @abc.abstractmethod
    def recv(self) -> Any:
        """The next frame (empty for the stop message), waiting parked."""

    @abc.abstractmethod
    def recv_spin(self) -> Any:
        """The next frame, polling without blocking."""

    def send_stop(self) -> None:
        self.send(STOP)

    def close(self) -> None:  # noqa: B027 (an optional hook: most ends hold nothing)
        """Release this end (sockets, ring handles)."""

    def ping_calls(self, spin: bool) -> tuple[Callable[[Any], Any], Callable[[], Any]]:
        """The cheapest (send, receive) pair for the pinging side of a latency run."""
        return self.send, (self.recv_spin if spin else self.recv)

    def echo(self, spin: bool) -> None:
        """Return every frame until the stop message."""
        receive = self.recv_spin if spin else self.recv
        send = self.send
        while True:
            message = receive()
            if not len(message):
                return
            send(message)

    def produce(self, frame: bytes, deadline: float, batch: bool) -> None:
        """Send frames (one by one, or in batches of BATCH) until ``deadline``, then stop."""
        if batch:
            raise TypeError(f"{type(self).__name__} has no batch API")
        send = self.send
        clock = time.perf_counter
        while clock() < deadline:
            for _ in range(256):
                send(frame)
        self.send_stop()

    def consume(self, batch: bool) -> tuple[int, float]:
        """Receive until the stop message. Returns the frames that arrived after the first
        receipt and the seconds from that receipt to the stop message."""
        if batch:
            raise TypeError(f"{type(self).__name__} has no batch API")
        recv = self.recv
        clock = time.perf_counter
        message = recv()
        start = clock()
        count = 0
        while len(message):
            count += 1
            message = recv()
        return count - 1, clock() - start


# -- voicegate ring ------------------------------------------------------------------


class RingEndpoint(Endpoint):
    def __init__(self, tx: Any, rx: Any) -> None:
        self.tx, self.rx = tx, rx

    def send(self, frame: Any) -> None:
        self.tx.write(Record(kind=KIND_FRAME, session=0, turn=0, payload=frame))  # waits if full

    def send_stop(self) -> None:
        self.tx.write(Record(kind=KIND_STOP, session=0, turn=0))

    def recv(self) -> Any:
        record = self.rx.read(None)
        return record.payload if record.kind == KIND_FRAME else STOP

    recv_spin = recv  # the ring's own spin_us decides whether it spins or parks

    def ping_calls(self, spin: bool) -> tuple[Callable[[Any], Any], Callable[[], Any]]:
        write = self.tx.write

        def send(frame: Any) -> Any:
            return write(Record(kind=KIND_FRAME, session=0, turn=0, payload=frame))

        return send, functools.partial(self.rx.read, None)

    def echo(self, spin: bool) -> None:
        read, write = self.rx.read, self.tx.write
        record = read(None)
        while record.kind == KIND_FRAME:
            write(record)  # forwarded as read: one copy, ring to ring
            record = read(None)

    def produce(self, frame: bytes, deadline: float, batch: bool) -> None:
        clock = time.perf_counter
        write = self.tx.write
        one = Record(kind=KIND_FRAME, session=0, turn=0, payload=frame)
        if batch:
            records = [one.replace(seq=i) for i in range(BATCH)]
            write_batch = self.tx.write_batch
            while clock() < deadline:
                for _ in range(16):
                    if not write_batch(records):  # full: wait for room for one
                        write(one)
        else:
            while clock() < deadline:
                for _ in range(256):
                    write(one)
        self.send_stop()

    def consume(self, batch: bool) -> tuple[int, float]:
        clock = time.perf_counter
        if batch:
            read_batch = self.rx.read_batch
            records = read_batch(256, None)
            start = clock()
            count, first = 0, len(records)
            while True:
                for record in records:
                    if record.kind != KIND_FRAME:
                        return count - first, clock() - start
                    len(record.payload)
                    count += 1
                records = read_batch(256, None)
        read = self.rx.read
        record = read(None)
        start = clock()
        count = 0
        while record.kind == KIND_FRAME:
            len(record.payload)  # take the frame, as a consumer would
            count += 1
            record = read(None)
        return count - 1, clock() - start

    def close(self) -> None:
        for ring in (self.rx, self.tx):
            ring.close()


class RingTransport:
    name = "voicegate"

    def __init__(self, spin_us: float, capacity: int) -> None:
        from voicegate.ext import Ring  # noqa: PLC0415 (children import only their peer)

        tag = f"vg-bench{os.getpid()}-{next(_names)}"
        self.names = (tag + "a", tag + "b")
        self.spin_us = spin_us
        self.owners = [
            Ring.create(self.names[0], capacity, spin_us=spin_us),
            Ring.create(self.names[1], capacity, spin_us=spin_us),
        ]

    def child_spec(self) -> Any:
        return ("voicegate", self.names, self.spin_us)

    def parent_end(self) -> Endpoint:
        from voicegate.ext import Ring  # noqa: PLC0415

        return RingEndpoint(
            Ring.attach(self.names[0], "producer", spin_us=self.spin_us),
            Ring.attach(self.names[1], "consumer", spin_us=self.spin_us),
        )

    def cleanup(self) -> None:
        for ring in self.owners:
            ring.close()


def _ring_child_end(spec: Any) -> Endpoint:
    from voicegate.ext import Ring  # noqa: PLC0415

    _, names, spin_us = spec
    return RingEndpoint(
        Ring.attach(names[1], "producer", spin_us=spin_us),
        Ring.attach(names[0], "consumer", spin_us=spin_us),
    )


# -- multiprocessing.Queue -------------------------------------------------------------


class QueueEndpoint(Endpoint):
    def __init__(self, tx: Any, rx: Any) -> None:
        self.tx, self.rx = tx, rx
        self.send = tx.put  # type: ignore[method-assign]
        self.recv = rx.get  # type: ignore[method-assign]

    def send(self, frame: Any) -> None:
        self.tx.put(frame)

    def recv(self) -> Any:
        return self.rx.get()

    def recv_spin(self) -> Any:
        get = self.rx.get_nowait
        while True:
            try:
                return get()
            except queue.Empty:
                pass


class MpQueueTransport:
    name = "mp.Queue"

    def __init__(self, ctx: Any) -> None:
        # Bounded, or the feeder thread would buffer a fast producer's backlog unboundedly.
        self.queues = (ctx.Queue(maxsize=1024), ctx.Queue(maxsize=1024))

    def child_spec(self) -> Any:
        return ("mp.Queue", self.queues)

    def parent_end(self) -> Endpoint:
        return QueueEndpoint(self.queues[0], self.queues[1])

    def cleanup(self) -> None:
        for q in self.queues:
            q.close()
            q.join_thread()


# -- multiprocessing.Pipe ---------------------------------------------------------------


class PipeEndpoint(Endpoint):
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.send = conn.send_bytes  # type: ignore[method-assign]
        self.recv = conn.recv_bytes  # type: ignore[method-assign]

    def send(self, frame: Any) -> None:
        self.conn.send_bytes(frame)

    def recv(self) -> Any:
        return self.conn.recv_bytes()

    def recv_spin(self) -> Any:
        poll = self.conn.poll
        while not poll(0):
            pass
        return self.conn.recv_bytes()

    def close(self) -> None:
        self.conn.close()


class MpPipeTransport:
    name = "mp.Pipe"

    def __init__(self, ctx: Any) -> None:
        self.parent_conn, self.child_conn = ctx.Pipe(duplex=True)

    def child_spec(self) -> Any:
        return ("mp.Pipe", self.child_conn)

    def parent_end(self) -> Endpoint:
        return PipeEndpoint(self.parent_conn)

    def cleanup(self) -> None:
        self.parent_conn.close()
        self.child_conn.close()


# -- faster-fifo ---------------------------------------------------------------------------


class FasterFifoEndpoint(Endpoint):
    def __init__(self, tx: Any, rx: Any) -> None:
        self.tx, self.rx = tx, rx
        self.send = tx.put  # type: ignore[method-assign]
        self.recv = rx.get  # type: ignore[method-assign]

    def send(self, frame: Any) -> None:
        self.tx.put(frame)

    def recv(self) -> Any:
        return self.rx.get()

    def recv_spin(self) -> Any:
        get = self.rx.get_nowait
        while True:
            try:
                return get()
            except queue.Empty:
                pass

    def produce(self, frame: bytes, deadline: float, batch: bool) -> None:
        if not batch:
            super().produce(frame, deadline, batch)
            return
        frames = [frame] * BATCH
        put_many = self.tx.put_many
        clock = time.perf_counter
        while clock() < deadline:
            for _ in range(16):
                put_many(frames)
        self.send_stop()

    def consume(self, batch: bool) -> tuple[int, float]:
        if not batch:
            return super().consume(batch)
        get_many = self.rx.get_many
        clock = time.perf_counter
        messages = get_many(max_messages_to_get=256)
        start = clock()
        count, first = 0, len(messages)
        while True:
            for message in messages:
                if not len(message):
                    return count - first, clock() - start
                count += 1
            messages = get_many(max_messages_to_get=256)


class FasterFifoTransport:
    name = "faster-fifo"

    def __init__(self) -> None:
        import faster_fifo  # noqa: PLC0415 (an optional bench dependency)

        self.queues = (
            faster_fifo.Queue(max_size_bytes=1 << 20),
            faster_fifo.Queue(max_size_bytes=1 << 20),
        )

    def child_spec(self) -> Any:
        return ("faster-fifo", self.queues)

    def parent_end(self) -> Endpoint:
        return FasterFifoEndpoint(self.queues[0], self.queues[1])

    def cleanup(self) -> None:
        for q in self.queues:
            q.close()


# -- pyzmq PAIR over ipc:// -----------------------------------------------------------------


class ZmqEndpoint(Endpoint):
    def __init__(self, address: str, bind: bool) -> None:
        import zmq  # noqa: PLC0415

        self.zmq = zmq
        # Created after the process pinned itself, so zmq's I/O thread is pinned too.
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PAIR)
        self.socket.setsockopt(zmq.LINGER, 0)
        if bind:
            self.socket.bind(address)
        else:
            self.socket.connect(address)
        self.send = self.socket.send  # type: ignore[method-assign, assignment]
        self.recv = self.socket.recv  # type: ignore[method-assign]

    def send(self, frame: Any) -> None:
        self.socket.send(frame)

    def recv(self) -> Any:
        return self.socket.recv()

    def recv_spin(self) -> Any:
        recv, flag, again = self.socket.recv, self.zmq.NOBLOCK, self.zmq.Again
        while True:
            try:
                return recv(flag)
            except again:
                pass

    def close(self) -> None:
        self.socket.close()
        self.context.term()


class ZmqTransport:
    name = "pyzmq"

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="vg-bench-zmq-")
        self.address = f"ipc://{self.dir}/pair.ipc"

    def child_spec(self) -> Any:
        return ("pyzmq", self.address)

    def parent_end(self) -> Endpoint:
        return ZmqEndpoint(self.address, bind=True)

    def cleanup(self) -> None:
        for entry in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, entry))
        os.rmdir(self.dir)


def child_end(spec: Any) -> Endpoint:
    kind = spec[0]
    if kind == "voicegate":
        return _ring_child_end(spec)
    if kind == "mp.Queue":
        return QueueEndpoint(spec[1][1], spec[1][0])
    if kind == "mp.Pipe":
        return PipeEndpoint(spec[1])
    if kind == "faster-fifo":
        return FasterFifoEndpoint(spec[1][1], spec[1][0])
    if kind == "pyzmq":
        return ZmqEndpoint(spec[1], bind=False)
    raise ValueError(f"unknown transport {kind!r}")


# -- child process bodies ----------------------------------------------------------------


def echo_child(spec: Any, cpu: int, spin: bool, ready: Any) -> None:
    """Latency partner: return every frame until the stop message."""
    os.sched_setaffinity(0, {cpu})
    end = child_end(spec)
    ready.set()
    try:
        end.echo(spin)
    finally:
        end.close()


def produce_child(  # noqa: PLR0917 (a multiprocessing target takes positional args)
    spec: Any, cpu: int, batch: bool, duration: float, ready: Any, done: Any
) -> None:
    """Throughput source: send frames for ``duration`` seconds, then the stop message."""
    os.sched_setaffinity(0, {cpu})
    end = child_end(spec)
    frame = bytes(range(256)) * 2 + bytes(FRAME_BYTES - 512)
    ready.set()
    try:
        end.produce(frame, time.perf_counter() + duration, batch)
        # Keep the sockets (and zmq's queue) alive until the consumer has drained them.
        done.wait(120)
    finally:
        end.close()
