"""The alarm outbox scheduler: which deliveries to attempt, and when (sans-I/O).

Every alarm becomes one :class:`~gateway.alarms.model.Delivery` per sink and
event. The outbox keeps them in one queue per (sink, order key), i.e. per
kindergarten, sorted by (lane, seq, event: alarm before escalated), and only
the HEAD of a queue may be attempted. A receiver therefore sees one
kindergarten's alarms in the order they happened, while different
kindergartens proceed in parallel and one kindergarten's failing alarm never
holds back another's. The one exception is the lane: an *urgent* delivery (a
one-button alarm's, ``Delivery.urgent``) goes before the queue's routine ones,
so a flood of other alarms from a kindergarten never delays its press by more
than the one attempt in flight; urgent ones keep their order among
themselves. Due heads of different queues go oldest first, urgent first.

Failed attempts are retried with capped, jittered exponential backoff. An
alarm is never given up: after ``dead_after`` attempts the delivery is marked
DEAD (the console shows it as a dead letter) but stays the head of its queue
and keeps being retried, so it goes through when the sink recovers. Only a
*permanent* rejection (the receiver refused the payload) parks a delivery:
it leaves its queue so the kindergarten's later alarms proceed, and stays
visible in :meth:`Outbox.parked` until an operator calls :meth:`Outbox.retry_now`.

The asyncio service drives it::

    for delivery in outbox.take_due(sink, now, limit=free_slots):
        start_send(delivery)                       # now in flight
    ...
    store.save(outbox.succeeded(key, now))         # or failed(...) / release(key)
    sleep_until(outbox.get_timer())

and persists every Delivery this module returns (they are mutated in place;
everyone else treats them as read-only, since the queues index their
``seq``, ``order_key`` and ``next_attempt_at``).

Restored DEAD deliveries: a transiently failing delivery that turns DEAD gets
``last_error = "retrying: <error>"`` (:data:`RETRYING_PREFIX`); a permanently
rejected one keeps the bare error. When :meth:`Outbox.add` restores a DEAD
delivery after a restart it is queued (still retried) if its ``last_error``
starts with ``"retrying:"``, and parked otherwise, so a rejected payload never
blocks its kindergarten after a restart either.

No clock and no randomness of its own: ``now`` is an argument and the jitter
draws from an injected callable, so tests are exact and replayable.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from gateway.alarms.model import Delivery, DeliveryEvent, DeliveryKey, DeliveryState
from gateway.errors import AlarmError, ConfigError

__all__ = ["RETRYING_PREFIX", "NotInFlight", "Outbox", "RetryPolicy"]

#: ``last_error`` prefix of a DEAD delivery that is still being retried (see the module doc).
RETRYING_PREFIX: Final = "retrying:"

# Within one seq the alarm goes before its escalation; unknown events sort last.
_EVENT_RANK: Final = {DeliveryEvent.ALARM: 0, DeliveryEvent.ESCALATED: 1}

# Stale heap entries tolerated per live one before a heap is rebuilt (keeps memory bounded).
_COMPACT_FACTOR: Final = 4
_COMPACT_SLACK: Final = 256

_OrderKey = tuple[int, int, int, DeliveryKey]  # (lane, seq, event rank, key): queue order, unique
_Waiting = tuple[float, int, int, int, DeliveryKey, int]  # (time, lane, seq, rank, key, gen)
_Due = tuple[int, int, int, DeliveryKey, float, int]  # (lane, seq, rank, key, time, gen)
_DueTime = tuple[float, int]  # (time, gen)


class NotInFlight(AlarmError, ValueError):
    """A result was reported for a delivery that :meth:`Outbox.take_due` did not hand out."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff between attempts: ``base * factor**(attempts-1)``, capped, then jittered.

    ``jitter`` 0.2 spreads each delay over ±20 % so that a city's worth of
    deliveries failing together do not all come back in the same instant.
    """

    base: float = 0.5
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.2
    dead_after: int = 10  # attempts after which a still-failing delivery shows as DEAD

    def __post_init__(self) -> None:
        if not (self.base >= 0 and self.factor >= 1 and self.cap >= 0 and 0 <= self.jitter <= 1):
            raise ConfigError("retry policy needs base >= 0, factor >= 1, cap >= 0 and 0 <= jitter <= 1")
        if self.dead_after < 1:
            raise ConfigError("retry policy dead_after must be >= 1")

    def delay(self, attempts: int, rnd: float) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt; ``rnd`` is uniform in [0, 1]."""
        try:
            raw = self.base * self.factor ** (max(attempts, 1) - 1)
        except OverflowError:  # thousands of attempts: far beyond the cap anyway
            raw = self.cap
        capped = min(raw, self.cap)
        r = min(max(rnd, 0.0), 1.0) if rnd == rnd else 0.5  # NaN would poison the heaps
        return max(0.0, capped * (1.0 + self.jitter * (2.0 * r - 1.0)))


