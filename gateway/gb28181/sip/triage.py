"""Alarms first: which inbound SIP message is an alarm, told from its bytes, and the two lanes it waits in.

Under a registration storm thousands of REGISTERs queue in front of the SIP
core; an alarm behind them would wait seconds (issue 12). The adapter
(:mod:`gateway.io.sip_io`) therefore reads everything that arrived, sorts it
into two FIFO lanes with :func:`looks_like_alarm` — a bytes search, no parse —
and serves the *urgent* lane before the *bulk* one.

The test is a claim, not a verdict: anyone can send bytes that look like an
alarm. It only buys a place in the queue; the core still parses, authenticates
and judges the message like any other. So that forged "alarms" cannot starve
registration, the urgent lane is bounded per source and in total (what does not
fit goes to the bulk lane, in order — never dropped), and the adapter serves a
bounded number of urgent messages per loop turn before the bulk lane gets its
share. The bulk lane is bounded in bytes (a UDP datagram beyond it is dropped,
as the kernel would; a TCP connection is paused instead).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Generic, TypeVar

__all__ = ["ALARM_MARK", "DatagramLanes", "Lane", "Queued", "looks_like_alarm"]

ALARM_MARK: Final = b"<CmdType>Alarm<"  # MANSCDP Notify/Alarm (MESSAGE from a device, NOTIFY from a lower platform)
_URGENT_METHODS: Final = (b"MESSAGE ", b"NOTIFY ")

S = TypeVar("S", bound=Hashable)  # where a message came from (a UDP address, a TCP peer)


def looks_like_alarm(data: bytes, max_size: int) -> bool:
    """Whether ``data`` claims to be an alarm request: MESSAGE/NOTIFY carrying ``<CmdType>Alarm``.

    Oversized input is never urgent (the core refuses it anyway), and only the
    first ``max_size`` bytes are searched.
    """
    return len(data) <= max_size and data.startswith(_URGENT_METHODS) and ALARM_MARK in data


class Lane(Enum):
    """Where a message waits."""

    URGENT = "urgent"
    BULK = "bulk"


@dataclass(frozen=True, slots=True)
class Queued(Generic[S]):
    """One message waiting for the core: its bytes, its source and when it was read (loop clock)."""

    data: bytes
    source: S
    at: float


@dataclass(slots=True)
class LaneCounters:
    """What the lanes saw (for the metrics and the tests)."""

    urgent: int = 0  # messages queued urgent
    bulk: int = 0  # messages queued bulk
    demoted: int = 0  # alarm-looking messages queued bulk because their source or the lane was full
    dropped: int = 0  # bulk messages refused: the bulk lane was full


@dataclass(slots=True)
class DatagramLanes(Generic[S]):
    """Two FIFO lanes: alarm-looking messages first, bounded so that they cannot starve the rest."""

    max_message: int = 65_535  # bytes: larger input is never urgent
    max_urgent: int = 1_024  # urgent messages waiting, in total
    per_source: int = 16  # urgent messages waiting from one source
    max_bulk_bytes: int = 8 * 1024 * 1024  # bytes waiting in the bulk lane
    counters: LaneCounters = field(default_factory=LaneCounters)
    _urgent: deque[Queued[S]] = field(default_factory=deque)
    _bulk: deque[Queued[S]] = field(default_factory=deque)
    _by_source: dict[S, int] = field(default_factory=dict)
    bulk_bytes: int = 0

    def push(self, data: bytes, source: S, at: float, *, force: bool = False) -> Lane | None:
        """Queue ``data``; returns its lane, or None when the bulk lane is full (``force``: queue it anyway)."""
        if looks_like_alarm(data, self.max_message):
            waiting = self._by_source.get(source, 0)
            if waiting < self.per_source and len(self._urgent) < self.max_urgent:
                self._by_source[source] = waiting + 1
                self._urgent.append(Queued(data, source, at))
                self.counters.urgent += 1
                return Lane.URGENT
            self.counters.demoted += 1
        if not force and self.bulk_bytes + len(data) > self.max_bulk_bytes:
            self.counters.dropped += 1
            return None
        self._bulk.append(Queued(data, source, at))
        self.bulk_bytes += len(data)
        self.counters.bulk += 1
        return Lane.BULK

    def pop_urgent(self) -> Queued[S] | None:
        """The oldest urgent message, or None."""
        if not self._urgent:
            return None
        item = self._urgent.popleft()
        left = self._by_source[item.source] - 1
        if left:
            self._by_source[item.source] = left
        else:
            del self._by_source[item.source]
        return item

    def pop_bulk(self) -> Queued[S] | None:
        """The oldest bulk message, or None."""
        if not self._bulk:
            return None
        item = self._bulk.popleft()
        self.bulk_bytes -= len(item.data)
        return item

    @property
    def urgent_waiting(self) -> int:
        """Urgent messages waiting."""
        return len(self._urgent)

    @property
    def bulk_waiting(self) -> int:
        """Bulk messages waiting."""
        return len(self._bulk)

    def __bool__(self) -> bool:
        return bool(self._urgent or self._bulk)

    def clear(self) -> None:
        """Forget everything waiting (the sockets closed)."""
        self._urgent.clear()
        self._bulk.clear()
        self._by_source.clear()
        self.bulk_bytes = 0
