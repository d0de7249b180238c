"""Per-key token buckets (sans-I/O): how many new alarms one source may open per second.

A device that notifies hundreds of alarms a second (broken, hijacked, or forged
from its address) must not bury its kindergarten's one-button press behind them
nor flood the police. Each (sender, kindergarten, lane, trust) group gets a
bucket; while it has tokens every notification is a new alarm, and once it is
empty the intake collapses further ones into the group's open alarm (counted,
never dropped). Time is passed in; memory is bounded (a full bucket is the same
as a forgotten one, so the least recently used are forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from gateway.errors import ConfigError

__all__ = ["TokenBuckets"]


class TokenBuckets:
    """``burst`` tokens per key, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 50_000) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ConfigError("token buckets need rate > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: Hashable, now: float) -> bool:
        """Spend one token of ``key`` if it has one."""
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
