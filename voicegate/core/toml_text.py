"""Writing TOML: the standard library reads it (tomllib) but does not write it.

bundle.toml, `voicegate config show` and the node files tests write need no more than
nested tables of strings, numbers, booleans, paths and lists or inline tables of those.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any


def dumps(doc: Mapping[str, Any]) -> str:
    """TOML text of nested tables; a table holding only tables gets no header of its own."""
    lines: list[str] = []
    _dump_table(doc, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _dump_table(table: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
    subtables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    if path and (scalars or not subtables):
        lines.append("")
        lines.append("[" + ".".join(toml_key(p) for p in path) + "]")
    for key, value in scalars:
        lines.append(f"{toml_key(key)} = {toml_value(value, [*path, key])}")
    for key, value in subtables:
        _dump_table(value, [*path, key], lines)


def toml_key(key: str) -> str:
    """A bare key where TOML allows one, else a quoted key."""
    if key and all(c.isalnum() or c in "-_" for c in key) and key.isascii():
        return key
    return toml_string(key)


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(value: object, where: Sequence[str] = ()) -> str:
    """One value; ``where`` (the key path) names the field in the error for a type TOML
    cannot hold. Mappings become inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, Path):
        return toml_string(PurePath(value).as_posix())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v, where) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{toml_key(str(k))} = {toml_value(v, [*where, str(k)])}" for k, v in value.items()
        )
        return "{" + items + "}" if items else "{}"
    raise TypeError(f"field {'.'.join(where)}: cannot write {type(value).__name__} as TOML")
