"""HTTP side of the H.265 → H.264 transcodes (gateway/transcoding.py).

The WebRTC route (:mod:`gateway.httpapi.live_routes`) hands a viewer of an H.265 camera
to :func:`transcoded_feed`, which answers the shared transcode's fanout instead of the
camera's (or 503 when every transcode is taken), made from the camera's sub-stream when it
has one. ``GET /api/transcodes`` lists the
running transcodes the caller may watch, with their frame counters and lag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from gateway.gb28181.stream_number import MAIN
from gateway.httpapi.common import json_error, json_response
from gateway.httpapi.guard import requires
from gateway.httpapi.identity import principal_of
from gateway.httpapi.stream_choice import stream_answer
from gateway.live import LiveError, LiveService, LiveStream
from gateway.media.ps import StreamType
from gateway.registry.directory import Directory
from gateway.security.scope import Capability, may_see_channel
from gateway.substreams import StreamChoice
from gateway.transcoding import Transcode, TranscodeLimitReached, TranscodeService, wait_video_codec

__all__ = ["TRANSCODES", "transcode_choice", "transcode_part", "transcoded_feed"]

log = logging.getLogger("kgw.http.transcode")
CODEC_WAIT = 5.0  # s to wait for a just-opened sub-stream's first frame
TRANSCODES = web.AppKey("kgw_transcodes", TranscodeService)
_DIRECTORY = web.AppKey("kgw_transcode_directory", Directory)


async def transcoded_feed(
    request: web.Request, live: LiveService, stream: LiveStream, viewer: str, choice: StreamChoice
) -> tuple[LiveStream | Transcode, str, Callable[[str, str], None], dict[str, object]]:
    """What a browser viewer of an H.265 stream reads: (feed, its consumer id, how it leaves, the answer's fields).

    The camera's sub-stream when it has one (a fraction of the CPU: bench/transcode.py) and the
    service prefers it; a sub-stream in H.264 is passed through as it is. ``viewer`` (the
    caller's place on the live stream) is handed over whatever happens; every transcode in
    use answers 503 with the reason in zh-CN and English.
    """
    service = request.app[TRANSCODES]
    if service.prefer_sub and stream.stream_number == MAIN and live.planner.has_sub(stream.channel_id):
        stream, viewer = await _sub_stream(live, stream, viewer)
    served = {**stream_answer(choice, stream), "transcoded": True}
    if choice is StreamChoice.MAIN and stream.stream_number != MAIN:
        served["downgraded"] = False
        served["note"] = "H.265 摄像机: 子码流转码播放 (H.265 camera: its sub-stream, transcoded to H.264)"
    if await wait_video_codec(live, stream, CODEC_WAIT) is not StreamType.H265:
        return stream, viewer, live.leave, {**served, "transcoded": False}  # an H.264 sub-stream: as it is
    try:
        feed, consumer = service.join(stream, viewer)
    except TranscodeLimitReached as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    return feed, consumer, service.leave, served


def transcode_choice(request: web.Request, channel_id: str, choice: StreamChoice) -> StreamChoice:
    """The stream to open for a browser: a camera known to send H.265 is watched on its sub-stream
    (what its transcode reads), so that a new viewer does not open the main stream only to leave it."""
    service = request.app[TRANSCODES]
    if service.prefer_sub and choice is StreamChoice.MAIN and channel_id in service.known_hevc:
        return StreamChoice.SUB
    return choice


async def _sub_stream(live: LiveService, main: LiveStream, viewer: str) -> tuple[LiveStream, str]:
    """Trade the viewer's place on the main stream for one on the sub-stream (keep main if that fails)."""
    try:
        sub, sub_viewer = await live.watch(main.channel_id, stream=StreamChoice.SUB)
    except (LiveError, TimeoutError) as exc:  # refused, over the uplink budget, no answer: main it is
        log.info("transcoding %s from its main stream: no sub-stream (%s)", main.channel_id, exc)
        return main, viewer
    if sub is main or sub.stream_number == MAIN:  # the camera has none after all (it answered with main)
        live.leave(main.channel_id, sub_viewer)
        return main, viewer
    live.leave(main.channel_id, viewer)
    return sub, sub_viewer


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
