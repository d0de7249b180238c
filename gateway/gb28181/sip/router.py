"""One router per endpoint: endpoint events go down an ordered chain of handlers (sans-I/O).

Several cores share one SIP endpoint (one socket): on the gateway the live
streams' play sessions, the upper-platform links and device access; in a
simulator many devices. Like pjsip's modules ordered by priority, each handler
is offered every event in turn and says whether it took it; the first that
does ends the walk. A request nobody takes is answered ``unclaimed_status``
(a device host answers 404 for an ID it does not serve); a response or
time-out nobody takes is counted and dropped.

The router is what the asyncio driver runs: :meth:`receive`, :meth:`get_timer`
and :meth:`handle_timer` cover the endpoint and every handler, so the driver
keeps one timer for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from gateway.gb28181.sip.endpoint import RequestReceived, SipEndpoint, SipEvent
from gateway.gb28181.sip.message import make_response
from gateway.gb28181.sip.transport import Peer

__all__ = ["SipHandler", "SipRouter"]

log = logging.getLogger("kgw.sip.router")


class SipHandler(Protocol):
    """A core on a shared endpoint: takes the events that are its own, runs its own timers."""

    def route(self, event: SipEvent, now: float) -> bool:
        """Handle ``event`` if it is this handler's; True when taken (later handlers never see it)."""

    def get_timer(self) -> float | None:
        """The handler's earliest deadline (not the endpoint's: the router asks it separately)."""

    def handle_timer(self, now: float) -> None:
        """Run the handler's due timers."""


class SipRouter:
    """An endpoint and the ordered handlers of its events."""

    def __init__(
        self, endpoint: SipEndpoint, handlers: Sequence[SipHandler] = (), *, unclaimed_status: int | None = None
    ) -> None:
        self.endpoint = endpoint
        self.handlers: tuple[SipHandler, ...] = tuple(handlers)
        self.unclaimed_status = unclaimed_status
        self.unclaimed = 0

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        """Feed one datagram or framed message, then route what it caused."""
        self.endpoint.receive(data, peer, now)
        self.process(now)

    def process(self, now: float) -> None:
        """Route every pending endpoint event; a handler's bug fails that one event, not the rest."""
        while (event := self.endpoint.next_event()) is not None:
            try:
                self.route(event, now)
            except Exception:
                log.exception("SIP handler failed on %s from %s", type(event).__name__, event.peer)

    def route(self, event: SipEvent, now: float) -> None:
        """Offer ``event`` to each handler in order; answer an unclaimed request."""
        for handler in self.handlers:
            if handler.route(event, now):
                return
        self.unclaimed += 1
        if self.unclaimed_status is not None and isinstance(event, RequestReceived) and event.transaction:
            response = make_response(event.request, self.unclaimed_status, to_tag=self.endpoint.new_tag())
            self.endpoint.send_response(event.transaction, response, now)

    def get_timer(self) -> float | None:
        """The earliest deadline of the endpoint and of every handler."""
        deadlines = [t for t in (self.endpoint.get_timer(), *(h.get_timer() for h in self.handlers)) if t is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run every due timer (endpoint first: its time-outs are events for the handlers)."""
        self.endpoint.handle_timer(now)
        self.process(now)
        for handler in self.handlers:
            deadline = handler.get_timer()
            if deadline is not None and deadline <= now:
                handler.handle_timer(now)
                self.process(now)
