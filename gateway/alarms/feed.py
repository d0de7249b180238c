"""Live alarm events for the consoles: every open console has a bounded queue of them.

A new alarm, a state change, an escalation, a delivery outcome, a snapshot
ready: the alarm service publishes each once, and every console's WebSocket
reads its own queue. A console that falls 1,000 events behind is dropped (it
reloads the list when it reconnects) so it can never hold the gateway's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gateway.alarms.model import Alarm, Delivery

__all__ = ["FEED_DEPTH", "AlarmFeed"]

log = logging.getLogger("kgw.alarms")
FEED_DEPTH = 1000


class AlarmFeed:
    """Fans alarm events out to the consoles' queues."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue of live alarm events for one console."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=FEED_DEPTH)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """Forget a console's queue."""
        self._queues.discard(queue)

    def alarm(self, kind: str, alarm: Alarm) -> None:
        """An alarm event (``alarm``, ``updated``, ``escalated``)."""
        if self._queues:
            self.publish({"type": kind, "alarm": alarm})

    def delivery(self, delivery: Delivery) -> None:
        """A delivery's outcome changed."""
        if self._queues:
            self.publish({"type": "delivery", "delivery": delivery})

    def publish(self, event: dict[str, Any]) -> None:
        """Any event, to every console."""
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._queues.discard(queue)
                log.warning("an alarm console fell behind by 1,000 events; dropped (it reloads when it reconnects)")

    def close(self) -> None:
        """Tell every console the service stopped."""
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait({"type": "closed"})
