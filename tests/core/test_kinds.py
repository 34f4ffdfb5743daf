"""Message kinds, flags and session ids (payloads: test_payloads.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicegate.core.kinds import (
    CONTROL_BASE,
    MAX_GATEWAYS,
    MAX_LOCAL_SESSION,
    Flag,
    Kind,
    gateway_of,
    is_control,
    kind_name,
    local_of,
    session_id,
)
from voicegate.core.layout import MAX_KIND


def test_kinds_are_unique_and_split_into_data_and_control() -> None:
    values = [k.value for k in Kind]
    assert len(values) == len(set(values))
    assert all(0 < v <= MAX_KIND for v in values)
    data = {k for k in Kind if not is_control(k)}
    assert data == {
        Kind.AUDIO_IN,
        Kind.VAD_EVENT,
        Kind.TRANSCRIPT_PARTIAL,
        Kind.TRANSCRIPT_FINAL,
        Kind.LLM_TOKEN,
        Kind.AUDIO_OUT,
        Kind.TEXT_INPUT,
        Kind.TURN_TIMING,
    }
    assert all(k >= CONTROL_BASE for k in set(Kind) - data)
    assert kind_name(Kind.BARGE_IN) == "BARGE_IN"
    assert kind_name(0x0777) == "0x0777"


def test_flags_are_distinct_bits_that_fit_the_header() -> None:
    bits = [int(f) for f in Flag]
    assert all(b & (b - 1) == 0 for b in bits)
    assert len(set(bits)) == len(bits)
    assert max(bits) < 1 << 16


@given(st.integers(0, MAX_GATEWAYS - 1), st.integers(0, MAX_LOCAL_SESSION))
def test_session_id_carries_the_gateway(gateway: int, local: int) -> None:
    sid = session_id(gateway, local)
    assert 0 <= sid < 1 << 32
    assert gateway_of(sid) == gateway
    assert local_of(sid) == local


def test_session_id_bounds() -> None:
    with pytest.raises(ValueError, match="gateway"):
        session_id(MAX_GATEWAYS, 0)
    with pytest.raises(ValueError, match="local"):
        session_id(0, MAX_LOCAL_SESSION + 1)


