"""Per-key token buckets (sans-I/O): how often one source may do something rare.

One implementation for every rate limit of kgw: new alarms per sender
(:mod:`gateway.alarms.intake`, M1), failed authentications and new device IDs
per source address and per realm (:class:`gateway.gb28181.auth_throttle.RateLimit`,
H2 and H5). Each key holds up to ``burst`` tokens, refilled at ``rate`` per
second. Time is passed in; memory is bounded: a full bucket is the same as a
forgotten one, so the least recently used keys are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from gateway.errors import ConfigError

__all__ = ["TokenBuckets"]


class TokenBuckets:
    """``burst`` tokens per key, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 50_000) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int):
            raise ConfigError("max_keys must be an int")
        if not rate > 0 or not burst >= 1 or max_keys < 1:
            raise ConfigError("token buckets need rate > 0, burst >= 1 and max_keys >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _tokens(self, key: Hashable, now: float) -> float:
        """The key's tokens at ``now`` (refilled; the key becomes the most recently used)."""
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        self._buckets[key] = (tokens, max(at, now))
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return tokens

    def take(self, key: Hashable, now: float) -> bool:
        """Spend one token of ``key`` if it has one; False (nothing spent) otherwise."""
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            return False
        self._buckets[key] = (tokens - 1.0, self._buckets[key][1])
        return True

    def wait(self, key: Hashable, now: float) -> float:
        """Seconds until ``key`` has a token (0.0: it has one now); nothing is spent."""
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def spend(self, key: Hashable, now: float) -> None:
        """Spend one token whatever the balance: a debt below zero is waited off."""
        tokens = self._tokens(key, now)
        self._buckets[key] = (tokens - 1.0, self._buckets[key][1])

    def __len__(self) -> int:
        """Keys remembered."""
        return len(self._buckets)
