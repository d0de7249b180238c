"""Login throttling: failures per key (a user name, a source address) in a sliding window.

Pure: the caller passes the time. After ``limit`` failures within ``window``
seconds a key is refused until the oldest of them leaves the window; the
caller answers 429 with that many seconds in ``Retry-After`` and does no
password work at all. A success clears the key. The number of keys is capped
(oldest first out), so a flood of made-up names cannot grow memory.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

__all__ = ["FailureLimiter"]


@dataclass
class FailureLimiter:
    """At most ``limit`` failures per key in ``window`` seconds."""

    limit: int
    window: float
    max_keys: int = 100_000
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict, init=False)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        times = self._failures.get(key)
        if times is None:
            return 0.0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0.0
        if len(times) < self.limit:
            return 0.0
        return max(times[0] + self.window - now, 0.001)

    def failed(self, key: str, now: float) -> None:
        """Count one failure of ``key``."""
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
        times.append(now)

    def succeeded(self, key: str) -> None:
        """Forget ``key``'s failures."""
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)
