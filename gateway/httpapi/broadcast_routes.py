"""HTTP endpoints of voice broadcast (喊话): the browser's microphone over WebRTC to a device.

``POST /api/channels/{id}/broadcast {"sdp": offer}`` claims the channel's device for the
caller (409 ``{"error": "<who> 正在喊话 …", "speaker": who}`` when someone else speaks), runs
the GB broadcast flow (Notify, the device's INVITE, our answer, ACK) and only then answers
the browser's offer: ``{"sdp": answer}``. ``DELETE /api/channels/{id}/broadcast`` ends it
(BYE); so does closing the WebRTC connection, and a device BYE closes the connection.

Scope as for live view, with :attr:`Capability.BROADCAST` (police may not broadcast): a
channel the caller may not use answers like an unknown one (404). The WebRTC session takes
a slot of the node's WebRTC caps (:mod:`gateway.httpapi.webrtc_peers`) and is audited from
start to end.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.broadcast import Broadcast, BroadcastBusy, BroadcastError, BroadcastService
from gateway.errors import GatewayError
from gateway.httpapi.audit_sessions import audit_session
from gateway.httpapi.common import json_error, json_response
from gateway.httpapi.guard import requires, scoped_channel
from gateway.httpapi.identity import principal_of
from gateway.httpapi.live_routes import DIRECTORY, PEERS
from gateway.httpapi.webrtc_peers import read_offer, reserve_slot, supervise
from gateway.media.webrtc.microphone import answer_microphone
from gateway.security.scope import Capability

__all__ = ["BROADCASTS", "add_broadcast_routes"]

log = logging.getLogger("kgw.http.broadcast")
BROADCASTS = web.AppKey("kgw_broadcasts", BroadcastService)
_STATUS: dict[int, type[web.HTTPException]] = {
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    502: web.HTTPBadGateway,
    503: web.HTTPServiceUnavailable,
    504: web.HTTPGatewayTimeout,
}


def _speaker(request: web.Request) -> str:
    return principal_of(request).username or "?"


def _channel(request: web.Request) -> str:
    """The path's channel when the caller may broadcast to it; else the unknown channel's 404."""
    return scoped_channel(request, request.app[DIRECTORY].channels, Capability.BROADCAST).id


def _busy(exc: BroadcastBusy) -> web.HTTPException:
    return web.HTTPConflict(
        text=json.dumps({"error": str(exc), "speaker": exc.speaker}, ensure_ascii=False),
        content_type="application/json",
    )


@requires(Capability.BROADCAST)
async def start_broadcast(request: web.Request) -> web.Response:
    """POST /api/channels/{id}/broadcast {"sdp": offer} → {"sdp": answer, "channel_id", "speaker"}."""
    service = request.app[BROADCASTS]
    channel_id = _channel(request)
    offer = await read_offer(request)
    peers = request.app[PEERS]
    slot = reserve_slot(peers, request)
    try:
        broadcast = service.claim(channel_id, _speaker(request))
    except BroadcastBusy as exc:
        peers.release(slot)
        raise _busy(exc) from exc
    except BroadcastError as exc:
        peers.release(slot)
        raise json_error(_STATUS.get(exc.status, web.HTTPBadGateway), str(exc)) from exc
    try:
        await service.open(broadcast)
        pc, answer = await answer_microphone(offer, broadcast.push, ice_host=service.media_host)
    except BroadcastError as exc:
        peers.release(slot)
        raise json_error(_STATUS.get(exc.status, web.HTTPBadGateway), str(exc)) from exc
    except GatewayError as exc:  # WebRtcError: the offer
        service.stop(broadcast, "bad offer")
        peers.release(slot)
        raise json_error(web.HTTPBadRequest, f"unusable offer: {exc}") from exc
    except BaseException:
        service.stop(broadcast, "cancelled")
        peers.release(slot)
        raise
    audit_end = audit_session(request, AuditAction.BROADCAST, channel_id)

    def _cleanup(state: str) -> None:
        audit_end("failed" if state == "failed" else "ended")
        service.stop(broadcast, "speaker left")

    _end = supervise(peers, slot, pc, _cleanup)

    def _ended(reason: str) -> None:  # the device hung up, or DELETE: close the browser's connection
        task = asyncio.get_running_loop().create_task(_end())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    broadcast.on_end.append(_ended)
    return json_response({"sdp": answer, "channel_id": channel_id, "speaker": broadcast.speaker})


_CLOSING: set[asyncio.Task[None]] = set()


@requires(Capability.BROADCAST)
async def stop_broadcast(request: web.Request) -> web.Response:
    """DELETE /api/channels/{id}/broadcast: the caller stops speaking (BYE to the device)."""
    service = request.app[BROADCASTS]
    channel_id = _channel(request)
    broadcast: Broadcast | None = service.of_channel(channel_id)
    if broadcast is None:
        raise json_error(web.HTTPNotFound, f"no broadcast to {channel_id} (没有正在进行的喊话)")
    if broadcast.speaker != _speaker(request):
        raise _busy(BroadcastBusy(channel_id, broadcast.speaker))
    service.stop(broadcast, "ended by speaker")
    return json_response(
        {"channel_id": channel_id, "state": "ended", "packets": broadcast.packets_sent, "speaker": broadcast.speaker}
    )


@requires(Capability.BROADCAST)
async def broadcast_state(request: web.Request) -> web.Response:
    """GET /api/channels/{id}/broadcast: who speaks to the channel's device now (``speaker`` null: nobody)."""
    service = request.app[BROADCASTS]
    channel_id = _channel(request)
    broadcast = service.of_channel(channel_id)
    if broadcast is None:
        return json_response({"channel_id": channel_id, "speaker": None})
    return json_response(
        {
            "channel_id": channel_id,
            "speaker": broadcast.speaker,
            "live": broadcast.live.done() and not broadcast.ended.done(),
            "packets": broadcast.packets_sent,
        }
    )


def add_broadcast_routes(app: web.Application, service: BroadcastService) -> None:
    """Register the broadcast endpoints (after the live routes: they share the directory and WebRTC caps)."""
    app[BROADCASTS] = service
    app.router.add_get("/api/channels/{id}/broadcast", broadcast_state)
    app.router.add_post("/api/channels/{id}/broadcast", start_broadcast)
    app.router.add_delete("/api/channels/{id}/broadcast", stop_broadcast)
