"""The effective configuration as TOML, each value marked with where it came from.

``render_config`` loads the configuration exactly as a node does (``load_config``: the
file, then ``VOICEGATE_*`` overrides) and prints every key with a trailing comment:
``# default``, ``# file`` or ``# env VOICEGATE_...``. The output is itself a valid
configuration file that loads to the same configuration.
"""

from __future__ import annotations

import dataclasses
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
    _leaf_keys,
    load_config,
)
from voicegate.core.toml_text import toml_value


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
            lines.append(f"{f.name} = {toml_value(value, key.split('.'))}  # {origin}")
    return lines


