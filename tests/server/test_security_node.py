"""A real node with TLS, API keys, session tokens, an Origin allow-list and a separate
metrics address: what is let in, what is refused before the upgrade, and a certificate
reloaded on SIGHUP while a call goes on. One node for the module (a start costs seconds)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from certs import Authority, issue, make_ca
from cryptography import x509
from gateway_node import REPO, Node, collect_until, start_session, utterance
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from voicegate.server.security.keys import create_key

ALLOWED_ORIGIN = "https://app.example"


class SecureNode:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca: Authority = make_ca()
        self.cafile = self.ca.write(tmp / "ca.pem")
        self.certfile, self.keyfile = tmp / "cert.pem", tmp / "key.pem"
        self.cert = issue(self.ca, self.certfile, self.keyfile, "first")
        self.keys_file = tmp / "keys.json"
        self.alice, _ = create_key(self.keys_file, "alice")
        self.bob, _ = create_key(self.keys_file, "bob", max_sessions=1)
        self.secret = os.urandom(48)
        secret_file = tmp / "token.secret"
        secret_file.write_bytes(self.secret)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.metrics_port = s.getsockname()[1]
        self.node = Node(
            tmp,
            config=(
                "[security]\n"
                f'ssl_certfile = "{self.certfile}"\nssl_keyfile = "{self.keyfile}"\n'
                f'keys_file = "{self.keys_file}"\ntoken_secret_file = "{secret_file}"\n'
                f'allowed_origins = ["{ALLOWED_ORIGIN}"]\n'
                f'metrics_bind = "127.0.0.1:{self.metrics_port}"\n'
            ),
        )
        self.context = ssl.create_default_context(cafile=str(self.cafile))

    @property
    def wss(self) -> str:
        return f"wss://127.0.0.1:{self.node.port}/v1/stream"

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.node.port}"

    def connect(self, key: str | None = None, url: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else None
        return connect(
            url or self.wss, ssl=self.context, additional_headers=headers, open_timeout=10,
            **kwargs,
        )  # fmt: skip

    def http(self) -> httpx.Client:
        return httpx.Client(verify=self.context, timeout=10)

    def token(self, key: str, **body: Any) -> str:
        with self.http() as client:
            r = client.post(
                f"{self.https}/v1/tokens", headers={"Authorization": f"Bearer {key}"}, json=body
            )
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        token: str = r.json()["token"]
        return token


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureNode]:
    secure = SecureNode(tmp_path_factory.mktemp("secure"))
    try:
        yield secure
    finally:
        if secure.node.proc.poll() is None:
            secure.node.stop()


async def _status_of(attempt: Any) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with attempt:
            pass
    status: int = refused.value.response.status_code
    return status


async def _started(ws: Any) -> None:
    assert (await start_session(ws))["type"] == "session.started"


def test_a_session_over_tls_with_a_key(node: SecureNode) -> None:
    async def main() -> None:
        async with node.connect(node.alice) as ws:
            await _started(ws)
            await utterance(ws)
            got = await collect_until(ws, "response.done")
            assert any(isinstance(m, bytes) for m in got)

    asyncio.run(main())


def test_plaintext_client_is_refused_on_the_tls_port(node: SecureNode) -> None:
    async def main() -> None:
        with pytest.raises(Exception):  # noqa: B017 - whatever the client makes of it
            async with connect(f"ws://127.0.0.1:{node.node.port}/v1/stream", open_timeout=5):
                pass

    asyncio.run(main())
    with socket.create_connection(("127.0.0.1", node.node.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            answer = sock.recv(100)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP"), answer


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_older_than_1_2_is_refused(node: SecureNode) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(node.cafile))
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer what the server must not take
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        socket.create_connection(("127.0.0.1", node.node.port), timeout=5) as sock,
        pytest.raises(ssl.SSLError),
    ):
        old.wrap_socket(sock, server_hostname="127.0.0.1")


def test_missing_and_wrong_keys_are_refused_before_the_upgrade(node: SecureNode) -> None:
    async def main() -> None:
        assert await _status_of(node.connect()) == 401
        assert await _status_of(node.connect("vg_" + "x" * 43)) == 401
        assert await _status_of(node.connect("not-a-key")) == 401
        # A key in the URL would end up in proxy logs: refused even when valid.
        assert await _status_of(node.connect(url=f"{node.wss}?token={node.alice}")) == 401

    asyncio.run(main())


def test_key_in_the_subprotocol_is_never_echoed(node: SecureNode) -> None:
    async def main() -> None:
        offered = ["realtime", f"openai-insecure-api-key.{node.alice}"]
        async with node.connect(subprotocols=offered) as ws:
            assert ws.subprotocol == "realtime"
            await _started(ws)

    asyncio.run(main())


def test_revoked_key_is_refused_at_once_without_a_restart(node: SecureNode) -> None:
    carol, _ = create_key(node.keys_file, "carol")

    async def main() -> None:
        async with node.connect(carol) as ws:
            await _started(ws)
            revoke = subprocess.run(
                [sys.executable, "-m", "voicegate", "keys", "revoke", "carol",
                 "--keys-file", str(node.keys_file)],
                cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert revoke.returncode == 0, revoke.stderr
            assert carol not in revoke.stdout + revoke.stderr
            assert await _status_of(node.connect(carol)) == 401
            # The call in progress goes on; revocation is for new sessions.
            await utterance(ws)
            await collect_until(ws, "response.done")

    asyncio.run(main())


def test_per_key_session_limit(node: SecureNode) -> None:
    async def main() -> None:
        async with node.connect(node.bob) as ws:
            await _started(ws)
            assert await _status_of(node.connect(node.bob)) == 403
        for _ in range(50):  # the gateway ends the first session after the close
            try:
                async with node.connect(node.bob) as again:
                    await _started(again)
                    return
            except InvalidStatus:
                await asyncio.sleep(0.1)
        raise AssertionError("the key's session was not released")

    asyncio.run(main())


def test_session_tokens(node: SecureNode) -> None:
    def forged(**change: Any) -> str:
        now = int(time.time())
        claims = {"aud": "voicegate", "sub": "alice", "iat": now, "exp": now + 60,
                  "jti": os.urandom(6).hex(), "proto": "stream", **change}  # fmt: skip
        secret = change.pop("secret", node.secret)
        claims.pop("secret", None)
        return jwt.encode(claims, secret, algorithm="HS256")

    async def main() -> None:
        token = node.token(node.alice, ttl_minutes=1)
        async with node.connect(url=f"{node.wss}?token={token}") as ws:
            await _started(ws)
        # One session per token.
        assert await _status_of(node.connect(url=f"{node.wss}?token={token}")) == 403
        other = node.token(node.alice)
        async with node.connect(
            subprotocols=["voicegate", f"openai-insecure-api-key.{other}"]
        ) as ws:
            assert ws.subprotocol == "voicegate"
            await _started(ws)
        # A token made the right way with the node's secret opens a session: the refusals
        # below are for what was changed, nothing else.
        async with node.connect(forged()) as ws:
            await _started(ws)
        header, payload, signature = node.token(node.alice).split(".")
        tampered_payload = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
        refused = [
            forged(exp=int(time.time()) - 60, iat=int(time.time()) - 120),  # expired
            forged(aud="another-node"),  # wrong audience
            forged(secret=os.urandom(48)),  # another node's secret
            f"{header}.{tampered_payload}.{signature}",  # tampered
            forged(sub="carol-never-existed"),
        ]
        for bad in refused:
            assert await _status_of(node.connect(url=f"{node.wss}?token={bad}")) == 401, bad

    asyncio.run(main())
    with node.http() as client:
        assert client.post(f"{node.https}/v1/tokens").status_code == 401
        r = client.post(
            f"{node.https}/v1/tokens",
            headers={"Authorization": f"Bearer {node.alice}"},
            json={"ttl_minutes": 10_000},
        )
        assert r.status_code == 400 and "token_ttl_min" in r.text


def test_origin_allow_list(node: SecureNode) -> None:
    async def main() -> None:
        async with node.connect(node.alice, origin=ALLOWED_ORIGIN) as ws:
            await _started(ws)
        refused = node.connect(node.alice, origin="http://evil.example")
        assert await _status_of(refused) == 403

    asyncio.run(main())


def test_metrics_need_a_key_health_does_not(node: SecureNode) -> None:
    with node.http() as client:
        assert client.get(f"{node.https}/metrics").status_code == 401
        token = node.token(node.alice)
        r = client.get(f"{node.https}/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401  # session tokens do not open operations endpoints
        assert client.get(f"{node.https}/healthz").status_code == 200
        assert client.get(f"{node.https}/readyz").status_code == 200
        r = client.get(f"{node.https}/metrics", headers={"Authorization": f"Bearer {node.alice}"})
        assert r.status_code == 200
        assert "voicegate_gateway_auth_refused_total" in r.text
    # The separate metrics address serves without a key (plain HTTP, a private network).
    r = httpx.get(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=10)
    assert r.status_code == 200
    refused = [
        line for line in r.text.splitlines()
        if line.startswith("voicegate_gateway_auth_refused_total")
    ]  # fmt: skip
    assert refused and float(refused[0].split()[-1]) >= 1


def _peer_cert(node: SecureNode) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", node.node.port), timeout=5) as sock,
        node.context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_certificate_reload_on_sighup_keeps_the_call(node: SecureNode) -> None:
    async def main() -> None:
        async with node.connect(node.alice) as ws:
            await _started(ws)
            assert _peer_cert(node).serial_number == node.cert.serial_number
            renewed = issue(node.ca, node.certfile, node.keyfile, "second")
            os.kill(node.node.proc.pid, signal.SIGHUP)
            deadline = time.monotonic() + 20
            while _peer_cert(node).serial_number != renewed.serial_number:
                assert time.monotonic() < deadline, "the new certificate was not served"
                await asyncio.sleep(0.1)
            # The call that began under the old certificate goes on.
            await utterance(ws)
            got = await collect_until(ws, "response.done")
            assert any(isinstance(m, bytes) for m in got)
        node.cert = renewed
        assert node.node.proc.poll() is None

    asyncio.run(main())


def test_talk_with_a_key_over_tls(node: SecureNode, tmp_path: Path) -> None:
    def talk(key: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "voicegate", "talk", "--url", node.wss, "--cafile",
             str(node.cafile), "--pace", "4", "--json", "--out", str(tmp_path / "a.wav")],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
            env=dict(os.environ, VOICEGATE_API_KEY=key),
        )  # fmt: skip

    ok = talk(node.alice)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert node.alice not in ok.stdout + ok.stderr  # the report never shows the key
    refused = talk("vg_" + "y" * 43)
    assert refused.returncode == 3, refused.stdout  # cannot connect: the handshake refused
    assert "401" in refused.stdout


def test_audit_log_names_key_and_address_never_the_key(node: SecureNode) -> None:
    """Runs last on this node: it stops it to read everything it logged."""

    async def main() -> None:
        async with node.connect(node.alice) as ws:
            await _started(ws)

    asyncio.run(main())
    assert node.node.stop() == 0
    log = "".join(node.node.lines)
    assert "session start: key alice via key from 127.0.0.1:" in log
    assert "session end: key alice from 127.0.0.1:" in log
    assert "session start: key alice via token from 127.0.0.1:" in log
    assert "handshake from 127.0.0.1:" in log and "unknown or revoked API key" in log
    assert "origin 'http://evil.example' is not allowed" in log
    assert "TLS certificate reloaded" in log
    for secret in (node.alice, node.bob):
        assert secret not in log
    assert not node.node.leftovers()


def test_non_loopback_start_is_refused_without_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nname = "noauth"\n')
    empty = tmp_path / "keys.json"
    for extra in ([], ["--keys-file", str(empty)]):
        result = subprocess.run(
            [sys.executable, "-m", "voicegate", "serve", "--config", str(cfg), "--host",
             "0.0.0.0", "--port", "0", "--bundle", str(tmp_path), *extra],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "refusing to serve 0.0.0.0" in result.stderr
        assert "--no-auth" in result.stderr
