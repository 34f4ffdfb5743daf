"""Dispatcher: ``python -m bench NAME [args]`` runs ``bench/NAME.py``'s ``main(args)``;
``python -m bench all [args]`` runs every bench with the same args; ``python -m bench``
lists them."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

BenchMain = Callable[[list[str]], int]


def discover() -> dict[str, BenchMain]:
    """Every module of this package that defines ``main``, by module name."""
    found: dict[str, BenchMain] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        entry = getattr(module, "main", None)
        if callable(entry):
            found[info.name] = cast(BenchMain, entry)
    return found


def main(argv: list[str]) -> int:
    benches = discover()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benches:", ", ".join(sorted(benches)) or "(none)")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "all":
        status = 0
        for bench_name in sorted(benches):
            print(f"== bench {bench_name}", flush=True)
            status = max(status, benches[bench_name](list(rest)))
        return status
    if name not in benches:
        print(f"unknown bench {name!r}; known: {', '.join(sorted(benches))}", file=sys.stderr)
        return 2
    return benches[name](rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
