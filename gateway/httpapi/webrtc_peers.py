"""The open WebRTC sessions of an app: caps per user and in total, and a short ICE timeout (issue 10, M2).

Every offer binds UDP sockets and takes memory (the review saw 138 MiB and 2,000 ICE
sockets for 1,000 offers), so a slot is reserved *before* the offer is answered:
:meth:`WebRtcPeers.reserve` refuses with :class:`PeerCapReached` when the caller (the
authenticated user, or the source address while there is none) already holds
``per_user`` sessions, or the app ``total``. :meth:`WebRtcPeers.attach` then watches the
peer connection: one that is not ``connected`` within ``connect_timeout`` is closed, and
its sockets with it; a closed or failed one gives its slot back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.errors import GatewayError
from gateway.httpapi.common import json_error
from gateway.httpapi.identity import PRINCIPAL_KEY

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "PeerCapReached",
    "PeerSlot",
    "WebRtcPeers",
    "caller_key",
    "read_offer",
    "reserve_slot",
    "supervise",
]

log = logging.getLogger("kgw.http.webrtc")
DEFAULT_CONNECT_TIMEOUT = 15.0  # s from the answer to an ICE/DTLS connection before the session is dropped


class PeerCapReached(GatewayError):
    """No WebRTC slot for this caller: ``scope`` is ``user`` (429) or ``total`` (503)."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"too many WebRTC sessions ({scope} limit {limit})")
        self.scope, self.limit = scope, limit


def caller_key(request: web.Request) -> str:
    """Whose session this is: the authenticated user, else the source address."""
    principal = request.get(PRINCIPAL_KEY)
    username = getattr(principal, "username", None)
    if isinstance(username, str) and username:
        return f"user:{username}"
    return f"addr:{request.remote or '-'}"


async def read_offer(request: web.Request) -> str:
    """The browser's SDP offer from a JSON ``{"sdp": ...}`` body; 400 for anything else."""
    try:
        body = await request.json()
        offer = body["sdp"]
        if not isinstance(offer, str):
            raise TypeError("sdp must be a string")
    except (ValueError, KeyError, TypeError) as exc:
        raise json_error(web.HTTPBadRequest, 'expected JSON {"sdp": "<offer>"}') from exc
    return offer


def reserve_slot(peers: WebRtcPeers, request: web.Request) -> PeerSlot:
    """The caller's slot before any socket is bound (M2): 429 over its own cap, 503 over the node's."""
    try:
        return peers.reserve(caller_key(request))
    except PeerCapReached as exc:
        status = web.HTTPTooManyRequests if exc.scope == "user" else web.HTTPServiceUnavailable
        raise json_error(status, f"{exc} (WebRTC 会话过多)") from exc


def supervise(
    peers: WebRtcPeers, slot: PeerSlot, pc: Any, cleanup: Callable[[str], None]
) -> Callable[[], Coroutine[Any, Any, None]]:
    """Watch an answered peer connection: when it fails or closes, or does not connect in time,
    ``cleanup(connection state)`` runs once, the slot is given back and ``pc`` closed.
    Returns that ending (a coroutine function), for whoever else must end the session."""
    ended = False

    async def _end() -> None:
        nonlocal ended
        if ended:
            return
        ended = True
        cleanup(pc.connectionState)
        peers.release(slot)
        await pc.close()

    @pc.on("connectionstatechange")  # type: ignore[untyped-decorator]
    async def _on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            await _end()

    peers.attach(slot, pc, _end)  # not connected within the ICE timeout: _end
    return _end


@dataclass(eq=False)
class PeerSlot:
    """One reserved session; ``pc`` once the offer is answered."""

    key: str
    pc: Any = None
    on_close: Callable[[], Coroutine[Any, Any, None]] | None = None
    timer: asyncio.TimerHandle | None = None
    released: bool = field(default=False)


class WebRtcPeers:
    """Slots of open WebRTC sessions, by caller."""

    def __init__(self, per_user: int = 4, total: int = 64, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        self.per_user = per_user
        self.total = total
        self.connect_timeout = connect_timeout
        self.slots: set[PeerSlot] = set()
        self.by_key: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.timed_out = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def reserve(self, key: str) -> PeerSlot:
        """A slot for ``key``, or :class:`PeerCapReached`."""
        if len(self.slots) >= self.total:
            self.refused["total"] += 1
            raise PeerCapReached("total", self.total)
        if self.by_key[key] >= self.per_user:
            self.refused["user"] += 1
            raise PeerCapReached("user", self.per_user)
        slot = PeerSlot(key)
        self.slots.add(slot)
        self.by_key[key] += 1
        return slot

    def release(self, slot: PeerSlot) -> None:
        """Give a slot back (idempotent)."""
        if slot.released:
            return
        slot.released = True
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        self.slots.discard(slot)
        left = self.by_key[slot.key] - 1
        if left > 0:
            self.by_key[slot.key] = left
        else:
            self.by_key.pop(slot.key, None)

    def attach(self, slot: PeerSlot, pc: Any, on_close: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Watch ``pc``: ``on_close`` (which closes it) runs on failure or after the connect timeout."""
        slot.pc, slot.on_close = pc, on_close
        loop = asyncio.get_running_loop()
        slot.timer = loop.call_later(self.connect_timeout, self._check_connected, slot)

    def _check_connected(self, slot: PeerSlot) -> None:
        slot.timer = None
        if slot.released or slot.pc is None or slot.pc.connectionState == "connected":
            return
        self.timed_out += 1
        log.info("WebRTC session of %s not connected after %g s: closing", slot.key, self.connect_timeout)
        if slot.on_close is not None:
            task = asyncio.get_running_loop().create_task(slot.on_close())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close_all(self) -> None:
        """Close every session (shutdown)."""
        for slot in list(self.slots):
            if slot.pc is not None:
                await slot.pc.close()
            self.release(slot)
