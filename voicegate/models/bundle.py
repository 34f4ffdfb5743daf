"""Model bundles: a directory whose ``bundle.toml`` names each stage's files and parameters.

``bundle.toml`` has a ``[bundle]`` table (name, format, seed) and one table per stage
(``[vad]``, ``[stt]``, ``[llm]``, ``[tts]``). Paths inside are relative to the bundle
directory, so a bundle can be copied or mounted anywhere. Every field is read through a
``TableReader``, whose errors name the file and the field, e.g.
``/models/demo/bundle.toml: field [llm] max_context: expected an integer >= 1, found -3``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, overload

from voicegate.core.toml_text import dumps as dumps_toml
from voicegate.models.errors import BundleError

BUNDLE_FILE = "bundle.toml"
FORMAT_VERSION = 1
STAGES: tuple[str, ...] = ("vad", "stt", "llm", "tts")

_MISSING: Any = object()
_ABSENT: Any = object()
_D = TypeVar("_D")


@dataclass(frozen=True)
class Bundle:
    """A parsed bundle.toml. Stage tables are kept raw; each stage reads its own."""

    root: Path
    name: str
    seed: int | None
    tables: Mapping[str, Mapping[str, Any]]

    @property
    def file(self) -> Path:
        return self.root / BUNDLE_FILE

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(s for s in STAGES if s in self.tables)

    def table(self, stage: str) -> Mapping[str, Any]:
        if stage not in self.tables:
            raise BundleError(self.file, f"missing table [{stage}]")
        return self.tables[stage]


def load_bundle(root: Path, require: Sequence[str] = STAGES) -> Bundle:
    """Parse ``root/bundle.toml``; every stage in ``require`` must have a table."""
    file = root / BUNDLE_FILE
    if not root.is_dir():
        raise BundleError(root, "bundle directory not found")
    if not file.is_file():
        raise BundleError(file, "bundle.toml not found")
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(file, f"not valid TOML: {exc}") from exc
    header = TableReader(_subtable(doc, "bundle", file), root, "bundle")
    version = header.integer("format")
    if version != FORMAT_VERSION:
        raise BundleError(
            file, "unsupported bundle format", expected=FORMAT_VERSION, found=version
        )
    name = header.string("name")
    seed = header.integer("seed", None)
    unknown = sorted(k for k in doc if k != "bundle" and k not in STAGES)
    if unknown:
        raise BundleError(
            file, f"unknown table [{unknown[0]}]", expected=f"one of {list(STAGES)}",
            found=unknown,
        )
    tables = {stage: _subtable(doc, stage, file) for stage in STAGES if stage in doc}
    for stage in require:
        if stage not in tables:
            raise BundleError(file, f"missing table [{stage}]")
    return Bundle(root=root, name=name, seed=seed, tables=tables)


def _subtable(doc: Mapping[str, Any], key: str, file: Path) -> Mapping[str, Any]:
    value = doc.get(key, _MISSING)
    if value is _MISSING:
        raise BundleError(file, f"missing table [{key}]")
    if not isinstance(value, dict):
        raise BundleError(file, f"[{key}] must be a table", found=type(value).__name__)
    return value


def write_bundle(
    root: Path, *, name: str, seed: int | None, tables: Mapping[str, Mapping[str, Any]]
) -> Path:
    """Write ``root/bundle.toml`` for the given stage tables."""
    header: dict[str, Any] = {"name": name, "format": FORMAT_VERSION}
    if seed is not None:
        header["seed"] = seed
    doc: dict[str, Any] = {"bundle": header}
    for stage in STAGES:
        if stage in tables:
            doc[stage] = tables[stage]
    file = root / BUNDLE_FILE
    file.write_text(dumps_toml(doc), encoding="utf-8")
    return file


def merge_stage_table(
    root: Path, stage: str, table: Mapping[str, Any], *, name: str | None = None
) -> Path:
    """Put one stage's table into ``root/bundle.toml``, keeping the other stages.

    Importers write one stage each (``voicegate models import whisper|gguf|piper``), so a
    bundle is assembled by importing into the same directory; a bundle.toml that is
    missing is created with only that stage."""
    if stage not in STAGES:
        raise BundleError(root / BUNDLE_FILE, f"unknown stage {stage!r}",
                          expected=list(STAGES), found=stage)
    root.mkdir(parents=True, exist_ok=True)
    tables: dict[str, Mapping[str, Any]] = {}
    seed: int | None = None
    bundle_name = name or root.name
    if (root / BUNDLE_FILE).is_file():
        existing = load_bundle(root, require=())
        tables.update(existing.tables)
        seed = existing.seed
        bundle_name = name or existing.name
    tables[stage] = dict(table)
    return write_bundle(root, name=bundle_name, seed=seed, tables=tables)


class TableReader:
    """Typed access to one bundle.toml table; errors name the file and the field.

    Each accessor without a default requires the field; with a default, an absent field
    gives the default (which may be None)."""

    def __init__(self, table: Mapping[str, Any], base: Path, section: str) -> None:
        self.table = table
        self.base = base
        self.section = section

    @property
    def file(self) -> Path:
        return self.base / BUNDLE_FILE

    def field_name(self, key: str) -> str:
        return f"field [{self.section}] {key}"

    def has(self, key: str) -> bool:
        return key in self.table

    def invalid(self, key: str, expected: str, found: object) -> BundleError:
        """The error for a field whose value is present but wrong."""
        return BundleError(self.file, f"{self.field_name(key)} is invalid", expected=expected,
                           found=repr(found))

    def _get(self, key: str, default: object) -> object:
        if key in self.table:
            return self.table[key]
        if default is _MISSING:
            raise BundleError(self.file, f"{self.field_name(key)} is missing")
        return _ABSENT

    @overload
    def string(self, key: str) -> str: ...
    @overload
    def string(self, key: str, default: _D) -> str | _D: ...
    def string(self, key: str, default: object = _MISSING) -> object:
        value = self._get(key, default)
        if value is _ABSENT:
            return default
        if not isinstance(value, str):
            raise self.invalid(key, "a string", value)
        return value

    @overload
    def integer(self, key: str, *, minimum: int | None = None) -> int: ...
    @overload
    def integer(self, key: str, default: _D, *, minimum: int | None = None) -> int | _D: ...
    def integer(self, key: str, default: object = _MISSING, *,
                minimum: int | None = None) -> object:
        value = self._get(key, default)
        if value is _ABSENT:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.invalid(key, "an integer", value)
        if minimum is not None and value < minimum:
            raise self.invalid(key, f"an integer >= {minimum}", value)
        return value

    @overload
    def number(self, key: str, *, minimum: float | None = None,
               maximum: float | None = None) -> float: ...
    @overload
    def number(self, key: str, default: _D, *, minimum: float | None = None,
               maximum: float | None = None) -> float | _D: ...
    def number(self, key: str, default: object = _MISSING, *, minimum: float | None = None,
               maximum: float | None = None) -> object:
        value = self._get(key, default)
        if value is _ABSENT:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.invalid(key, "a number", value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            low = "-inf" if minimum is None else minimum
            high = "inf" if maximum is None else maximum
            raise self.invalid(key, f"a number in [{low}, {high}]", value)
        return float(value)

    @overload
    def boolean(self, key: str) -> bool: ...
    @overload
    def boolean(self, key: str, default: _D) -> bool | _D: ...
    def boolean(self, key: str, default: object = _MISSING) -> object:
        value = self._get(key, default)
        if value is _ABSENT:
            return default
        if not isinstance(value, bool):
            raise self.invalid(key, "true or false", value)
        return value

    @overload
    def strings(self, key: str) -> tuple[str, ...]: ...
    @overload
    def strings(self, key: str, default: _D) -> tuple[str, ...] | _D: ...
    def strings(self, key: str, default: object = _MISSING) -> object:
        value = self._get(key, default)
        if value is _ABSENT:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.invalid(key, "a list of strings", value)
        return tuple(value)

    def subtable(self, key: str, *, required: bool = True) -> TableReader:
        """A nested table; an absent optional one reads as empty."""
        value = self._get(key, _MISSING if required else None)
        if value is _ABSENT:
            value = {}
        if not isinstance(value, Mapping):
            raise self.invalid(key, "a table", value)
        return TableReader(value, self.base, f"{self.section}.{key}")

    @overload
    def path(self, key: str) -> Path: ...
    @overload
    def path(self, key: str, default: _D) -> Path | _D: ...
    def path(self, key: str, default: object = _MISSING) -> object:
        """A file named relative to the bundle directory; it must exist."""
        value = self._get(key, default)
        if value is _ABSENT:
            return default
        if not isinstance(value, str) or not value or PurePosixPath(value).is_absolute():
            raise self.invalid(key, "a path relative to the bundle directory", value)
        resolved = self.base / value
        if not resolved.is_file():
            raise BundleError(
                resolved, f"file not found (named by {self.field_name(key)} in {self.file})"
            )
        return resolved
