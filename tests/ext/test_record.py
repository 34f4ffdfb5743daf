"""The one record type: keyword-only construction, range checks, and records read from a
ring (views, ``replace`` keeping the view, ``detach`` copying it)."""

from __future__ import annotations

from typing import Any

import pytest

from voicegate.ext import Record, Ring
from voicegate.ext.errors import RingError

CAP = 4096


def test_fields_are_given_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        Record(1, 2, 3)  # type: ignore[misc, call-overload]  # a swap cannot slip through
    r = Record(kind=4, session=7, turn=9, seq=2, origin_ns=-5, payload=b"pcm", flags=3)
    assert (r.kind, r.flags, r.session, r.turn, r.seq, r.origin_ns, r.sent_ns) == (
        4, 3, 7, 9, 2, -5, 0,
    )  # fmt: skip
    assert r.payload == b"pcm" and not r.borrowed
    assert "pcm" not in repr(r)  # payloads never reach logs


@pytest.mark.parametrize(
    ("field", "value"),
    [("kind", 0xFFFF), ("flags", 1 << 16), ("session", -1), ("turn", 1 << 32), ("seq", -2)],
)
def test_out_of_range_fields_are_named(field: str, value: int) -> None:
    fields: dict[str, Any] = dict(kind=1, session=0, turn=0)
    with pytest.raises(ValueError, match=field):
        Record(**{**fields, field: value})
    with pytest.raises(ValueError, match=field):
        Record(**fields).replace(**{field: value})


def test_replace_keeps_a_view_and_detach_copies_it(ring_name: str) -> None:
    with Ring.create(ring_name, CAP, role="consumer") as consumer:
        producer = Ring.attach(ring_name, "producer")
        assert producer.try_write(Record(kind=1, session=2, turn=3, seq=4, payload=b"abc"))
        read = consumer.try_read()
        assert read is not None and read.borrowed and read.sent_ns > 0
        moved = read.replace(turn=5)
        assert moved.borrowed and (moved.session, moved.turn, moved.seq) == (2, 5, 4)
        assert moved.sent_ns == read.sent_ns
        kept = moved.detach()
        assert not kept.borrowed and kept.payload == b"abc"
        assert producer.try_write(moved)  # forwarded from the ring's memory, as is
        consumer.release()
        with pytest.raises(RingError, match="released"):
            _ = moved.payload
        assert kept.payload == b"abc"
        again = consumer.try_read()
        assert again is not None and bytes(again.payload) == b"abc" and again.turn == 5
        del read, moved, again
        consumer.release()
        producer.close()
