"""The web console: one static page (zh-CN) for the staff of a gateway or platform.

A tree 行政区划 → 幼儿园 → 通道 with online state, a live-view grid of 1/4/9/16
WebRTC cells and the alarm list; it reads only this service's own API, so each
platform shows what it received. The page lives in ``platform/gbplatform/console/``
(HTML, CSS and vanilla JS as native ES modules, no build step, no external URLs).
``/``, ``/console`` and ``/live/{channel_id}`` all serve the same ``index.html``; on
``/live/{id}`` the script reads the id from ``location.pathname`` and plays that
channel in cell 1.

The assets under ``/console/assets/`` are sent with an explicit JavaScript (or CSS)
type, since browsers refuse module scripts of any other type and the type guessed
from the file name depends on the machine, and with ``Cache-Control: no-cache``
like the page, so a browser revalidates every module (ETag) and never mixes old
and new modules after an upgrade.

``GET /api/console/limits`` tells the page the server's WebRTC caps and what the
caller's role may do: patrol (轮巡) pre-opens the next page, so it needs two peer
connections per cell and sizes its pages to half the per-user cap
(``webrtc_per_user``); the playback buttons show only for roles that may use them
(the server decides either way).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway.httpapi.auth import mark_public
from gateway.httpapi.common import json_response
from gateway.httpapi.guard import authenticated, public
from gateway.httpapi.identity import principal_of
from gateway.httpapi.live_routes import PEERS
from gateway.security.scope import Capability, allows

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
ASSETS_PREFIX = "/console/assets"
ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@public
async def console_page(request: web.Request) -> web.FileResponse:
    """GET /, /console, /live/{channel_id}: the console page."""
    response = web.FileResponse(CONSOLE_DIR / "index.html", headers={"Cache-Control": "no-cache"})
    response.content_type = "text/html"
    return response


@public
async def console_asset(request: web.Request) -> web.FileResponse:
    """GET /console/assets/{name}: one file of the console's directory (no subdirectories)."""
    name = request.match_info["name"]
    path = CONSOLE_DIR / name
    if name.startswith(".") or path.parent != CONSOLE_DIR or not path.is_file():
        raise web.HTTPNotFound()
    headers = {"Cache-Control": "no-cache"}
    if content_type := ASSET_TYPES.get(path.suffix):
        headers["Content-Type"] = content_type
    return web.FileResponse(path, headers=headers)


@authenticated
async def console_limits(request: web.Request) -> web.Response:
    """GET /api/console/limits: the WebRTC caps the console plans with (null: no live view here)
    and the caller's capabilities."""
    peers = request.app.get(PEERS)
    principal = principal_of(request)
    return json_response(
        {
            "webrtc_per_user": peers.per_user if peers is not None else None,
            "webrtc_total": peers.total if peers is not None else None,
            "capabilities": sorted(c.value for c in Capability if allows(principal, c)),
        }
    )


def add_console_routes(app: web.Application) -> None:
    """Register the console page and its assets (a ``WebPart`` of the node's application)."""
    app.router.add_get("/", console_page)
    app.router.add_get("/console", console_page)
    app.router.add_get("/live/{channel_id}", console_page)
    app.router.add_get(ASSETS_PREFIX + "/{name}", console_asset)
    app.router.add_get("/api/console/limits", console_limits)
    # Static files only: the page asks /api/me and shows the login form when that says 401.
    mark_public(app, ["/", "/console", "/live/{channel_id}", ASSETS_PREFIX + "/{name}"])
