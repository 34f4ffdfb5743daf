"""`python -m bench summary`: one table of the headline figures of the benches that have
written their JSON into the results folder (ring, models, e2e, and gateway when present).
A bench that has not run is listed as missing, not left out silently."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report

Row = list[Any]  # bench, figure, value, target, met


def _ring(data: dict[str, Any]) -> list[Row]:
    return [
        ["ring", f"{t['target']} [{t['placement']}]", t["value"], t["limit"], t["met"]]
        for t in data.get("targets", [])
    ]


def _models(data: dict[str, Any]) -> list[Row]:
    batch = max(data.get("batches") or [0])
    return [
        ["models", f"{engine}: batching gain at batch {batch} (x)", gain, None, None]
        for engine, gain in sorted(data.get("gain_at_max_batch", {}).items())
    ]


def _e2e(data: dict[str, Any]) -> list[Row]:
    budget = float(data.get("budget_ms", 500.0))
    # The level: there p95 must stay within the end-of-turn silence + 100 ms;
    # at every other level the SLO budget applies.
    compared = data.get("options", {}).get("sessions")
    rows: list[Row] = []
    for name, result in data.get("results", {}).items():
        for level in result["levels"]:
            p95 = level["v2v_ms"]["p95"]
            silence = level["server_ms"]["end_of_turn_silence"]["p50"]
            target: float | None = budget
            if level["sessions"] == compared:
                target = None if math.isnan(silence) else silence + 100.0
            rows.append([
                "e2e", f"{name}: v2v p95 at {level['sessions']} sessions (ms)", p95, target,
                None if target is None else p95 <= target,
            ])  # fmt: skip
            if level["errors"]:
                rows.append(["e2e", f"{name}: errors at {level['sessions']} sessions",
                             level["errors"], 0, False])  # fmt: skip
        if result.get("capacity") is not None:
            rows.append(["e2e", f"{name}: sessions at p95 <= {budget:.0f} ms",
                         result["capacity"], None, None])  # fmt: skip
    for name, comp in data.get("comparisons", {}).items():
        if comp.get("p95_ratio") is not None:
            met = comp["p95_ratio"] >= 3.0 if name == "sequential" else None
            at = comp.get("sessions")
            rows.append(["e2e", f"{name} p95 / voicegate p95 at {at} sessions (x)",
                         comp["p95_ratio"],
                         3.0 if name == "sequential" else None, met])  # fmt: skip
        if comp.get("p95_ratio_at_capacity") is not None:
            sequential = name == "sequential"
            rows.append(["e2e", f"{name} p95 / voicegate p95 at voicegate's capacity, "
                         f"{comp.get('capacity_sessions')} sessions (x)",
                         comp["p95_ratio_at_capacity"], 3.0 if sequential else None,
                         comp["p95_ratio_at_capacity"] >= 3.0 if sequential else None])  # fmt: skip
        if comp.get("capacity_ratio") is not None:
            # The single-process design and Pipecat: the framework designs voicegate
            # must carry at least twice the load of.
            framework = name in ("single_process", "pipecat")
            met = comp["capacity_ratio"] >= 2.0 if framework else None
            rows.append(["e2e", f"voicegate capacity / {name} capacity (x)",
                         comp["capacity_ratio"], 2.0 if framework else None,
                         met])  # fmt: skip
    if data.get("baselines"):  # results written before the peers registry
        rows.append(["e2e", f"baselines: {data['baselines']}", None, None, None])
    for name, why in (data.get("peers_unavailable") or {}).items():
        rows.append(["e2e", f"peer {name}: {why}", None, None, None])
    return rows


def _gateway(data: dict[str, Any]) -> list[Row]:
    budget = data.get("budget_ms", 5.0)
    held = data.get("sessions_held", {})
    per_session = data.get("server_cpu_pct_per_session", {})
    rows: list[Row] = [
        ["gateway", f"{name}: sessions held at p99 <= {budget:g} ms", count, None, None]
        for name, count in held.items()
    ]
    rows += [
        ["gateway", f"{name}: server CPU % per session", pct, None, None]
        for name, pct in per_session.items()
    ]
    ratio = data.get("ratio")
    if isinstance(ratio, float) and not math.isnan(ratio):
        rows.append(["gateway", "voicegate / echo sessions held (x)", ratio, 0.9, ratio >= 0.9])
    return rows


def _generic(name: str) -> Callable[[dict[str, Any]], list[Row]]:
    """Benches without a reader of their own: their ``targets`` list, if they have one."""

    def rows(data: dict[str, Any]) -> list[Row]:
        return [
            [name, str(t.get("target")), t.get("value"), t.get("limit"), t.get("met")]
            for t in data.get("targets", [])
            if isinstance(t, dict)
        ]

    return rows


READERS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "ring": _ring,
    "models": _models,
    "e2e": _e2e,
    "gateway": _gateway,
}


def summarize(folder: Path, names: list[str]) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        path = folder / f"{name}.json"
        if not path.is_file():
            rows.append([name, f"missing: {path} (bench not run)", None, None, None])
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            rows.append([name, f"unreadable: {path} ({exc})", None, None, None])
            continue
        try:
            rows += READERS.get(name, _generic(name))(data)
        except (KeyError, TypeError, ValueError) as exc:
            rows.append([name, f"unexpected layout of {path}: {exc!r}", None, None, None])
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench summary", description=__doc__)
    parser.add_argument("--out", help="results folder (default bench/results)")
    parser.add_argument("--benches", nargs="+", help="default: ring models e2e (and gateway)")
    args = parser.parse_args(argv)
    names = args.benches or ["ring", "models", "e2e"]
    if args.benches is None and (Path(__file__).parent / "gateway.py").is_file():
        names.append("gateway")
    rows = summarize(report.results_dir(args.out), names)
    table = [[r[0], r[1], r[2], r[3], None if r[4] is None else ("yes" if r[4] else "NO")]
             for r in rows]  # fmt: skip
    print(report.format_table(["bench", "figure", "value", "target", "met"], table))
    return 0
