"""Message kinds, record flags and session ids.

The header layout itself lives in ``layout.py``; this module says what the ``kind``,
``flags`` and ``session`` fields of that header mean; ``payloads.py`` says what each
kind's payload bytes mean.

Kinds below ``CONTROL_BASE`` are data: they belong to a turn and are dropped when the
turn is no longer current. Kinds from ``CONTROL_BASE`` up are control. Control travels in
the same rings as data, in order, so a cancel that overtakes nothing still flushes every
record of the old turn behind it.

Session ids carry their gateway: the top ``GATEWAY_BITS`` bits name the gateway process
that owns the session, so the last stage routes answer audio back without a lookup and a
restarted worker needs no routing table.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Final

from voicegate.core.layout import MAX_KIND

CONTROL_BASE: Final[int] = 0x1000


class Kind(IntEnum):
    """What a record carries."""

    # Data: belongs to the turn in the header.
    # Caller audio: the client's bytes in the session's input format (gateway -> vad),
    # then 16 kHz PCM16 of the current utterance (vad -> stt).
    AUDIO_IN = 0x0001
    VAD_EVENT = 0x0002  # speech start, pause, resume, end of turn (vad -> stt, gateway)
    TRANSCRIPT_PARTIAL = 0x0003  # provisional transcript text, UTF-8 (stt -> llm)
    TRANSCRIPT_FINAL = 0x0004  # final transcript of the turn, UTF-8 (stt -> llm)
    LLM_TOKEN = 0x0005  # decoded answer text, UTF-8 (llm -> tts)
    AUDIO_OUT = 0x0006  # answer audio in the session's output format (tts -> gateway)
    TEXT_INPUT = 0x0007  # the caller typed a turn, UTF-8 (gateway -> vad, which gives it a turn)
    TURN_TIMING = 0x0008  # when each stage first produced output (llm -> tts -> gateway)
    # Control: session lifecycle and turn boundaries, in order with the data.
    SESSION_OPEN = 0x1001  # session parameters (payloads.SessionParams), opaque to the runtime
    SESSION_CLOSE = 0x1002
    COMMIT = 0x1003  # the caller ended the turn explicitly
    CANCEL = 0x1004  # the turn in the header becomes current; older turns are stale
    BARGE_IN = 0x1005  # the caller spoke over the answer; the header's turn becomes current
    ERROR = 0x1006  # the turn in the header failed; payloads.TurnError
    # Supervisor -> gateway only.
    WORKER_RESTARTED = 0x1010  # payloads.WorkerRestarted
    DRAIN = 0x1011  # stop admitting sessions; payloads.DrainEvent
    # Gateway -> pipeline, forwarded by every stage.
    PLAYBACK = 0x1020  # one byte: 1 the gateway started sending an answer, 0 it finished
    OUTPUT_FORMAT = 0x1021  # the session's output format changed (slow-client degrade); JSON
    # Session options (the Realtime front end); gateway -> pipeline, forwarded by every stage.
    SESSION_UPDATE = 0x1022  # payloads.SessionOptions: applies from the next turn
    RESPONSE_CREATE = 0x1023  # answer now from the conversation as it stands (VAD numbers it)
    TRUNCATE = 0x1024  # payloads.Truncation: keep only the heard part of an answer in history
    # TTS -> gateway: where a clause's audio ends in the answer text (for TRUNCATE);
    # payloads.AudioMark. Control, so that it adds nothing to what stages drop as stale.
    AUDIO_MARK = 0x1025


assert max(Kind) <= MAX_KIND


def is_control(kind: int) -> bool:
    """True for control kinds, which are never dropped as stale."""
    return kind >= CONTROL_BASE


def kind_name(kind: int) -> str:
    """Readable name of a kind for logs; unknown values are shown in hex."""
    try:
        return Kind(kind).name
    except ValueError:
        return f"0x{kind:04x}"


class Flag(IntFlag):
    """Bits of the header's ``flags`` field."""

    # 0x0001 was STAMPED (a send stamp ending the payload); the send time is now the
    # header's ``sent_ns``, written by the ring. The bit stays unused.
    # The last record of its kind in this turn (final token, last chunk of answer audio).
    LAST = 0x0002
    # Speculative content that a later record of the same turn may replace.
    PROVISIONAL = 0x0004
    # A SESSION_OPEN sent again for a live session after a worker restart: stages that
    # know the session only move to the header's turn, keeping their session state.
    REOPEN = 0x0008
    # On CANCEL: the caller's utterance goes on under the new turn (a void speculation),
    # so STT keeps the audio it has; without it a new utterance starts.
    CONTINUE = 0x0010
    # On TEXT_INPUT (and the TRANSCRIPT_FINAL STT makes of it): add the text to the
    # conversation without answering it (Realtime's conversation.item.create).
    ITEM_ONLY = 0x0020


# -- session ids ----------------------------------------------------------------------

GATEWAY_BITS: Final[int] = 8
LOCAL_BITS: Final[int] = 32 - GATEWAY_BITS
MAX_GATEWAYS: Final[int] = 1 << GATEWAY_BITS
MAX_LOCAL_SESSION: Final[int] = (1 << LOCAL_BITS) - 1


def session_id(gateway: int, local: int) -> int:
    """The 32-bit session id of the ``local``-th session of gateway ``gateway``."""
    if not 0 <= gateway < MAX_GATEWAYS:
        raise ValueError(f"gateway index {gateway} is outside 0..{MAX_GATEWAYS - 1}")
    if not 0 <= local <= MAX_LOCAL_SESSION:
        raise ValueError(f"local session number {local} is outside 0..{MAX_LOCAL_SESSION}")
    return (gateway << LOCAL_BITS) | local


def gateway_of(session: int) -> int:
    """Index of the gateway that owns ``session``."""
    return session >> LOCAL_BITS


def local_of(session: int) -> int:
    """The gateway-local part of ``session``."""
    return session & MAX_LOCAL_SESSION


