"""The web console: one static page (zh-CN) for the staff of a gateway or platform.

A tree 行政区划 → 幼儿园 → 通道 with online state, a live-view grid of 1/4/9/16
WebRTC cells and the alarm list; it reads only this service's own API, so each
platform shows what it received. The page lives in ``platform/gbplatform/console/``
(HTML, CSS and vanilla JS, no build step, no external URLs). ``/``, ``/console``
and ``/live/{channel_id}`` all serve the same ``index.html``; on ``/live/{id}``
the script reads the id from ``location.pathname`` and plays that channel in cell 1.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
ASSETS_PREFIX = "/console/assets"


async def console_page(request: web.Request) -> web.FileResponse:
    """GET /, /console, /live/{channel_id}: the console page."""
    response = web.FileResponse(CONSOLE_DIR / "index.html", headers={"Cache-Control": "no-cache"})
    response.content_type = "text/html"
    return response


def add_console_routes(app: web.Application) -> None:
    """Register the console page and its assets (a ``WebPart`` of the node's application)."""
    app.router.add_get("/", console_page)
    app.router.add_get("/console", console_page)
    app.router.add_get("/live/{channel_id}", console_page)
    app.router.add_static(ASSETS_PREFIX, CONSOLE_DIR, append_version=False)
