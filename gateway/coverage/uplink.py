"""RTP loss of each kindergarten's streams over the last 24 hours, from periodic counter samples.

The coverage service samples every open live stream's RTP counters (received,
lost) now and then; :class:`LossWindow` turns successive samples of one stream
into increments and keeps them in hourly buckets per kindergarten, so the figure
covers the last 24 h whatever streams came and went (a stream's packets between
its last sample and its end are not counted: sampling is cheap, so it is often).
Pure: no I/O, no clock (times come in).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Final

from gateway.coverage.model import UplinkSample

__all__ = ["BUCKET", "WINDOW", "LossWindow", "StreamCounters"]

BUCKET: Final = 3600.0
WINDOW: Final = 86400.0


@dataclass(frozen=True, slots=True)
class StreamCounters:
    """One open stream's counters as sampled: ``key`` tells streams apart (a new stream restarts at 0)."""

    key: Hashable
    kindergarten_id: str
    received: int
    lost: int


@dataclass(slots=True)
class LossWindow:
    """Hourly (received, lost) increments per kindergarten over ``window`` seconds."""

    window: float = WINDOW
    _last: dict[Hashable, tuple[int, int]] = field(default_factory=dict)
    _buckets: dict[str, dict[int, list[int]]] = field(default_factory=dict)

    def sample(self, streams: Iterable[StreamCounters], now: float) -> None:
        """Add what each stream counted since its previous sample; forget streams that ended."""
        seen: dict[Hashable, tuple[int, int]] = {}
        hour = int(now // BUCKET)
        for s in streams:
            before_received, before_lost = self._last.get(s.key, (0, 0))
            received, lost = max(0, s.received - before_received), max(0, s.lost - before_lost)
            seen[s.key] = (s.received, s.lost)
            if received or lost:
                bucket = self._buckets.setdefault(s.kindergarten_id, {}).setdefault(hour, [0, 0])
                bucket[0] += received
                bucket[1] += lost
        self._last = seen
        self._expire(now)

    def _expire(self, now: float) -> None:
        oldest = int((now - self.window) // BUCKET) + 1
        for kg in list(self._buckets):
            hours = self._buckets[kg]
            for hour in [h for h in hours if h < oldest]:
                del hours[hour]
            if not hours:
                del self._buckets[kg]

    def samples(self) -> dict[str, UplinkSample]:
        """Per kindergarten with traffic in the window: packets received and lost."""
        return {
            kg: UplinkSample(sum(b[0] for b in hours.values()), sum(b[1] for b in hours.values()))
            for kg, hours in self._buckets.items()
        }
