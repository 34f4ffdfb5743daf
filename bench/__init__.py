"""voicegate benchmarks: ``python -m bench NAME [options]``.

A bench is a module ``bench/<name>.py`` with ``main(argv: list[str]) -> int``; the
dispatcher finds it by name, so adding a bench needs no registration. Modules whose names
start with ``_`` and modules without ``main`` (like ``report``) are helpers. Each bench
compares against peers in the same run, prints a table and writes JSON (and plots) under
``bench/results/``.
"""
