"""HTTP endpoints of live video: stream list, snapshot, WebRTC (H.264 passed through, H.265 transcoded).

The WebRTC exchange is one round trip (the WHEP shape): the browser POSTs its
offer, the gateway answers with an H.264-only answer whose track reads the
channel's relay; the upstream INVITE is shared by every viewer.

Every route checks the caller's scope first (:mod:`gateway.security.scope`):
a channel the caller may not watch answers exactly like an unknown one (404)
and nothing is opened for it; the stream list shows only watchable channels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.errors import GatewayError
from gateway.httpapi.audit_sessions import audit_session
from gateway.httpapi.common import json_error, json_response
from gateway.httpapi.guard import denied, requires, scoped_channel
from gateway.httpapi.identity import principal_of
from gateway.httpapi.stream_choice import stream_answer, stream_choice, watch_error
from gateway.httpapi.transcode_routes import transcode_choice, transcoded_feed
from gateway.httpapi.webrtc_peers import PeerSlot, WebRtcPeers, read_offer, reserve_slot, supervise
from gateway.live import LiveError, LiveService, LiveStream
from gateway.media.ps import StreamType
from gateway.media.webrtc import FanoutVideoTrack, answer_offer
from gateway.registry.directory import Directory
from gateway.security.scope import Capability, may_see_channel
from gateway.substreams import StreamChoice
from gateway.transcoding import Transcode, wait_video_codec

log = logging.getLogger("kgw.http.live")
SNAPSHOT_WAIT = 5.0  # s to wait for a key frame when the stream had to be opened
CODEC_WAIT = 5.0  # s to wait for a just-opened stream's first frame: H.265 is transcoded, H.264 passed through
LIVE = web.AppKey("kgw_live", LiveService)
PEERS = web.AppKey("kgw_webrtc_peers", WebRtcPeers)
DIRECTORY = web.AppKey("kgw_live_directory", Directory)


def _live(request: web.Request) -> LiveService:
    return request.app[LIVE]


def _may_watch(request: web.Request, channel_id: str, capability: Capability) -> bool:
    channel = request.app[DIRECTORY].channels.get(channel_id)
    return channel is not None and may_see_channel(principal_of(request), channel, capability)


def _watchable(request: web.Request, capability: Capability = Capability.LIVE_VIEW) -> str:
    """The path's channel when the caller may use ``capability`` on it; else the unknown channel's 404."""
    message = "cannot open {id}: unknown channel {id}"
    return scoped_channel(request, request.app[DIRECTORY].channels, capability, message=message).id


@requires(Capability.LIVE_VIEW)
async def list_streams(request: web.Request) -> web.Response:
    """GET /api/live: every open upstream the caller may watch, with viewers, rates and RTP counters."""
    live = _live(request)
    now = live.loop.time()
    items = []
    for stream in live.streams.values():
        if not _may_watch(request, stream.channel_id, Capability.LIVE_VIEW):
            continue
        fanout = stream.fanout.stats(now)
        rtp = stream.receiver.stats
        items.append(
            {
                "channel_id": stream.channel_id,
                "stream": "main" if stream.stream_number == 0 else "sub",
                "device_id": stream.device_id,
                "state": stream.state,
                "viewers": stream.fanout.consumer_count,
                "fps": round(fanout.fps, 1),
                "bitrate": round(fanout.bitrate),
                "rtp_received": rtp.received,
                "rtp_lost": rtp.lost,
                "rtp_bytes": rtp.bytes,
                "age_s": round(now - stream.opened_at, 1),
            }
        )
    return json_response({"items": items})


@requires(Capability.LIVE_VIEW)
async def open_stream(request: web.Request) -> web.Response:
    """POST /api/channels/{id}/live {"stream"?}: open (or join) the upstream; it stays for the linger time unless watched."""
    live = _live(request)
    channel_id = _watchable(request)
    choice = await stream_choice(request)
    try:
        stream, viewer = await live.watch(channel_id, stream=choice)
    except (LiveError, TimeoutError) as exc:
        raise watch_error(channel_id, exc, lambda c: _may_watch(request, c, Capability.CHANNEL_READ)) from exc
    live.leave(channel_id, viewer)
    codec = live.video_codec(stream.key)
    return json_response(
        {
            "channel_id": channel_id,
            **stream_answer(choice, stream),
            "state": stream.state,
            "transport": stream.mode.name.lower(),
            "codec": codec.name.lower() if codec else None,
            "needs_transcoding": codec is StreamType.H265,
        }
    )


@requires(Capability.LIVE_CLOSE)
async def close_stream(request: web.Request) -> web.Response:
    """DELETE /api/channels/{id}/live: end the upstream now (BYE), whoever watches."""
    live = _live(request)
    channel_id = request.match_info["id"]
    if not _may_watch(request, channel_id, Capability.LIVE_CLOSE) and live.streams_of(channel_id):
        message = f"no live stream of {channel_id}"
        raise denied(request, principal_of(request), Capability.LIVE_CLOSE, channel_id, message)
    if not live.streams_of(channel_id):
        raise json_error(web.HTTPNotFound, f"no live stream of {channel_id}")
    live.close_channel(channel_id, "closed by API")
    return json_response({"channel_id": channel_id, "state": "closed"})


@requires(Capability.LIVE_VIEW)
async def snapshot(request: web.Request) -> web.Response:
    """GET /api/channels/{id}/snapshot.jpg: a JPEG of the latest key frame (opens a short session if needed)."""
    live = _live(request)
    channel_id = _watchable(request)
    try:
        jpeg = await live.snapshot(channel_id, SNAPSHOT_WAIT)
    except LiveError as exc:
        status = web.HTTPGatewayTimeout if "key frame" in str(exc) else web.HTTPNotFound
        raise json_error(status, str(exc)) from exc
    return web.Response(body=jpeg, content_type="image/jpeg")


@requires(Capability.LIVE_VIEW)
async def webrtc_offer(request: web.Request) -> web.Response:
    """POST /api/channels/{id}/webrtc {"sdp": offer, "stream"?: "main"|"sub"|"auto"} → {"sdp": answer, "stream"}."""
    live = _live(request)
    channel_id = _watchable(request)
    offer = await read_offer(request)
    choice = await stream_choice(request)
    peers = request.app[PEERS]
    slot = reserve_slot(peers, request)
    try:
        answer, served = await _answer(request, live, channel_id, offer, slot, choice)
    except BaseException:
        peers.release(slot)
        raise
    return json_response({"sdp": answer, "channel_id": channel_id, **served})


async def _answer(
    request: web.Request, live: LiveService, channel_id: str, offer: str, slot: PeerSlot, choice: StreamChoice
) -> tuple[str, dict[str, object]]:
    """Open (or join) the channel's stream and answer the offer in the reserved slot; returns the answer SDP."""
    peers = request.app[PEERS]
    try:  # an H.265 camera's sub-stream, when it has one: what its transcode reads
        stream, viewer = await live.watch(channel_id, stream=transcode_choice(request, channel_id, choice))
    except (LiveError, TimeoutError) as exc:
        raise watch_error(channel_id, exc, lambda c: _may_watch(request, c, Capability.CHANNEL_READ)) from exc
    feed: LiveStream | Transcode = stream
    leave: Callable[[str, str], None] = live.leave
    served = stream_answer(choice, stream)
    if await wait_video_codec(live, stream, CODEC_WAIT) is StreamType.H265:
        # Browsers' WebRTC has no H.265: a transcode shared by the camera's viewers (gateway/transcoding.py).
        feed, viewer, leave, served = await transcoded_feed(request, live, stream, viewer, choice)
    # The track is its own consumer (attached first, so the stream never sees zero viewers).
    track = FanoutVideoTrack(feed.fanout, f"webrtc-{viewer}", wakeup=feed.wakeup, clock=live.loop.time)
    leave(channel_id, viewer)
    try:
        pc, answer = await answer_offer(offer, track, ice_host=live.media_host)
    except GatewayError as exc:
        leave(channel_id, track.consumer_id)
        track.stop()
        raise json_error(web.HTTPBadRequest, f"unusable offer: {exc}") from exc
    audit_end = audit_session(request, AuditAction.WEBRTC_SESSION, channel_id)

    def _cleanup(state: str) -> None:
        audit_end(state)  # how long it ran (idempotent)
        leave(channel_id, track.consumer_id)  # detach + linger, then end the track
        track.stop()

    supervise(peers, slot, pc, _cleanup)
    return answer, served


async def close_peers(app: web.Application) -> None:
    """On shutdown: close every WebRTC peer connection."""
    await app[PEERS].close_all()


def add_live_routes(app: web.Application, live: LiveService, directory: Directory) -> None:
    """Register the live endpoints (the directory says whose channel is whose)."""
    app[LIVE], app[DIRECTORY] = live, directory
    app[PEERS] = WebRtcPeers()
    app.router.add_get("/api/live", list_streams)
    app.router.add_post("/api/channels/{id}/live", open_stream)
    app.router.add_delete("/api/channels/{id}/live", close_stream)
    app.router.add_get("/api/channels/{id}/snapshot.jpg", snapshot)
    app.router.add_post("/api/channels/{id}/webrtc", webrtc_offer)
    app.on_shutdown.append(close_peers)
