"""Reassembly of catalogs that arrive split across many MESSAGEs (sans-I/O).

A device answers one Catalog query with any number of ``Response/Catalog`` MESSAGEs,
all with the query's SN, each carrying the total in ``SumNum`` (docs/gb28181.md §6.2).
We follow WVP's ``CatalogDataManager``: buffer items per (device, SN); finished when
the distinct item IDs reach ``SumNum``; wait up to 2 minutes for the *first* chunk
(big lower platforms are slow), then at most 5 s between chunks, and on a gap time-out
commit what arrived rather than blocking forever (docs/gb28181.md §19 item 10).

Time is passed in (``now``); the I/O adapter calls :meth:`CatalogAssembler.get_timer`
and :meth:`CatalogAssembler.handle_timer`.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from gateway.errors import GatewayError

from .manscdp.messages import CatalogItem, CatalogResponse

__all__ = [
    "DEFAULT_FIRST_CHUNK_TIMEOUT",
    "DEFAULT_GAP_TIMEOUT",
    "DEFAULT_LINGER",
    "DEFAULT_MAX_ASSEMBLIES",
    "DEFAULT_MAX_ITEMS",
    "CatalogAssembler",
    "CatalogCompleted",
    "TooManyAssemblies",
]

#: Wait for the first chunk of an expected answer (WVP: 2 minutes).
DEFAULT_FIRST_CHUNK_TIMEOUT: Final = 120.0
#: Longest silence between two chunks before committing a partial catalog (WVP: 5 s).
DEFAULT_GAP_TIMEOUT: Final = 5.0
#: How long a finished (device, SN) remembers its items to drop duplicate chunks (WVP: 30 s).
DEFAULT_LINGER: Final = 30.0
#: Items kept per assembly; WVP caps its catalog NOTIFY queue at 100,000 as well.
DEFAULT_MAX_ITEMS: Final = 100_000
#: Catalogs being assembled at once (one per device and query).
DEFAULT_MAX_ASSEMBLIES: Final = 4096

_Key: TypeAlias = tuple[str, int]


class TooManyAssemblies(GatewayError):
    """:meth:`CatalogAssembler.expect` was called while the assembly table is full."""


@dataclass(frozen=True, slots=True)
class CatalogCompleted:
    """A catalog is finished: complete, committed after a gap, or never answered.

    ``partial`` means fewer items than ``sum_num`` were collected; ``timed_out`` means
    no chunk arrived at all before the first-chunk deadline (then ``items`` is empty
    and ``sum_num`` is 0). A partial catalog must not be used to delete channels, and a
    fuller one for the same (device, SN) may follow if late chunks still arrive.
    """

    device_id: str
    sn: int
    items: tuple[CatalogItem, ...]
    sum_num: int
    partial: bool = False
    timed_out: bool = False


@dataclass(slots=True)
class _Assembly:
    """Mutable state of one (device, SN) being collected."""

    deadline: float
    items: dict[str, CatalogItem] = field(default_factory=dict)
    sum_num: int | None = None  # None until the first chunk arrives


@dataclass(slots=True)
class _Finished:
    """A recently completed assembly, kept to recognise retransmitted chunks."""

    expires: float
    sum_num: int
    items: dict[str, CatalogItem]


class CatalogAssembler:
    """Collects catalog chunks per (device_id, SN) and reports finished catalogs.

    Chunks for a (device, SN) nobody asked for are accepted too: devices push their
    catalog unsolicited right after registering (fixture ``sbgb_catalog_unsolicited``).
    """

    def __init__(
        self,
        *,
        first_chunk_timeout: float = DEFAULT_FIRST_CHUNK_TIMEOUT,
        gap_timeout: float = DEFAULT_GAP_TIMEOUT,
        linger: float = DEFAULT_LINGER,
        max_items: int = DEFAULT_MAX_ITEMS,
        max_assemblies: int = DEFAULT_MAX_ASSEMBLIES,
    ) -> None:
        self._first_chunk_timeout = first_chunk_timeout
        self._gap_timeout = gap_timeout
        self._linger = linger
        self._max_items = max_items
        self._max_assemblies = max_assemblies
        self._assemblies: dict[_Key, _Assembly] = {}
        self._finished: OrderedDict[_Key, _Finished] = OrderedDict()
        # (deadline, key) entries; stale ones (deadline moved, assembly gone) are skipped.
        self._heap: list[tuple[float, _Key]] = []
        #: Chunks dropped because the table was full or they repeated a finished catalog.
        self.dropped_chunks = 0
        #: Items dropped because an assembly reached ``max_items``.
        self.dropped_items = 0

    def __len__(self) -> int:
        """Number of catalogs currently being assembled (for metrics)."""
        return len(self._assemblies)

    def expect(self, device_id: str, sn: int, now: float) -> None:
        """Register a query we sent; its first chunk is awaited until ``now + first_chunk_timeout``.

        Raises :class:`TooManyAssemblies` if the table is full.
        """
        key = (device_id, sn)
        self._finished.pop(key, None)
        if key in self._assemblies:
            return  # chunks overtook the registration; keep their gap deadline
        if len(self._assemblies) >= self._max_assemblies:
            raise TooManyAssemblies(f"{len(self._assemblies)} catalogs already being assembled")
        self._start(key, now + self._first_chunk_timeout)

    def cancel(self, device_id: str, sn: int) -> bool:
        """Forget an expected catalog whose query never reached the device (no event)."""
        return self._assemblies.pop((device_id, sn), None) is not None

    def add(self, chunk: CatalogResponse, now: float) -> CatalogCompleted | None:
        """Add one chunk; returns the finished catalog when this chunk completes it."""
        key = (chunk.device_id, chunk.sn)
        self._expire_finished(now)
        assembly = self._assemblies.get(key)
        if assembly is None:
            if self._is_duplicate(key, chunk):
                self.dropped_chunks += 1
                return None
            if chunk.sum_num == 0:
                return self._finish(key, _Assembly(now, sum_num=0), now)
            if len(self._assemblies) >= self._max_assemblies:
                self.dropped_chunks += 1
                return None
            assembly = self._start(key, now)
            self._reopen_partial(key, assembly)
        assembly.sum_num = chunk.sum_num  # a device may correct its total; trust the latest
        self._collect(assembly, chunk.items)
        if len(assembly.items) >= min(chunk.sum_num, self._max_items):
            return self._finish(key, assembly, now)
        assembly.deadline = now + self._gap_timeout
        self._push(assembly.deadline, key)
        return None

    def get_timer(self) -> float | None:
        """The earliest deadline of any assembly, or None when nothing is pending."""
        while self._heap:
            deadline, key = self._heap[0]
            assembly = self._assemblies.get(key)
            if assembly is not None and assembly.deadline == deadline:
                return deadline
            heapq.heappop(self._heap)
        return None

    def handle_timer(self, now: float) -> list[CatalogCompleted]:
        """Commit every assembly whose deadline has passed (partial or timed out)."""
        done: list[CatalogCompleted] = []
        while (deadline := self.get_timer()) is not None and deadline <= now:
            _, key = heapq.heappop(self._heap)
            done.append(self._finish(key, self._assemblies[key], now))
        self._expire_finished(now)
        return done

    # --- internals ---------------------------------------------------------------

    def _start(self, key: _Key, deadline: float) -> _Assembly:
        assembly = _Assembly(deadline)
        self._assemblies[key] = assembly
        self._push(deadline, key)
        return assembly

    def _push(self, deadline: float, key: _Key) -> None:
        heapq.heappush(self._heap, (deadline, key))
        if len(self._heap) > 4 * len(self._assemblies) + 64:
            # Moving a deadline leaves the old entry behind; rebuild before they pile up.
            self._heap = [(a.deadline, k) for k, a in self._assemblies.items()]
            heapq.heapify(self._heap)

    def _collect(self, assembly: _Assembly, items: tuple[CatalogItem, ...]) -> None:
        for item in items:
            if item.device_id in assembly.items or len(assembly.items) < self._max_items:
                # A repeated ID replaces the earlier copy and keeps its position.
                assembly.items[item.device_id] = item
            else:
                self.dropped_items += 1

    def _finish(self, key: _Key, assembly: _Assembly, now: float) -> CatalogCompleted:
        self._assemblies.pop(key, None)
        items = tuple(assembly.items.values())
        if assembly.sum_num is None:
            return CatalogCompleted(key[0], key[1], (), 0, partial=True, timed_out=True)
        self._finished[key] = _Finished(now + self._linger, assembly.sum_num, assembly.items)
        self._finished.move_to_end(key)
        return CatalogCompleted(key[0], key[1], items, assembly.sum_num, partial=len(items) < assembly.sum_num)

    def _is_duplicate(self, key: _Key, chunk: CatalogResponse) -> bool:
        """A chunk that only repeats what a just-finished catalog held (UDP retransmits).

        Without this, a late copy of the last chunk would start a new assembly and,
        5 s later, commit a *partial* catalog over the complete one. A chunk with
        different content for the same (device, SN) starts a new assembly instead.
        """
        finished = self._finished.get(key)
        if finished is None or finished.sum_num != chunk.sum_num:
            return False
        return all(finished.items.get(item.device_id) == item for item in chunk.items)

    def _reopen_partial(self, key: _Key, assembly: _Assembly) -> None:
        """Seed a new assembly with a gap-committed partial catalog's items.

        A chunk that arrives just after the gap time-out then yields a second, fuller
        CatalogCompleted (complete if it was the last one missing) instead of a
        partial catalog holding only the late items.
        """
        finished = self._finished.get(key)
        if finished is not None and len(finished.items) < finished.sum_num:
            del self._finished[key]
            assembly.items.update(finished.items)

    def _expire_finished(self, now: float) -> None:
        # Entries are appended in completion order with a constant linger, so the
        # oldest expire first.
        while self._finished:
            key, entry = next(iter(self._finished.items()))
            if entry.expires > now and len(self._finished) <= self._max_assemblies:
                break
            del self._finished[key]
