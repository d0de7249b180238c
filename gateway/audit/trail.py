"""The node's audit recorder: queue on the event loop, chain and write in batches on a worker thread.

:meth:`AuditTrail.record` only builds a small frozen entry and appends it to a
list — no hashing, no I/O — so a live view or an alarm acknowledge pays a few
microseconds for its audit record. A writer task flushes the queue every
``interval`` seconds (sooner when ``batch`` entries wait) on the trail's own
thread, where the store chains the whole batch inside one ``BEGIN IMMEDIATE``
transaction, like the registry's write-behind (:mod:`gateway.registry.writer`).
:meth:`AuditTrail.stop` writes what is still queued, so a clean shutdown loses
nothing; a failed write keeps the batch queued for the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.audit.actions import AuditAction
from gateway.audit.chain import AuditEntry, AuditRecord, BadDetail, canonical_detail
from gateway.audit.store import AuditFilter, AuditPage, AuditStore
from gateway.security.principal import Principal, Role

__all__ = ["AuditTrail", "make_entry"]

log = logging.getLogger("kgw.audit")

T = TypeVar("T")

DEFAULT_INTERVAL = 0.25  # s between flushes: a view shows in the audit page within a blink
DEFAULT_BATCH = 500  # entries that wake the writer before the interval ends
EXPORT_CHUNK = 1000


def make_entry(
    action: AuditAction | str,
    *,
    at: float,
    actor: Principal | None,
    target: str = "",
    source: str = "",
    outcome: str = "ok",
    detail: Mapping[str, object] | None = None,
    duration: float | None = None,
    via: str | None = None,
) -> AuditEntry:
    """An entry from a recording place's arguments (an unserialisable detail is kept as text, never raised).

    A police principal's records carry ``"police": true`` in their detail, so police
    views stand out in the page and the export.
    """
    details = dict(detail or {})
    if actor is not None and actor.role is Role.POLICE:
        details.setdefault("police", True)
    try:
        detail_text = canonical_detail(details)
    except BadDetail:
        detail_text = canonical_detail({"unserialisable": repr(details)[:500]})
    return AuditEntry(
        at=at,
        actor=actor.username if actor is not None else "",
        role=actor.role.value if actor is not None else "",
        via=via if via is not None else (actor.via if actor is not None else ""),
        source=source or (actor.source if actor is not None else ""),
        action=str(action),
        target=target,
        outcome=outcome,
        detail=detail_text,
        duration=None if duration is None else round(max(0.0, duration), 3),
    )


class AuditTrail(Collector):
    """An :class:`~gateway.audit.actions.AuditRecorder` that writes a hash-chained store in batches."""

    def __init__(
        self,
        store: AuditStore,
        *,
        wall: Callable[[], float] = time.time,
        interval: float = DEFAULT_INTERVAL,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.store = store
        self.wall = wall
        self.interval = interval
        self.batch = batch
        self.appended = 0
        self.failures = 0
        self._queue: list[AuditEntry] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgw-audit")
        self._lock: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._open = False

    # --- recording (event loop, never blocks, never raises) ----------------------------------

    def record(
        self,
        action: AuditAction,
        *,
        actor: Principal | None,
        target: str = "",
        source: str = "",
        outcome: str = "ok",
        detail: Mapping[str, object] | None = None,
        duration: float | None = None,
    ) -> None:
        """Queue one record (see :func:`make_entry`)."""
        try:
            entry = make_entry(
                action,
                at=self.wall(),
                actor=actor,
                target=target,
                source=source,
                outcome=outcome,
                detail=detail,
                duration=duration,
            )
        except ValueError:  # a non-finite duration from a broken clock: keep the record, drop the number
            log.exception("audit record of %s had a bad value; recorded without duration", action)
            entry = make_entry(
                action, at=self.wall(), actor=actor, target=target, source=source, outcome=outcome, detail=detail
            )
        self._queue.append(entry)
        if len(self._queue) >= self.batch and self._wake is not None:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Entries queued and not yet written."""
        return len(self._queue)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store (creating the table) and start the writer task."""
        await self._run(self.store.open)
        self._open = True
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="kgw-audit-writer")

    async def stop(self) -> None:
        """Stop the writer, write what is queued, close the store and the thread."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._open:
            try:
                await self.flush()
            except Exception:
                log.exception("audit: %d records could not be written at shutdown", len(self._queue))
            await self._run(self.store.close)
            self._open = False
        self._executor.shutdown(wait=True)

    async def flush(self) -> None:
        """Chain and write everything queued now, in one transaction (given back if it fails)."""
        if self._lock is None:
            return
        async with self._lock:
            batch, self._queue = self._queue, []
            if not batch:
                return
            try:
                await self._run(self.store.append, batch)
            except Exception:
                self._queue[:0] = batch
                self.failures += 1
                raise
            self.appended += len(batch)

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):  # the interval passed: flush anyway
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("audit flush failed; %d records stay queued", len(self._queue))

    # --- reading (for /api/audit) -----------------------------------------------------------

    async def page(self, flt: AuditFilter) -> AuditPage:
        """Flush, then one page of matching records, newest first."""
        await self.flush()
        return await self._run(self.store.page, flt)

    async def export(self, flt: AuditFilter) -> AsyncIterator[list[AuditRecord]]:
        """Flush, then every matching record in chain order, in chunks read on the trail's thread."""
        await self.flush()
        records = self.store.records(flt)
        while chunk := await self._run(_take, records, EXPORT_CHUNK):
            yield chunk

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """``kgw_audit_records_total``, ``kgw_audit_write_failures_total``, ``kgw_audit_pending``."""
        yield CounterMetricFamily("kgw_audit_records", "Audit records written", value=self.appended)
        yield CounterMetricFamily("kgw_audit_write_failures", "Audit batches that failed to write", value=self.failures)
        yield GaugeMetricFamily("kgw_audit_pending", "Audit records queued for the next write", value=self.pending)


def _take(records: Iterator[AuditRecord], n: int) -> list[AuditRecord]:
    out = []
    for record in records:
        out.append(record)
        if len(out) >= n:
            break
    return out
