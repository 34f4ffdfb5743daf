"""A reader of CTranslate2's ``model.bin`` in numpy, without the ctranslate2 package.

The layout (little-endian), as CTranslate2 writes binary versions 4 to 6::

    u32 version
    string spec name            (u16 length counting a trailing NUL, the bytes, the NUL)
    u32 spec revision
    u32 number of variables, then for each:
        string name, u8 rank, u32 dims[rank], u8 dtype id, u32 byte count, the bytes
    u32 number of aliases, then for each: string alias, string target variable

Variables keep their stored dtype; ``Ct2Model.float32`` gives one as float32, with
int8 and int16 weights dequantized by the ``<name>_scale`` variable CTranslate2 stores
beside them. Every error is a ``BundleError`` naming the file and the variable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from voicegate.models.errors import BundleError

MODEL_FILE: Final[str] = "model.bin"
# Binary versions with a dtype id per variable; CTranslate2 4.x writes 6.
SUPPORTED_VERSIONS: Final[range] = range(4, 7)
# CTranslate2's DataType enum, in its order.
DTYPES: Final[dict[int, str]] = {
    0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16",
}
_NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
    "float32": np.dtype("<f4"), "int8": np.dtype("i1"), "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2"),
}
DTYPE_IDS: Final[dict[str, int]] = {name: code for code, name in DTYPES.items()}


@dataclass(frozen=True)
class Ct2Model:
    path: Path
    version: int
    spec: str
    revision: int
    variables: dict[str, npt.NDArray[np.generic]]  # as stored; bfloat16 as uint16 bits
    dtypes: dict[str, str]
    aliases: dict[str, str]

    def resolve(self, name: str) -> str:
        seen = {name}
        while name not in self.variables and name in self.aliases:
            name = self.aliases[name]
            if name in seen:
                raise BundleError(self.path, "alias cycle", tensor=name)
            seen.add(name)
        return name

    def has(self, name: str) -> bool:
        return self.resolve(name) in self.variables

    def raw(self, name: str) -> npt.NDArray[np.generic]:
        target = self.resolve(name)
        if target not in self.variables:
            raise BundleError(self.path, f"missing variable (spec {self.spec})", tensor=name)
        return self.variables[target]

    def scalar(self, name: str) -> int:
        value = self.raw(name)
        if value.size != 1 or self.dtypes[self.resolve(name)] not in ("int8", "int16", "int32"):
            raise BundleError(self.path, "not an integer scalar", tensor=name,
                              expected="one integer", found=f"{value.dtype}{list(value.shape)}")
        return int(value.reshape(-1)[0])

    def float32(self, name: str, shape: tuple[int, ...] | None = None) -> (
        npt.NDArray[np.float32]
    ):
        """The variable as float32, dequantized when stored as int8/int16; with ``shape``
        its shape is checked."""
        target = self.resolve(name)
        value = self.raw(name)
        dtype = self.dtypes[target]
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise BundleError(self.path, "variable of the wrong shape", tensor=name,
                              expected=list(shape), found=list(value.shape))
        if dtype in ("float32", "float16"):
            out: npt.NDArray[np.float32] = value.astype(np.float32)
        elif dtype == "bfloat16":
            out = (value.astype(np.uint32) << 16).view(np.float32)
        elif dtype in ("int8", "int16"):
            scale_name = f"{name}_scale"
            if not self.has(scale_name):
                raise BundleError(self.path, f"{dtype} variable without its scale "
                                  f"{scale_name!r}: cannot dequantize", tensor=name)
            scale = self.float32(scale_name)
            if scale.size == 1:
                out = value.astype(np.float32) / scale.reshape(())
            elif value.ndim >= 1 and scale.shape == (value.shape[0],):
                out = value.astype(np.float32) / scale.reshape((-1,) + (1,) * (value.ndim - 1))
            else:
                raise BundleError(self.path, "quantization scale does not match its weight",
                                  tensor=scale_name, expected=f"[{value.shape[0]}] or a scalar",
                                  found=list(scale.shape))
        else:
            raise BundleError(self.path, f"{dtype} variable where a float was expected",
                              tensor=name, expected="float32, float16, bfloat16, int8 or int16",
                              found=dtype)
        if not np.all(np.isfinite(out)):
            raise BundleError(self.path, "variable holds NaN or infinity", tensor=name)
        return out


class _Cursor:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.offset = 0
        self.where = "header"

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise BundleError(self.path, f"truncated at byte {self.offset} while reading "
                              f"{self.where}", expected=f"{size} more bytes",
                              found=f"{len(self.data) - self.offset}")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u16(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def string(self) -> str:
        length = self.u16()
        raw = self.take(length)
        if not length or raw[-1] != 0:
            raise BundleError(self.path, f"malformed string at byte {self.offset - length} "
                              f"while reading {self.where}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(self.path, f"string is not UTF-8 while reading "
                              f"{self.where}") from exc


def read_model(path: Path, *, spec: str | None = None) -> Ct2Model:
    """Read ``path`` (a model.bin, or a directory holding one)."""
    if path.is_dir():
        path = path / MODEL_FILE
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(path, f"cannot read the CTranslate2 model: {exc.strerror}") from exc
    return parse_model(data, path, spec=spec)


def parse_model(data: bytes, path: Path, *, spec: str | None = None) -> Ct2Model:
    """Parse the bytes of a model.bin; ``path`` names it in errors."""
    cur = _Cursor(data, path)
    version = cur.u32()
    if version not in SUPPORTED_VERSIONS:
        raise BundleError(path, "unsupported CTranslate2 binary version",
                          expected=f"{SUPPORTED_VERSIONS.start}..{SUPPORTED_VERSIONS.stop - 1}",
                          found=version)
    name = cur.string()
    if spec is not None and name != spec:
        raise BundleError(path, "unexpected model spec", expected=spec, found=name)
    revision = cur.u32()
    count = cur.u32()
    variables: dict[str, npt.NDArray[np.generic]] = {}
    dtypes: dict[str, str] = {}
    for index in range(count):
        cur.where = f"variable #{index}"
        var = cur.string()
        cur.where = f"variable {var!r}"
        rank = cur.u8()
        shape = tuple(cur.u32() for _ in range(rank))
        code = cur.u8()
        if code not in DTYPES:
            raise BundleError(path, "unknown dtype id", tensor=var,
                              expected=f"one of {sorted(DTYPES)}", found=code)
        dtype = DTYPES[code]
        size = cur.u32()
        expected = int(np.prod(shape, dtype=np.int64)) * _NUMPY[dtype].itemsize
        if size != expected:
            raise BundleError(path, f"byte count does not match shape {list(shape)} and "
                              f"dtype {dtype}", tensor=var, expected=expected, found=size)
        raw = cur.take(size)
        variables[var] = np.frombuffer(raw, dtype=_NUMPY[dtype]).reshape(shape)
        dtypes[var] = dtype
    aliases: dict[str, str] = {}
    cur.where = "aliases"
    for _ in range(cur.u32()):
        alias = cur.string()
        aliases[alias] = cur.string()
    if cur.offset != len(data):
        raise BundleError(path, f"{len(data) - cur.offset} unexpected bytes after the aliases")
    for alias, target in aliases.items():
        if target not in variables:
            raise BundleError(path, f"alias {alias!r} names a missing variable", tensor=target)
    return Ct2Model(path, version, name, revision, variables, dtypes, aliases)
