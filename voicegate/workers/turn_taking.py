"""Turn-taking decisions of one session, from the VAD's per-chunk speech probabilities.

Positions are sample indices of the session's 16 kHz stream, never wall time, so the same
audio gives the same decisions however fast it is sent.

- idle -> speech: ``min_speech`` samples of speech (``barge_in_speech`` while an answer
  plays: the decision is then a barge-in) -> START (or BARGE_IN);
- speech -> paused: ``pause`` samples of silence -> PAUSE; speculation starts here;
- paused -> speech: ``min_speech`` samples of speech again -> RESUME; the speculation is void;
- paused -> idle: ``end_of_turn`` samples of silence since the speech ended, with no
  candidate speech pending -> END_OF_TURN;
- ``commit`` (the caller ended the turn explicitly): PAUSE if still speech, END_OF_TURN.

With ``manual`` set (a session whose client commits its turns) silence never ends the
turn: the utterance stays paused, through any pause length, until ``commit``.

A chunk at or above ``threshold`` is speech, one below ``low_threshold`` silence; one in
between changes nothing (hysteresis, as in Silero's own iterator). A speech candidate
that falls silent for ``forget`` samples (at least ``pause``) is forgotten; shorter dips
keep it, as Silero's own segmentation keeps a segment together across them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Decision(Enum):
    START = "start"
    BARGE_IN = "barge_in"
    PAUSE = "pause"
    RESUME = "resume"
    END_OF_TURN = "end_of_turn"


class Phase(Enum):
    IDLE = "idle"
    SPEECH = "speech"
    PAUSED = "paused"


@dataclass(frozen=True)
class TurnParams:
    """Thresholds in probability, durations in 16 kHz samples."""

    threshold: float
    low_threshold: float
    min_speech: int
    pause: int
    end_of_turn: int
    barge_in_speech: int
    pad: int  # added before a start and after an end, as Silero's segmenter does
    forget: int = 0  # silence that drops candidate speech; at least ``pause``

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_threshold <= self.threshold < 1.0:
            raise ValueError("turn taking needs 0 <= low_threshold <= threshold < 1")
        if self.end_of_turn < self.pause:
            raise ValueError(
                f"end-of-turn silence ({self.end_of_turn} samples) is shorter than the "
                f"pause that starts speculation ({self.pause} samples)"
            )


@dataclass(frozen=True)
class TurnDecision:
    decision: Decision
    sample: int  # START/BARGE_IN/RESUME: where the speech starts (padded); PAUSE and
    # END_OF_TURN: where the utterance ends (padded)
    speech_end: int  # PAUSE and END_OF_TURN: the first silent sample (unpadded), else -1


class TurnTaker:
    """Feed ``push`` every chunk's probability in stream order."""

    def __init__(self, params: TurnParams) -> None:
        self.params = params
        self.phase = Phase.IDLE
        self.playing = False  # the gateway is sending an answer to this caller
        self.manual = False  # only ``commit`` ends a turn
        self._onset: int | None = None  # first sample of candidate speech
        self._quiet_from: int | None = None  # first silent sample after a candidate
        self._silence_from: int | None = None  # first silent sample after speech
        self._last_end = 0  # a start's padding never reaches into the previous utterance

    def reset(self) -> None:
        """Back to idle, forgetting any utterance in progress (a typed turn replaced it)."""
        self.phase = Phase.IDLE
        self._onset = self._quiet_from = self._silence_from = None

    def commit(self, position: int) -> list[TurnDecision]:
        """The caller ended the turn explicitly at stream ``position``: an utterance in
        progress pauses (if it was still speech) and ends now."""
        if self.phase is Phase.IDLE:
            return []
        decided: list[TurnDecision] = []
        if self.phase is Phase.SPEECH:
            decided.append(TurnDecision(Decision.PAUSE, position, position))
            speech_end = end = position
        else:
            assert self._silence_from is not None
            speech_end = self._silence_from
            end = min(speech_end + self.params.pad, position)
        decided.append(TurnDecision(Decision.END_OF_TURN, end, speech_end))
        self._last_end = end
        self.reset()
        return decided

    def push(self, start: int, end: int, probability: float) -> TurnDecision | None:
        p = self.params
        speech = probability >= p.threshold
        silence = probability < p.low_threshold
        if self.phase is Phase.SPEECH:
            if speech:
                self._silence_from = None
            elif silence and self._silence_from is None:
                self._silence_from = start
            # Never before the pad has passed: the pause's cut (speech end + pad) is then
            # the same as the end of turn's, so the provisional transcript is the final.
            if self._silence_from is not None and end - self._silence_from >= max(p.pause, p.pad):
                self.phase = Phase.PAUSED
                return self._ended(Decision.PAUSE, end)
            return None
        decided = self._candidate(start, end, speech, silence)
        if self.phase is Phase.IDLE:
            if decided is None:
                return None
            barge_in = self.playing
            self.playing = False  # the answer that was playing is cancelled
            onset = self._take_onset()
            self.phase = Phase.SPEECH
            return TurnDecision(
                Decision.BARGE_IN if barge_in else Decision.START,
                max(onset - p.pad, self._last_end),
                -1,
            )
        # Paused: speech again, or enough silence to end the turn.
        assert self._silence_from is not None
        if decided is not None:
            self.phase = Phase.SPEECH
            self._silence_from = None
            return TurnDecision(Decision.RESUME, max(self._take_onset() - p.pad, 0), -1)
        if self._onset is None and not self.manual and end - self._silence_from >= p.end_of_turn:
            self.phase = Phase.IDLE
            return self._ended(Decision.END_OF_TURN, end)
        return None

    def _candidate(self, start: int, end: int, speech: bool, silence: bool) -> int | None:
        """Track candidate speech; the chunk end at which it becomes a decided start."""
        p = self.params
        if speech:
            if self._onset is None:
                self._onset = start
            self._quiet_from = None
            barge_in = self.playing and self.phase is Phase.IDLE
            needed = p.barge_in_speech if barge_in else p.min_speech
            if end - self._onset >= needed:
                return end
        elif silence and self._onset is not None:
            if self._quiet_from is None:
                self._quiet_from = start
            if end - self._quiet_from >= max(p.pause, p.forget):
                self._onset = self._quiet_from = None
        return None

    def _take_onset(self) -> int:
        assert self._onset is not None
        onset = self._onset
        self._onset = self._quiet_from = None
        return onset

    def _ended(self, decision: Decision, end: int) -> TurnDecision:
        assert self._silence_from is not None
        speech_end = self._silence_from
        padded = min(speech_end + self.params.pad, end)
        if decision is Decision.END_OF_TURN:
            self._last_end = padded
            self._silence_from = None
        return TurnDecision(decision, padded, speech_end)
