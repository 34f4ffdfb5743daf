"""The ring implementation a node runs on, chosen by configuration (``rings.impl``).

There is no silent fallback: a node configured for the native ring that finds it unbuilt
stops with an error that says how to build it, rather than running several times slower.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from voicegate.ext.segment import cleanup_stale

if TYPE_CHECKING:
    from voicegate.ext._ring import Ring

# impl -> (module, class)
_IMPLS = {
    "native": ("voicegate.ext._ring", "Ring"),
    "reference": ("voicegate.ext.reference", "ReferenceRing"),
}

__all__ = ["cleanup_stale", "ring_class"]


def ring_class(impl: str) -> type[Ring]:
    """The ring class of ``impl`` ("native" or "reference"); both have the same API."""
    try:
        module_name, class_name = _IMPLS[impl]
    except KeyError:
        raise ValueError(f"rings.impl {impl!r} is not one of {sorted(_IMPLS)}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = (
            " (build it with `python setup.py build_ext --inplace`, or set rings.impl = "
            '"reference")'
            if impl == "native"
            else ""
        )
        raise RuntimeError(f"ring implementation {impl!r} cannot be imported: {exc}{hint}") from exc
    return cast("type[Ring]", getattr(module, class_name))
