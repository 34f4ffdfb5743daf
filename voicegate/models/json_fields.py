"""Typed reads of a bundle's JSON side files (Hugging Face and Piper configs); errors name
the file and the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from voicegate.models.errors import BundleError


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``."""
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
