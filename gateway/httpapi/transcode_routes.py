"""HTTP side of the H.265 → H.264 transcodes (gateway/transcoding.py).

The WebRTC route (:mod:`gateway.httpapi.live_routes`) hands a viewer of an H.265 camera
to :func:`transcoded_feed`, which answers the shared transcode's fanout instead of the
camera's (or 503 when every transcode is taken). ``GET /api/transcodes`` lists the
running transcodes the caller may watch, with their frame counters and lag.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.httpapi.common import json_error, json_response
from gateway.httpapi.guard import requires
from gateway.httpapi.identity import principal_of
from gateway.registry.directory import Directory
from gateway.security.scope import Capability, may_see_channel
from gateway.transcoding import SourceStream, Transcode, TranscodeLimitReached, TranscodeService

__all__ = ["TRANSCODES", "transcode_part", "transcoded_feed"]

TRANSCODES = web.AppKey("kgw_transcodes", TranscodeService)
_DIRECTORY = web.AppKey("kgw_transcode_directory", Directory)


def transcoded_feed(
    request: web.Request, source: SourceStream, viewer: str, stream: str = "main"
) -> tuple[Transcode, str, Callable[[str, str], None]]:
    """The transcode a browser viewer of an H.265 stream reads: (feed, its consumer id, how it leaves).

    ``viewer`` (the caller's place on the live stream) is handed over whatever happens;
    every transcode in use answers 503 with the reason in zh-CN and English.
    """
    service = request.app[TRANSCODES]
    try:
        feed, consumer = service.join(source, viewer, stream)
    except TranscodeLimitReached as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    return feed, consumer, service.leave


@requires(Capability.LIVE_VIEW)
async def list_transcodes(request: web.Request) -> web.Response:
    """GET /api/transcodes: the running transcodes of channels the caller may watch."""
    service, directory, principal = request.app[TRANSCODES], request.app[_DIRECTORY], principal_of(request)

    def allowed(channel_id: str) -> bool:
        channel = directory.channels.get(channel_id)
        return channel is not None and may_see_channel(principal, channel, Capability.LIVE_VIEW)

    return json_response({"max": service.max_transcodes, "items": service.describe(allowed)})


def transcode_part(service: TranscodeService, directory: Directory) -> Callable[[web.Application], None]:
    """A WebPart: the service for the WebRTC route, and ``GET /api/transcodes``."""

    def add(app: web.Application) -> None:
        app[TRANSCODES], app[_DIRECTORY] = service, directory
        app.router.add_get("/api/transcodes", list_transcodes)

    return add
