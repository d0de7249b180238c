"""Several lower-side clients on one endpoint: the events each one must see, and one timer for all.

Responses and time-outs find their client through the :class:`SendContext`
their request was sent with; requests through a role-supplied routing rule
(by target ID for simulated devices, by the upper's server ID or address for
upper links). Deadlines live in a heap fed by each client's ``on_deadline``,
so a thousand devices behind one NAT socket cost one comparison per tick.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from gateway.gb28181.lower.client import LowerClient, SendContext
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, SipEvent

__all__ = ["LowerHost", "Router"]

Router = Callable[[RequestReceived], LowerClient | None]
"""The client a request is for, or None when no client here should see it."""


class LowerHost:
    """Routes one endpoint's events to its clients and runs their timers."""

    def __init__(self, endpoint: SipEndpoint, router: Router) -> None:
        self.endpoint = endpoint
        self._router = router
        self._heap: list[tuple[float, int, LowerClient]] = []
        self._scheduled: dict[LowerClient, float] = {}
        self._seq = 0

    def add(self, client: LowerClient) -> None:
        """Take over ``client``'s timers (routing is the router's business)."""
        client.on_deadline = self._schedule
        deadline = client.get_timer()
        if deadline is not None:
            self._schedule(client, deadline)

    def route(self, event: SipEvent, now: float) -> bool:
        """Hand ``event`` to its client; False when it is none of theirs."""
        if isinstance(event, RequestReceived):
            client = self._router(event)
            if client is None:
                return False
            client.handle_request(event, now)
            return True
        context = event.context
        if not isinstance(context, SendContext) or context.client.endpoint is not self.endpoint:
            return False
        if isinstance(event, ResponseReceived):
            context.client.handle_response(event, now)
        else:
            context.client.handle_timeout(event, now)
        return True

    def get_timer(self) -> float | None:
        """The earliest deadline of any client (possibly early: a cancelled timer wakes us for nothing)."""
        self._drop_superseded()
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, now: float, after_each: Callable[[], None] | None = None) -> None:
        """Run every client's due timers; ``after_each`` runs after each client (to route what it sent)."""
        while True:
            self._drop_superseded()
            if not self._heap or self._heap[0][0] > now:
                return
            _, _, client = heapq.heappop(self._heap)
            del self._scheduled[client]
            deadline = client.get_timer()
            if deadline is not None and deadline <= now:
                client.handle_timer(now)
                if after_each is not None:
                    after_each()
            deadline = client.get_timer()
            if deadline is not None:
                self._schedule(client, deadline)

    def _schedule(self, client: LowerClient, at: float) -> None:
        scheduled = self._scheduled.get(client)
        if scheduled is not None and scheduled <= at:
            return
        self._scheduled[client] = at
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, client))

    def _drop_superseded(self) -> None:
        """Pop heap entries that an earlier one for the same client replaced."""
        while self._heap and self._scheduled.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
