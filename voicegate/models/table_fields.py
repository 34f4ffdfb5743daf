"""Typed reads of one stage's bundle.toml table, with errors that name the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from voicegate.models.errors import BundleError

T = TypeVar("T", int, float, str, bool)


class TableReader:
    """Reads fields of the ``[stage]`` table of ``base/bundle.toml``."""

    def __init__(self, table: Mapping[str, Any], base: Path, stage: str) -> None:
        self.table = table
        self.base = base
        self.stage = stage
        self.file = base / "bundle.toml"

    def _error(self, key: str, problem: str, expected: object, found: object) -> BundleError:
        return BundleError(
            self.file, f"[{self.stage}] {key}: {problem}", expected=expected, found=found
        )

    def get(self, key: str, kind: type[T], default: T | None = None) -> T:
        if key not in self.table:
            if default is None:
                raise self._error(key, "missing field", kind.__name__, "nothing")
            return default
        value = self.table[key]
        # bool is an int subclass, and an int is acceptable where a float is wanted.
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise self._error(key, "wrong type", kind.__name__, repr(value))
        result: T = value
        return result

    def positive(self, key: str, kind: type[T], default: T | None = None) -> T:
        value = self.get(key, kind, default)
        if isinstance(value, int | float) and value <= 0:
            raise self._error(key, "must be positive", "> 0", value)
        return value

    def path(self, key: str, *, required: bool = True) -> Path | None:
        if key not in self.table and not required:
            return None
        rel = self.get(key, str)
        path = self.base / rel
        if not path.is_file():
            raise BundleError(path, f"file named by [{self.stage}] {key} not found")
        return path


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(path, f"cannot read JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(path, "expected a JSON object", expected="object",
                          found=type(data).__name__)
    return data


def json_field(data: Mapping[str, Any], path: Path, key: str, kind: type[Any]) -> Any:
    """A required field of a JSON object; ``key`` may be dotted ("audio.sample_rate")."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise BundleError(path, f"missing field {key}", expected=kind.__name__,
                              found="nothing")
        node = node[part]
    bad_bool = isinstance(node, bool) and kind is not bool
    if not isinstance(node, kind) or bad_bool:
        if kind is float and isinstance(node, int) and not isinstance(node, bool):
            return float(node)
        raise BundleError(path, f"wrong type of field {key}", expected=kind.__name__,
                          found=repr(node))
    return node
