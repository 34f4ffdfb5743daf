"""Validate a bundle: load every stage's models through its engine and time one call.

Any mismatch raises ``BundleError`` naming the file, the tensor, and what was expected
and found; ``format_reports`` renders what a successful check learnt about each model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from voicegate.models.bundle import STAGES, Bundle, load_bundle
from voicegate.models.graphs.synth import stage_module
from voicegate.models.runtime import ExecutionConfig
from voicegate.models.spec import StageReport


def check_bundle(
    root: Path, config: ExecutionConfig | None = None, stages: Sequence[str] = STAGES
) -> tuple[Bundle, list[StageReport]]:
    """Check the named stages of the bundle at ``root`` (all four by default)."""
    config = config or ExecutionConfig()
    bundle = load_bundle(root, require=stages)
    reports: list[StageReport] = []
    for stage in STAGES:
        if stage in stages:
            reports += stage_module(stage).check(bundle.table(stage), bundle.root, config)
    return bundle, reports


def format_reports(bundle: Bundle, reports: Sequence[StageReport]) -> str:
    lines = [f"bundle {bundle.name!r} at {bundle.root}"]
    for report in reports:
        try:
            shown = report.file.relative_to(bundle.root)
        except ValueError:
            shown = report.file
        timing = "" if report.call_ms is None else f"  one call: {report.call_ms:.2f} ms"
        lines.append(f"[{report.stage}] {shown}{timing}")
        for title, tensors in (("input", report.inputs), ("output", report.outputs)):
            for name, kind, shape in tensors:
                lines.append(f"    {title:<6} {name:<40} {kind:<16} {shape}")
        for key, value in report.parameters.items():
            lines.append(f"    {key} = {value}")
    return "\n".join(lines)
