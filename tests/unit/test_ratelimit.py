"""The one token-bucket implementation behind every rate limit (alarms per sender, failed logins, new IDs)."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.gb28181.auth_throttle import RateLimit
from gateway.ratelimit import TokenBuckets


def test_take_spends_the_burst_then_refills_at_the_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.wait("a", 0.0) == pytest.approx(0.5)
    assert buckets.take("b", 0.0)  # keys are independent
    assert not buckets.take("a", 0.4) and buckets.take("a", 0.5)
    assert buckets.take("a", 100.0) and buckets.wait("a", 100.0) == 0.0  # refilled, capped at the burst


def test_spend_runs_into_debt_that_is_waited_off() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1)
    buckets.spend("a", 0.0)
    buckets.spend("a", 0.0)  # -1 token
    assert buckets.wait("a", 0.0) == pytest.approx(2.0)
    assert not buckets.take("a", 1.5) and buckets.take("a", 2.0)


def test_memory_is_bounded_and_a_forgotten_key_starts_full() -> None:
    buckets = TokenBuckets(rate=0.001, burst=1, max_keys=2)
    assert buckets.take("a", 0.0) and buckets.take("b", 0.0) and buckets.take("c", 0.0)
    assert len(buckets) == 2
    assert buckets.take("a", 0.0)  # forgotten (least recently used), so full again
    assert not buckets.take("c", 0.0)


def test_a_clock_going_back_neither_refills_nor_breaks() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1)
    assert buckets.take("a", 10.0)
    assert not buckets.take("a", 5.0) and buckets.take("a", 11.0)


@pytest.mark.parametrize("args", [(0.0, 1), (1.0, 0.5), (-1.0, 2)])
def test_bad_settings_are_config_errors(args: tuple[float, float]) -> None:
    with pytest.raises(ConfigError):
        TokenBuckets(*args)


def test_rate_limit_needs_both_the_key_and_the_shared_bucket() -> None:
    limit = RateLimit(per_key_rate=1.0, per_key_burst=2.0, global_rate=1.0, global_burst=3.0)
    for _ in range(2):
        assert limit.retry_after("10.0.0.1", 0.0) is None
        limit.take("10.0.0.1", 0.0)
    assert limit.retry_after("10.0.0.1", 0.0) == pytest.approx(1.0)  # its own bucket is empty
    assert limit.retry_after("10.0.0.2", 0.0) is None
    limit.take("10.0.0.2", 0.0)
    assert limit.retry_after("10.0.0.3", 0.0) == pytest.approx(1.0)  # the realm's bucket is empty
    assert limit.refused == 2 and len(limit) == 3
