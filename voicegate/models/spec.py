"""Declared model interfaces and the check of a loaded model against them.

Every engine states the inputs and outputs its format requires as ``TensorSpec``s; the
same declaration drives both the engine's feeds and ``voicegate models check``, so a model
that loads is a model the engine can run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from voicegate.models.errors import BundleError

# onnxruntime's type strings, e.g. "tensor(float)".
ORT_TYPES = {
    "float32": "tensor(float)",
    "float16": "tensor(float16)",
    "int64": "tensor(int64)",
    "int32": "tensor(int32)",
    "bool": "tensor(bool)",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name (a regex when ``pattern``), dtype and rank.

    ``dims`` gives the fixed sizes the format pins (None where a dimension is free)."""

    name: str
    dtype: str
    dims: tuple[int | None, ...] | None = None
    pattern: bool = False
    optional: bool = False

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.name, name) is not None if self.pattern else self.name == name

    def describe(self) -> str:
        shape = "?" if self.dims is None else "[" + ", ".join(
            "*" if d is None else str(d) for d in self.dims
        ) + "]"
        return f"{self.dtype}{shape}"


@dataclass(frozen=True)
class StageReport:
    """What `models check` prints for one model file."""

    stage: str
    file: Path
    inputs: Sequence[tuple[str, str, str]]  # (name, type, shape)
    outputs: Sequence[tuple[str, str, str]]
    parameters: dict[str, object] = field(default_factory=dict)
    call_ms: float | None = None


def _shape_text(shape: Sequence[object]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def describe_io(session: ort.InferenceSession) -> tuple[
    list[tuple[str, str, str]], list[tuple[str, str, str]]
]:
    ins = [(i.name, i.type, _shape_text(i.shape)) for i in session.get_inputs()]
    outs = [(o.name, o.type, _shape_text(o.shape)) for o in session.get_outputs()]
    return ins, outs


def _check_side(
    path: Path,
    side: str,
    declared: Sequence[TensorSpec],
    actual: Sequence[ort.NodeArg],
) -> None:
    for spec in declared:
        found = [a for a in actual if spec.matches(a.name)]
        if not found:
            if spec.optional:
                continue
            names = ", ".join(a.name for a in actual)
            raise BundleError(
                path, f"missing {side}", tensor=spec.name, expected=spec.describe(),
                found=f"{side}s [{names}]",
            )
        for arg in found:
            expected_type = ORT_TYPES[spec.dtype]
            if arg.type != expected_type:
                raise BundleError(
                    path, f"wrong dtype of {side}", tensor=arg.name,
                    expected=expected_type, found=arg.type,
                )
            if spec.dims is None:
                continue
            if len(arg.shape) != len(spec.dims):
                raise BundleError(
                    path, f"wrong rank of {side}", tensor=arg.name,
                    expected=spec.describe(), found=_shape_text(arg.shape),
                )
            for want, got in zip(spec.dims, arg.shape, strict=True):
                if want is not None and isinstance(got, int) and got != want:
                    raise BundleError(
                        path, f"wrong shape of {side}", tensor=arg.name,
                        expected=spec.describe(), found=_shape_text(arg.shape),
                    )


def verify_io(
    session: ort.InferenceSession,
    path: Path,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> None:
    """Raise BundleError naming the file and tensor when the model does not match."""
    _check_side(path, "input", inputs, session.get_inputs())
    _check_side(path, "output", outputs, session.get_outputs())
