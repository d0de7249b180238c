"""Outstanding queries to devices: deadlines, caps on concurrency, a fair backlog (sans-I/O).

Every newly registered device is asked for DeviceInfo and its Catalog. When
the whole city registers at once that is thousands of queries, each answered
by several MESSAGEs; sent all at once they compete with the REGISTERs and
keepalives that decide who is online. :class:`QueryBook` lets at most
``max_inflight`` queries run; the rest wait and go out as earlier ones
finish, fail or time out.

Fairness (issue 10, H5): a flood of invented device IDs that never answer
must not starve a real NVR's query. Waiting queries are kept per device and
sent round-robin across devices, at most ``per_device`` in flight for one
device. Devices that have answered something ("proven") are served first;
the others (only their initial queries) may hold at most ``unproven_share``
of the slots, one query each at a time, so a silent device costs the
retransmissions of one query at a time.
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
    proven: bool


class QueryBook(Generic[_Query]):
    """Tracks queries from submission to answer; the caller sends and reports."""

    def __init__(
        self,
        *,
        max_inflight: int = 64,
        timeout: float = 10.0,
        per_device: int = 2,
        unproven_share: float = 0.5,
        max_queued_per_device: int = 16,
    ) -> None:
        if max_inflight < 1 or timeout <= 0 or per_device < 1 or not 0 < unproven_share <= 1:
            raise ValueError("max_inflight and per_device must be >= 1, timeout > 0, 0 < unproven_share <= 1")
        self.max_inflight = max_inflight
        self.timeout = timeout
        self.per_device = per_device
        self.max_unproven = max(1, int(max_inflight * unproven_share))
        self.max_queued_per_device = max_queued_per_device
        self._inflight: dict[QueryKey, _InFlight] = {}
        self._device_inflight: dict[str, int] = {}
        self._unproven_inflight = 0
        # Per class (proven first): each device's waiting queries, and the round-robin ring of devices.
        self._queues: dict[bool, dict[str, deque[tuple[QueryKey, _Query, bool]]]] = {True: {}, False: {}}
        self._rings: dict[bool, deque[str]] = {True: deque(), False: deque()}
        # Devices with waiting queries but at their in-flight cap: out of the ring until one
        # of theirs finishes, so admit() never walks a ring of devices that cannot go.
        self._parked: dict[bool, set[str]] = {True: set(), False: set()}
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

    def submit(self, key: QueryKey, payload: _Query, *, report_timeout: bool = True, proven: bool = True) -> bool:
        """Queue a query; :meth:`admit` says when to send it. False: the device has too many waiting.

        ``report_timeout`` False means someone else (the catalog assembler)
        owns the answer's deadline: the slot is freed at ours, silently.
        ``proven`` says whether the device has answered anything yet.
        """
        device = key[0]
        queues = self._queues[proven]
        queue = queues.get(device)
        if queue is None:
            queue = queues[device] = deque()
            self._rings[proven].append(device)
        elif len(queue) >= self.max_queued_per_device:
            return False
        queue.append((key, payload, report_timeout))
        self._queued.add(key)
        return True

    def admit(self, now: float) -> list[tuple[QueryKey, _Query]]:
        """Queries that may be sent now; they count as in flight from here on."""
        ready: list[tuple[QueryKey, _Query]] = []
        for proven in (True, False):
            ring, queues = self._rings[proven], self._queues[proven]
            cap = self.per_device if proven else 1
            while ring and len(self._inflight) < self.max_inflight:
                if not proven and self._unproven_inflight >= self.max_unproven:
                    break
                device = ring.popleft()
                queue = queues[device]
                while queue and queue[0][0] not in self._queued:
                    queue.popleft()  # finished (cancelled) while it waited
                if not queue:
                    del queues[device]
                    continue
                if self._device_inflight.get(device, 0) >= cap:
                    self._parked[proven].add(device)
                    continue
                key, payload, report = queue.popleft()
                self._queued.discard(key)
                deadline = now + self.timeout
                self._inflight[key] = _InFlight(deadline, report, proven)
                self._device_inflight[device] = self._device_inflight.get(device, 0) + 1
                if not proven:
                    self._unproven_inflight += 1
                heapq.heappush(self._heap, (deadline, key))
                ready.append((key, payload))
                if queue:
                    ring.append(device)
                else:
                    del queues[device]
        return ready

    def finish(self, key: QueryKey) -> bool:
        """The answer came, or the query failed: True if it was still outstanding."""
        entry = self._inflight.pop(key, None)
        if entry is not None:
            self._release(key[0], entry)
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
            self._release(key[0], entry)
            if entry.report_timeout:
                reported.append(key)
        return reported

    def _release(self, device: str, entry: _InFlight) -> None:
        left = self._device_inflight.get(device, 0) - 1
        if left > 0:
            self._device_inflight[device] = left
        else:
            self._device_inflight.pop(device, None)
        if not entry.proven:
            self._unproven_inflight -= 1
        for proven in (True, False):
            if device in self._parked[proven]:
                self._parked[proven].discard(device)
                self._rings[proven].append(device)
