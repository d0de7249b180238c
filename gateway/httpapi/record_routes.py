"""HTTP endpoints of device recordings: search (RecordInfo) and playback, with WebRTC for the picture.

* ``GET /api/channels/{id}/records?start&end&type`` (RECORD_READ) → the channel's segments;
* ``POST /api/channels/{id}/playback {"start", "end"}`` (PLAYBACK) → a new playback session;
* ``GET /api/playback/{id}``, ``POST /api/playback/{id}/control {"action", "scale", "position"}``,
  ``POST /api/playback/{id}/webrtc {"sdp"}``, ``DELETE /api/playback/{id}``.

Scope as for live view: a channel the caller may not use answers exactly like an unknown
one (404, audited as denied). A playback belongs to whoever started it: another caller
gets the unknown playback's 404, and the owner loses it too when the channel left their
scope meanwhile. The WebRTC answer reuses live view's pass-through track and the same
peer caps (:data:`gateway.httpapi.live_routes.PEERS`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from typing import Any

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.errors import GatewayError
from gateway.httpapi.audit_sessions import audit_session
from gateway.httpapi.common import json_error, json_object, json_response
from gateway.httpapi.guard import denied, requires, scoped_channel
from gateway.httpapi.identity import principal_of
from gateway.httpapi.live_routes import DIRECTORY, PEERS
from gateway.httpapi.transcode_routes import TRANSCODES
from gateway.httpapi.webrtc_peers import PeerSlot, caller_key, read_offer, reserve_slot, supervise
from gateway.media.ps import StreamType
from gateway.media.webrtc import FanoutVideoTrack, answer_offer
from gateway.playback import Playback, PlaybackError, PlaybackService
from gateway.records import RecordSearchError, RecordService
from gateway.security.scope import Capability, may_see_channel
from gateway.transcoding import Transcode, TranscodeLimitReached

__all__ = ["PLAYBACKS", "RECORDS", "add_record_routes"]

log = logging.getLogger("kgw.http.records")
RECORDS = web.AppKey("kgw_records", RecordService)
PLAYBACKS = web.AppKey("kgw_playbacks", PlaybackService)
MAX_EPOCH = 4102444800  # 2100-01-01: anything later is a typo, not a time
_TRACKS = itertools.count(1)
CODEC_WAIT = 5.0  # s for a just-started playback's first frame (is it H.265?)
CODEC_POLL = 0.05

_STATUS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    429: web.HTTPTooManyRequests,
    502: web.HTTPBadGateway,
    503: web.HTTPServiceUnavailable,
    504: web.HTTPGatewayTimeout,
}


def _error(status: int, message: str) -> web.HTTPException:
    return json_error(_STATUS.get(status, web.HTTPInternalServerError), message)


def _channel_in_scope(request: web.Request, capability: Capability) -> str:
    """The path's channel when the caller may use ``capability`` on it; else the unknown channel's 404."""
    channels = request.app[DIRECTORY].channels
    return scoped_channel(request, channels, capability, message="未知通道 (unknown channel {id})").id


def _own_playback(request: web.Request) -> Playback:
    """The path's playback when the caller started it and may still play back its channel; else 404."""
    playback_id = request.match_info["id"]
    pb = request.app[PLAYBACKS].get(playback_id)
    message = f"未知回放会话 (unknown playback {playback_id})"
    if pb is None or pb.owner != caller_key(request):
        raise json_error(web.HTTPNotFound, message)
    channel = request.app[DIRECTORY].channels.get(pb.channel_id)
    principal = principal_of(request)
    if channel is None or not may_see_channel(principal, channel, Capability.PLAYBACK):
        raise denied(request, principal, Capability.PLAYBACK, pb.channel_id, message)
    return pb


