"""The py-spy raw-output summary of bench e2e --profile."""

from __future__ import annotations

from bench._pyspy import summarize


def test_summary_counts_inclusive_and_self_shares_without_the_call_path() -> None:
    lines = [
        "main (w.py:1);loop (w.py:9);run (ort.py:4) 60",
        "main (w.py:1);loop (w.py:9);append (vad.py:7) 30",
        "main (w.py:1);loop (w.py:10) 10",
        "garbage line",
    ]
    s = summarize(lines)
    assert s["samples"] == 100
    # main and loop are on every sample: the call path, not a cost.
    assert s["inclusive"] == [["run (ort.py)", 60.0], ["append (vad.py)", 30.0]]
    assert s["self"] == [["run (ort.py)", 60.0], ["append (vad.py)", 30.0], ["loop (w.py)", 10.0]]


def test_event_loop_and_process_start_frames_are_left_out() -> None:
    lines = [
        "_main (spawn.py:1);_run_once (base_events.py:9);send (gateway.py:4) 30",
        "_main (spawn.py:1);_run_once (base_events.py:9);select (selectors.py:2) 60",
        "idle (worker.py:1) 10",
    ]
    s = summarize(lines)
    # selectors.py is the loop's idle wait: not a cost either
    assert s["inclusive"] == [["send (gateway.py)", 30.0], ["idle (worker.py)", 10.0]]


def test_empty_profile() -> None:
    assert summarize([]) == {"samples": 0, "inclusive": [], "self": []}
