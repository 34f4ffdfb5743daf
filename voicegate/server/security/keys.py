"""API keys: a JSON file of hashes, never the keys themselves.

A key is ``vg_`` and 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits),
printed once by ``voicegate keys create``. The file keeps, per key: its name, a short
public id (for logs and ``keys list``), the SHA-256 of the key, the creation time, the
revocation time once revoked, and optional limits (concurrent sessions, protocols). A
random 256-bit key needs no slow password hash: SHA-256 of it cannot be inverted or
guessed, and a lookup costs one hash.

The gateways read the file through ``KeyStore``, which stats it on every lookup and
re-reads it when its mtime, size or inode change: a revocation (or a new key) applies to
the next handshake, without a restart or a signal. Writers replace the file atomically
(a temporary file renamed over it) under an advisory lock, mode 0600.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

KEY_PREFIX: Final[str] = "vg_"
# The protocols a key or token may be limited to: the node's WebSocket endpoints.
PROTOCOLS: Final[tuple[str, ...]] = ("stream", "pcm", "realtime")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_FORMAT_VERSION = 1


class KeyFileError(ValueError):
    """The keys file cannot be read or holds a malformed entry; the message names both."""


@dataclass(frozen=True)
class ApiKey:
    """One key's record (without the key)."""

    name: str
    key_id: str
    digest: str  # hex SHA-256 of the key
    created: float  # unix time
    revoked: float | None = None
    max_sessions: int | None = None  # concurrent sessions opened with this key
    protocols: tuple[str, ...] | None = None  # None: every protocol

    @property
    def active(self) -> bool:
        return self.revoked is None

    def allows(self, protocol: str) -> bool:
        return self.protocols is None or protocol in self.protocols

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["protocols"] = None if self.protocols is None else list(self.protocols)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> ApiKey:
        if not isinstance(data, Mapping):
            raise KeyFileError(f"{where}: must be an object")
        try:
            protocols = data.get("protocols")
            key = cls(
                name=_text(data["name"], f"{where}.name"),
                key_id=_text(data["key_id"], f"{where}.key_id"),
                digest=_text(data["digest"], f"{where}.digest"),
                created=float(data["created"]),
                revoked=None if data.get("revoked") is None else float(data["revoked"]),
                max_sessions=None
                if data.get("max_sessions") is None
                else int(data["max_sessions"]),
                protocols=None if protocols is None else tuple(str(p) for p in protocols),
            )
        except KeyError as exc:
            raise KeyFileError(f"{where}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise KeyFileError(f"{where}: {exc}") from None
        if len(key.digest) != 64:
            raise KeyFileError(f"{where}.digest: not a SHA-256 hex digest")
        return key


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise KeyFileError(f"{where}: must be a non-empty string")
    return value


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_key(text: str) -> bool:
    return text.startswith(KEY_PREFIX)


def read_keys(path: Path) -> list[ApiKey]:
    """Every record of the file (revoked ones too); a missing file holds none."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise KeyFileError(f"{path}: must be an object with a list 'keys'")
    if data.get("version") != _FORMAT_VERSION:
        raise KeyFileError(f"{path}: version {data.get('version')!r} is not {_FORMAT_VERSION}")
    return [ApiKey.from_json(item, f"{path}: keys[{i}]") for i, item in enumerate(data["keys"])]


def _write_keys(path: Path, keys: Sequence[ApiKey]) -> None:
    text = json.dumps({"version": _FORMAT_VERSION, "keys": [k.to_json() for k in keys]}, indent=2)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serializes writers (two `keys create` at once must not lose one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def create_key(
    path: Path,
    name: str,
    *,
    max_sessions: int | None = None,
    protocols: Sequence[str] | None = None,
) -> tuple[str, ApiKey]:
    """A new key named ``name``: returns the key (shown once) and its stored record."""
    if not _NAME.match(name):
        raise ValueError(
            f"key name {name!r}: 1-64 characters of letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    if max_sessions is not None and max_sessions < 1:
        raise ValueError(f"--max-sessions must be >= 1, got {max_sessions}")
    if protocols is not None:
        unknown = sorted(set(protocols) - set(PROTOCOLS))
        if unknown or not protocols:
            raise ValueError(f"protocols {unknown or '[]'}: known are {', '.join(PROTOCOLS)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with _locked(path):
        keys = read_keys(path)
        if any(k.name == name and k.active for k in keys):
            raise ValueError(f"an active key named {name!r} exists already in {path}")
        ids = {k.key_id for k in keys}
        key_id = secrets.token_hex(4)
        while key_id in ids:
            key_id = secrets.token_hex(4)
        record = ApiKey(
            name=name,
            key_id=key_id,
            digest=digest(key),
            created=time.time(),
            max_sessions=max_sessions,
            protocols=None if protocols is None else tuple(protocols),
        )
        _write_keys(path, [*keys, record])
    return key, record


def revoke_key(path: Path, name_or_id: str) -> list[ApiKey]:
    """Revoke the active keys named ``name_or_id`` (or with that id); returns them."""
    with _locked(path):
        keys = read_keys(path)
        now = time.time()
        hit = [k for k in keys if k.active and name_or_id in (k.name, k.key_id)]
        if hit:
            _write_keys(
                path,
                [dataclasses.replace(k, revoked=now) if k in hit else k for k in keys],
            )
    return hit


class KeyStore:
    """The keys file as the gateway sees it: re-read whenever it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._by_digest: dict[str, ApiKey] = {}
        self._by_name: dict[str, ApiKey] = {}
        self.error: str | None = None  # why the last read failed (the old keys stay)

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            signature = (0, 0, 0)
        if signature == self._signature:
            return
        try:
            keys = read_keys(self.path)
        except KeyFileError as exc:
            # A half-edited file must not open the node: keep the last good set, or none.
            self.error = str(exc)
            self._signature = signature
            return
        self.error = None
        self._signature = signature
        self._by_digest = {k.digest: k for k in keys if k.active}
        self._by_name = {k.name: k for k in keys if k.active}

    def lookup(self, key: str) -> ApiKey | None:
        """The active record of ``key``; None for an unknown or revoked key."""
        self._refresh()
        return self._by_digest.get(digest(key))

    def active(self, name: str) -> ApiKey | None:
        """The active key named ``name`` (a token's issuer) if it still is."""
        self._refresh()
        return self._by_name.get(name)

    def count(self) -> int:
        self._refresh()
        return len(self._by_digest)