def _epoch_param(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise json_error(web.HTTPBadRequest, f"{name} 必须是 Unix 秒 ({name} must be epoch seconds)") from None
    if isinstance(value, float) and not value.is_integer():
        raise json_error(web.HTTPBadRequest, f"{name} must be whole epoch seconds")
    if not 0 < number < MAX_EPOCH:
        raise json_error(web.HTTPBadRequest, f"{name} out of range")
    return number


@requires(Capability.RECORD_READ)
async def search_records(request: web.Request) -> web.Response:
    """GET /api/channels/{id}/records?start=&end=&type=all|time|alarm|manual."""
    channel_id = _channel_in_scope(request, Capability.RECORD_READ)
    query = request.query
    start = _epoch_param(query.get("start"), "start")
    end = _epoch_param(query.get("end"), "end")
    try:
        found = await request.app[RECORDS].search(channel_id, start, end, query.get("type", "all"))
    except RecordSearchError as exc:
        raise _error(exc.status, exc.message) from exc
    return json_response(found.to_json())


@requires(Capability.PLAYBACK)
async def start_playback(request: web.Request) -> web.Response:
    """POST /api/channels/{id}/playback {"start", "end"} → the new session."""
    channel_id = _channel_in_scope(request, Capability.PLAYBACK)
    body = await json_object(request)
    start, end = _epoch_param(body.get("start"), "start"), _epoch_param(body.get("end"), "end")
    try:
        pb = await request.app[PLAYBACKS].start(channel_id, start, end, owner=caller_key(request))
    except PlaybackError as exc:
        raise _error(exc.status, exc.message) from exc
    return json_response(pb.to_json())


@requires(Capability.PLAYBACK)
async def get_playback(request: web.Request) -> web.Response:
    """GET /api/playback/{id}: state, scale, position (and end_reason once ended)."""
    return json_response(_own_playback(request).to_json())


@requires(Capability.PLAYBACK)
async def control_playback(request: web.Request) -> web.Response:
    """POST /api/playback/{id}/control {"action": pause|play|scale|seek, "scale", "position"}."""
    pb = _own_playback(request)
    body = await json_object(request)
    action = body.get("action")
    scale, position = body.get("scale"), body.get("position")
    if not isinstance(action, str):
        raise json_error(web.HTTPBadRequest, 'expected {"action": "pause"|"play"|"scale"|"seek"}')
    for name, value in (("scale", scale), ("position", position)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise json_error(web.HTTPBadRequest, f"{name} must be a number")
    try:
        await request.app[PLAYBACKS].control(
            pb.id,
            action,
            scale=float(scale) if scale is not None else None,
            position=float(position) if position is not None else None,
        )
    except PlaybackError as exc:
        raise _error(exc.status, exc.message) from exc
    return json_response(pb.to_json())


@requires(Capability.PLAYBACK)
async def stop_playback(request: web.Request) -> web.Response:
    """DELETE /api/playback/{id}: BYE now."""
    pb = _own_playback(request)
    request.app[PLAYBACKS].stop(pb.id, "stopped by API")
    return json_response(pb.to_json())


@requires(Capability.PLAYBACK)
async def playback_webrtc(request: web.Request) -> web.Response:
    """POST /api/playback/{id}/webrtc {"sdp": offer} → {"sdp": answer}: the playback's picture, H.264 passed
    through, an H.265 recording transcoded (one transcode per playback, within ``max_transcodes``)."""
    pb = _own_playback(request)
    if not pb.active:
        raise json_error(web.HTTPConflict, f"回放已结束 (playback {pb.id} has ended: {pb.end_reason})")
    offer = await read_offer(request)
    peers = request.app[PEERS]
    slot = reserve_slot(peers, request)
    try:
        answer, transcoded = await _answer(request, pb, offer, slot)
    except BaseException:
        peers.release(slot)
        raise
    return json_response({"sdp": answer, "id": pb.id, "transcoded": transcoded})


async def _video_codec(pb: Playback, loop: asyncio.AbstractEventLoop, timeout: float) -> StreamType | None:
    """The recording's video codec, once its first PSM or frame arrived (None: none within ``timeout``)."""
    deadline = loop.time() + timeout
    while True:
        codec = next((t for t in pb.demuxer.stream_types.values() if t in (StreamType.H264, StreamType.H265)), None)
        if codec is not None or not pb.active or loop.time() >= deadline:
            return codec
        await asyncio.sleep(CODEC_POLL)  # a bounded wait for the first frame; the tracks own pb.wakeup


def _transcoded(request: web.Request, pb: Playback) -> Transcode:
    """An H.265 recording for a browser: a transcode of this playback (one per playback), or 503 at the limit."""
    transcodes = request.app[TRANSCODES]
    loop = request.app[PLAYBACKS].loop
    source_consumer = f"transcode-source-{next(_TRACKS)}"
    pb.fanout.attach(source_consumer, loop.time())

    def give_back(channel_id: str, consumer: str) -> None:
        if consumer in pb.fanout.consumers:
            pb.fanout.detach(consumer, loop.time())

    try:
        feed, viewer = transcodes.join_source(pb, source_consumer, stream=f"playback {pb.id}", give_back=give_back)
    except TranscodeLimitReached as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    transcodes.leave(pb.channel_id, viewer)  # the track below takes its own place on the transcode
    return feed


async def _answer(request: web.Request, pb: Playback, offer: str, slot: PeerSlot) -> tuple[str, bool]:
    service = request.app[PLAYBACKS]
    peers = request.app[PEERS]
    feed: Playback | Transcode = pb
    if await _video_codec(pb, service.loop, CODEC_WAIT) is StreamType.H265:
        feed = _transcoded(request, pb)  # browsers' WebRTC has no H.265 (gateway/transcoding.py)
    track = FanoutVideoTrack(feed.fanout, f"webrtc-{next(_TRACKS)}", wakeup=feed.wakeup, clock=service.loop.time)
    service.attach(pb, track.consumer_id)

    def _leave() -> None:
        track.stop()
        if isinstance(feed, Transcode):
            request.app[TRANSCODES].leave(pb.channel_id, track.consumer_id)  # the last one starts its linger

    try:
        pc, answer = await answer_offer(offer, track, ice_host=service.media_host)
    except GatewayError as exc:
        _leave()
        raise json_error(web.HTTPBadRequest, f"unusable offer: {exc}") from exc
    audit_end = audit_session(request, AuditAction.WEBRTC_SESSION, pb.channel_id)

    def _cleanup(state: str) -> None:
        audit_end(state)
        _leave()

    supervise(peers, slot, pc, _cleanup)
    return answer, isinstance(feed, Transcode)


async def _close_playbacks(app: web.Application) -> None:
    app[PLAYBACKS].close_all()


def add_record_routes(app: web.Application, records: RecordService, playbacks: PlaybackService) -> None:
    """Register the records and playback endpoints (after the live routes: they share the directory and peers)."""
    app[RECORDS], app[PLAYBACKS] = records, playbacks
    app.router.add_get("/api/channels/{id}/records", search_records)
    app.router.add_post("/api/channels/{id}/playback", start_playback)
    app.router.add_get("/api/playback/{id}", get_playback)
    app.router.add_post("/api/playback/{id}/control", control_playback)
    app.router.add_post("/api/playback/{id}/webrtc", playback_webrtc)
    app.router.add_delete("/api/playback/{id}", stop_playback)
    app.on_shutdown.append(_close_playbacks)
