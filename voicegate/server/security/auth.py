"""Who may open a session, read /metrics or get a session token: the gateway's guard.

Every WebSocket handshake passes ``AccessGuard.admit`` before the upgrade:

1. Origin: a handshake that carries an ``Origin`` header (every browser sends one) is
   refused with 403 unless the origin is in ``security.allowed_origins`` (``*``: any),
   or, with an empty list, is the node's own origin (its Host). Clients that are not
   browsers send no Origin and pass. This applies with or without keys: without it, any
   web page a user visits could open a session on a node on their localhost.
2. Credentials, when keys are on (``security.keys_file``): an API key as
   ``Authorization: Bearer KEY`` or as the subprotocol ``openai-insecure-api-key.KEY``
   (what browser Realtime clients send); or a session token as ``?token=``, as the
   Bearer value or in that subprotocol. Missing or invalid: 401; valid but not for this
   protocol, a token already used, or the key's concurrent-session limit reached: 403.
   API keys in the URL are refused (URLs end up in proxy logs).

A refusal is an HTTP response before the upgrade (the ASGI WebSocket denial response),
counted in /metrics (``auth_refused``, ``origin_refused``) and logged with the address
and the reason, never the credential. Admitted sessions are logged at start and end with
the key's name and the client's address: the audit trail of docs/security.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from voicegate.core.clock import monotonic_ns
from voicegate.core.config import SecuritySettings
from voicegate.server.security import tokens
from voicegate.server.security.keys import PROTOCOLS, ApiKey, KeyStore, looks_like_key

log = logging.getLogger("voicegate.auth")

# The subprotocol prefix OpenAI's browser clients use to carry a credential.
CREDENTIAL_SUBPROTOCOL: Final[str] = "openai-insecure-api-key."
COUNTERS: Final[tuple[str, ...]] = ("auth_refused", "origin_refused", "tokens_issued")


@dataclass(frozen=True)
class GatewaySecurity:
    """What a gateway process needs to guard its port (picklable, made by serve)."""

    settings: SecuritySettings
    token_secret: bytes
    node_name: str

    @property
    def auth(self) -> bool:
        return self.settings.keys_file is not None and not self.settings.no_auth


@dataclass
class Grant:
    """An admitted handshake."""

    key_name: str | None  # None: keys are off
    via: str  # "key", "token" or "open"
    address: str
    subprotocol: str | None  # the one to accept with (never a credential)
    limit: int | None = None  # the key's concurrent sessions on this gateway
    started_ns: int = 0


@dataclass(frozen=True)
class Credentials:
    """Where a handshake's credential came from."""

    value: str | None
    source: str  # "header", "subprotocol", "query" or "" (none)
    other_subprotocols: tuple[str, ...]


