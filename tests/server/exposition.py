"""A strict reader of the Prometheus text exposition format (0.0.4), for the tests: every
sample must belong to a family declared by ``# TYPE`` before it, with ``# HELP``, and
names, labels and values must parse."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Family:
    name: str
    kind: str
    help: str
    samples: list[Sample] = field(default_factory=list)

    def value(self, **labels: str) -> float:
        """The value of the one sample (of the family's own name) with these labels."""
        found = [
            s for s in self.samples
            if s.name == self.name and all(s.labels.get(k) == v for k, v in labels.items())
        ]  # fmt: skip
        if len(found) != 1:
            raise KeyError(f"{self.name}{labels}: {len(found)} samples")
        return found[0].value

    def histogram(self, **labels: str) -> tuple[list[tuple[float, float]], float, float]:
        """(cumulative buckets as (le, count), sum, count) of one labelled series."""

        def match(s: Sample) -> bool:
            return all(s.labels.get(k) == v for k, v in labels.items())

        buckets = [
            (float(s.labels["le"]), s.value)
            for s in self.samples
            if s.name == f"{self.name}_bucket" and match(s)
        ]
        sums = [s.value for s in self.samples if s.name == f"{self.name}_sum" and match(s)]
        counts = [s.value for s in self.samples if s.name == f"{self.name}_count" and match(s)]
        if len(sums) != 1 or len(counts) != 1 or not buckets:
            raise KeyError(f"{self.name}{labels}: not one histogram series")
        return buckets, sums[0], counts[0]


def _parse_labels(text: str, line: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if m is None:
            raise ValueError(f"bad labels in {line!r}")
        if m.group(1) in labels:
            raise ValueError(f"label {m.group(1)} twice in {line!r}")
        labels[m.group(1)] = m.group(2).replace('\\"', '"').replace("\\n", "\n")
        labels[m.group(1)] = labels[m.group(1)].replace("\\\\", "\\")
        pos = m.end()
    return labels


def _value(text: str, line: str) -> float:
    special = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    if text in special:
        return special[text]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"bad value in {line!r}") from None


def parse(text: str) -> dict[str, Family]:
    if not text.endswith("\n"):
        raise ValueError("exposition must end with a newline")
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    current: Family | None = None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            if name in helps:
                raise ValueError(f"HELP of {name} twice")
            helps[name] = help_text
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if name in families:
                raise ValueError(f"TYPE of {name} twice")
            if kind not in ("counter", "gauge", "histogram", "summary", "untyped"):
                raise ValueError(f"bad type in {line!r}")
            if name not in helps:
                raise ValueError(f"{name} has no HELP before its TYPE")
            current = families[name] = Family(name, kind, helps[name])
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ValueError(f"bad sample line {line!r}")
        name = m.group(1)
        if current is None or not any(
            name == current.name + suffix for suffix in _SUFFIXES.get(current.kind, ("",))
        ):
            raise ValueError(f"sample {name} outside its family (after {current})")
        labels = _parse_labels(m.group(2) or "", line)
        current.samples.append(Sample(name, labels, _value(m.group(3), line)))
    return families
