"""The alarm store's writer: group commit of new alarms, batched progress.

Every new alarm must be committed before its device is answered, so the
writer commits everything submitted while the previous commit ran in ONE
transaction: a storm of 2,314 presses costs a handful of fsyncs, and a
lone alarm one. Progress (delivery attempts, state changes, audit lines) is
merged by key and written the same way, after the new alarms — never before
one that is waiting (:meth:`AlarmWriter.run`). The store runs on its own thread
(``run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.alarms.model import Alarm, Delivery, DeliveryKey, Transition
from gateway.alarms.store import AlarmStore
from gateway.errors import StoreError

log = logging.getLogger("kgw.alarms")

__all__ = ["AlarmWriter"]

StoreRunner = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class _Intake:
    alarm: Alarm
    deliveries: Sequence[Delivery]
    transitions: Sequence[Transition]
    done: asyncio.Future[None]
    on_commit: Callable[[], None] | None = None


class AlarmWriter:
    """Queues writes and runs them on the store thread; one task (``run``) drains the queue."""

    def __init__(self, store: AlarmStore, run: StoreRunner, *, retries: int = 3, coalesce: float = 0.05) -> None:
        """``coalesce``: s to gather progress that nobody waits for before writing it (0: at once)."""
        self.store = store
        self._run = run
        self.retries = retries
        self.coalesce = coalesce
        self.failures = 0  # failed store attempts, for the counters
        self._intakes: list[_Intake] = []
        self._alarms: dict[str, Alarm] = {}
        self._deliveries: dict[DeliveryKey, Delivery] = {}
        self._transitions: list[Transition] = []
        self._waiters: list[asyncio.Future[None]] = []  # resolved by the flush that writes what came before
        self._wake = asyncio.Event()
        self._stopping = False

    def submit(
        self,
        alarm: Alarm,
        deliveries: Sequence[Delivery],
        transitions: Sequence[Transition],
        *,
        on_commit: Callable[[], None] | None = None,
    ) -> asyncio.Future[None]:
        """Queue a new alarm; the future resolves once it is committed (StoreError if it cannot be).

        ``on_commit`` runs right after the commit, in the writer's own turn, before the
        future's waiters wake (issue 12: an alarm's deliveries start without waiting for them).
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._intakes.append(_Intake(alarm, deliveries, transitions, done, on_commit))
        self._wake.set()
        return done

    def queue(
        self, alarms: Sequence[Alarm] = (), deliveries: Sequence[Delivery] = (), transitions: Sequence[Transition] = ()
    ) -> None:
        """Queue progress; a later version of the same alarm or delivery replaces an earlier one."""
        for alarm in alarms:
            self._alarms[alarm.id] = alarm
        for delivery in deliveries:
            self._deliveries[delivery.key] = delivery
        self._transitions.extend(transitions)
        self._wake.set()

    def durable(self) -> asyncio.Future[None]:
        """A future resolved once everything queued so far is committed (group commit, like intake)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        self._wake.set()
        return done

    @property
    def has_progress(self) -> bool:
        """Whether progress is waiting to be written (or someone waits for a commit)."""
        return bool(self._alarms or self._deliveries or self._transitions or self._waiters)

    async def run(self) -> None:
        """Write what is queued, whenever something is, until ``stop``.

        New alarms first (issue 12): every intake batch waiting is committed before
        any progress, and progress nobody waits for is gathered for ``coalesce`` s
        first, so that an alarm seldom finds the store busy with delivery results.
        """
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while self._intakes and not self._stopping:
                batch, self._intakes = self._intakes, []
                await self._commit(batch)
            if not self.has_progress:
                continue
            if not self._waiters and self.coalesce > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.coalesce):
                        while not (self._intakes or self._waiters or self._stopping):
                            self._wake.clear()
                            await self._wake.wait()
                if self._intakes:  # they go first; the progress follows on the next round
                    self._wake.set()
                    continue
            try:
                await self.flush()
            except StoreError:
                log.exception("alarm progress write failed; will retry")
                await asyncio.sleep(1.0)
                self._wake.set()

    def stop(self) -> None:
        """End ``run`` at its next turn (a flag: a swallowed cancellation must not keep it going)."""
        self._stopping = True
        self._wake.set()

    async def flush(self) -> None:
        """Write the queued progress now, in one transaction; on failure it stays queued."""
        alarms, self._alarms = list(self._alarms.values()), {}
        deliveries = [replace(d) for d in self._deliveries.values()]  # snapshot: the outbox mutates them
        self._deliveries = {}
        transitions, self._transitions = self._transitions, []
        waiters, self._waiters = self._waiters, []
        if alarms or deliveries or transitions:
            try:
                await self._run(self.store.save_progress, alarms, deliveries, transitions)
            except BaseException:
                for alarm in alarms:
                    self._alarms.setdefault(alarm.id, alarm)
                for delivery in deliveries:
                    self._deliveries.setdefault(delivery.key, delivery)
                self._transitions[:0] = transitions
                self._waiters[:0] = waiters
                raise
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _commit(self, batch: list[_Intake]) -> None:
        alarms = [i.alarm for i in batch]
        deliveries = [d for i in batch for d in i.deliveries]
        transitions = [t for i in batch for t in i.transitions]
        error: StoreError | None = None
        for attempt in range(self.retries):
            try:
                await self._run(self.store.save_intake, alarms, deliveries, transitions)
                error = None
                break
            except StoreError as exc:
                error = exc
                self.failures += 1
                log.error("storing %d alarm(s) failed (attempt %d): %s", len(batch), attempt + 1, exc)
                await asyncio.sleep(0.05 * 4**attempt)
        for item in batch:
            if error is None and item.on_commit is not None:
                try:
                    item.on_commit()
                except Exception:  # a bug there must not keep the other alarms of the batch waiting
                    log.exception("after committing alarm %s", item.alarm.id)
            if item.done.done():
                continue
            if error is None:
                item.done.set_result(None)
            else:
                item.done.set_exception(error)
                item.done.exception()  # retrieved here too: a device that gave up must not log "never retrieved"
