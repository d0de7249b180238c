"""HTTP endpoints of recording downloads (issue 11; COMMON11's API contract).

* ``POST /api/channels/{id}/downloads {"start", "end", "speed"?}`` starts one
  (Unix seconds; ``speed`` is the ``a=downloadspeed`` asked of the device, default 4);
* ``GET /api/downloads`` lists the caller's downloads (a 市级管理员: everyone's);
* ``GET /api/downloads/{id}`` is its state and progress;
* ``GET /api/downloads/{id}/file`` is the MP4, named with the kindergarten, the camera
  and the time (``Content-Disposition`` with an ASCII ``filename`` and the real name in
  RFC 5987 ``filename*``);
* ``DELETE /api/downloads/{id}`` cancels a running download or deletes a finished one.

Every route needs :attr:`Capability.DOWNLOAD` and checks the channel against the
caller's scope through the directory, as the live routes do: a channel out of scope
answers like an unknown one (404). A download belongs to whoever started it: anyone
else (but a 市级管理员) gets the same 404 as for a download that does not exist, and
so does the owner once the channel left their scope. Starting, fetching the file and
deleting are audited (``gateway/httpapi/audit_routes.py``).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from gateway.downloads import Download, DownloadError, DownloadService, DownloadState, local_stamp
from gateway.httpapi.app import WebPart
from gateway.httpapi.common import json_error, json_object, json_response
from gateway.httpapi.guard import denied, requires, scoped_channel
from gateway.httpapi.identity import principal_of
from gateway.httpapi.live_routes import DIRECTORY
from gateway.security.principal import Role
from gateway.security.scope import Capability, may_see_channel

__all__ = ["DOWNLOADS", "content_disposition", "download_part"]

DOWNLOADS = web.AppKey("kgw_downloads", DownloadService)
DEFAULT_SPEED = 4
_STATUS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    429: web.HTTPTooManyRequests,
    503: web.HTTPServiceUnavailable,
}


def content_disposition(filename: str, fallback: str) -> str:
    """``attachment`` with an ASCII ``filename`` for old clients and the UTF-8 name as RFC 5987 ``filename*``."""
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in fallback)
    encoded = urllib.parse.quote(filename, safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"


def _service(request: web.Request) -> DownloadService:
    return request.app[DOWNLOADS]


def _channel_in_scope(request: web.Request, channel_id: str) -> bool:
    channel = request.app[DIRECTORY].channels.get(channel_id)
    return channel is not None and may_see_channel(principal_of(request), channel, Capability.DOWNLOAD)


def _mine(request: web.Request) -> Download:
    """The path's download when the caller started it (or is a 市级管理员) and may still see its channel; else 404."""
    download_id = request.match_info["id"]
    download = _service(request).get(download_id)
    principal = principal_of(request)
    message = f"no download {download_id}"
    if download is None:
        raise json_error(web.HTTPNotFound, message)
    if (download.owner != principal.username and principal.role is not Role.CITY_ADMIN) or not _channel_in_scope(
        request, download.channel_id
    ):
        raise denied(request, principal, Capability.DOWNLOAD, download_id, message)
    return download


def _epoch(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise json_error(web.HTTPBadRequest, f"{name} must be integer epoch seconds (时间格式错误)")
    return int(value)


@requires(Capability.DOWNLOAD)
async def start_download(request: web.Request) -> web.Response:
    """POST /api/channels/{id}/downloads {"start", "end", "speed"?} → the new download (state running)."""
    channel_id = scoped_channel(request, request.app[DIRECTORY].channels, Capability.DOWNLOAD).id
    body = await json_object(request, 'JSON {"start", "end", "speed"}')
    start, end = _epoch(body, "start"), _epoch(body, "end")
    speed = body.get("speed", DEFAULT_SPEED)
    if isinstance(speed, bool) or not isinstance(speed, int):
        raise json_error(web.HTTPBadRequest, "speed must be an integer (下载倍速无效)")
    try:
        download = await _service(request).start(channel_id, start, end, speed, principal_of(request).username)
    except DownloadError as exc:
        raise json_error(_STATUS.get(exc.status, web.HTTPInternalServerError), str(exc)) from exc
    return json_response(download.as_json())


@requires(Capability.DOWNLOAD)
async def list_downloads(request: web.Request) -> web.Response:
    """GET /api/downloads: the caller's downloads, newest first (a 市级管理员 sees everyone's)."""
    principal = principal_of(request)
    items = [
        d.as_json()
        for d in _service(request).downloads.values()
        if (d.owner == principal.username or principal.role is Role.CITY_ADMIN)
        and _channel_in_scope(request, d.channel_id)
    ]
    items.sort(key=lambda d: d["created_at"], reverse=True)
    return json_response({"items": items})


@requires(Capability.DOWNLOAD)
async def get_download(request: web.Request) -> web.Response:
    """GET /api/downloads/{id}: state, progress, bytes, file name, error."""
    return json_response(_mine(request).as_json())


@requires(Capability.DOWNLOAD)
async def download_file(request: web.Request) -> web.StreamResponse:
    """GET /api/downloads/{id}/file: the MP4 (409 while running, 410 when it failed)."""
    download = _mine(request)
    if download.state is DownloadState.RUNNING:
        raise json_error(web.HTTPConflict, f"download {download.id} is still running (下载进行中)")
    if download.state is DownloadState.FAILED or not download.path.exists():
        raise json_error(web.HTTPGone, f"download {download.id} has no file: {download.error} (下载失败)")
    fallback = f"kgw_{download.channel_id}_{local_stamp(download.start)}_{local_stamp(download.end)}.mp4"  # ASCII for old clients
    headers = {
        "Content-Disposition": content_disposition(download.filename, fallback),
        "Content-Type": "video/mp4",
        "Cache-Control": "private, no-store",
    }
    return web.FileResponse(download.path, headers=headers)


@requires(Capability.DOWNLOAD)
async def delete_download(request: web.Request) -> web.Response:
    """DELETE /api/downloads/{id}: cancel it (running) or delete its file (finished)."""
    download = _mine(request)
    was = download.state.value
    _service(request).remove(download.id)
    return json_response({"id": download.id, "state": "deleted", "was": was})


def download_part(service: DownloadService) -> WebPart:
    """The download routes as a web part of the node's application (``gateway/app.py``)."""

    def add(app: web.Application) -> None:
        app[DOWNLOADS] = service
        app.router.add_post("/api/channels/{id}/downloads", start_download)
        app.router.add_get("/api/downloads", list_downloads)
        app.router.add_get("/api/downloads/{id}", get_download)
        app.router.add_get("/api/downloads/{id}/file", download_file)
        app.router.add_delete("/api/downloads/{id}", delete_download)

    return add
