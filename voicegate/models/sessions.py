"""The per-caller session tables of the stage engines: lookups whose errors name the
stage and the session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

_S = TypeVar("_S")


def session_of(sessions: Mapping[int, _S], sid: int, stage: str) -> _S:
    """The open session ``sid``; KeyError "<stage> session <sid> is not open" otherwise."""
    try:
        return sessions[sid]
    except KeyError:
        raise KeyError(f"{stage} session {sid} is not open") from None


def refuse_open(sessions: Mapping[int, object], sid: int, stage: str) -> None:
    """KeyError "<stage> session <sid> is already open" when ``sid`` is in use."""
    if sid in sessions:
        raise KeyError(f"{stage} session {sid} is already open")
