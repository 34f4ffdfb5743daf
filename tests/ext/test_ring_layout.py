"""The C declarations the Cython ring compiles against agree with the one layout
definition in voicegate/core/layout.py."""

from __future__ import annotations

import re
from pathlib import Path

from voicegate.core import layout
from voicegate.ext import errors

INCLUDES = Path(layout.__file__).resolve().parents[1] / "ext" / "includes"


def test_generated_header_is_current() -> None:
    assert (INCLUDES / "vg_layout.h").read_text() == layout.generate_c_header()


def test_pxd_declares_every_field_of_the_layout() -> None:
    text = (INCLUDES / "layout.pxd").read_text()
    struct_fields = re.findall(r"^ {8}(\w+) (\w+)$", text, re.MULTILINE)
    assert struct_fields == [(ctype, name) for name, ctype, _ in layout.RECORD_FIELDS]
    for name, _, _ in layout.CONTROL_FIELDS:
        assert re.search(rf"^ {{8}}VG_CTRL_{name.upper()}$", text, re.MULTILINE), name


def test_status_codes_are_distinct() -> None:
    codes = [getattr(errors, n) for n in dir(errors) if n.startswith("STATUS_")]
    assert len(codes) == len(set(codes))
