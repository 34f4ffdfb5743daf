"""The talk page without a browser: its configuration (file < env < command line, "auto"
on loopback only), its routes and what they serve, and its files in the package data."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from voicegate.core.config import ConfigError, WebSettings, is_loopback, load_config
from voicegate.core.config_show import render_config
from voicegate.server import cli
from voicegate.server.protocols.native_wire import STREAM_PATH
from voicegate.server.web import STATIC_DIR, STATIC_PATH, render_page, resolve_page, web_routes

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.7", False),
        ("voice.example.com", False),
        ("", False),
    ],
)
def test_auto_serves_the_page_on_loopback_only(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert WebSettings().serves_page(host) is loopback
    assert WebSettings(page="on").serves_page(host) is True
    assert WebSettings(page="off").serves_page(host) is False


def test_file_then_env_then_command_line(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[web]\npage = "off"\n')
    assert load_config(path, env={}).web.page == "off"
    assert load_config(path, env={"VOICEGATE_WEB_PAGE": "ON"}).web.page == "on"
    assert load_config(None, env={}).web.page == "auto"
    from_file = load_config(path, env={}).web
    assert resolve_page(from_file, "127.0.0.1").page == "off"
    assert resolve_page(from_file, "127.0.0.1", "auto").page == "on"
    assert resolve_page(WebSettings(), "0.0.0.0").page == "off"
    assert resolve_page(WebSettings(), "0.0.0.0", "on").page == "on"


def test_bad_values_name_the_key_and_the_source(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[web]\npage = "yes"\n')
    problem = r"web\.page = 'yes' \(from .*node\.toml\): must be one of"
    with pytest.raises(ConfigError, match=problem):
        load_config(path, env={})
    with pytest.raises(ConfigError, match=r"\(from VOICEGATE_WEB_PAGE\)"):
        load_config(None, env={"VOICEGATE_WEB_PAGE": "maybe"})
    path.write_text("[web]\npage = true\n")
    with pytest.raises(ConfigError, match=r"web\.page = True .*must be a string"):
        load_config(path, env={})
    path.write_text('[web]\nport = 9\n')
    with pytest.raises(ConfigError, match=r"web\.port .*unknown key; keys are \['page'\]"):
        load_config(path, env={})


def test_config_show_lists_the_page_setting(tmp_path: Path) -> None:
    text = render_config(None, {"VOICEGATE_WEB_PAGE": "off"})
    assert '[web]\npage = "off"  # env VOICEGATE_WEB_PAGE' in text
    assert tomllib.loads(text)["web"] == {"page": "off"}


def test_serve_rejects_an_unknown_page_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--web-page", "sometimes"])
    assert exit_info.value.code == 2
    assert "--web-page: invalid choice: 'sometimes'" in capsys.readouterr().err


def _client(page: str) -> TestClient:
    return TestClient(Starlette(routes=web_routes(WebSettings(page=page))))


def test_routes_only_when_on() -> None:
    assert web_routes(WebSettings(page="off")) == []
    # "auto" is decided by serve before the gateways start: unresolved, nothing is served.
    assert web_routes(WebSettings(page="auto")) == []
    with _client("off") as client:
        assert client.get("/talk").status_code == 404


def test_root_redirects_and_the_page_loads_only_from_this_node() -> None:
    with _client("on") as client:
        root = client.get("/", follow_redirects=False)
        assert root.status_code == 307
        assert root.headers["location"] == "/talk"
        page = client.get("/talk")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        html = page.text
        # Every script, style and worklet comes from this node: no other host is named.
        assert not re.search(r"(src|href)=\"(https?:)?//", html)
        config_json = re.search(
            r'<script id="vg-config" type="application/json">(.*?)</script>', html, re.S
        )
        assert config_json is not None
        options = json.loads(config_json.group(1))
        assert options["stream_path"] == STREAM_PATH
        assert options["static"] == STATIC_PATH
        assert options["frame_ms"] == 20
        # The fallback must be cheaper than the output, or session.start is refused.
        out, fallback = options["output"], options["fallback"]
        bytes_per = {"pcm16": 2, "mulaw": 1}
        assert (
            fallback["sample_rate"] * bytes_per[fallback["encoding"]]
            < out["sample_rate"] * bytes_per[out["encoding"]]
        )
        for src in re.findall(r'(?:src|href)="([^"]+)"', html):
            if src.startswith("data:"):
                continue
            assert src.startswith(STATIC_PATH), src
            asset = client.get(src)
            assert asset.status_code == 200, src
        for name in ("talk.js", "capture-worklet.js", "playback-worklet.js", "resampler.js"):
            asset = client.get(f"{STATIC_PATH}/{name}")
            assert asset.status_code == 200
            assert "javascript" in asset.headers["content-type"]
            # No module loaded from elsewhere.
            for spec in re.findall(r'from\s+"([^"]+)"', asset.text):
                assert spec.startswith("./"), (name, spec)
        assert client.get(f"{STATIC_PATH}/../__init__.py").status_code == 404


def test_template_has_no_placeholder_left() -> None:
    html = render_page()
    assert "$" not in html.replace("$$", "")


def test_package_data_covers_the_page() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["voicegate"]
    package = REPO / "voicegate"
    covered = {p for g in globs for p in package.glob(g) if p.is_file()}
    files = [p for p in (STATIC_DIR.parent).rglob("*") if p.is_file() and p.suffix != ".pyc"]
    missing = [
        str(p.relative_to(package))
        for p in files
        if p.suffix != ".py" and p not in covered and "__pycache__" not in p.parts
    ]
    assert not missing, f"not in pyproject's package-data: {missing}"
