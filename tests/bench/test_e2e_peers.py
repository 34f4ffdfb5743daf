"""The peers of `bench e2e` by name: parsing --peers, loading a starter, and a peer that
cannot run here reported with the reason."""

from __future__ import annotations

import pytest

from bench import _e2e_peers
from bench.baselines import start_sequential


def test_parse_names_and_refuse_unknown_ones() -> None:
    assert _e2e_peers.parse("sequential, pipecat") == ("sequential", "pipecat")
    assert _e2e_peers.parse("") == ()
    with pytest.raises(ValueError, match="unknown peer 'livekit'"):
        _e2e_peers.parse("sequential,livekit")


def test_load_gives_the_starter_or_says_why_not(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _e2e_peers.load("sequential") is start_sequential
    monkeypatch.setitem(_e2e_peers.PEERS, "absent", "bench.no_such_peer:start")
    with pytest.raises(LookupError, match=r"bench\.no_such_peer is not installed"):
        _e2e_peers.load("absent")
    with pytest.raises(LookupError, match="unknown peer"):
        _e2e_peers.load("nobody")
