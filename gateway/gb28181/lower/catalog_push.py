"""Catalog pushes of the lower side: chunked, paced, queued (docs/gb28181.md §6.2, §14.3), sans-I/O.

A catalog goes out in chunks of ``per_message`` items, each chunk only after
the previous one's final answer, as WVP paces them: as Response MESSAGEs to a
query, or as NOTIFYs in a subscription dialog. A lost chunk (time-out) does
not stop the rest; a refusal does, and 481 to a NOTIFY drops the subscription
(the server forgot the dialog, e.g. after a restart). Changes that arrive
while a subscription's push is under way wait for it, in order, and are never
dropped. At most :data:`MAX_PUSHES` answers to queries are in flight per
client, so a flood of queries cannot pile up chunks; the oldest gives way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.gb28181.lower.events import CatalogSent, LowerEvent
from gateway.gb28181.lower.subscriptions import Subscription, SubscriptionBook
from gateway.gb28181.manscdp import CatalogItem, CatalogResponse, Root, split_catalog

__all__ = ["MAX_PUSHES", "CatalogPusher", "Push"]

MAX_PUSHES: Final = 8  # answers to queries in flight per client


@dataclass(slots=True)
class Push:
    """Catalog chunks still to send, one after another's answer."""

    id: int
    sn: int
    items: int
    chunks: deque[CatalogResponse]
    subscription: Subscription | None  # None: Response MESSAGEs to a query; else NOTIFYs in its dialog
    messages: int = 0


SendChunk = Callable[[CatalogResponse, Push, float], None]
"""Sends one chunk: as a Response MESSAGE, or as a NOTIFY in ``push.subscription``'s dialog."""


class CatalogPusher:
    """The catalog pushes of one client; reports :class:`CatalogSent` when each ends."""

    def __init__(
        self,
        name: str,
        local_id: str,
        per_message: int,
        subscriptions: SubscriptionBook,
        send: SendChunk,
        report: Callable[[LowerEvent], None],
        next_sn: Callable[[], int],
    ) -> None:
        self.name = name
        self.local_id = local_id
        self.per_message = per_message
        self._subscriptions = subscriptions
        self._send = send
        self._report = report
        self._next_sn = next_sn
        self._pushes: dict[int, Push] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._pushes)

    def answer_query(self, sn: int, items: Sequence[CatalogItem], now: float) -> None:
        """Answer a Catalog query with Response MESSAGEs (docs/gb28181.md §6.2)."""
        queries = [p for p in self._pushes.values() if p.subscription is None]
        if any(p.sn == sn for p in queries):
            return  # the same query again while we are still answering it
        if len(queries) >= MAX_PUSHES:
            self._finish(queries[0], None)  # the oldest answer to a query gives way (NOTIFYs never do)
        self._start(sn, items, now, None)

    def notify(self, items: Sequence[CatalogItem], now: float) -> int:
        """Push changes (items carry their own ``Event``) to every live subscription; how many."""
        if not items:
            return 0
        live = self._subscriptions.live(now)
        for subscription in live:
            if subscription.pushing:  # one NOTIFY push per dialog at a time: queue, never drop
                subscription.pending.extend(items)
            else:
                self._start(self._next_sn(), items, now, subscription)
        return len(live)

    def on_answer(self, push_id: object, status: int | None, now: float) -> None:
        """A chunk's final answer (``status`` None: timed out): send the next one, or stop."""
        push = self._pushes.get(push_id) if isinstance(push_id, int) else None
        if push is None:
            return
        if status is None or 200 <= status < 300:
            self._send_next(push, now)  # a lost chunk does not stop the rest (WVP)
            return
        subscription = push.subscription
        if status == 481 and subscription is not None:  # the server forgot the dialog (restart)
            self._subscriptions.drop(subscription)
        self._finish(push, now)  # any other refusal stops the push, as WVP's does

    def clear(self) -> None:
        """Forget every push (the client stopped); nothing is reported."""
        self._pushes.clear()

    def _start(self, sn: int, items: Sequence[CatalogItem], now: float, subscription: Subscription | None) -> None:
        if subscription is not None:
            subscription.pushing = True
        root = Root.RESPONSE if subscription is None else Root.NOTIFY
        chunks = split_catalog(sn, self.local_id, list(items), self.per_message, root)
        self._seq += 1
        push = Push(self._seq, sn, len(items), deque(chunks), subscription)
        self._pushes[push.id] = push
        self._send_next(push, now)

    def _send_next(self, push: Push, now: float) -> None:
        subscription = push.subscription
        alive = subscription is None or (self._subscriptions.holds(subscription) and subscription.expires_at > now)
        if not push.chunks or not alive:
            self._finish(push, now)
            return
        push.messages += 1
        self._send(push.chunks.popleft(), push, now)

    def _finish(self, push: Push, now: float | None) -> None:
        """End ``push``; a subscription's queued changes start the next push (``now`` given)."""
        if self._pushes.pop(push.id, None) is not None:
            self._report(CatalogSent(self.name, push.sn, push.items, push.messages))
        subscription = push.subscription
        if subscription is None:
            return
        subscription.pushing = False
        if subscription.pending and self._subscriptions.holds(subscription) and now is not None:
            items, subscription.pending = subscription.pending, []
            self._start(self._next_sn(), items, now, subscription)
