"""A token bucket for work that may wait: the queries every registration triggers (sans-I/O).

After a city-wide power cut every device registers within seconds, and each
new registration asks the device for DeviceInfo and its Catalog: six more
datagrams per device, all competing with the REGISTERs that decide who is
online. :class:`Pacer` lets such work start at ``rate`` per second (``burst``
at once after a quiet spell), so registrations keep the CPU during the storm
and every device still gets its queries, a little later.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

__all__ = ["Pacer"]


class Pacer:
    """Keys waiting for their turn, released at ``rate`` per second; time comes in as ``now``."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at: float | None = None  # when _tokens was last brought up to date
        self._waiting: deque[str] = deque()
        self._queued: set[str] = set()

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: str) -> None:
        """Queue ``key`` (once: a key already waiting keeps its place)."""
        if key not in self._queued:
            self._queued.add(key)
            self._waiting.append(key)

    def discard(self, key: str) -> None:
        """Forget a waiting key (its place is skipped when it comes up)."""
        self._queued.discard(key)

    def release(self, now: float) -> Iterator[str]:
        """The keys whose turn has come, oldest first."""
        self._refill(now)
        while self._waiting and self._tokens > 1.0 - 1e-9:  # (float dust of the refills)
            key = self._waiting.popleft()
            if key not in self._queued:
                continue  # discarded while it waited
            self._queued.discard(key)
            self._tokens -= 1.0
            yield key

    def get_timer(self) -> float | None:
        """When the next waiting key may go, or None when nothing waits."""
        if not self._queued or self._at is None:
            return None
        return self._at + max(0.0, 1.0 - self._tokens) / self.rate

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        if self._at is None or now > self._at:
            self._at = now
