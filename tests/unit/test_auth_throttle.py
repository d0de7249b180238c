"""Failed-authentication throttle (gateway.gb28181.auth_throttle)."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.errors import ConfigError
from gateway.gb28181.auth_throttle import AuthThrottle, ThrottleDecision

CAM = "12010100111320000001"
CAM2 = "12010100111320000002"
NAT = "203.0.113.7"


def fail(throttle: AuthThrottle, now: float, device: str = CAM, ip: str = NAT) -> ThrottleDecision:
    return throttle.record_failure(device, ip, now)


def test_free_failures_then_block() -> None:
    throttle = AuthThrottle()
    first, second = fail(throttle, 0.0), fail(throttle, 1.0)
    for decision, count in ((first, 1), (second, 2)):
        assert decision == ThrottleDecision(blocked_until=None, failures=count, newly_blocked=False)
    assert throttle.is_blocked(CAM, NAT, 1.5) is None
    third = fail(throttle, 2.0)
    assert third == ThrottleDecision(blocked_until=7.0, failures=3, newly_blocked=True)
    assert throttle.is_blocked(CAM, NAT, 2.0) == 7.0
    assert throttle.is_blocked(CAM, NAT, 6.99) == 7.0
    assert throttle.is_blocked(CAM, NAT, 7.0) is None


def test_block_doubles_per_further_failure_up_to_max() -> None:
    throttle = AuthThrottle(free_failures=3, base_block=5.0, max_block=300.0)
    now = 0.0
    for _ in range(3):
        decision = fail(throttle, now)
    durations = []
    for _ in range(8):
        assert decision.blocked_until is not None
        durations.append(decision.blocked_until - now)
        now = decision.blocked_until  # device retries the moment the block ends
        decision = fail(throttle, now)
        assert decision.newly_blocked  # the previous block had ended
    assert durations == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert decision.failures == 11


def test_failure_while_blocked_extends_but_does_not_relog() -> None:
    throttle = AuthThrottle()
    for t in (0.0, 1.0, 2.0):
        fail(throttle, t)
    extended = fail(throttle, 3.0)  # caller did not check is_blocked
    assert extended == ThrottleDecision(blocked_until=13.0, failures=4, newly_blocked=False)


def test_same_ip_other_device_is_unaffected() -> None:
    """A kindergarten's cameras share one NAT address: one bad password must not block the others."""
    throttle = AuthThrottle()
    for t in range(10):
        fail(throttle, float(t))
    assert throttle.is_blocked(CAM, NAT, 10.0) is not None
    assert throttle.is_blocked(CAM2, NAT, 10.0) is None
    assert fail(throttle, 10.0, device=CAM2).failures == 1
    assert throttle.is_blocked(CAM, "198.51.100.1", 10.0) is None


def test_success_clears_history() -> None:
    throttle = AuthThrottle()
    for t in (0.0, 1.0):
        fail(throttle, t)
    throttle.record_success(CAM, NAT)
    assert len(throttle) == 0
    assert fail(throttle, 2.0).failures == 1
    throttle.record_success("unknown", NAT)  # no-op


def test_window_forgets_spaced_failures() -> None:
    throttle = AuthThrottle(window=60.0)
    for t in (0.0, 61.0, 122.0, 183.0):
        decision = fail(throttle, t)
        assert decision.failures == 1
        assert decision.blocked_until is None


def test_window_counts_from_end_of_block() -> None:
    """Escalation must survive blocks longer than the window."""
    throttle = AuthThrottle(window=60.0, base_block=100.0, max_block=1000.0)
    for t in (0.0, 1.0, 2.0):
        decision = fail(throttle, t)
    assert decision.blocked_until == 102.0
    later = fail(throttle, 150.0)  # 148 s after the last failure, 48 s after the block ended
    assert later.failures == 4
    assert later.blocked_until == 350.0
    reset = fail(throttle, 350.0 + 61.0)
    assert reset == ThrottleDecision(blocked_until=None, failures=1, newly_blocked=False)


def test_prune_drops_quiet_keys_only() -> None:
    throttle = AuthThrottle(window=60.0)
    fail(throttle, 0.0, device=CAM)
    for t in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        fail(throttle, t, device=CAM2)  # blocked until 6 + 5*2**4 = 86
    assert len(throttle) == 2
    assert throttle.prune(61.0) == 1
    assert len(throttle) == 1
    assert throttle.is_blocked(CAM2, NAT, 61.0) == 86.0
    assert throttle.prune(140.0) == 0
    assert throttle.prune(147.0) == 1
    assert len(throttle) == 0


def test_key_cap_evicts_least_recently_active() -> None:
    throttle = AuthThrottle(max_keys=3)
    for t in (0.0, 1.0, 2.0):
        fail(throttle, t, device="old")
    for i in range(3):
        fail(throttle, 3.0 + i, device=f"new{i}")
    assert len(throttle) == 3
    assert throttle.is_blocked("old", NAT, 6.0) is None  # evicted first
    fail(throttle, 7.0, device="new0")  # refresh new0
    fail(throttle, 8.0, device="new3")
    assert len(throttle) == 3
    assert fail(throttle, 9.0, device="new0").failures == 3  # survived: it was active recently
    assert fail(throttle, 9.0, device="new1").failures == 1  # evicted


def test_many_keys_stay_bounded() -> None:
    throttle = AuthThrottle(max_keys=1000)
    for i in range(5000):
        fail(throttle, float(i) / 100, device=f"{i:020d}")
    assert len(throttle) == 1000


def test_decision_is_frozen() -> None:
    decision = fail(AuthThrottle(), 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.failures = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"free_failures": 0},
        {"free_failures": 1.5},
        {"window": 0},
        {"window": float("inf")},
        {"base_block": -1.0},
        {"max_block": float("nan")},
        {"base_block": 10.0, "max_block": 5.0},
        {"max_keys": 0},
        {"max_keys": True},
    ],
)
def test_config_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AuthThrottle(**kwargs)  # type: ignore[arg-type]


def test_free_failures_one_blocks_at_first_failure() -> None:
    decision = fail(AuthThrottle(free_failures=1, base_block=2.0), 10.0)
    assert decision == ThrottleDecision(blocked_until=12.0, failures=1, newly_blocked=True)
