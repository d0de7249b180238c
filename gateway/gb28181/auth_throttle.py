"""Slowing down repeated wrong-password REGISTERs, per (device ID, source IP).

Why the key is the pair and never the address alone: a kindergarten's cameras
sit behind one NAT address, and the simulator runs the whole city from one
address. Blocking an address would take every camera of a school (or the whole
demo) offline because one of them has a stale password. Keying by the pair
slows exactly the device that keeps failing; a different device ID from the
same address is unaffected, and so is the same ID from another address.

Policy: ``free_failures`` failures are processed freely; once a key reaches
that many failures within ``window`` seconds it is blocked for ``base_block``
seconds, doubling with each further failure up to ``max_block``. The count is
forgotten after ``window`` quiet seconds, measured from the end of the last
block, so escalation survives blocks longer than the window. The tracked-key
table is capped (oldest activity evicted first) so that a flood of invented
device IDs cannot exhaust memory.

Sans-I/O: the caller passes ``now`` (any clock, as long as it is consistent).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from gateway.errors import ConfigError
from gateway.ratelimit import TokenBuckets

__all__ = ["AuthThrottle", "RateLimit", "ThrottleDecision"]

ThrottleKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ThrottleDecision:
    """What :meth:`AuthThrottle.record_failure` decided.

    ``newly_blocked`` is True only for the failure that starts a block, so the
    caller logs once per block rather than once per packet.
    """

    blocked_until: float | None
    failures: int
    newly_blocked: bool


@dataclass(slots=True)
class _KeyState:
    """Mutable per-key bookkeeping (never leaves this module)."""

    failures: int
    last_failure: float
    blocked_until: float | None = None

    def quiet_since(self) -> float:
        """When the key last did something that counts: its last failure or the end of its block."""
        if self.blocked_until is None:
            return self.last_failure
        return max(self.last_failure, self.blocked_until)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be positive and finite")
    return float(value)


class AuthThrottle:
    """Exponential back-off of failed digest authentication per (device_id, source_ip)."""

    def __init__(
        self,
        free_failures: int = 3,
        window: float = 60.0,
        base_block: float = 5.0,
        max_block: float = 300.0,
        max_keys: int = 100_000,
    ) -> None:
        if isinstance(free_failures, bool) or not isinstance(free_failures, int) or free_failures < 1:
            raise ConfigError("free_failures must be an int >= 1")
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigError("max_keys must be an int >= 1")
        self.free_failures = free_failures
        self.window = _positive("window", window)
        self.base_block = _positive("base_block", base_block)
        self.max_block = _positive("max_block", max_block)
        if self.max_block < self.base_block:
            raise ConfigError("max_block must be >= base_block")
        self.max_keys = max_keys
        # Insertion order = order of last activity; the first entry is the eviction candidate.
        self._keys: OrderedDict[ThrottleKey, _KeyState] = OrderedDict()

    def __len__(self) -> int:
        """Number of tracked keys (for metrics)."""
        return len(self._keys)

    def is_blocked(self, device_id: str, ip: str, now: float) -> float | None:
        """The time the key is unblocked, or None if requests from it may be processed now."""
        state = self._keys.get((device_id, ip))
        if state is None or state.blocked_until is None or state.blocked_until <= now:
            return None
        return state.blocked_until

    def record_failure(self, device_id: str, ip: str, now: float) -> ThrottleDecision:
        """Count one failed authentication and return the resulting block, if any."""
        key = (device_id, ip)
        state = self._keys.pop(key, None)
        if state is None or now - state.quiet_since() > self.window:
            state = _KeyState(failures=0, last_failure=now)
        was_blocked = state.blocked_until is not None and state.blocked_until > now
        state.failures += 1
        state.last_failure = now
        excess = state.failures - self.free_failures
        if excess >= 0:
            # Cap the exponent before computing: 2**huge would overflow to inf/raise.
            duration = min(self.base_block * 2.0 ** min(excess, 64), self.max_block)
            state.blocked_until = now + duration
        self._keys[key] = state
        self._evict_overflow()
        blocked = state.blocked_until if excess >= 0 else None
        return ThrottleDecision(
            blocked_until=blocked,
            failures=state.failures,
            newly_blocked=excess >= 0 and not was_blocked,
        )

    def record_success(self, device_id: str, ip: str) -> None:
        """Forget the key: a correct password clears its history."""
        self._keys.pop((device_id, ip), None)

    def prune(self, now: float) -> int:
        """Drop keys that have been quiet for longer than ``window``; return how many."""
        stale = [k for k, s in self._keys.items() if now - s.quiet_since() > self.window]
        for key in stale:
            del self._keys[key]
        return len(stale)

    def _evict_overflow(self) -> None:
        """Evict the least recently active keys beyond ``max_keys``."""
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)


class RateLimit:
    """A token bucket per key (a source address) plus one shared bucket (the realm), sans-I/O.

    Used for what must stay rare whoever asks: failed authentications (a
    socket rotating device IDs would otherwise guess thousands of passwords a
    second, H2) and new device IDs (a flood of invented devices, H5). A request
    goes ahead only while both its key's bucket and the shared one hold a
    token; :meth:`retry_after` says how long to wait otherwise. Keys are capped
    (least recently used forgotten: a forgotten key starts full again, which
    only the shared bucket then bounds).
    """

    def __init__(
        self,
        *,
        per_key_rate: float,
        per_key_burst: float,
        global_rate: float,
        global_burst: float,
        max_keys: int = 100_000,
    ) -> None:
        self._own = TokenBuckets(
            _positive("per_key_rate", per_key_rate), _positive("per_key_burst", per_key_burst), max_keys=max_keys
        )
        self._shared = TokenBuckets(_positive("global_rate", global_rate), _positive("global_burst", global_burst))
        self.refused = 0  # requests refused since start (for metrics)

    def __len__(self) -> int:
        """Keys tracked."""
        return len(self._own)

    def retry_after(self, key: str, now: float) -> float | None:
        """None when ``key`` may go ahead now; else seconds until it may (counted as a refusal)."""
        wait = max(self._own.wait(key, now), self._shared.wait(None, now))
        if wait == 0.0:
            return None
        self.refused += 1
        return wait

    def take(self, key: str, now: float) -> None:
        """Spend one token of ``key`` and of the shared bucket (they may go below zero: debt is waited off)."""
        self._own.spend(key, now)
        self._shared.spend(None, now)
