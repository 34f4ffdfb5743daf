"""The effective configuration as TOML, each value marked with where it came from.

``render_config`` loads the configuration exactly as a node does (``load_config``: the
file, then ``VOICEGATE_*`` overrides) and prints every key with a trailing comment:
``# default``, ``# file`` or ``# env VOICEGATE_...``. The output is itself a valid
configuration file that loads to the same configuration.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from voicegate.core.config import (
    CONFIG_ENV,
    STAGES,
    NodeConfig,
    _env_keys,  # the one definition of the VOICEGATE_* names
    load_config,
)


def render_config(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> str:
    """TOML text of the effective configuration; raises ``ConfigError`` as
    ``load_config`` does."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    config = load_config(path, env)
    file_keys: set[str] = set()
    if path is not None:
        # load_config has read and validated it already.
        with Path(path).open("rb") as f:
            file_keys = set(_leaf_keys(tomllib.load(f)))
    env_vars = {".".join(key): var for var, key in _env_keys().items() if var in env}

    def source(key: str) -> str:
        if key in env_vars:
            return f"env {env_vars[key]}"
        return "file" if key in file_keys else "default"

    lines = [
        f"# effective configuration of node {config.node.name!r}",
        f"# file: {path if path is not None else '(none)'}; "
        "each value says where it came from: default, file or env",
    ]
    for section in dataclasses.fields(NodeConfig):
        if section.name == "workers":
            continue
        lines.append("")
        lines.append(f"[{section.name}]")
        lines.extend(_section_lines(section.name, getattr(config, section.name), source))
    for stage in STAGES:
        lines.append("")
        lines.append(f"[workers.{stage}]")
        lines.extend(_section_lines(f"workers.{stage}", config.workers[stage], source))
    return "\n".join(lines) + "\n"


def _section_lines(prefix: str, settings: Any, source: Any) -> list[str]:
    lines: list[str] = []
    for f in dataclasses.fields(settings):
        key = f"{prefix}.{f.name}"
        value = getattr(settings, f.name)
        origin = source(key)
        if value is None:
            # TOML has no null: an unset optional value is shown commented out.
            lines.append(f"# {f.name} is unset  # {origin}")
        else:
            lines.append(f"{f.name} = {_toml_value(value, key)}  # {origin}")
    return lines


def _leaf_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and not dotted.endswith(".options"):
            keys.extend(_leaf_keys(value, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def _toml_value(value: Any, key: str) -> str:
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
    if isinstance(value, str | Path):
        return _toml_string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v, key) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{_toml_key(str(k))} = {_toml_value(v, f'{key}.{k}')}" for k, v in value.items()
        )
        return "{" + items + "}" if items else "{}"
    raise TypeError(f"{key} = {value!r}: no TOML form for {type(value).__name__}")


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key) and key.isascii():
        return key
    return _toml_string(key)


def _toml_string(text: str) -> str:
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

