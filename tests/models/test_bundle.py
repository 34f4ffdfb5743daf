"""bundle.toml: writing, reading, and errors that name the file and the field."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from voicegate.models.bundle import TableReader, dumps_toml, load_bundle, write_bundle
from voicegate.models.errors import BundleError


def test_toml_round_trip(tmp_path: Path) -> None:
    tables: dict[str, dict[str, Any]] = {
        "llm": {
            "model": "llm/model.onnx",
            "system_prompt": 'Say "hi"\n\tand \\ leave — ünïcode',
            "max_context": 2048,
            "ok": True,
            "temperature": 0.25,
            "small": 1e-7,
            "end_tokens": ["<|end|>", "</s>"],
            "chat": {"user": "<|user|>{content}<|end|>", "nested": {"depth": 3}},
        },
        "vad": {"threshold": 0.5},
    }
    write_bundle(tmp_path, name="demo", seed=3, tables=tables)
    doc = tomllib.loads((tmp_path / "bundle.toml").read_text())
    assert doc == {"bundle": {"name": "demo", "format": 1, "seed": 3}, **tables}
    bundle = load_bundle(tmp_path, require=("vad", "llm"))
    assert (bundle.name, bundle.seed, bundle.stages) == ("demo", 3, ("vad", "llm"))
    assert bundle.table("llm")["chat"]["nested"] == {"depth": 3}
    assert tomllib.loads(dumps_toml({"a b": {"x.y": [1, 2]}})) == {"a b": {"x.y": [1, 2]}}
    with pytest.raises(TypeError, match=r"field t\.x: cannot write set"):
        dumps_toml({"t": {"x": {1}}})


def write(root: Path, text: str) -> Path:
    (root / "bundle.toml").write_text(text)
    return root


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[bundle\n", "not valid TOML"),
        ("[vad]\n", r"missing table \[bundle\]"),
        ('[bundle]\nname = "x"\nformat = 2\n', "unsupported bundle format; expected 1, found 2"),
        ('[bundle]\nformat = 1\n', r"field \[bundle\] name is missing"),
        ('[bundle]\nname = 3\nformat = 1\n', r"field \[bundle\] name is invalid; expected a str"),
        ('[bundle]\nname = "x"\nformat = 1\n[asr]\n', r"unknown table \[asr\]"),
        ('[bundle]\nname = "x"\nformat = 1\n[vad]\n', r"missing table \[llm\]"),
        ('llm = 3\n[bundle]\nname = "x"\nformat = 1\n[vad]\n', r"\[llm\] must be a table"),
    ],
)
def test_load_errors_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BundleError, match=message) as caught:
        load_bundle(write(tmp_path, text), require=("vad", "llm"))
    assert caught.value.file == str(tmp_path / "bundle.toml")


def test_missing_directory_and_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle directory not found"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match=r"bundle\.toml not found"):
        load_bundle(tmp_path)


def test_table_reader(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"x")
    reader = TableReader(
        {"n": 3, "f": 2, "b": True, "s": ["a"], "p": "m.onnx", "q": "/etc/passwd",
         "gone": "missing.onnx", "sub": {"k": "v"}, "flag": 1},
        tmp_path, "llm",
    )
    assert reader.integer("n", minimum=1) == 3
    assert reader.number("f") == 2.0
    assert reader.boolean("b") is True
    assert reader.strings("s") == ("a",)
    assert reader.path("p") == tmp_path / "m.onnx"
    assert reader.string("absent", None) is None
    assert reader.subtable("sub").string("k") == "v"
    assert reader.subtable("none", required=False).table == {}
    with pytest.raises(BundleError, match=r"\[llm\] n is invalid; expected an integer >= 5"):
        reader.integer("n", minimum=5)
    with pytest.raises(BundleError, match=r"\[llm\] f is invalid; expected a number in \[0, 1"):
        reader.number("f", minimum=0, maximum=1)
    with pytest.raises(BundleError, match=r"\[llm\] flag is invalid; expected true or false"):
        reader.boolean("flag")
    with pytest.raises(BundleError, match=r"\[llm\] b is invalid; expected an integer"):
        reader.integer("b")
    with pytest.raises(BundleError, match="relative to the bundle directory"):
        reader.path("q")
    with pytest.raises(BundleError, match=r"missing.onnx: file not found \(named by field "
                                          r"\[llm\] gone"):
        reader.path("gone")
    with pytest.raises(BundleError, match=r"field \[llm.sub\] x is missing"):
        reader.subtable("sub").string("x")