class RefusedError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def find_credentials(
    headers: Mapping[str, str], query: Mapping[str, str], subprotocols: Sequence[str]
) -> Credentials:
    """The credential of a handshake (the first of: Authorization, the credential
    subprotocol, ``?token=``) and the subprotocols that are not credentials."""
    others = tuple(p for p in subprotocols if not p.startswith(CREDENTIAL_SUBPROTOCOL))
    header = headers.get("authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return Credentials(value.strip(), "header", others)
    for proto in subprotocols:
        if proto.startswith(CREDENTIAL_SUBPROTOCOL) and len(proto) > len(CREDENTIAL_SUBPROTOCOL):
            return Credentials(proto[len(CREDENTIAL_SUBPROTOCOL) :], "subprotocol", others)
    token = query.get("token", "")
    if token:
        return Credentials(token, "query", others)
    return Credentials(None, "", others)


def origin_allowed(origin: str, allowed: Sequence[str], host: str) -> bool:
    """``origin`` (the header, e.g. ``https://app.example``) against the allow-list; an
    empty list allows the node's own origin only (``host``: the Host header)."""
    normalized = origin.strip().rstrip("/").lower()
    if "*" in allowed or normalized in (a.rstrip("/").lower() for a in allowed):
        return True
    if allowed:
        return False
    parts = urlsplit(normalized)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return _netloc(parts.netloc, parts.scheme) == _netloc(host.strip().lower(), parts.scheme)


def _netloc(netloc: str, scheme: str) -> str:
    default = ":443" if scheme == "https" else ":80"
    return netloc[: -len(default)] if netloc.endswith(default) else netloc


class AccessGuard:
    """The guard of one gateway process; ``security`` None: no keys, Origin still checked
    against the node's own origin."""

    def __init__(self, security: GatewaySecurity | None, counters: dict[str, int]) -> None:
        self.security = security
        self.settings = security.settings if security is not None else SecuritySettings()
        self.auth = security is not None and security.auth
        self.keys = (
            KeyStore(self.settings.keys_file)
            if self.auth and self.settings.keys_file is not None
            else None
        )
        self.ledger = tokens.TokenLedger()
        self.open_by_key: dict[str, int] = {}
        self.counters = counters
        for name in COUNTERS:
            counters.setdefault(name, 0)

    # -- WebSocket handshakes ---------------------------------------------------------

    async def admit(self, websocket: WebSocket, protocol: str) -> Grant | None:
        """The grant of this handshake, or None after sending the refusal."""
        address = _address(websocket.client)
        try:
            grant = self._check(websocket, protocol, address)
        except RefusedError as refusal:
            counter = "origin_refused" if refusal.code == "origin_not_allowed" else "auth_refused"
            self.counters[counter] += 1
            log.warning("handshake from %s refused: %s", address, refusal.message)
            await websocket.send_denial_response(_refusal_response(refusal))
            return None
        if grant.key_name is not None:
            self.open_by_key[grant.key_name] = self.open_by_key.get(grant.key_name, 0) + 1
        grant.started_ns = monotonic_ns()
        return grant

    def _check(self, websocket: WebSocket, protocol: str, address: str) -> Grant:
        headers = websocket.headers
        origin = headers.get("origin")
        if origin is not None and not origin_allowed(
            origin, self.settings.allowed_origins, headers.get("host", "")
        ):
            raise RefusedError(403, "origin_not_allowed", f"origin {origin[:100]!r} is not allowed")
        offered = websocket.scope.get("subprotocols") or []
        found = find_credentials(headers, websocket.query_params, offered)
        subprotocol = found.other_subprotocols[0] if found.other_subprotocols else None
        if not self.auth:
            return Grant(None, "open", address, subprotocol)
        if found.value is None:
            raise RefusedError(401, "unauthorized", "no API key or session token")
        if looks_like_key(found.value):
            if found.source == "query":
                raise RefusedError(401, "unauthorized", "API keys are not accepted in the URL")
            key = self._key(found.value)
            if key is None:
                raise RefusedError(401, "unauthorized", "unknown or revoked API key")
            via, limit = "key", key.max_sessions
        else:
            key, limit = self._token(found.value, protocol)
            via = "token"
        if not key.allows(protocol):
            raise RefusedError(403, "forbidden", f"key {key.name!r} may not open {protocol!r}")
        if limit is not None and self.open_by_key.get(key.name, 0) >= limit:
            raise RefusedError(
                403, "forbidden", f"key {key.name!r} has {limit} sessions open (its limit)"
            )
        return Grant(key.name, via, address, subprotocol, limit)

    def _key(self, value: str) -> ApiKey | None:
        assert self.keys is not None
        return self.keys.lookup(value)

    def _token(self, value: str, protocol: str) -> tuple[ApiKey, int | None]:
        assert self.security is not None and self.keys is not None
        try:
            token = tokens.verify(
                value, self.security.token_secret, audience=self.settings.token_audience
            )
        except tokens.TokenError as exc:
            raise RefusedError(401, "unauthorized", str(exc)) from None
        key = self.keys.active(token.key_name)
        if key is None:
            # Revoking a key ends the tokens it issued too.
            raise RefusedError(401, "unauthorized", f"token of revoked key {token.key_name!r}")
        if token.protocol != protocol:
            raise RefusedError(
                403, "forbidden", f"token is for {token.protocol!r}, not {protocol!r}"
            )
        if not self.ledger.claim(token):
            raise RefusedError(403, "forbidden", "token already used (a token opens one session)")
        limits = [n for n in (key.max_sessions, token.max_sessions) if n is not None]
        return key, min(limits) if limits else None

    # -- audit ------------------------------------------------------------------------

    def opened(self, grant: Grant, admitted: bool) -> None:
        log.info(
            "session %s: key %s via %s from %s",
            "start" if admitted else "refused at capacity",
            grant.key_name or "-",
            grant.via,
            grant.address,
        )

    def closed(self, grant: Grant, admitted: bool) -> None:
        if grant.key_name is not None:
            left = self.open_by_key.get(grant.key_name, 1) - 1
            if left > 0:
                self.open_by_key[grant.key_name] = left
            else:
                self.open_by_key.pop(grant.key_name, None)
        if admitted:
            seconds = (monotonic_ns() - grant.started_ns) / 1e9
            log.info(
                "session end: key %s from %s after %.1f s",
                grant.key_name or "-",
                grant.address,
                seconds,
            )

    # -- HTTP -------------------------------------------------------------------------

    def http_denial(self, request: Request) -> Response | None:
        """None when ``request`` carries a valid API key (or keys are off); else the
        401/403 to answer. Session tokens do not open operations endpoints."""
        if not self.auth:
            return None
        try:
            self._http_key(request)
        except RefusedError as refusal:
            self.counters["auth_refused"] += 1
            log.warning(
                "%s %s from %s refused: %s",
                request.method,
                request.url.path,
                _address(request.client),
                refusal.message,
            )
            return _refusal_response(refusal)
        return None

    def _http_key(self, request: Request) -> ApiKey:
        scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise RefusedError(401, "unauthorized", "no API key (Authorization: Bearer KEY)")
        key = self._key(value.strip()) if looks_like_key(value.strip()) else None
        if key is None:
            raise RefusedError(401, "unauthorized", "unknown or revoked API key")
        return key

    async def issue_token(self, request: Request) -> Response:
        """``POST /v1/tokens``: body (optional JSON) ``{"ttl_minutes": 5, "protocol":
        "stream"}``; answers ``{"token", "expires_at", "audience", "protocol"}``."""
        if not self.auth or self.security is None:
            return JSONResponse(
                _error("not_found", "session tokens need API keys: set security.keys_file"),
                status_code=404,
            )
        try:
            key = self._http_key(request)
            ttl_min, protocol = _token_request(await request.body(), self.settings)
            if not key.allows(protocol):
                raise RefusedError(403, "forbidden", f"key {key.name!r} may not open {protocol!r}")
        except RefusedError as refusal:
            if refusal.status in (401, 403):
                self.counters["auth_refused"] += 1
            log.warning(
                "token request from %s refused: %s", _address(request.client), refusal.message
            )
            return _refusal_response(refusal)
        token, expires = tokens.issue(
            self.security.token_secret,
            issuer=self.security.node_name,
            audience=self.settings.token_audience,
            key_name=key.name,
            protocol=protocol,
            ttl_s=ttl_min * 60.0,
            max_sessions=key.max_sessions,
        )
        self.counters["tokens_issued"] += 1
        log.info(
            "token issued: key %s for %s, %.1f min, to %s",
            key.name,
            protocol,
            ttl_min,
            _address(request.client),
        )
        return JSONResponse(
            {
                "token": token,
                "expires_at": expires,
                "expires_in_s": round(expires - time.time()),
                "audience": self.settings.token_audience,
                "protocol": protocol,
            },
            headers={"Cache-Control": "no-store"},
        )


def _token_request(body: bytes, settings: SecuritySettings) -> tuple[float, str]:
    ttl_min, protocol = settings.token_ttl_min, PROTOCOLS[0]
    if not body.strip():
        return ttl_min, protocol
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RefusedError(400, "invalid_request", "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise RefusedError(400, "invalid_request", "the body must be a JSON object")
    unknown = sorted(set(data) - {"ttl_minutes", "protocol"})
    if unknown:
        raise RefusedError(400, "invalid_request", f"unknown fields {unknown}")
    if "ttl_minutes" in data:
        ttl = data["ttl_minutes"]
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl > 0:
            raise RefusedError(400, "invalid_request", "ttl_minutes must be a number > 0")
        if ttl > settings.token_ttl_min:
            raise RefusedError(
                400,
                "invalid_request",
                f"ttl_minutes {ttl} exceeds security.token_ttl_min ({settings.token_ttl_min:g})",
            )
        ttl_min = float(ttl)
    if "protocol" in data:
        protocol = data["protocol"]
        if protocol not in PROTOCOLS:
            raise RefusedError(
                400, "invalid_request", f"protocol must be one of {', '.join(PROTOCOLS)}"
            )
    return ttl_min, str(protocol)


def _error(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def _refusal_response(refusal: RefusedError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="voicegate"'} if refusal.status == 401 else {}
    return JSONResponse(
        _error(refusal.code, refusal.message), status_code=refusal.status, headers=headers
    )


def _address(client: object) -> str:
    host = getattr(client, "host", None)
    port = getattr(client, "port", None)
    return f"{host}:{port}" if host is not None else "unknown"
