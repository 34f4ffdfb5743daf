"""Short-lived session tokens: JWTs (HS256, PyJWT) signed with the node's secret.

A holder of an API key asks ``POST /v1/tokens`` for a token and hands it to a browser or
an untrusted device, which opens one session with it (``?token=`` or the subprotocol
``openai-insecure-api-key.TOKEN``) without ever seeing the key. Claims:

- ``iss`` the node name, ``aud`` ``security.token_audience``, ``sub`` the issuing key's
  name, ``iat`` and ``exp`` (at most ``security.token_ttl_min`` later);
- ``jti`` a random id: a token opens one session (``TokenLedger`` remembers the ids it
  has seen until they expire);
- ``proto`` the one protocol it may open, ``max_sessions`` the issuing key's limit.

Only HS256 is accepted on verification (never ``none`` or an asymmetric algorithm whose
public key could be confused with the secret), and ``exp``, ``iat``, ``aud`` and ``sub``
are required.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt

ALGORITHM: Final[str] = "HS256"
MIN_SECRET_BYTES: Final[int] = 32
_LEEWAY_S = 5.0  # clock skew between the nodes behind one load balancer


class TokenError(ValueError):
    """A token that opens nothing; the message says why (never the token)."""


@dataclass(frozen=True)
class SessionToken:
    key_name: str
    protocol: str
    token_id: str
    expires: float
    max_sessions: int | None


def load_secret(path: Path | None) -> bytes:
    """The signing secret: the file's bytes (shared by the nodes behind one balancer),
    else a random one for this start (tokens then die with the node)."""
    if path is None:
        return secrets.token_bytes(MIN_SECRET_BYTES)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"security.token_secret_file {path}: {exc.strerror}") from None
    # A text secret (``... | base64 > file``, an editor) loses the whitespace around it; a
    # binary one (``head -c 48 /dev/urandom > file``) is the secret to the last byte, even
    # where a byte happens to be a space or a newline.
    text = content.strip()
    secret = text if content.isascii() and text.decode("ascii").isprintable() else content
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"security.token_secret_file {path}: {len(secret)} bytes; at least "
            f"{MIN_SECRET_BYTES} are needed (e.g. head -c 48 /dev/urandom | base64)"
        )
    return secret


def issue(
    secret: bytes,
    *,
    issuer: str,
    audience: str,
    key_name: str,
    protocol: str,
    ttl_s: float,
    max_sessions: int | None,
    now: float | None = None,
) -> tuple[str, float]:
    """A signed token and its expiry (unix time)."""
    now = time.time() if now is None else now
    expires = now + ttl_s
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": key_name,
        "iat": int(now),
        "exp": int(expires),
        "jti": secrets.token_urlsafe(12),
        "proto": protocol,
    }
    if max_sessions is not None:
        claims["max_sessions"] = max_sessions
    return jwt.encode(claims, secret, algorithm=ALGORITHM), float(int(expires))


def verify(token: str, secret: bytes, *, audience: str) -> SessionToken:
    """The token's grant; raises ``TokenError`` for a bad signature (another node's
    secret, a tampered token), an expired one, or one for another audience."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=audience,
            leeway=_LEEWAY_S,
            options={"require": ["exp", "iat", "aud", "sub", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.InvalidAudienceError:
        raise TokenError("token for another audience") from None
    except jwt.InvalidSignatureError:
        raise TokenError("token signature does not match this node's secret") from None
    except jwt.PyJWTError as exc:
        raise TokenError(f"malformed token ({type(exc).__name__})") from None
    protocol = claims.get("proto")
    max_sessions = claims.get("max_sessions")
    if not isinstance(protocol, str) or not isinstance(claims["sub"], str):
        raise TokenError("token without a protocol or subject")
    if max_sessions is not None and not isinstance(max_sessions, int):
        raise TokenError("token with a malformed max_sessions")
    return SessionToken(
        key_name=claims["sub"],
        protocol=protocol,
        token_id=str(claims["jti"]),
        expires=float(claims["exp"]),
        max_sessions=max_sessions,
    )


class TokenLedger:
    """The ids of the tokens already used, until they expire: a token opens one session.
    Per gateway process (see docs/security.md)."""

    def __init__(self) -> None:
        self._used: dict[str, float] = {}

    def claim(self, token: SessionToken, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        if len(self._used) > 1024:
            horizon = now - _LEEWAY_S
            self._used = {jti: exp for jti, exp in self._used.items() if exp >= horizon}
        if token.token_id in self._used:
            return False
        self._used[token.token_id] = token.expires
        return True
