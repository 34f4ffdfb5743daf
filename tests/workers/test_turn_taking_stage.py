"""Turn-taking decisions from chunk probabilities: exact sample positions."""

from __future__ import annotations

import pytest

from voicegate.workers.stages.turn_taking import Decision, TurnParams, TurnTaker

CHUNK = 512
PARAMS = TurnParams(
    threshold=0.5, low_threshold=0.35, min_speech=3 * CHUNK, pause=2 * CHUNK,
    end_of_turn=6 * CHUNK, barge_in_speech=5 * CHUNK, pad=100,
)


def run(
    taker: TurnTaker, probabilities: str, start_chunk: int = 0
) -> list[tuple[Decision, int, int]]:
    """Probabilities as a string: 'S' speech (0.9), '.' silence (0.05), '~' in between."""
    value = {"S": 0.9, ".": 0.05, "~": 0.4}
    got = []
    for i, ch in enumerate(probabilities, start_chunk):
        decided = taker.push(i * CHUNK, (i + 1) * CHUNK, value[ch])
        if decided is not None:
            got.append((decided.decision, decided.sample, i))
    return got


def test_start_pause_and_end_of_turn_at_exact_samples() -> None:
    taker = TurnTaker(PARAMS)
    got = run(taker, "..SSSSS" + "." * 10)
    assert got == [
        (Decision.START, 2 * CHUNK - 100, 4),  # decided after 3 speech chunks, padded
        (Decision.PAUSE, 7 * CHUNK + 100, 8),  # 2 silent chunks; the end is padded
        (Decision.END_OF_TURN, 7 * CHUNK + 100, 12),  # 6 silent chunks
    ]


def test_speech_inside_the_end_of_turn_silence_resumes_the_turn() -> None:
    taker = TurnTaker(PARAMS)
    got = run(taker, "SSS" + "..." + "SSS" + "." * 8)
    assert [d for d, _, _ in got] == [
        Decision.START, Decision.PAUSE, Decision.RESUME, Decision.PAUSE, Decision.END_OF_TURN
    ]
    assert got[2] == (Decision.RESUME, 6 * CHUNK - 100, 8)


def test_candidate_speech_holds_the_end_of_turn_until_it_fades() -> None:
    taker = TurnTaker(PARAMS)
    # Silence from chunk 3; at chunk 8 the silence would end the turn, but a blip of
    # speech (too short to resume) started at chunk 7: the turn ends only once it faded.
    got = run(taker, "SSS" + "...." + "SS" + "......")
    assert [d for d, _, _ in got] == [Decision.START, Decision.PAUSE, Decision.END_OF_TURN]
    assert got[-1][2] == 10


def test_in_between_probabilities_change_nothing() -> None:
    taker = TurnTaker(PARAMS)
    assert [d for d, _, _ in run(taker, "SSS" + "~" * 20)] == [Decision.START]


def test_during_playback_only_long_enough_speech_barges_in() -> None:
    taker = TurnTaker(PARAMS)
    taker.playing = True
    assert run(taker, "SSSS" + "...") == []  # a cough: shorter than barge_in_speech
    got = run(taker, "SSSSS", start_chunk=7)
    assert got == [(Decision.BARGE_IN, 7 * CHUNK - 100, 11)]
    assert not taker.playing


def test_end_of_turn_shorter_than_the_pause_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than the pause"):
        TurnParams(0.5, 0.35, 1, pause=10, end_of_turn=5, barge_in_speech=1, pad=0)


def test_commit_ends_the_utterance_where_the_audio_stops() -> None:
    taker = TurnTaker(PARAMS)
    assert taker.commit(100) == []  # nothing to end
    run(taker, "SSSS")
    got = taker.commit(4 * CHUNK + 10)
    assert [(d.decision, d.sample) for d in got] == [
        (Decision.PAUSE, 4 * CHUNK + 10), (Decision.END_OF_TURN, 4 * CHUNK + 10)
    ]
    run(taker, "SSSS...", start_chunk=10)  # paused: only the end follows
    ((decision, sample),) = [(d.decision, d.sample) for d in taker.commit(17 * CHUNK)]
    assert (decision, sample) == (Decision.END_OF_TURN, 14 * CHUNK + 100)


def test_a_pause_shorter_than_the_pad_still_cuts_where_the_end_of_turn_does() -> None:
    params = TurnParams(0.5, 0.35, CHUNK, pause=100, end_of_turn=4 * CHUNK,
                        barge_in_speech=CHUNK, pad=CHUNK + 10)
    got = run(TurnTaker(params), "SS" + "......")
    assert [d for d, _, _ in got] == [Decision.START, Decision.PAUSE, Decision.END_OF_TURN]
    assert got[1][1] == got[2][1] == 2 * CHUNK + CHUNK + 10