@dataclass(slots=True)
class _Queue:
    """One (sink, order key) queue: queued deliveries in order, at most one in flight."""

    order_key: str
    items: list[_OrderKey] = field(default_factory=list)  # sorted; items[0] is the head
    busy: DeliveryKey | None = None  # the delivery in flight (normally the head)
    gen: int = 0  # token of the head's live heap entry; 0 = not scheduled


@dataclass(slots=True)
class _Sink:
    """Per-sink scheduling state.

    A queue whose head may be attempted is "armed": it owns one token ``gen``
    in ``armed`` and an entry in ``waiting`` (by time). Once that time has
    passed the entry moves to ``due`` (by seq, so the oldest alarm goes first)
    and ``due_times`` (by time, for :meth:`Outbox.get_timer`). Entries whose
    token is no longer in ``armed`` are stale and skipped lazily.
    """

    queues: dict[str, _Queue] = field(default_factory=dict)
    parked: dict[DeliveryKey, Delivery] = field(default_factory=dict)
    armed: dict[int, _Queue] = field(default_factory=dict)
    waiting: list[_Waiting] = field(default_factory=list)
    due: list[_Due] = field(default_factory=list)
    due_times: list[_DueTime] = field(default_factory=list)
    in_flight: int = 0
    count: int = 0  # undelivered deliveries: queued + in flight + parked
    dead: int = 0  # of those, in state DEAD


def _order(delivery: Delivery) -> _OrderKey:
    lane = 0 if delivery.urgent else 1
    return (lane, delivery.seq, _EVENT_RANK.get(delivery.event, len(_EVENT_RANK)), delivery.key)


def _discard_item(queue: _Queue, order: _OrderKey) -> None:
    index = bisect_left(queue.items, order)
    if index < len(queue.items) and queue.items[index] == order:
        del queue.items[index]


