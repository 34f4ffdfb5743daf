"""The security pieces on their own: the keys file, session tokens, Origin and
credential parsing, the [security] configuration and the checks made at start."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from certs import issue, make_ca
from hypothesis import given
from hypothesis import strategies as st

from voicegate.core.config import ConfigError, NodeConfig, SecuritySettings, load_config
from voicegate.core.config_show import render_config
from voicegate.server.security import startup as security_setup
from voicegate.server.security import tls, tokens
from voicegate.server.security.auth import CREDENTIAL_SUBPROTOCOL, find_credentials, origin_allowed
from voicegate.server.security.keys import (
    KeyFileError,
    KeyStore,
    create_key,
    digest,
    read_keys,
    revoke_key,
)
from voicegate.server.serve import add_parser

REPO = Path(__file__).resolve().parents[2]

# -- keys -----------------------------------------------------------------------------


def test_keys_file_keeps_hashes_only_and_revocation_applies_at_once(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    assert store.count() == 0
    key, _ = create_key(path, "alice", max_sessions=3, protocols=["stream"])
    assert key.startswith("vg_") and len(key) > 40
    assert key not in path.read_text() and digest(key) in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    found = store.lookup(key)
    assert found is not None and found.name == "alice" and found.max_sessions == 3
    assert store.lookup(key + "x") is None
    with pytest.raises(ValueError, match="exists already"):
        create_key(path, "alice")
    assert [k.name for k in revoke_key(path, "alice")] == ["alice"]
    assert store.lookup(key) is None  # the same store object: re-read on change
    assert revoke_key(path, "alice") == []
    again, _ = create_key(path, "alice")  # the name is free once revoked
    assert store.lookup(again) is not None
    assert [k.active for k in read_keys(path)] == [False, True]


def test_a_broken_keys_file_opens_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, _ = create_key(path, "alice")
    store = KeyStore(path)
    assert store.lookup(key) is not None
    path.write_text('{"version": 1, "keys": [{"name": "x"}]}')
    with pytest.raises(KeyFileError, match=r"keys\[0\]: missing field"):
        read_keys(path)
    # The last good set stays rather than the node opening or closing entirely.
    assert store.lookup(key) is not None and store.error is not None


@pytest.mark.parametrize(
    ("name", "kwargs", "problem"),
    [
        ("", {}, "key name"),
        ("has space", {}, "key name"),
        ("ok", {"max_sessions": 0}, "max-sessions"),
        ("ok", {"protocols": ["telnet"]}, "protocols"),
    ],
)
def test_bad_key_requests(
    tmp_path: Path, name: str, kwargs: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        create_key(tmp_path / "keys.json", name, **kwargs)  # type: ignore[arg-type]


def test_keys_command_create_list_revoke(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"

    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "voicegate", "keys", *args, "--keys-file", str(path)],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    created = keys("create", "edge-app", "--max-sessions", "5")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert KeyStore(path).lookup(key) is not None
    listed = keys("list")
    assert "edge-app" in listed.stdout and "5" in listed.stdout and key not in listed.stdout
    assert keys("revoke", "edge-app").returncode == 0
    assert keys("revoke", "edge-app").returncode == 1
    assert "edge-app" not in keys("list").stdout and "edge-app" in keys("list", "--all").stdout
    bad = keys("create", "bad name")
    assert bad.returncode == 2 and "key name" in bad.stderr and "Traceback" not in bad.stderr


# -- tokens ---------------------------------------------------------------------------

SECRET = b"s" * 32


def _issue(**kwargs: object) -> str:
    args: dict[str, object] = dict(
        issuer="n1", audience="voicegate", key_name="alice", protocol="stream", ttl_s=60.0,
        max_sessions=None,
    )  # fmt: skip
    args.update(kwargs)
    token, _ = tokens.issue(SECRET, **args)  # type: ignore[arg-type]
    return token


def test_token_valid() -> None:
    granted = tokens.verify(_issue(max_sessions=2), SECRET, audience="voicegate")
    assert granted.key_name == "alice" and granted.protocol == "stream"
    assert granted.max_sessions == 2 and granted.expires > time.time()


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (lambda: _issue(now=time.time() - 3600), "expired"),
        (lambda: _issue(audience="other"), "audience"),
        (lambda: tokens.issue(b"o" * 32, issuer="n2", audience="voicegate", key_name="alice",
                              protocol="stream", ttl_s=60, max_sessions=None)[0], "secret"),
        (lambda: _issue()[:-3] + "AAA", "secret|malformed"),
        (lambda: jwt.encode({"aud": "voicegate", "sub": "a", "iat": 0,
                             "exp": int(time.time()) + 60, "jti": "x"}, None, algorithm="none"),
         "malformed"),
        (lambda: "not.a.token", "malformed"),
    ],
)  # fmt: skip
def test_token_refused(token: object, why: str) -> None:
    with pytest.raises(tokens.TokenError, match=why):
        tokens.verify(token(), SECRET, audience="voicegate")  # type: ignore[operator]


def test_tampered_claims_are_refused() -> None:
    header, payload, signature = _issue().split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["sub"] = "mallory"
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    with pytest.raises(tokens.TokenError, match="secret"):
        tokens.verify(f"{header}.{forged}.{signature}", SECRET, audience="voicegate")


def test_token_opens_one_session() -> None:
    ledger = tokens.TokenLedger()
    granted = tokens.verify(_issue(), SECRET, audience="voicegate")
    assert ledger.claim(granted) and not ledger.claim(granted)


def test_token_secret_file(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"x" * 10)
    with pytest.raises(ValueError, match="at least 32"):
        tokens.load_secret(short)
    assert len(tokens.load_secret(None)) == 32 and tokens.load_secret(None) != tokens.load_secret(
        None
    )


@given(st.binary(min_size=32, max_size=64))
def test_a_binary_token_secret_is_used_byte_for_byte(raw: bytes) -> None:
    # ``head -c 48 /dev/urandom > secret``: bytes that happen to be whitespace at either
    # end are part of the secret; another node or an external issuer signs with all of it.
    import tempfile  # noqa: PLC0415 - hypothesis runs this many times, tmp_path once

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "secret"
        path.write_bytes(raw)
        if not (raw.isascii() and raw.strip().decode().isprintable()):
            assert tokens.load_secret(path) == raw
        elif len(raw.strip()) >= 32:
            assert tokens.load_secret(path) == raw.strip()  # a text secret (below)
        else:
            with pytest.raises(ValueError, match="at least 32"):
                tokens.load_secret(path)


def test_a_text_token_secret_loses_its_line_end(tmp_path: Path) -> None:
    # ``head -c 48 /dev/urandom | base64 > secret``: the line end is not the secret's.
    path = tmp_path / "secret"
    path.write_bytes(b"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQ=\n")
    assert tokens.load_secret(path) == b"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQ="


# -- Origin and credentials -----------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed", "host", "ok"),
    [
        ("https://app.example", ("https://app.example",), "node:8443", True),
        ("https://APP.example/", ("https://app.example",), "node:8443", True),
        ("http://evil.example", ("https://app.example",), "node:8443", False),
        ("http://evil.example", ("*",), "node", True),
        ("http://127.0.0.1:8000", (), "127.0.0.1:8000", True),  # the node's own page
        ("https://node.example", (), "node.example:443", True),
        ("http://evil.example", (), "127.0.0.1:8000", False),
        ("null", (), "127.0.0.1:8000", False),
    ],
)
def test_origin_allowed(origin: str, allowed: tuple[str, ...], host: str, ok: bool) -> None:
    assert origin_allowed(origin, allowed, host) is ok


_token_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=","),
    min_size=1,
    max_size=60,
)


@given(
    key=_token_text,
    others=st.lists(_token_text.filter(lambda s: not s.startswith(CREDENTIAL_SUBPROTOCOL))),
    where=st.sampled_from(["header", "subprotocol", "query"]),
)
def test_credentials_are_found_wherever_they_are_and_never_echoed(
    key: str, others: list[str], where: str
) -> None:
    headers = {"authorization": f"Bearer {key}"} if where == "header" else {}
    query = {"token": key} if where == "query" else {}
    offered = [*others]
    if where == "subprotocol":
        offered.insert(len(others) // 2, CREDENTIAL_SUBPROTOCOL + key)
    found = find_credentials(headers, query, offered)
    assert found.value == key and found.source == where
    assert found.other_subprotocols == tuple(others)


def test_no_credentials() -> None:
    found = find_credentials({"authorization": "Basic abc"}, {}, ["realtime"])
    assert found.value is None and found.other_subprotocols == ("realtime",)


# -- configuration and start checks --------------------------------------------------


def test_security_section_file_env_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        '[security]\nkeys_file = "/etc/vg/keys.json"\ntoken_ttl_min = 2.0\n'
        'allowed_origins = ["https://a.example"]\n'
    )
    env = {
        "VOICEGATE_SECURITY_TOKEN_TTL_MIN": "3",
        "VOICEGATE_SECURITY_ALLOWED_ORIGINS": "https://b.example, https://c.example",
    }
    config = load_config(cfg, env)
    assert config.security.keys_file == Path("/etc/vg/keys.json")
    assert config.security.token_ttl_min == 3.0
    assert config.security.allowed_origins == ("https://b.example", "https://c.example")
    parser_args = _serve_args(
        "--token-ttl-min", "4", "--allowed-origin", "https://d.example", "--keys-file", "/k"
    )
    merged = security_setup.apply_cli(config, parser_args).security
    assert merged.token_ttl_min == 4.0 and merged.allowed_origins == ("https://d.example",)
    assert merged.keys_file == Path("/k")
    shown = render_config(cfg, env)
    assert "[security]" in shown
    assert "token_ttl_min = 3.0  # env VOICEGATE_SECURITY_TOKEN_TTL_MIN" in shown
    assert 'keys_file = "/etc/vg/keys.json"  # file' in shown
    assert 'ssl_client_cert = "none"  # default' in shown
    # What config show prints loads back to the same configuration.
    again = tmp_path / "shown.toml"
    again.write_text(shown)
    assert load_config(again, {}) == load_config(cfg, env)


def _serve_args(*argv: str) -> object:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('ssl_certfile = "/c.pem"', "security.ssl_certfile"),
        ('ssl_keyfile = "/k.pem"', "security.ssl_keyfile"),
        ('ssl_client_cert = "always"', "security.ssl_client_cert"),
        ('ssl_certfile = "/c"\nssl_keyfile = "/k"\nssl_client_cert = "required"',
         "security.ssl_client_cert"),
        ('allowed_origins = ["evil.example"]', "security.allowed_origins"),
        ('metrics_bind = "9100"', "security.metrics_bind"),
        ("token_ttl_min = 0", "security.token_ttl_min"),
    ],
)  # fmt: skip
def test_security_section_is_validated(tmp_path: Path, table: str, key: str) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text(f"[security]\n{table}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, {})
    assert err.value.key == key and str(cfg) in str(err.value)


def test_start_checks(tmp_path: Path) -> None:
    open_node = NodeConfig()
    with pytest.raises(ValueError, match=r"refusing to serve 0\.0\.0\.0"):
        security_setup.prepare(open_node, "0.0.0.0")
    with pytest.raises(ValueError, match=r"refusing to serve 10\.1\.2\.3"):
        security_setup.prepare(open_node, "10.1.2.3")
    assert not security_setup.prepare(open_node, "127.0.0.1").auth  # served, with a warning
    assert not security_setup.prepare(open_node, "::1").auth
    no_auth = NodeConfig(security=SecuritySettings(no_auth=True))
    assert not security_setup.prepare(no_auth, "0.0.0.0").auth
    keys = tmp_path / "keys.json"
    with_keys = NodeConfig(security=SecuritySettings(keys_file=keys))
    with pytest.raises(ValueError, match="no active API key"):
        security_setup.prepare(with_keys, "0.0.0.0")
    create_key(keys, "alice")
    assert security_setup.prepare(with_keys, "0.0.0.0").auth


def test_tls_context_is_1_2_or_newer_and_names_bad_files(tmp_path: Path) -> None:
    ca = make_ca()
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    issue(ca, cert, key)
    settings = SecuritySettings(
        ssl_certfile=cert, ssl_keyfile=key, ssl_ca_certs=ca.write(tmp_path / "ca.pem"),
        ssl_client_cert="required",
    )  # fmt: skip
    context = tls.server_context(settings)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    missing = SecuritySettings(ssl_certfile=tmp_path / "nope.pem", ssl_keyfile=key)
    with pytest.raises(tls.TlsError, match=r"nope\.pem"):
        tls.server_context(missing)
    with pytest.raises(tls.TlsError):
        tls.reload(context, missing)  # the old chain stays
    key.write_text("garbage")
    with pytest.raises(tls.TlsError, match=r"k\.pem"):
        tls.server_context(settings)


def test_serve_refuses_a_bad_certificate_with_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voicegate", "serve", "--port", "0", "--bundle", str(tmp_path),
         "--ssl-certfile", str(tmp_path / "missing.pem"), "--ssl-keyfile", str(tmp_path / "k")],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, VOICEGATE_NODE_NAME="badcert"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "missing.pem" in result.stderr and "Traceback" not in result.stderr


def test_systemd_units_bind_loopback_or_take_tls_and_keys() -> None:
    for unit in ("voicegate.service", "voicegate@.service"):
        text = (REPO / "deploy" / "systemd" / unit).read_text()
        settings = [line for line in text.splitlines() if not line.startswith("#")]
        assert any(line.startswith("Environment=VOICEGATE_HOST=127.0.0.1") for line in settings)
        assert "ExecReload=/bin/kill -HUP $MAINPID" in settings
        assert "Environment=ORT_DISABLE_TELEMETRY=1" in settings
        # Both ways to face the network are explained where the operator edits them.
        assert "ssl_certfile" in text and "keys_file" in text and "--no-auth" in text
