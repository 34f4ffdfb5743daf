"""The talk page: a browser client of ``/v1/stream`` that every gateway serves when
``[web] page`` says so (docs/web.md).

``/talk`` is one HTML template (``talk.html``, ``string.Template`` placeholders), and
``/talk/static/`` the page's own scripts, worklets and style: no build step and nothing
from another host. ``/`` redirects to ``/talk``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from string import Template
from typing import Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from voicegate import __version__
from voicegate.core.config import WebSettings
from voicegate.server.protocols.native_wire import STREAM_PATH

PAGE_PATH: Final[str] = "/talk"
STATIC_PATH: Final[str] = "/talk/static"
WEB_DIR: Final[Path] = Path(__file__).resolve().parent
STATIC_DIR: Final[Path] = WEB_DIR / "static"

# What the page asks for in session.start: 16 kHz in (what the models take), 24 kHz out
# (Piper voices speak at 22.05 kHz), mu-law 8 kHz as the fallback the node may degrade to.
PAGE_OPTIONS: Final[dict[str, object]] = {
    "stream_path": STREAM_PATH,
    "input_rate": 16000,
    "output": {"encoding": "pcm16", "sample_rate": 24000},
    "fallback": {"encoding": "mulaw", "sample_rate": 8000},
    "frame_ms": 20,
    "jitter_ms": 60,
}

# Everything the page loads comes from this node; the worklets count as scripts, the
# stream as a connection to the same host.
_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Permissions-Policy": "microphone=(self)",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def render_page() -> str:
    """The page's HTML: the template with the static path, the version and the options."""
    template = Template((WEB_DIR / "talk.html").read_text(encoding="utf-8"))
    options = {**PAGE_OPTIONS, "static": STATIC_PATH, "version": __version__}
    # Inside <script>: no "</" may end the element early.
    options_json = json.dumps(options).replace("<", "\\u003c")
    return template.substitute(static=STATIC_PATH, version=__version__, config_json=options_json)


def resolve_page(settings: WebSettings, host: str, override: str | None = None) -> WebSettings:
    """``settings`` with ``page`` decided for a node bound to ``host``: the command line's
    ``override`` over the configuration, and "auto" made "on" or "off" (the gateways get
    the decision: they do not know the address)."""
    chosen = WebSettings(page=override) if override is not None else settings
    return dataclasses.replace(chosen, page="on" if chosen.serves_page(host) else "off")


def web_routes(settings: WebSettings) -> list[BaseRoute]:
    """The page's routes when ``settings.page`` is ``"on"``, else none. ``serve`` resolves
    ``"auto"`` against the address it binds before the gateways start."""
    if settings.page != "on":
        return []
    html = render_page()

    async def page(request: Request) -> Response:
        return HTMLResponse(html, headers=_HEADERS)

    async def root(request: Request) -> Response:
        return RedirectResponse(PAGE_PATH, status_code=307)

    return [
        Route("/", root, methods=["GET", "HEAD"]),
        Route(PAGE_PATH, page, methods=["GET", "HEAD"]),
        Mount(STATIC_PATH, app=StaticFiles(directory=STATIC_DIR), name="talk-static"),
    ]