class Outbox:
    """Decides which deliveries to attempt and when; the caller sends and reports back."""

    def __init__(self, policy: RetryPolicy, rnd: Callable[[], float] = lambda: 0.5) -> None:
        self.policy = policy
        self._rnd = rnd
        self._deliveries: dict[DeliveryKey, Delivery] = {}  # every undelivered one we track
        self._sinks: dict[str, _Sink] = {}
        self._gen = 0

    # --- intake -------------------------------------------------------------------

    def add(self, delivery: Delivery) -> bool:
        """Track a new or restored delivery; False if it was ignored.

        DELIVERED ones and keys already tracked (the first one wins) are
        ignored. A restored DEAD delivery is parked unless its ``last_error``
        starts with :data:`RETRYING_PREFIX` (see the module doc).
        """
        key = delivery.key
        if delivery.state is DeliveryState.DELIVERED or key in self._deliveries:
            return False
        sink = self._sinks.get(delivery.sink)
        if sink is None:
            sink = self._sinks[delivery.sink] = _Sink()
        self._deliveries[key] = delivery
        sink.count += 1
        if delivery.state is DeliveryState.DEAD:
            sink.dead += 1
            if not delivery.last_error.startswith(RETRYING_PREFIX):
                sink.parked[key] = delivery
                return True
        self._enqueue(sink, delivery)
        return True

    # --- scheduling ---------------------------------------------------------------

    def take_due(self, sink: str, now: float, limit: int) -> list[Delivery]:
        """Up to ``limit`` due queue heads, oldest seq first; they are in flight from here on."""
        state = self._sinks.get(sink)
        if state is None or limit <= 0:
            return []
        waiting, due, armed = state.waiting, state.due, state.armed
        while waiting and waiting[0][0] <= now:
            at, lane, seq, rank, key, gen = heapq.heappop(waiting)
            if gen in armed:
                heapq.heappush(due, (lane, seq, rank, key, at, gen))
                heapq.heappush(state.due_times, (at, gen))
        taken: list[Delivery] = []
        while due and len(taken) < limit:
            lane, seq, rank, key, at, gen = heapq.heappop(due)
            queue = armed.get(gen)
            if queue is None:
                continue  # stale
            if at > now:  # the wall clock stepped back since it was found due
                heapq.heappush(waiting, (at, lane, seq, rank, key, gen))
                continue
            del armed[gen]
            queue.gen = 0
            queue.busy = key
            state.in_flight += 1
            taken.append(self._deliveries[key])
        return taken

    def get_timer(self, sink: str | None = None) -> float | None:
        """The earliest ``next_attempt_at`` among heads not in flight (of one sink or all)."""
        if sink is not None:
            state = self._sinks.get(sink)
            return None if state is None else self._sink_timer(state)
        times = [t for t in (self._sink_timer(s) for s in self._sinks.values()) if t is not None]
        return min(times, default=None)

    def in_flight(self, sink: str) -> int:
        """Deliveries of ``sink`` handed out and not yet reported."""
        state = self._sinks.get(sink)
        return 0 if state is None else state.in_flight

    # --- results --------------------------------------------------------------------

    def succeeded(self, key: DeliveryKey, now: float) -> Delivery:
        """The sink has it: DELIVERED and forgotten; the queue's next delivery becomes the head."""
        delivery, state, queue = self._take_result(key)
        if delivery.state is DeliveryState.DEAD:
            state.dead -= 1
        delivery.state = DeliveryState.DELIVERED
        delivery.delivered_at = now
        delivery.attempts += 1
        delivery.last_error = ""
        _discard_item(queue, _order(delivery))
        del self._deliveries[key]
        state.count -= 1
        self._reschedule(state, queue)
        return delivery

    def failed(self, key: DeliveryKey, now: float, error: str, *, permanent: bool) -> Delivery:
        """An attempt failed: park it if ``permanent``, else schedule the next attempt.

        A transient failure never gives up: from ``dead_after`` attempts on the
        state is DEAD and ``last_error`` carries :data:`RETRYING_PREFIX`, but the
        delivery stays at the head of its queue and is retried at the backoff delay.
        """
        delivery, state, queue = self._take_result(key)
        delivery.attempts += 1
        if permanent:
            delivery.last_error = error
            self._set_state(state, delivery, DeliveryState.DEAD)
            _discard_item(queue, _order(delivery))
            state.parked[key] = delivery
        else:
            delivery.next_attempt_at = now + self.policy.delay(delivery.attempts, self._rnd())
            if delivery.attempts >= self.policy.dead_after:
                self._set_state(state, delivery, DeliveryState.DEAD)
                prefixed = error.startswith(RETRYING_PREFIX)
                delivery.last_error = error if prefixed else f"{RETRYING_PREFIX} {error}"
            else:
                delivery.last_error = error
        self._reschedule(state, queue)
        return delivery

    def release(self, key: DeliveryKey) -> bool:
        """The attempt was abandoned without a result; True if it was in flight.

        Nothing else changes, so the delivery is due again at once if it was.
        """
        delivery = self._deliveries[key]
        state = self._sinks[delivery.sink]
        queue = state.queues.get(delivery.order_key)
        if queue is None or queue.busy != key:
            return False
        queue.busy = None
        state.in_flight -= 1
        self._reschedule(state, queue)
        return True

    def retry_now(self, key: DeliveryKey, now: float) -> Delivery:
        """Operator action: attempt this delivery as soon as its queue allows.

        A parked delivery goes back into its queue in seq order, PENDING (it
        keeps its attempt count). If it sorts before a head that is in flight,
        it becomes the head once that attempt reports.
        """
        delivery = self._deliveries[key]
        state = self._sinks[delivery.sink]
        delivery.next_attempt_at = now
        if state.parked.pop(key, None) is not None:
            self._set_state(state, delivery, DeliveryState.PENDING)
            self._enqueue(state, delivery)
            return delivery
        queue = state.queues[delivery.order_key]
        if queue.busy is None and queue.items[0][3] == key:
            self._reschedule(state, queue)
        return delivery

    # --- inspection -------------------------------------------------------------------

    def get(self, key: DeliveryKey) -> Delivery | None:
        """The undelivered delivery with this key (delivered ones are forgotten)."""
        return self._deliveries.get(key)

    def depth(self, sink: str) -> int:
        """Undelivered deliveries of ``sink``: queued, in flight and parked."""
        state = self._sinks.get(sink)
        return 0 if state is None else state.count

    def dead_count(self, sink: str) -> int:
        """Deliveries of ``sink`` in state DEAD, whether still retried or parked."""
        state = self._sinks.get(sink)
        return 0 if state is None else state.dead

    def sinks(self) -> set[str]:
        """Every sink a delivery was ever added for (so gauges can report zeros)."""
        return set(self._sinks)

    def parked(self, sink: str | None = None) -> list[Delivery]:
        """Permanently rejected deliveries waiting for an operator, in seq order."""
        states = self._states(sink)
        return sorted((d for s in states for d in s.parked.values()), key=_order)

    def pending(self, sink: str | None = None) -> Iterator[Delivery]:
        """Every undelivered delivery (of one sink or all), in seq order."""
        if sink is None:
            chosen = list(self._deliveries.values())
        else:
            chosen = [d for d in self._deliveries.values() if d.sink == sink]
        return iter(sorted(chosen, key=_order))

    def __len__(self) -> int:
        return len(self._deliveries)

    # --- internals ---------------------------------------------------------------------

    def _states(self, sink: str | None) -> list[_Sink]:
        if sink is None:
            return list(self._sinks.values())
        state = self._sinks.get(sink)
        return [] if state is None else [state]

    def _take_result(self, key: DeliveryKey) -> tuple[Delivery, _Sink, _Queue]:
        """Look up a reported delivery and end its flight (KeyError / NotInFlight)."""
        delivery = self._deliveries[key]
        state = self._sinks[delivery.sink]
        queue = state.queues.get(delivery.order_key)
        if queue is None or queue.busy != key:
            raise NotInFlight(f"delivery {key} is not in flight")
        queue.busy = None
        state.in_flight -= 1
        return delivery, state, queue

    def _set_state(self, state: _Sink, delivery: Delivery, new: DeliveryState) -> None:
        state.dead += (new is DeliveryState.DEAD) - (delivery.state is DeliveryState.DEAD)
        delivery.state = new

    def _enqueue(self, state: _Sink, delivery: Delivery) -> None:
        queue = state.queues.get(delivery.order_key)
        if queue is None:
            queue = state.queues[delivery.order_key] = _Queue(delivery.order_key)
        order = _order(delivery)
        insort(queue.items, order)
        if queue.items[0] == order:  # a new head (usually it just joins the tail)
            self._reschedule(state, queue)

    def _reschedule(self, state: _Sink, queue: _Queue) -> None:
        """Re-arm the queue's head after anything about it changed; drop empty queues."""
        if queue.gen:
            del state.armed[queue.gen]
            queue.gen = 0
        if queue.busy is not None:
            return
        if not queue.items:
            del state.queues[queue.order_key]
            return
        lane, seq, rank, key = queue.items[0]
        self._gen += 1
        queue.gen = self._gen
        state.armed[self._gen] = queue
        heapq.heappush(state.waiting, (self._deliveries[key].next_attempt_at, lane, seq, rank, key, self._gen))
        heaps = len(state.waiting) + len(state.due) + len(state.due_times)
        if heaps > _COMPACT_SLACK + _COMPACT_FACTOR * len(state.armed):
            self._compact(state)

    @staticmethod
    def _compact(state: _Sink) -> None:
        """Rebuild the heaps without stale entries (amortised O(1) per stale entry)."""
        armed = state.armed
        state.waiting = [e for e in state.waiting if e[5] in armed]
        state.due = [e for e in state.due if e[5] in armed]
        state.due_times = [e for e in state.due_times if e[1] in armed]
        heapq.heapify(state.waiting)
        heapq.heapify(state.due)
        heapq.heapify(state.due_times)

    @staticmethod
    def _sink_timer(state: _Sink) -> float | None:
        """Earliest armed time of one sink, popping stale entries off the heap tops."""
        armed = state.armed
        waiting, due_times = state.waiting, state.due_times
        while waiting and waiting[0][5] not in armed:
            heapq.heappop(waiting)
        while due_times and due_times[0][1] not in armed:
            heapq.heappop(due_times)
        if waiting and due_times:
            return min(waiting[0][0], due_times[0][0])
        if waiting:
            return waiting[0][0]
        return due_times[0][0] if due_times else None
