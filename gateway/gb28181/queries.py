"""Outstanding queries to devices: deadlines, a cap on concurrency, a backlog (sans-I/O).

Every newly registered device is asked for DeviceInfo and its Catalog. When
the whole city registers at once that is thousands of queries, each answered
by several MESSAGEs; sent all at once they compete with the REGISTERs and
keepalives that decide who is online. :class:`QueryBook` lets at most
``max_inflight`` queries run; the rest wait in order and go out as earlier
ones finish, fail or time out.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

QueryKey = tuple[str, str, int]  # (device ID, CmdType, SN)
_Query = TypeVar("_Query")  # what the caller sends; the book only keeps it


@dataclass(slots=True)
class _InFlight:
    deadline: float
    report_timeout: bool


class QueryBook(Generic[_Query]):
    """Tracks queries from submission to answer; the caller sends and reports."""

    def __init__(self, *, max_inflight: int = 64, timeout: float = 10.0) -> None:
        if max_inflight < 1 or timeout <= 0:
            raise ValueError("max_inflight must be >= 1 and timeout > 0")
        self.max_inflight = max_inflight
        self.timeout = timeout
        self._inflight: dict[QueryKey, _InFlight] = {}
        self._backlog: deque[tuple[QueryKey, _Query, bool]] = deque()
        self._queued: set[QueryKey] = set()
        self._heap: list[tuple[float, QueryKey]] = []

    @property
    def inflight(self) -> int:
        """Queries sent and not yet finished."""
        return len(self._inflight)

    @property
    def queued(self) -> int:
        """Queries waiting for a slot."""
        return len(self._queued)

    def submit(self, key: QueryKey, payload: _Query, *, report_timeout: bool = True) -> None:
        """Queue a query; :meth:`admit` says when to send it.

        ``report_timeout`` False means someone else (the catalog assembler)
        owns the answer's deadline: the slot is freed at ours, silently.
        """
        self._backlog.append((key, payload, report_timeout))
        self._queued.add(key)

    def admit(self, now: float) -> list[tuple[QueryKey, _Query]]:
        """Queries that may be sent now; they count as in flight from here on."""
        ready: list[tuple[QueryKey, _Query]] = []
        while self._backlog and len(self._inflight) < self.max_inflight:
            key, payload, report = self._backlog.popleft()
            if key not in self._queued:
                continue  # finished (cancelled) while it waited
            self._queued.discard(key)
            deadline = now + self.timeout
            self._inflight[key] = _InFlight(deadline, report)
            heapq.heappush(self._heap, (deadline, key))
            ready.append((key, payload))
        return ready

    def finish(self, key: QueryKey) -> bool:
        """The answer came, or the query failed: True if it was still outstanding."""
        if self._inflight.pop(key, None) is not None:
            return True
        if key in self._queued:
            self._queued.discard(key)
            return True
        return False

    def get_timer(self) -> float | None:
        """The earliest deadline (may be stale; :meth:`expire` skips those)."""
        return self._heap[0][0] if self._heap else None

    def expire(self, now: float) -> list[QueryKey]:
        """Queries whose deadline passed and whose timeout must be reported."""
        reported: list[QueryKey] = []
        while self._heap and self._heap[0][0] <= now:
            deadline, key = heapq.heappop(self._heap)
            entry = self._inflight.get(key)
            if entry is None or entry.deadline != deadline:
                continue
            del self._inflight[key]
            if entry.report_timeout:
                reported.append(key)
        return reported
