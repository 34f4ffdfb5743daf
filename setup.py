"""Builds the Cython extensions of voicegate.ext.

VOICEGATE_DEBUG=1 builds without optimisation, with assertions, bounds checks and
debug symbols; the default build is -O3 with Cython's safety checks off on hot paths.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
INCLUDES = ROOT / "voicegate" / "ext" / "includes"
DEBUG = os.environ.get("VOICEGATE_DEBUG", "") not in ("", "0")


def write_layout_header() -> None:
    # One definition of the shared-memory layout: the C header is generated from the
    # pure-Python table that the reference ring reads too.
    layout = runpy.run_path(str(ROOT / "voicegate" / "core" / "layout.py"))
    text = layout["generate_c_header"]()
    INCLUDES.mkdir(parents=True, exist_ok=True)
    target = INCLUDES / "vg_layout.h"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


write_layout_header()

if DEBUG:
    compile_args = ["-O0", "-g3", "-UNDEBUG", "-Wall"]
    directives = {"boundscheck": True, "wraparound": True, "initializedcheck": True}
else:
    compile_args = ["-O3", "-DNDEBUG"]
    directives = {"boundscheck": False, "wraparound": False, "initializedcheck": False}

extensions = [
    Extension(
        "voicegate.ext._ring",
        ["voicegate/ext/_ring.pyx"],
        include_dirs=[str(INCLUDES)],
        extra_compile_args=["-std=c11", *compile_args],
        libraries=["rt", "pthread"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "embedsignature": True, **directives},
        gdb_debug=DEBUG,
    ),
)
