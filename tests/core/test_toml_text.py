from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from voicegate.core.toml_text import dumps, toml_value


def test_nested_tables_round_trip() -> None:
    doc = {
        "node": {"name": "n1", "gateways": 2, "ratio": 0.5, "on": True, "bundle": Path("/b")},
        "workers": {"vad": {"cpus": [0, 1], "options": {"pause_ms": 64, "x y": "a\"b\\c"}}},
    }
    parsed = tomllib.loads(dumps(doc))
    assert parsed["node"] == {"name": "n1", "gateways": 2, "ratio": 0.5, "on": True, "bundle": "/b"}
    assert parsed["workers"]["vad"]["options"] == {"pause_ms": 64, "x y": 'a"b\\c'}


def test_control_characters_and_del_are_escaped() -> None:
    text = "tab\tnew\nline\x7f"
    assert tomllib.loads(f"k = {toml_value(text)}") == {"k": text}


def test_inline_tables_and_non_finite_floats() -> None:
    value = toml_value({"a": float("inf"), "b": []})
    assert tomllib.loads(f"k = {value}")["k"]["a"] == float("inf")


def test_unwritable_type_names_the_field() -> None:
    with pytest.raises(TypeError, match=r"field node\.x: cannot write set"):
        toml_value({1}, ["node", "x"])
