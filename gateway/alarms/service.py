"""The alarm service: intake, durable outbox, sinks, lifecycle and live events on asyncio.

The decisions are made by sans-I/O parts (:class:`AlarmIntake`,
:class:`Outbox`, :class:`Lifecycle`); this module moves data between them,
the store thread, the sinks and the consoles:

* ``receive`` (one per Alarm MESSAGE) assigns the alarm, queues it for the
  writer and returns once it is committed — only then does the device get its
  200 and are the sinks told. The writer commits everything queued meanwhile
  in one transaction (group commit), so a storm of 2,314 presses costs a few
  fsyncs, not 2,314.
* one pump task per sink takes due deliveries from the outbox (at most
  ``sink.max_inflight`` at once, one per kindergarten) and runs them; results
  go back to the outbox and, batched, to the store.
* the timer task escalates unacknowledged alarms.
* trust: an alarm that is not from the registered session at its registered
  address is stored *unverified* and HELD: it gets no delivery at all (no
  police-facing or other sink: MQTT, webhook, upper platforms), is shown to the
  consoles at once and still escalates there. It is released, through the
  normal durable outbox, when the device registers (authenticated) from the
  address it came from (:meth:`AlarmService.device_registered`) or an operator
  confirms it (:meth:`AlarmService.verify`). Held is durable: it is the
  alarm's ``verified`` column, and the deliveries are written with the flag.
* rate limit: notifications beyond a group's budget are collapsed into its
  open alarm (``repeats``), stored before the device is answered.
* drills (:mod:`gateway.alarms.drills`): while a kindergarten's drill window is
  open (:meth:`AlarmService.open_drill`, by the acceptance flow), its verified
  one-button alarms are stored and delivered as drills: never escalated, never
  counted in the real-alarm metrics, and proven per target
  (:meth:`AlarmService.drill_proof`).

Time is ``clock()`` (wall seconds), injectable so tests can drive escalation
with a fake clock through :meth:`AlarmService.run_timers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from prometheus_client import Metric

from gateway.alarms.drills import DrillError, DrillProof, DrillWindowClosed, DrillWindows, build_proof, relayed_drill
from gateway.alarms.feed import AlarmFeed
from gateway.alarms.intake import AlarmIntake, AlarmNotice, is_emergency
from gateway.alarms.lifecycle import Lifecycle, acknowledge, mark_delivered, resolve, valid_actor
from gateway.alarms.metrics import AlarmMetrics
from gateway.alarms.model import (
    Alarm,
    AlarmFilter,
    AlarmState,
    Delivery,
    DeliveryEvent,
    DeliveryKey,
    DeliveryState,
    Transition,
    TransitionAction,
)
from gateway.alarms.outbox import Outbox, RetryPolicy
from gateway.alarms.payload import Enrichment, build_payload, encode_payload
from gateway.alarms.seqs import SeqBlocks
from gateway.alarms.sinks.base import OutboundMessage, Sink
from gateway.alarms.sinks.gb import GbAlarmSink
from gateway.alarms.store import AlarmStore
from gateway.alarms.writer import AlarmWriter
from gateway.errors import DeliveryError, ForeignAlarm, InvalidTransition, StoreError, UnknownAlarm
from gateway.registry.model import Page

log = logging.getLogger("kgw.alarms")
T = TypeVar("T")
_MAX_LEDGER = 1000  # drill alarms whose proof is kept in memory

__all__ = ["AlarmService", "AlarmSettings", "ReceiveResult"]


@dataclass(frozen=True, slots=True)
class AlarmSettings:
    """Alarm behaviour (config keys ``alarm_*``)."""

    escalate_after: float = 180.0  # s without acknowledgement before escalating (0 = never)
    dedupe_window: float = 600.0  # s within which the same event notified again is one alarm
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    attempt_timeout: float = 15.0  # s: a sink call that takes longer counts as failed (the sink has its own)
    snapshot_budget: float = 0.0  # s the first delivery may wait for the entrance snapshot
    snapshot_timeout: float = 8.0  # s to capture the entrance snapshot at all
    snapshot_concurrency: int = 4  # snapshots taken at once (an alarm storm must not open 2,314 streams)
    snapshot_backlog: int = 32  # alarms waiting for a snapshot beyond which new ones get none (a storm)
    write_retries: int = 3  # store attempts before the device is answered 500
    rate: float = 1.0  # new alarms per second per (sender, kindergarten, lane, trust) beyond the burst
    burst: float = 10.0  # new alarms such a group may open at once before repeats are collapsed


@dataclass(frozen=True, slots=True)
class ReceiveResult:
    """What ``receive`` did: a new alarm, a retransmission of ``alarm_id``, or a repeat collapsed into it."""

    alarm_id: str
    duplicate: bool
    collapsed: bool = False


class AlarmService:
    """Runs one gateway's alarms."""

    def __init__(
        self,
        store: AlarmStore,
        sinks: Sequence[Sink],
        settings: AlarmSettings | None = None,
        *,
        enrich: Callable[[Alarm], Enrichment],
        capture_snapshot: Callable[[Alarm], Awaitable[bytes | None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sinks = {sink.name: sink for sink in sinks}
        self.settings = settings or AlarmSettings()
        self.enrich = enrich
        self.capture_snapshot = capture_snapshot
        self.clock = clock
        self.outbox = Outbox(self.settings.retry, random.random)
        self.lifecycle = Lifecycle(self.settings.escalate_after)
        # Seqs from blocks the store reserves: unique across the nodes sharing the database.
        self.seqs = SeqBlocks()
        self._seq_refill: asyncio.Task[None] | None = None
        self.intake = AlarmIntake(
            lambda: uuid.uuid4().hex,
            window=self.settings.dedupe_window,
            local_offset=_local_utc_offset,
            rate=self.settings.rate,
            burst=self.settings.burst,
            next_seq=self.seqs.take,
            node=store.node,
        )
        self._held: dict[tuple[str, str], set[str]] = {}  # (device, peer) -> unverified open alarm ids
        self._repeat_published: dict[str, float] = {}  # alarm id -> when a repeat last reached the consoles
        self._verifying: set[asyncio.Task[None]] = set()
        self.snapshots: dict[str, bytes] = {}  # alarm id -> JPEG of the entrance camera (bounded)
        self._outbound: dict[str, Alarm] = {}  # alarms with deliveries still open (any event)
        self._open_count: dict[str, int] = {}  # alarm id -> deliveries not delivered yet
        self._remaining: dict[str, set[str]] = {}  # alarm id -> sinks that do not have the alarm yet
        self._committing: dict[str, asyncio.Future[None]] = {}
        self._pump_wake = {name: asyncio.Event() for name in self.sinks}
        self._timer_wake = asyncio.Event()
        self._snapshot_ready: dict[str, asyncio.Event] = {}
        self._snapshot_slots = asyncio.Semaphore(self.settings.snapshot_concurrency)
        self.feed = AlarmFeed()  # live events for the consoles
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgw-alarms")
        self.writer = AlarmWriter(store, self._run, retries=self.settings.write_retries)
        self._tasks: list[asyncio.Task[None]] = []
        self._attempts: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.counters: dict[str, int] = {
            "received": 0,
            "duplicates": 0,
            "escalated": 0,
            "snapshots_skipped": 0,
            "unverified": 0,
            "verified": 0,
            "repeats": 0,
            "drills": 0,
        }
        self.metrics = AlarmMetrics(self.sink_status, self._real_open_alarms, self.held_count)
        self.drills = DrillWindows()
        self._drill_events: dict[str, asyncio.Event] = {}  # kindergarten -> set when its window changes
        self._progress = asyncio.Event()  # replaced and set whenever a delivery of a drill moved
        # Drill alarm id -> its deliveries (latest per sink and event) and audit lines: drill_proof from memory.
        self._ledger: OrderedDict[str, tuple[dict[tuple[str, str], Delivery], list[Transition]]] = OrderedDict()
        self._ledger_alarms: dict[str, Alarm] = {}  # the ledger's alarms as received (when no longer open)
        for sink in sinks:
            if isinstance(sink, GbAlarmSink):
                sink.on_target = self._upper_answered

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Restore open alarms and undelivered deliveries, start sinks, pumps and timers."""
        now = self.clock()
        recent = await self._run(self.store.load_alarms_since, now - self.settings.dedupe_window)
        for alarm in recent:
            if alarm.state is not AlarmState.RESOLVED:
                self.intake.remember(alarm)
                if not alarm.verified:
                    self._held.setdefault((alarm.device_id, alarm.peer), set()).add(alarm.id)
            self.lifecycle.track(alarm)
        await self._more_seqs()
        known = {a.id: a for a in recent}
        restored = await self._run(self.store.load_open_deliveries)
        for delivery in restored:
            found = known.get(delivery.alarm_id) or await self._run(self.store.get_alarm, delivery.alarm_id)
            if found is None:
                log.error("delivery %s of an unknown alarm skipped", delivery.key)
                continue
            alarm = known[found.id] = found
            if delivery.sink not in self.sinks:
                log.warning(
                    "alarm %s has a delivery to sink %r, which is not configured now; it waits for it",
                    alarm.id,
                    delivery.sink,
                )
            if delivery.event is DeliveryEvent.ALARM:
                self._remaining.setdefault(alarm.id, set()).add(delivery.sink)
            self._hold(alarm)
            self.outbox.add(delivery)
        if restored:
            log.info(
                "alarm outbox restored: %d undelivered deliveries of %d alarms",
                len(restored),
                len({d.alarm_id for d in restored}),
            )
        for sink in self.sinks.values():
            try:
                await sink.start()
            except Exception:
                log.exception("alarm sink %s failed to start; deliveries will retry", sink.name)
        self._tasks.append(asyncio.create_task(self.writer.run(), name="kgw-alarm-writer"))
        self._tasks.append(asyncio.create_task(self._timer_loop(), name="kgw-alarm-timers"))
        for name in self.sinks:
            self._tasks.append(asyncio.create_task(self._pump(name), name=f"kgw-alarm-pump-{name}"))

    async def stop(self) -> None:
        """Stop pumps (in-flight attempts are released, not lost), write what is pending, close sinks."""
        # The flag ends the loops even when a cancellation is swallowed: Python 3.11's
        # wait_for drops it if the awaited event is set at the same moment (bpo-42130).
        self._stopping = True
        for task in list(self._verifying):
            task.cancel()
        await asyncio.gather(*self._verifying, return_exceptions=True)
        self.writer.stop()
        for attempt in list(self._attempts):
            attempt.cancel()
        await asyncio.gather(*self._attempts, return_exceptions=True)
        if self._seq_refill is not None:
            self._seq_refill.cancel()
            await asyncio.gather(self._seq_refill, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.writer.flush()
        for sink in self.sinks.values():
            with contextlib.suppress(Exception):
                await sink.close()
        self.feed.close()
        await self._run(self.store.close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- intake ----------------------------------------------------------------------------

    async def receive(self, notice: AlarmNotice, *, collapse: bool = True) -> ReceiveResult:
        """Store the alarm durably (or recognise a repeat); raises StoreError when it cannot be stored."""
        while not self.seqs.available:  # only when the prefetch below fell behind (a storm)
            await asyncio.shield(self._more_seqs())
        result = self.intake.accept(notice, self._state_of, collapse=collapse, drill=self._is_drill)
        if self.seqs.wants_more:
            self._more_seqs()
        if result.collapsed_into is not None:
            return await self._collapse(result.collapsed_into, notice)
        if result.alarm is None:
            assert result.duplicate_of is not None
            self.counters["duplicates"] += 1
            self.metrics.duplicates.inc()
            pending = self._committing.get(result.duplicate_of)
            if pending is not None:
                await asyncio.shield(pending)  # the original is still being written: answer after it
            log.info("alarm from %s (SN %d) repeats alarm %s", notice.device_id, notice.body.sn, result.duplicate_of)
            self.writer.queue(
                transitions=[
                    Transition(
                        result.duplicate_of,
                        self.clock(),
                        TransitionAction.DUPLICATE,
                        "device",
                        f"SN {notice.body.sn} from {notice.device_id}",
                    )
                ]
            )
            return ReceiveResult(result.duplicate_of, True)
        alarm = result.alarm
        if alarm.verified:
            deliveries = [
                self._new_delivery(alarm, name, DeliveryEvent.ALARM, alarm.received_at) for name in self.sinks
            ]
        else:
            deliveries = []  # held from every sink until verified (module doc)
        detail = f"SN {alarm.sn} from {alarm.device_id} at {alarm.peer or '?'}" + (
            f"; problems: {'; '.join(alarm.problems)}" if alarm.problems else ""
        )
        if alarm.drill or self.drills.active(alarm.kindergarten_id, alarm.received_at) is not None:
            detail += f"; {self._drill_note(notice)}"
        transitions = [Transition(alarm.id, alarm.received_at, TransitionAction.RECEIVED, "device", detail)]
        if not alarm.verified:
            transitions.append(
                Transition(
                    alarm.id,
                    alarm.received_at,
                    TransitionAction.HELD,
                    "system",
                    f"unverified ({alarm.unverified_reason}): held from every sink until the device registers "
                    f"from {alarm.peer or 'its address'} or an operator confirms it",
                )
            )
        taken: list[bool] = []

        def on_commit() -> None:  # in the writer's turn: the deliveries start now (issue 12)
            taken.append(True)
            self._accepted(alarm, deliveries)

        done = self.writer.submit(alarm, deliveries, transitions, on_commit=on_commit)
        # Repeats of it wait for this one: resolved once the alarm is in memory, not just on disk.
        accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._committing[alarm.id] = accepted
        try:
            await asyncio.shield(done)
        except StoreError as exc:
            self.intake.forget(alarm.dedupe_key)  # the device's retry must be stored as new
            accepted.set_exception(exc)
            accepted.exception()  # retrieved: nobody may be waiting
            raise
        finally:
            self._committing.pop(alarm.id, None)
        if not taken:  # defensive: the commit resolved without the call-back
            self._accepted(alarm, deliveries)
        accepted.set_result(None)
        return ReceiveResult(alarm.id, False)

    def _is_drill(self, notice: AlarmNotice) -> bool:
        """Whether a new alarm is a drill (gateway.alarms.drills: an open window, or a lower platform's drill)."""
        return self._drill_decision(notice)[0]

    def _drill_note(self, notice: AlarmNotice) -> str:
        """The audit trail's words on why an alarm is (not) a drill."""
        return self._drill_decision(notice)[1]

    def _drill_decision(self, notice: AlarmNotice) -> tuple[bool, str]:
        """(drill?, why): the window rules first, then a verified lower platform's own drill mark."""
        emergency = is_emergency(notice.body.method, notice.body.alarm_type)
        verified = not notice.unverified_reason
        decision = self.drills.classify(
            kindergarten_id=notice.kindergarten_id,
            sender_kindergarten_id=notice.sender_kindergarten_id,
            verified=verified,
            emergency=emergency,
            now=notice.received_at,
        )
        if decision.drill:
            return True, f"drill (演练): {decision.reason}"
        if relayed_drill(
            sender_id=notice.device_id, claims_drill=notice.body.drill, verified=verified, emergency=emergency
        ):
            return True, f"drill (演练) relayed by lower platform {notice.device_id}"
        return False, decision.reason

    def _more_seqs(self) -> asyncio.Task[None]:
        """Reserve the next block of seqs on the store thread (one reservation at a time)."""
        if self._seq_refill is None or self._seq_refill.done():
            task = asyncio.get_running_loop().create_task(self._reserve_seqs(), name="kgw-alarm-seqs")
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # logged in _reserve_seqs
            self._seq_refill = task
        return self._seq_refill

    async def _reserve_seqs(self) -> None:
        try:
            first = await self._run(self.store.reserve_seqs, self.seqs.block)
        except StoreError:
            log.exception("reserving alarm seqs failed")  # the next alarm asks again
            raise
        self.seqs.add(first, self.seqs.block)

    def _state_of(self, alarm_id: str) -> AlarmState | None:
        """The state of an alarm in memory (being committed counts as new); None when not open."""
        if alarm_id in self._committing:
            return AlarmState.NEW
        current = self._current(alarm_id)
        return None if current is None else current.state

    async def _collapse(self, alarm_id: str, notice: AlarmNotice) -> ReceiveResult:
        """A rate-limited repeat: count it on the open alarm, stored before the device is answered."""
        pending = self._committing.get(alarm_id)
        if pending is not None:
            await asyncio.shield(pending)
        current = self._current(alarm_id)
        if current is None or current.state not in (AlarmState.NEW, AlarmState.DELIVERED):
            return await self.receive(notice, collapse=False)  # taken or resolved meanwhile: a new alarm
        now = self.clock()
        changed = replace(current, repeats=current.repeats + 1, last_repeat_at=round(notice.received_at, 3))
        self._update(changed)
        self.counters["repeats"] += 1
        self.metrics.collapsed.inc()
        transition = Transition(
            alarm_id, now, TransitionAction.REPEATED, "device", f"SN {notice.body.sn} from {notice.device_id}"
        )
        self.writer.queue([changed], [], [transition])
        await asyncio.shield(self.writer.durable())
        if now - self._repeat_published.get(alarm_id, float("-inf")) >= 1.0:  # consoles: at most 1/s per alarm
            self._repeat_published[alarm_id] = now
            while len(self._repeat_published) > 10_000:
                self._repeat_published.pop(next(iter(self._repeat_published)))
            self.feed.alarm("updated", self._current(alarm_id) or changed)
        return ReceiveResult(alarm_id, False, collapsed=True)

    def _new_delivery(self, alarm: Alarm, sink: str, event: DeliveryEvent, now: float) -> Delivery:
        return Delivery(
            alarm.id,
            sink,
            event,
            alarm.order_key,
            alarm.seq,
            created_at=now,
            next_attempt_at=now,
            urgent=alarm.urgent,
        )

    def _accepted(self, alarm: Alarm, deliveries: list[Delivery]) -> None:
        """The alarm is stored: tell the sinks, the consoles, the metrics; start the snapshot."""
        kind = alarm.kind
        if alarm.drill:  # never counted as a real alarm (issue 13)
            self.counters["drills"] += 1
            self.metrics.drills.inc()
            self._drill_accepted(alarm, deliveries)
        else:
            self.counters["received"] += 1
            self.metrics.received.labels(category=kind.category, kind=kind.name).inc()
        if alarm.problems:
            self.metrics.flawed.inc()
        if not alarm.verified:
            self.counters["unverified"] += 1
            self.metrics.unverified.labels(reason=alarm.unverified_reason).inc()
            self._held.setdefault((alarm.device_id, alarm.peer), set()).add(alarm.id)
            log.warning(
                "UNVERIFIED alarm %s claiming %s from %s (%s): shown to the consoles, held from every sink",
                alarm.id,
                alarm.device_id,
                alarm.peer or "?",
                alarm.unverified_reason,
            )
        log.warning(
            "%s %s: %s priority %s from %s (kindergarten %s)%s",
            "DRILL alarm" if alarm.drill else "ALARM",
            alarm.id,
            kind.name,
            alarm.priority,
            alarm.source_id,
            alarm.kindergarten_id or "unplaced",
            f" problems: {'; '.join(alarm.problems)}" if alarm.problems else "",
        )
        self.lifecycle.track(alarm)
        if deliveries:
            self._remaining[alarm.id] = {d.sink for d in deliveries}
        if self.capture_snapshot is not None:
            if len(self._snapshot_ready) < self.settings.snapshot_backlog:
                self._snapshot_ready[alarm.id] = asyncio.Event()
                self._spawn(self._snapshot(alarm))
            else:
                self.counters["snapshots_skipped"] += 1
        for delivery in deliveries:
            self._hold(alarm)
            self.outbox.add(delivery)
            self._pump_wake[delivery.sink].set()
        for delivery in deliveries:  # its first attempts start now, not on the pumps' next turn (issue 12)
            self._dispatch(delivery.sink)
        self._timer_wake.set()
        self.feed.alarm("alarm", alarm)

    def _hold(self, alarm: Alarm) -> None:
        """Keep the alarm in memory while one more of its deliveries is open."""
        self._outbound[alarm.id] = alarm
        self._open_count[alarm.id] = self._open_count.get(alarm.id, 0) + 1

    def _release(self, alarm_id: str) -> None:
        left = self._open_count.get(alarm_id, 1) - 1
        if left > 0:
            self._open_count[alarm_id] = left
        else:
            self._open_count.pop(alarm_id, None)
            self._outbound.pop(alarm_id, None)

    # --- delivery ----------------------------------------------------------------------------------

    def _dispatch(self, name: str) -> None:
        """Start the attempts due for sink ``name`` that fit in its in-flight limit."""
        sink = self.sinks[name]
        room = sink.max_inflight - self.outbox.in_flight(name)
        if room > 0 and not self._stopping:
            for delivery in self.outbox.take_due(name, self.clock(), room):
                self._spawn(self._attempt(sink, delivery))

    async def _pump(self, name: str) -> None:
        sink = self.sinks[name]
        wake = self._pump_wake[name]
        while not self._stopping:
            self._dispatch(name)
            timer = self.outbox.get_timer(name)
            wait = None if timer is None else max(0.0, min(timer - self.clock(), 1.0))
            wake.clear()
            if wait == 0.0 and self.outbox.in_flight(name) >= sink.max_inflight:
                wait = None  # full: the next result wakes us
            await _wait_event(wake, wait)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._attempts.add(task)
        task.add_done_callback(self._attempts.discard)

    async def _attempt(self, sink: Sink, delivery: Delivery) -> None:
        key = delivery.key
        alarm = self._current(delivery.alarm_id)
        if alarm is None:
            self.outbox.failed(key, self.clock(), "alarm not found", permanent=True)
            return
        try:
            if delivery.attempts == 0 and self.settings.snapshot_budget > 0:
                await self._wait_snapshot(alarm.id, self.settings.snapshot_budget)
            message = self._message(alarm, delivery.event)
            async with asyncio.timeout(self.settings.attempt_timeout):  # no extra task, unlike wait_for
                await sink.deliver(message)
        except asyncio.CancelledError:
            self.outbox.release(key)
            raise
        except (DeliveryError, TimeoutError, Exception) as exc:  # noqa: BLE001 - a sink bug must not stop the pump
            if isinstance(exc, DeliveryError):
                reason, permanent = exc.reason, exc.permanent
            elif isinstance(exc, TimeoutError):
                reason, permanent = f"no answer within {self.settings.attempt_timeout:g} s", False
            else:
                log.exception("alarm sink %s raised unexpectedly", sink.name)
                reason, permanent = f"{type(exc).__name__}: {exc}", False
            self._on_failure(sink.name, key, reason, permanent)
        else:
            self._on_success(sink.name, key, alarm)
        finally:
            self._pump_wake[sink.name].set()

    def _on_success(self, sink: str, key: DeliveryKey, alarm: Alarm) -> None:
        now = self.clock()
        delivery = self.outbox.succeeded(key, now)
        latency = max(0.0, now - alarm.received_at)
        self.metrics.deliveries.labels(sink=sink, outcome="delivered").inc()
        if not alarm.drill:  # the latency histogram is the real alarms'
            self.metrics.latency.labels(sink=sink).observe(latency)
        detail = f"{sink} ({delivery.event.value}) after {delivery.attempts} attempt(s), {latency * 1000:.0f} ms"
        changes: list[Alarm] = []
        transitions = [Transition(alarm.id, now, TransitionAction.DELIVERED, sink, detail)]
        if delivery.event is DeliveryEvent.ALARM:
            remaining = self._remaining.get(alarm.id)
            if remaining is not None:
                remaining.discard(sink)
                if not remaining:
                    del self._remaining[alarm.id]
                    current = self._current(alarm.id) or alarm
                    step = mark_delivered(current, now)
                    if step is not None:
                        changes.append(step[0])
                        transitions.append(step[1])
                        self._update(step[0])
                        self.feed.alarm("updated", step[0])
        self._release(alarm.id)
        self.writer.queue(changes, [delivery], transitions)
        self.feed.delivery(delivery)
        self._drill_progress(delivery, transitions)

    def _on_failure(self, sink: str, key: DeliveryKey, reason: str, permanent: bool) -> None:
        now = self.clock()
        before = self.outbox.get(key)
        was_dead = before is not None and before.state is DeliveryState.DEAD
        delivery = self.outbox.failed(key, now, reason, permanent=permanent)
        transitions: list[Transition] = []
        if delivery.attempts == 1:
            transitions.append(Transition(key[0], now, TransitionAction.DELIVERY_FAILED, sink, reason))
        if delivery.state is DeliveryState.DEAD and not was_dead:
            transitions.append(
                Transition(
                    key[0],
                    now,
                    TransitionAction.DEAD_LETTERED,
                    sink,
                    f"{'rejected' if permanent else f'{delivery.attempts} attempts failed'}: {reason}"
                    + ("" if permanent else "; still retrying"),
                )
            )
            log.error("alarm %s to %s dead-lettered after %d attempt(s): %s", key[0], sink, delivery.attempts, reason)
        outcome = "rejected" if permanent else "retry"
        self.metrics.deliveries.labels(sink=sink, outcome=outcome).inc()
        self.writer.queue((), [delivery], transitions)
        if transitions:
            self.feed.delivery(delivery)
        self._drill_progress(delivery, transitions)

    def _message(self, alarm: Alarm, event: DeliveryEvent) -> OutboundMessage:
        current = self._current(alarm.id) or alarm
        payload = build_payload(current, event, self.enrich(current))
        return OutboundMessage(current, event, encode_payload(payload))

    def _current(self, alarm_id: str) -> Alarm | None:
        if alarm_id in self.lifecycle:
            return self.lifecycle.get(alarm_id)
        return self._outbound.get(alarm_id)

    def _update(self, alarm: Alarm) -> None:
        """A changed alarm replaces its copies in memory."""
        self.lifecycle.update(alarm)
        if alarm.id in self._outbound:
            self._outbound[alarm.id] = alarm

    # --- snapshots ------------------------------------------------------------------------------

    async def _snapshot(self, alarm: Alarm) -> None:
        assert self.capture_snapshot is not None
        ready = self._snapshot_ready.get(alarm.id)
        try:
            async with asyncio.timeout(self.settings.snapshot_timeout):  # queueing for a slot included
                async with self._snapshot_slots:
                    jpeg = await self.capture_snapshot(alarm)
        except Exception as exc:  # noqa: BLE001 - a snapshot is a bonus, never a failure of the alarm
            log.info("no entrance snapshot for alarm %s: %s", alarm.id, exc or type(exc).__name__)
            jpeg = None
        if jpeg:
            self.snapshots[alarm.id] = jpeg
            while len(self.snapshots) > 500:
                self.snapshots.pop(next(iter(self.snapshots)))
            self.feed.publish({"type": "snapshot", "alarm_id": alarm.id})
        if ready is not None:
            ready.set()
        self._snapshot_ready.pop(alarm.id, None)

    async def _wait_snapshot(self, alarm_id: str, budget: float) -> None:
        ready = self._snapshot_ready.get(alarm_id)
        if ready is not None:
            await _wait_event(ready, budget)

    # --- timers: escalation ---------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        while not self._stopping:
            self.run_timers()
            timer = self.lifecycle.get_timer()
            wait = 1.0 if timer is None else max(0.01, min(timer - self.clock(), 1.0))
            self._timer_wake.clear()
            await _wait_event(self._timer_wake, wait)

    def poke(self) -> None:
        """Re-check every timer now (after a fake clock moved; real time needs no poking)."""
        for wake in self._pump_wake.values():
            wake.set()
        self._timer_wake.set()

    def run_timers(self) -> int:
        """Escalate what is due at ``clock()``; returns how many escalated (tests call it with a fake clock)."""
        now = self.clock()
        escalated = self.lifecycle.escalate_due(now)
        for alarm, transition in escalated:
            self.counters["escalated"] += 1
            self.metrics.escalations.inc()
            log.warning("alarm %s not acknowledged in time: escalated to the municipal level", alarm.id)
            # An unverified alarm escalates in the consoles only; its escalation goes out on verification.
            events = self.sinks if alarm.verified else {}
            deliveries = [self._new_delivery(alarm, name, DeliveryEvent.ESCALATED, now) for name in events]
            self._update(alarm)
            self.writer.queue([alarm], deliveries, [transition])
            for delivery in deliveries:
                self._hold(alarm)
                self.outbox.add(delivery)
                self._pump_wake[delivery.sink].set()
            self.feed.alarm("escalated", alarm)
        self.intake.prune(now)
        return len(escalated)

    # --- operator actions -------------------------------------------------------------------------

    async def get_alarm(self, alarm_id: str) -> Alarm:
        """The alarm (current state), from memory when open, else from the store."""
        alarm = self._current(alarm_id)
        if alarm is not None:
            return alarm
        stored = await self._run(self.store.get_alarm, alarm_id)
        if stored is None:
            raise UnknownAlarm(alarm_id)
        return stored

    async def acknowledge(self, alarm_id: str, user: str, note: str = "") -> Alarm:
        """A named user acknowledges; stored before it returns."""
        return await self._step(alarm_id, lambda a, now: acknowledge(a, user, now, note))

    async def resolve(self, alarm_id: str, user: str, note: str = "") -> Alarm:
        """A named user resolves; stored before it returns."""
        return await self._step(alarm_id, lambda a, now: resolve(a, user, now, note))

    async def _owned(self, alarm_id: str) -> Alarm:
        """The alarm, if this node holds it (ForeignAlarm when another process of the city does)."""
        alarm = await self.get_alarm(alarm_id)
        if alarm.node != self.store.node:
            raise ForeignAlarm(alarm_id, alarm.node)
        return alarm

    async def _step(self, alarm_id: str, step: Callable[[Alarm, float], tuple[Alarm, Transition]]) -> Alarm:
        alarm = await self._owned(alarm_id)
        changed, transition = step(alarm, self.clock())
        # Memory first (whatever runs while this is stored builds on it), then through the
        # writer, so a version of the alarm queued before (a counted repeat, a delivery) can
        # never be written over this one.
        self._update(changed)
        self.writer.queue([changed], [], [transition])
        await self._commit()
        if changed.state is AlarmState.RESOLVED:
            self.intake.forget(changed.dedupe_key)  # a new press after a resolve is a new alarm
            self._unhold(changed)
        log.info("alarm %s %s by %s", alarm_id, transition.action.value, transition.actor)
        self.feed.alarm("updated", changed)
        return changed

    async def _commit(self) -> None:
        """Store everything queued so far now (StoreError when it cannot be; it stays queued)."""
        await self.writer.flush()

    # --- trust: held alarms -----------------------------------------------------------------------

    def device_registered(self, device_id: str, peer: str) -> None:
        """An authenticated REGISTER of ``device_id`` from ``peer``: its alarms held from there are verified."""
        held = self._held.get((device_id, peer))
        if not held:
            return
        for alarm_id in sorted(held):
            task = asyncio.get_running_loop().create_task(self._verify_by_device(alarm_id, peer))
            self._verifying.add(task)
            task.add_done_callback(self._verifying.discard)

    async def _verify_by_device(self, alarm_id: str, peer: str) -> None:
        try:
            await self._release_held(alarm_id, "device", f"the device registered (authenticated) from {peer}")
        except (InvalidTransition, UnknownAlarm, ForeignAlarm):
            pass  # verified or resolved meanwhile
        except StoreError:
            log.exception("verifying alarm %s failed; it stays held", alarm_id)

    async def verify(self, alarm_id: str, user: str, note: str = "") -> Alarm:
        """Operator: confirm an unverified alarm is real; its deliveries go out. Stored before it returns."""
        name = valid_actor(user)
        return await self._release_held(alarm_id, name, f"confirmed by an operator{': ' + note[:500] if note else ''}")

    async def _release_held(self, alarm_id: str, actor: str, detail: str) -> Alarm:
        alarm = await self._owned(alarm_id)
        if alarm.verified:
            raise InvalidTransition(f"alarm {alarm_id} is verified already")
        if alarm.state is AlarmState.RESOLVED:
            raise InvalidTransition(f"alarm {alarm_id} is resolved: nothing to deliver")
        now = self.clock()
        changed = replace(alarm, verified=True, verified_by=actor, verified_at=now)
        deliveries = [self._new_delivery(changed, name, DeliveryEvent.ALARM, now) for name in self.sinks]
        if changed.escalated_at is not None:
            deliveries += [self._new_delivery(changed, name, DeliveryEvent.ESCALATED, now) for name in self.sinks]
        self._unhold(changed)
        self._update(changed)
        self.writer.queue([changed], deliveries, [Transition(alarm_id, now, TransitionAction.VERIFIED, actor, detail)])
        try:
            await self._commit()  # held -> verified and its deliveries in one transaction, before any goes out
        except StoreError:
            self._update(alarm)
            self._held.setdefault((alarm.device_id, alarm.peer), set()).add(alarm.id)
            raise
        self.counters["verified"] += 1
        self.metrics.verified.labels(by="device" if actor == "device" else "operator").inc()
        log.warning("alarm %s verified by %s: delivering it", alarm_id, actor)
        alarm_sinks = {d.sink for d in deliveries if d.event is DeliveryEvent.ALARM}
        if alarm_sinks:
            self._remaining[alarm_id] = alarm_sinks
        for delivery in deliveries:
            self._hold(changed)
            self.outbox.add(delivery)
            self._pump_wake[delivery.sink].set()
        self.feed.alarm("updated", changed)
        return changed

    def _unhold(self, alarm: Alarm) -> None:
        key = (alarm.device_id, alarm.peer)
        held = self._held.get(key)
        if held is not None:
            held.discard(alarm.id)
            if not held:
                del self._held[key]

    def held_count(self) -> int:
        """Unverified, unresolved alarms waiting for the device or an operator."""
        return sum(len(ids) for ids in self._held.values())

    async def retry_delivery(self, key: DeliveryKey) -> Delivery:
        """Operator: try a (dead-lettered) delivery again now."""
        delivery = self.outbox.retry_now(key, self.clock())
        self.writer.queue(
            (),
            [delivery],
            [
                Transition(
                    key[0],
                    self.clock(),
                    TransitionAction.DELIVERY_FAILED,
                    "operator",
                    f"manual retry of {key[1]} requested",
                )
            ],
        )
        if key[1] in self._pump_wake:
            self._pump_wake[key[1]].set()
        return delivery

    async def list_alarms(self, flt: AlarmFilter) -> Page[Alarm]:
        """Stored alarms (writes queued before the call are flushed first, so the list is current)."""
        await self._flush()
        return await self._run(self.store.list_alarms, flt)

    async def details(self, alarm_id: str) -> tuple[Alarm, list[Delivery], list[Transition]]:
        """An alarm with its deliveries and audit trail."""
        await self._flush()
        alarm = await self.get_alarm(alarm_id)
        deliveries = await self._run(self.store.deliveries_of, alarm_id)
        live = {d.key: d for d in deliveries}
        for delivery in list(self.outbox.pending()):
            if delivery.alarm_id == alarm_id:
                live[delivery.key] = delivery
        transitions = await self._run(self.store.transitions_of, alarm_id)
        return alarm, sorted(live.values(), key=lambda d: (d.sink, d.event.value)), transitions

    async def last_successful_drills(self) -> dict[str, float]:
        """Kindergarten id -> time of its latest drill that reached every sink (the coverage dashboard)."""
        return await self._run(self.store.last_successful_drills)

    async def list_deliveries(self, state: str | None, sink: str | None, offset: int, limit: int) -> Page[Delivery]:
        """Deliveries by state/sink (``dead`` lists the dead letters)."""
        await self._flush()
        return await self._run(self.store.list_deliveries, state, sink, offset, limit)

    async def _flush(self) -> None:
        if self.writer.has_progress:
            with contextlib.suppress(StoreError):
                await self.writer.flush()

    # --- drills (gateway.alarms.drills) ------------------------------------------------------------

    def open_drill(self, kindergarten_id: str, ref: str, until: float) -> None:
        """Open the kindergarten's drill window until ``until`` (wall s, as ``clock()``); DrillError if invalid.

        Only the acceptance flow calls this, after checking the operator's authority; nothing
        a device sends opens a window. Opening again replaces the window (a new first drill).
        """
        window = self.drills.open(kindergarten_id, ref, until, self.clock())
        log.warning(
            "drill window opened for kindergarten %s (%s) for %.0f s",
            kindergarten_id,
            ref,
            window.until - window.opened_at,
        )
        self._drill_changed(kindergarten_id)

    def close_drill(self, kindergarten_id: str) -> None:
        """Close the window: the kindergarten's alarms are real again from now on."""
        if self.drills.close(kindergarten_id) is not None:
            log.warning("drill window closed for kindergarten %s", kindergarten_id)
        self._drill_changed(kindergarten_id)

    async def wait_drill(self, kindergarten_id: str, timeout: float) -> Alarm:
        """The first drill alarm of the kindergarten's open window.

        Raises TimeoutError (``asyncio.TimeoutError``) when none came within ``timeout`` s,
        :class:`DrillWindowClosed` when the window closed or expired first, and
        :class:`DrillError` when no window is open.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout  # the timeout is real time; the window's end is ``clock()`` time
        if self.drills.get(kindergarten_id) is None:
            raise DrillError(f"no drill window is open for kindergarten {kindergarten_id}")
        while True:
            window = self.drills.get(kindergarten_id)
            if window is None:
                raise DrillWindowClosed(f"the drill window of kindergarten {kindergarten_id} was closed")
            if window.alarm_id is not None:
                return await self.get_alarm(window.alarm_id)
            to_end = window.until - self.clock()
            if to_end <= 0:
                raise DrillWindowClosed(f"the drill window of kindergarten {kindergarten_id} expired")
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no drill alarm from kindergarten {kindergarten_id} within {timeout:g} s")
            event = self._drill_events.setdefault(kindergarten_id, asyncio.Event())
            await _wait_event(event, min(left, to_end, 1.0))

    def drill_proof(self, alarm_id: str) -> DrillProof:
        """Where a drill alarm (received by this process) got to, per level and target; UnknownAlarm if none."""
        entry = self._ledger.get(alarm_id)
        if entry is None:
            raise UnknownAlarm(alarm_id)
        deliveries, transitions = entry
        alarm = self._current(alarm_id) or self._ledger_alarms[alarm_id]
        return self._proof(alarm, deliveries.values(), transitions)

    async def wait_drill_proof(self, alarm_id: str, timeout: float) -> DrillProof:
        """The drill's proof once complete, or as it stands after ``timeout`` s (never raises for time)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            progress = self._progress
            proof = self.drill_proof(alarm_id)
            left = deadline - loop.time()
            if proof.complete or left <= 0:
                return proof
            await _wait_event(progress, min(left, 1.0))

    async def delivery_proof(self, alarm_id: str) -> DrillProof:
        """The proof of any alarm from the store (deliveries and the uppers' audit lines): works after a restart."""
        alarm, deliveries, transitions = await self.details(alarm_id)
        return self._proof(alarm, deliveries, transitions)

    def _proof(self, alarm: Alarm, deliveries: Any, transitions: Any) -> DrillProof:
        gb = next((s for s in self.sinks.values() if isinstance(s, GbAlarmSink)), None)
        return build_proof(
            alarm,
            deliveries,
            transitions,
            uppers=gb.targets_of(alarm) if gb is not None else (),
            upper_levels=gb.level_of if gb is not None else (lambda name: name),
            upper_errors=gb.errors_of(alarm.id) if gb is not None else None,
            gb_sink=gb.name if gb is not None else "gb",
        )

    def _drill_changed(self, kindergarten_id: str) -> None:
        event = self._drill_events.pop(kindergarten_id, None)
        if event is not None:
            event.set()

    def _drill_accepted(self, alarm: Alarm, deliveries: list[Delivery]) -> None:
        self.drills.drilled(alarm)
        self._ledger[alarm.id] = ({(d.sink, d.event.value): replace(d) for d in deliveries}, [])
        self._ledger_alarms[alarm.id] = alarm
        while len(self._ledger) > _MAX_LEDGER:
            old, _ = self._ledger.popitem(last=False)
            self._ledger_alarms.pop(old, None)
        self._drill_changed(alarm.kindergarten_id or "")
        self._notify_progress()

    def _drill_progress(self, delivery: Delivery, transitions: Sequence[Transition]) -> None:
        entry = self._ledger.get(delivery.alarm_id)
        if entry is None:
            return
        entry[0][(delivery.sink, delivery.event.value)] = replace(delivery)
        entry[1].extend(transitions)
        self._notify_progress()

    def _upper_answered(self, message: OutboundMessage, upper: str, error: str) -> None:
        """The gb sink heard one upper: its 2xx becomes a durable audit line (per-upper proof)."""
        if error:
            if message.alarm_id in self._ledger:
                self._notify_progress()
            return
        gb = next((s for s in self.sinks.values() if isinstance(s, GbAlarmSink)), None)
        level = gb.level_of(upper) if gb is not None else ""
        transition = Transition(
            message.alarm_id,
            self.clock(),
            TransitionAction.UPPER_ACKNOWLEDGED,
            upper,
            f"{level} {message.event.value}".strip(),
        )
        self.writer.queue((), (), [transition])
        entry = self._ledger.get(message.alarm_id)
        if entry is not None:
            entry[1].append(transition)
            self._notify_progress()

    def _notify_progress(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    def _real_open_alarms(self) -> list[Alarm]:
        """Open alarms that are not drills (the metrics' open-alarm gauge)."""
        return [a for a in self.lifecycle.open_alarms() if not a.drill]

    # --- views ------------------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The service's metrics (:class:`~gateway.alarms.metrics.AlarmMetrics`)."""
        return self.metrics.collect()

    def sink_status(self) -> list[dict[str, Any]]:
        """Per sink: up, in flight, outbox depth, dead letters, error counts."""
        return [
            {
                "sink": name,
                "up": sink.up,
                "in_flight": self.outbox.in_flight(name),
                "depth": self.outbox.depth(name),
                "dead": self.outbox.dead_count(name),
                "errors": dict(getattr(sink, "errors", {})),
            }
            for name, sink in self.sinks.items()
        ]


async def _wait_event(event: asyncio.Event, timeout: float | None) -> None:
    """Wait for ``event`` at most ``timeout`` s (asyncio.timeout: no task per wait, unlike wait_for)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def _local_utc_offset(t: float) -> float:
    """This machine's UTC offset at ``t`` in s (GB/T 28181 device times are local time)."""
    return float(time.localtime(t).tm_gmtoff)
