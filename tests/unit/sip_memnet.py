"""An in-memory SIP network on the running loop, for the asyncio services' unit tests.

Each node is a real :class:`SipEndpoint` (``SeededIds``) behind a :class:`SipRouter`;
a node does what :class:`~gateway.io.sip_io.SipDriver` does without a socket: it
sends what its endpoint queued once per loop turn (``output_ready``), delivers to
the addressed node on the next turn, calls ``on_activity`` after each flush and
keeps one ``call_at`` at the router's next deadline (docs/design.md §9).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.gb28181.sip.endpoint import RequestReceived, SipEndpoint, SipEvent
from gateway.gb28181.sip.message import SipMessage, SipRequest, make_response, parse_message
from gateway.gb28181.sip.router import SipHandler, SipRouter
from gateway.gb28181.sip.transport import Peer, Transport
from tests.conftest import wait_for

GW_ID = "12010000002090000001"  # the gateway (type 209)
DOMAIN = "1201000000"
GW_HOST, GW_PORT = "10.0.0.1", 5060
WALL_OFFSET = 1_704_067_200.0  # wall time = loop time + this (2024-01-01T00:00:00Z)


def udp(host: str, port: int) -> Peer:
    """A UDP peer address."""
    return Peer(Transport.UDP, host, port)


GW_PEER = udp(GW_HOST, GW_PORT)


# --- the network -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Datagram:
    """One message that crossed the network (``delivered`` False: nobody at that address)."""

    src: str
    dst: tuple[str, int]
    message: SipMessage
    delivered: bool


class MemNode:
    """One endpoint and its router, driven like ``SipDriver`` but without sockets."""

    def __init__(self, net: MemNet, name: str, router: SipRouter, on_activity: Callable[[], None] | None) -> None:
        self.net, self.name, self.router = net, name, router
        self.endpoint = router.endpoint
        self.on_activity = on_activity
        self.flush_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self.endpoint.output_ready = self.flush_soon

    @property
    def peer(self) -> Peer:
        """How the other nodes see this one."""
        return udp(self.endpoint.local_host, self.endpoint.local_port)

    def flush_soon(self) -> None:
        """Flush once at the end of this loop turn."""
        if not self.flush_pending:
            self.flush_pending = True
            self.net.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send, let the owner drain its events, send again, re-arm the timer."""
        self.flush_pending = True
        try:
            self._send_all()
            if self.on_activity is not None:
                self.on_activity()
            self._send_all()
            self._rearm()
        finally:
            self.flush_pending = False

    def deliver(self, data: bytes, source: Peer) -> None:
        """Bytes from the network: the router routes what they cause."""
        self.net.in_flight -= 1
        self.router.receive(data, source, self.net.loop.time())
        self.flush_soon()

    def close(self) -> None:
        """Stop the timer (the test is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _send_all(self) -> None:
        for data, peer in self.endpoint.data_to_send():
            self.net.send(self, data, peer)

    def _rearm(self) -> None:
        self.close()
        deadline = self.router.get_timer()
        if deadline is not None:
            self._timer = self.net.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.router.handle_timer(self.net.loop.time())
        self.flush()


class MemNet:
    """Nodes by address; what one sends reaches the addressed node on the next loop turn."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.nodes: dict[tuple[str, int], MemNode] = {}
        self.wire: list[Datagram] = []
        self.in_flight = 0

    def add(
        self,
        name: str,
        endpoint: SipEndpoint,
        handlers: Sequence[SipHandler],
        *,
        on_activity: Callable[[], None] | None = None,
        unclaimed_status: int | None = None,
    ) -> MemNode:
        """Put an endpoint on the network behind a router with ``handlers``."""
        router = SipRouter(endpoint, handlers, unclaimed_status=unclaimed_status)
        node = MemNode(self, name, router, on_activity)
        self.nodes[(endpoint.local_host, endpoint.local_port)] = node
        return node

    def send(self, src: MemNode, data: bytes, dst: Peer) -> None:
        """Log one message and deliver it on the next loop turn (if anyone is there)."""
        node = self.nodes.get((dst.host, dst.port))
        self.wire.append(Datagram(src.name, (dst.host, dst.port), parse_message(data), node is not None))
        if node is not None:
            self.in_flight += 1
            self.loop.call_soon(node.deliver, data, src.peer)

    def quiet(self) -> bool:
        """Nothing in flight and nothing queued anywhere."""
        return self.in_flight == 0 and not any(n.endpoint.has_output or n.flush_pending for n in self.nodes.values())

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until the network is quiet (every message sent so far has had its effect)."""
        assert await wait_for(self.quiet, timeout, interval=0.01), "the network did not settle"

    def requests(self, method: str, *, src: str | None = None) -> list[SipRequest]:
        """Requests of one method that were sent, optionally by one node."""
        return [
            d.message
            for d in self.wire
            if isinstance(d.message, SipRequest) and d.message.method == method and src in (None, d.src)
        ]

    def close(self) -> None:
        """Cancel every node's timer."""
        for node in self.nodes.values():
            node.close()


# --- handlers --------------------------------------------------------------------------------


class Tail:
    """The router's last handler (device access's place): takes every event left, answers requests ``status``."""

    def __init__(self, endpoint: SipEndpoint, status: int = 200) -> None:
        self.endpoint, self.status = endpoint, status
        self.events: list[SipEvent] = []

    def route(self, event: SipEvent, now: float) -> bool:
        self.events.append(event)
        if isinstance(event, RequestReceived) and event.transaction is not None:
            response = make_response(event.request, self.status, to_tag=self.endpoint.new_tag())
            self.endpoint.send_response(event.transaction, response, now)
        return True

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass
