"""What waits to go to one client: answer audio, turn events and the connection's own
frames, in order, bounded in audio while the client is stalled."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from voicegate.server.protocols.base import TurnEvent
from voicegate.server.protocols.native_events import (
    ErrorEvent,
    ResponseAudioStarted,
    ResponseStarted,
    ResponseTextDelta,
)


@dataclass(frozen=True, slots=True)
class AudioItem:
    """Answer audio for the client, in the session's current output format."""

    turn: int
    data: bytes
    last: bool


@dataclass(frozen=True, slots=True)
class EventItem:
    turn: int  # 0: not about a turn
    event: TurnEvent


@dataclass(frozen=True, slots=True)
class DoneItem:
    """Placeholder for response.done: rendered when the sender reaches it."""

    turn: int


@dataclass(frozen=True, slots=True)
class TextItem:
    """A JSON text message prepared by the connection's state machine."""

    text: str = field(repr=False)
    type: str


@dataclass(frozen=True, slots=True)
class CloseItem:
    code: int
    reason: str


Item = AudioItem | EventItem | DoneItem | TextItem | CloseItem


class SendQueue:
    """What is waiting to go to one client. Bounded in audio items while the client is
    stalled: ``push_audio`` returns False instead of growing past ``max_audio`` when
    ``stalled()`` says the socket has stopped taking data (the slow-client signal). A
    burst that a reading client will take at network speed is not refused: TTS produces
    faster than real time. Events are never refused, they are few and small."""

    def __init__(self, max_audio: int) -> None:
        if max_audio < 1:
            raise ValueError(f"max_audio must be >= 1, got {max_audio}")
        self.max_audio = max_audio
        self.items: deque[Item] = deque()
        self.audio = 0
        self.on_push: Callable[[], None] = lambda: None
        self.stalled: Callable[[], bool] = lambda: True

    def __len__(self) -> int:
        return len(self.items)

    def push(self, item: Item) -> None:
        self.items.append(item)
        if isinstance(item, AudioItem):
            self.audio += 1
        self.on_push()

    def push_audio(self, item: AudioItem) -> bool:
        if self.audio >= self.max_audio and self.stalled():
            return False
        self.push(item)
        return True

    def pop(self) -> Item | None:
        if not self.items:
            return None
        item = self.items.popleft()
        if isinstance(item, AudioItem):
            self.audio -= 1
        return item

    def drop_turns_below(self, turn: int) -> int:
        """Take back queued audio and answer events of turns before ``turn``."""
        kept: deque[Item] = deque()
        dropped = 0
        for item in self.items:
            stale = isinstance(item, AudioItem | DoneItem) or (
                isinstance(item, EventItem) and _is_answer_event(item.event)
            )
            if stale and 0 < item_turn(item) < turn:
                dropped += 1
                if isinstance(item, AudioItem):
                    self.audio -= 1
                continue
            kept.append(item)
        self.items = kept
        return dropped

    def drop_pipeline_items(self) -> None:
        """Keep only what the connection itself said (session, degrade and error events):
        the backlog of a closing session is not worth waiting for."""
        self.items = deque(i for i in self.items if _said_by_connection(i))
        self.audio = 0


def item_turn(item: Item) -> int:
    return item.turn if isinstance(item, AudioItem | EventItem | DoneItem) else 0


def _said_by_connection(item: Item) -> bool:
    return isinstance(item, TextItem | CloseItem) or (
        isinstance(item, EventItem) and isinstance(item.event, ErrorEvent)
    )


def _is_answer_event(event: TurnEvent) -> bool:
    return isinstance(event, ResponseStarted | ResponseTextDelta | ResponseAudioStarted)
