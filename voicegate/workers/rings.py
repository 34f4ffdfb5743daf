"""The ring implementation a node runs on, chosen by configuration (``rings.impl``).

There is no silent fallback: a node configured for the native ring that finds it unbuilt
stops with an error that says how to build it, rather than running several times slower.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from voicegate.ext._ring import Ring

_MODULES = {"native": "voicegate.ext._ring", "reference": "voicegate.ext.reference"}


def ring_module(impl: str) -> ModuleType:
    try:
        module_name = _MODULES[impl]
    except KeyError:
        raise ValueError(f"rings.impl {impl!r} is not one of {sorted(_MODULES)}") from None
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        hint = (
            " (build it with `python setup.py build_ext --inplace`, or set rings.impl = "
            '"reference")'
            if impl == "native"
            else ""
        )
        raise RuntimeError(f"ring implementation {impl!r} cannot be imported: {exc}{hint}") from exc


def ring_class(impl: str) -> type[Ring]:
    """The ``Ring`` class of ``impl`` ("native" or "reference")."""
    return cast("type[Ring]", ring_module(impl).Ring)


def cleanup_function(impl: str) -> Callable[[str], list[str]]:
    """``cleanup_stale`` of ``impl``: unlinks ring segments whose creator is gone."""
    return cast("Callable[[str], list[str]]", ring_module(impl).cleanup_stale)
