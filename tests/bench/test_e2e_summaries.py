"""The figures `bench e2e` and `bench summary` derive from turn records and result JSON:
exact values on hand-made inputs."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import e2e, summary
from bench._e2e_client import load_manifest


def _turn(v2v: float | None, silence: float = 300.0, error: str | None = None) -> dict[str, Any]:
    server = None
    if v2v is not None:
        server = dict.fromkeys(e2e.STAGES, 1.0)
        server.update(end_of_turn_silence=silence, after_end_of_turn=5.0, voice_to_voice=v2v)
    return {"session": 0, "file": "a.wav", "start_s": 0.0, "voice_to_voice_ms": v2v,
            "server_ms": server, "speculative": v2v is not None, "error": error,
            "extra_answers": 0}  # fmt: skip


def test_summarize_percentiles_and_errors() -> None:
    turns = [_turn(float(v)) for v in range(100, 1100, 100)]
    turns.append(_turn(None, error="no response.done within 15.0 s"))
    turns.append(_turn(None, error="response cancelled (barge_in)"))
    s = e2e.summarize(turns)
    assert s["turns"] == 12 and s["answered"] == 10 and s["errors"] == 2
    assert s["error_kinds"] == {"no response.done within 15.0 s": 1, "response cancelled": 1}
    assert s["v2v_ms"]["p50"] == pytest.approx(550.0)
    assert s["v2v_ms"]["p95"] == pytest.approx(955.0)
    assert s["v2v_ms"]["max"] == 1000.0
    assert s["server_ms"]["end_of_turn_silence"]["mean"] == 300.0
    assert s["speculative"] == 10


def test_summarize_without_answers_reports_nan() -> None:
    s = e2e.summarize([_turn(None, error="connection closed (1011)")])
    assert math.isnan(s["v2v_ms"]["p95"]) and s["errors"] == 1


def test_ramp_steps_double_after_the_first_levels() -> None:
    assert list(e2e.ramp_steps(160)) == [5, 10, 20, 40, 80, 160]
    assert list(e2e.ramp_steps(12)) == [5, 10]


def test_within_slo_needs_p95_and_almost_no_errors() -> None:
    level = e2e.summarize([_turn(400.0)] * 99 + [_turn(None, error="x")])
    level["connect_errors"] = []
    assert e2e._within_slo(level, 500.0)
    assert not e2e._within_slo(level, 300.0)
    level["errors"] = 2
    assert not e2e._within_slo(level, 500.0)


def test_load_manifest_names_the_bad_field(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"utterances": [{"file": "a.wav"}]}))
    with pytest.raises(ValueError, match=r"utterances\[0\]\.speech_end_s"):
        load_manifest(tmp_path)


def test_summary_reads_e2e_and_lists_missing_benches(tmp_path: Path) -> None:
    level = e2e.summarize([_turn(380.0), _turn(420.0)])
    level["sessions"] = 20
    level_40 = {**level, "sessions": 40}
    data = {
        "budget_ms": 500.0,
        "options": {"sessions": 20},
        "results": {"voicegate": {"levels": [level, level_40], "capacity": 40},
                    "sequential": {"levels": [level], "capacity": 10}},
        "comparisons": {"sequential": {"sessions": 20, "p95_ratio": 3.5, "capacity_ratio": 4.0,
                                       "capacity_sessions": 40, "p95_ratio_at_capacity": 2.5}},
        "baselines": None,
    }  # fmt: skip
    (tmp_path / "e2e.json").write_text(json.dumps(data))
    rows = summary.summarize(tmp_path, ["e2e", "ring"])
    by_figure = {r[1]: r for r in rows}
    p95 = by_figure["voicegate: v2v p95 at 20 sessions (ms)"]
    assert p95[2] == pytest.approx(418.0) and p95[3] == 400.0 and p95[4] is False
    # other levels are held to the SLO budget
    assert by_figure["voicegate: v2v p95 at 40 sessions (ms)"][3:] == [500.0, True]
    assert by_figure["voicegate: sessions at p95 <= 500 ms"][2] == 40
    assert by_figure["sequential p95 / voicegate p95 at 20 sessions (x)"][4] is True
    at_capacity = "sequential p95 / voicegate p95 at voicegate's capacity, 40 sessions (x)"
    assert by_figure[at_capacity][2:] == [2.5, 3.0, False]
    assert any(r[0] == "ring" and r[1].startswith("missing:") for r in rows)


def test_refine_step_bisects_on_the_grid_until_neighbours() -> None:
    assert e2e.refine_step(80, 160, 10) == 120
    assert e2e.refine_step(80, 120, 10) == 100
    assert e2e.refine_step(100, 120, 10) == 110
    assert e2e.refine_step(110, 120, 10) is None
    assert e2e.refine_step(0, 5, 10) is None


def test_ramp_can_start_higher_and_levels_must_rise() -> None:
    assert list(e2e.ramp_steps(160, (20,))) == [20, 40, 80, 160]
    assert e2e._levels("10,30") == (10, 30)
    for bad in ("30,10", "0,5", "a"):
        with pytest.raises(argparse.ArgumentTypeError):
            e2e._levels(bad)


def test_summary_reads_the_gateway_bench(tmp_path: Path) -> None:
    data = {
        "budget_ms": 5.0,
        "sessions_held": {"echo": 500, "voicegate": 175},
        "server_cpu_pct_per_session": {"echo": 0.2, "voicegate": 0.5},
        "ratio": 0.35,
    }
    (tmp_path / "gateway.json").write_text(json.dumps(data))
    by_figure = {r[1]: r for r in summary.summarize(tmp_path, ["gateway"])}
    assert by_figure["echo: sessions held at p99 <= 5 ms"][2] == 500
    assert by_figure["voicegate / echo sessions held (x)"][2:] == [0.35, 0.9, False]
