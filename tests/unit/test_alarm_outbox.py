"""The alarm outbox scheduler: per-kindergarten order, backoff, dead letters, parking, timers."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.alarms.model import Delivery, DeliveryEvent, DeliveryKey, DeliveryState
from gateway.alarms.outbox import RETRYING_PREFIX, NotInFlight, Outbox, RetryPolicy
from gateway.errors import ConfigError

ALARM = DeliveryEvent.ALARM
ESCALATED = DeliveryEvent.ESCALATED
EXACT = RetryPolicy(jitter=0.0)


def mk(
    seq: int,
    kg: str = "kg1",
    sink: str = "mqtt",
    event: DeliveryEvent = ALARM,
    **fields: object,
) -> Delivery:
    """A delivery of alarm ``a<seq>``; extra fields as a store would restore them."""
    return Delivery(f"a{seq}", sink, event, kg, seq, 0.0, **fields)  # type: ignore[arg-type]


def key(seq: int, sink: str = "mqtt", event: DeliveryEvent = ALARM) -> DeliveryKey:
    return (f"a{seq}", sink, event.value)


def taken(box: Outbox, now: float, limit: int = 100, sink: str = "mqtt") -> list[DeliveryKey]:
    return [d.key for d in box.take_due(sink, now, limit)]


def outbox(*deliveries: Delivery, policy: RetryPolicy = EXACT) -> Outbox:
    box = Outbox(policy)
    for d in deliveries:
        box.add(d)
    return box


# --- RetryPolicy ------------------------------------------------------------------


def test_delay_grows_exponentially_from_base() -> None:
    assert [EXACT.delay(n, 0.5) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 32, 60]


def test_delay_is_capped_even_for_absurd_attempt_counts() -> None:
    assert EXACT.delay(10, 0.5) == 60.0
    assert EXACT.delay(100_000, 0.5) == 60.0  # no OverflowError
    assert RetryPolicy(factor=10.0, jitter=0.0).delay(10_000, 0.5) == 60.0


def test_delay_treats_zero_attempts_as_first() -> None:
    assert EXACT.delay(0, 0.5) == EXACT.delay(1, 0.5) == 0.5


def test_jitter_is_multiplicative_and_bounded() -> None:
    policy = RetryPolicy()
    assert policy.delay(3, 0.0) == pytest.approx(2 * 0.8)
    assert policy.delay(3, 0.5) == pytest.approx(2.0)
    assert policy.delay(3, 1.0) == pytest.approx(2 * 1.2)
    assert policy.delay(50, 1.0) == pytest.approx(60 * 1.2)  # jitter applies after the cap
    for rnd in (-5.0, 7.0, float("nan")):
        assert 0.8 * 2 <= policy.delay(3, rnd) <= 1.2 * 2


@given(st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_delay_never_negative_and_within_jitter_of_cap(attempts: int, rnd: float) -> None:
    for policy in (RetryPolicy(), RetryPolicy(jitter=1.0), RetryPolicy(base=0.0)):
        value = policy.delay(attempts, rnd)
        assert 0.0 <= value <= policy.cap * (1 + policy.jitter)


@pytest.mark.parametrize(
    "kwargs",
    [{"base": -1.0}, {"factor": 0.5}, {"cap": -1.0}, {"jitter": 1.5}, {"jitter": -0.1}, {"dead_after": 0}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# --- ordering -----------------------------------------------------------------------


def test_new_deliveries_are_due_at_once_and_only_heads_are_taken() -> None:
    box = outbox(mk(1, "kg1"), mk(2, "kg1"), mk(3, "kg2"))
    assert taken(box, 0.0) == [key(1), key(3)]
    assert box.in_flight("mqtt") == 2
    assert taken(box, 0.0) == []  # heads in flight, a2 waits behind a1


def test_success_makes_the_next_of_the_queue_due_at_once() -> None:
    box = outbox(mk(1), mk(2), mk(3))
    for expected in (1, 2, 3):
        assert taken(box, 5.0) == [key(expected)]
        box.succeeded(key(expected), 5.0)
    assert taken(box, 5.0) == [] and box.depth("mqtt") == 0


def test_failing_head_blocks_its_kindergarten_but_not_others() -> None:
    box = outbox(mk(1, "kg1"), mk(2, "kg1"), mk(3, "kg2"), mk(4, "kg2"))
    assert taken(box, 0.0) == [key(1), key(3)]
    box.failed(key(1), 0.0, "broker down", permanent=False)
    box.succeeded(key(3), 0.0)
    assert taken(box, 0.1) == [key(4)]  # kg2 moves on; a2 stays behind a1
    assert taken(box, 0.5) == [key(1)]  # a1's backoff of 0.5 s is over
    box.succeeded(key(1), 0.5)
    assert taken(box, 0.5) == [key(2)]


def test_restore_in_scrambled_order_yields_seq_order() -> None:
    deliveries = [mk(seq, f"kg{seq % 3}") for seq in range(1, 31)]
    random.Random(7).shuffle(deliveries)
    box = outbox(*deliveries)
    delivered: dict[str, list[int]] = defaultdict(list)
    while batch := box.take_due("mqtt", 0.0, 100):
        assert len(batch) == 3
        assert [d.seq for d in batch] == sorted(d.seq for d in batch)
        for d in batch:
            box.succeeded(d.key, 0.0)
            delivered[d.order_key].append(d.seq)
    assert all(seqs == sorted(seqs) and len(seqs) == 10 for seqs in delivered.values())


def test_alarm_goes_before_its_escalation() -> None:
    box = outbox(mk(1, event=ESCALATED), mk(1, event=ALARM))
    assert taken(box, 0.0) == [key(1, event=ALARM)]
    box.succeeded(key(1, event=ALARM), 0.0)
    assert taken(box, 0.0) == [key(1, event=ESCALATED)]


def test_escalation_of_an_earlier_alarm_goes_before_a_later_alarm() -> None:
    box = outbox(mk(1), mk(2))
    assert taken(box, 0.0) == [key(1)]
    box.add(mk(1, event=ESCALATED))
    box.succeeded(key(1), 0.0)
    assert taken(box, 0.0) == [key(1, event=ESCALATED)]


def test_restored_head_with_lower_seq_replaces_a_waiting_head() -> None:
    box = outbox(mk(5, next_attempt_at=100.0))
    box.add(mk(3, next_attempt_at=50.0))
    assert box.get_timer() == 50.0
    assert taken(box, 60.0) == [key(3)]


def test_sinks_are_independent() -> None:
    box = outbox(mk(1, sink="mqtt"), mk(1, sink="webhook"))
    assert taken(box, 0.0, sink="mqtt") == [key(1, "mqtt")]
    assert box.in_flight("webhook") == 0
    assert taken(box, 0.0, sink="webhook") == [key(1, "webhook")]
    assert box.sinks() == {"mqtt", "webhook"}


def test_take_due_respects_limit_and_takes_oldest_seq_first() -> None:
    # a9 has been due the longest, but a1 is the older alarm and goes first.
    box = outbox(mk(9, "k9", next_attempt_at=1.0), mk(1, "k1", next_attempt_at=3.0), mk(5, "k5", next_attempt_at=2.0))
    assert taken(box, 10.0, limit=2) == [key(1), key(5)]
    assert taken(box, 10.0, limit=0) == []
    assert taken(box, 10.0, limit=2) == [key(9)]


def test_take_due_skips_heads_not_yet_due() -> None:
    box = outbox(mk(1, "k1", next_attempt_at=5.0), mk(2, "k2"))
    assert taken(box, 4.9) == [key(2)]
    assert taken(box, 5.0) == [key(1)]


def test_take_due_of_unknown_sink_is_empty() -> None:
    assert outbox().take_due("gb", 0.0, 10) == []


def test_wall_clock_stepping_back_does_not_release_early() -> None:
    box = outbox(mk(1, "k1", next_attempt_at=50.0), mk(2, "k2", next_attempt_at=50.0))
    assert taken(box, 100.0, limit=1) == [key(1)]  # a2 was found due at 100
    assert taken(box, 10.0) == []  # ...but the clock went back to 10
    assert box.get_timer() == 50.0
    assert taken(box, 50.0) == [key(2)]


# --- results ---------------------------------------------------------------------------


def test_succeeded_marks_delivered_and_forgets() -> None:
    box = outbox(mk(1, attempts=2, last_error="timeout"))
    box.take_due("mqtt", 0.0, 1)
    d = box.succeeded(key(1), 12.5)
    assert (d.state, d.delivered_at, d.attempts, d.last_error) == (DeliveryState.DELIVERED, 12.5, 3, "")
    assert box.get(key(1)) is None and box.depth("mqtt") == 0 and box.in_flight("mqtt") == 0
    assert len(box) == 0


def test_transient_failure_backs_off_with_injected_jitter() -> None:
    draws = iter([0.0, 1.0])
    box = Outbox(RetryPolicy(), rnd=lambda: next(draws))
    box.add(mk(1))
    box.take_due("mqtt", 0.0, 1)
    d = box.failed(key(1), 10.0, "timeout", permanent=False)
    assert (d.state, d.attempts, d.last_error) == (DeliveryState.PENDING, 1, "timeout")
    assert d.next_attempt_at == pytest.approx(10.0 + 0.5 * 0.8)
    box.take_due("mqtt", 11.0, 1)
    d = box.failed(key(1), 11.0, "timeout", permanent=False)
    assert d.next_attempt_at == pytest.approx(11.0 + 1.0 * 1.2)


def test_permanent_failure_parks_and_unblocks_the_kindergarten() -> None:
    box = outbox(mk(1), mk(2))
    box.take_due("mqtt", 0.0, 1)
    d = box.failed(key(1), 1.0, "HTTP 400", permanent=True)
    assert (d.state, d.attempts, d.last_error) == (DeliveryState.DEAD, 1, "HTTP 400")
    assert box.parked() == [d] and box.parked("mqtt") == [d] and box.parked("webhook") == []
    assert taken(box, 1.0) == [key(2)]
    box.succeeded(key(2), 1.0)
    assert box.get(key(1)) is d and box.depth("mqtt") == 1 and box.dead_count("mqtt") == 1
    assert box.get_timer() is None  # a parked delivery is never scheduled


def test_dead_after_keeps_retrying_at_the_head_and_later_succeeds() -> None:
    box = outbox(mk(1), mk(2), policy=RetryPolicy(jitter=0.0, dead_after=3, cap=4.0))
    now = 0.0
    for attempt in range(1, 6):
        assert taken(box, now) == [key(1)]
        d = box.failed(key(1), now, "connection refused", permanent=False)
        now = d.next_attempt_at
        if attempt < 3:
            assert d.state is DeliveryState.PENDING and d.last_error == "connection refused"
        else:
            assert d.state is DeliveryState.DEAD
            assert d.last_error == f"{RETRYING_PREFIX} connection refused"
            assert box.dead_count("mqtt") == 1 and box.parked() == []
    assert d.next_attempt_at - 0.0 > 0 and box.policy.delay(5, 0.5) == 4.0  # capped
    assert taken(box, now) == [key(1)]  # still the head: a2 never overtook it
    d = box.succeeded(key(1), now)
    assert d.state is DeliveryState.DELIVERED and d.attempts == 6 and box.dead_count("mqtt") == 0
    assert taken(box, now) == [key(2)]


def test_retrying_prefix_is_not_doubled() -> None:
    box = outbox(mk(1, attempts=5), policy=RetryPolicy(dead_after=1))
    box.take_due("mqtt", 0.0, 1)
    d = box.failed(key(1), 0.0, f"{RETRYING_PREFIX} x", permanent=False)
    assert d.last_error == f"{RETRYING_PREFIX} x"


def test_permanent_failure_after_dead_drops_the_retrying_prefix() -> None:
    box = outbox(mk(1), policy=RetryPolicy(dead_after=1))
    box.take_due("mqtt", 0.0, 1)
    box.failed(key(1), 0.0, "down", permanent=False)
    box.take_due("mqtt", 100.0, 1)
    d = box.failed(key(1), 100.0, "HTTP 422", permanent=True)
    assert d.last_error == "HTTP 422" and box.parked() == [d] and box.dead_count("mqtt") == 1


def test_release_ends_the_flight_and_changes_nothing_else() -> None:
    box = outbox(mk(1, attempts=4, next_attempt_at=2.0))
    assert taken(box, 3.0) == [key(1)]
    assert box.release(key(1)) is True
    d = box.get(key(1))
    assert d is not None and (d.attempts, d.next_attempt_at, d.state) == (4, 2.0, DeliveryState.PENDING)
    assert box.in_flight("mqtt") == 0 and box.get_timer() == 2.0
    assert box.release(key(1)) is False  # not in flight any more
    assert taken(box, 3.0) == [key(1)]


def test_unknown_keys_raise_key_error() -> None:
    box = outbox(mk(1))
    with pytest.raises(KeyError):
        box.succeeded(key(9), 0.0)
    with pytest.raises(KeyError):
        box.failed(key(9), 0.0, "x", permanent=False)
    with pytest.raises(KeyError):
        box.release(key(9))
    with pytest.raises(KeyError):
        box.retry_now(key(9), 0.0)


def test_results_for_deliveries_not_in_flight_raise_not_in_flight() -> None:
    box = outbox(mk(1), mk(2))
    with pytest.raises(NotInFlight):
        box.succeeded(key(1), 0.0)
    box.take_due("mqtt", 0.0, 1)
    with pytest.raises(ValueError):  # NotInFlight is a ValueError
        box.failed(key(2), 0.0, "x", permanent=True)
    box.failed(key(1), 0.0, "rejected", permanent=True)
    with pytest.raises(NotInFlight):
        box.succeeded(key(1), 0.0)  # parked
    assert box.in_flight("mqtt") == 0


def test_succeeded_twice_is_a_key_error() -> None:
    box = outbox(mk(1))
    box.take_due("mqtt", 0.0, 1)
    box.succeeded(key(1), 0.0)
    with pytest.raises(KeyError):
        box.succeeded(key(1), 0.0)


# --- operator retry ------------------------------------------------------------------------


def test_retry_now_puts_a_parked_delivery_back_at_its_seq_position() -> None:
    box = outbox(mk(1), mk(2), mk(3))
    box.take_due("mqtt", 0.0, 1)
    box.failed(key(1), 0.0, "HTTP 400", permanent=True)
    d = box.retry_now(key(1), 7.0)
    assert (d.state, d.next_attempt_at, d.attempts) == (DeliveryState.PENDING, 7.0, 1)
    assert box.parked() == [] and box.dead_count("mqtt") == 0
    assert taken(box, 6.0) == []  # a1 is the head again, due at 7
    assert taken(box, 7.0) == [key(1)]
    box.succeeded(key(1), 7.0)
    assert taken(box, 7.0) == [key(2)]


def test_retry_now_of_parked_while_a_later_head_is_in_flight() -> None:
    box = outbox(mk(1), mk(2), mk(3))
    box.take_due("mqtt", 0.0, 1)
    box.failed(key(1), 0.0, "HTTP 400", permanent=True)
    assert taken(box, 0.0) == [key(2)]
    box.retry_now(key(1), 1.0)
    assert taken(box, 1.0) == [] and box.get_timer() is None  # a2 still in flight
    box.succeeded(key(2), 1.0)
    assert taken(box, 1.0) == [key(1)]
    box.succeeded(key(1), 1.0)
    assert taken(box, 1.0) == [key(3)]


def test_retry_now_of_a_parked_delivery_whose_queue_emptied() -> None:
    box = outbox(mk(1))
    box.take_due("mqtt", 0.0, 1)
    box.failed(key(1), 0.0, "HTTP 400", permanent=True)
    assert taken(box, 100.0) == []
    box.retry_now(key(1), 100.0)
    assert taken(box, 100.0) == [key(1)]


def test_retry_now_of_a_waiting_head_makes_it_due_now() -> None:
    box = outbox(mk(1, next_attempt_at=500.0), mk(2, next_attempt_at=1.0))
    assert box.get_timer() == 500.0
    d = box.retry_now(key(1), 10.0)
    assert d.next_attempt_at == 10.0 and d.state is DeliveryState.PENDING
    assert box.get_timer() == 10.0
    assert taken(box, 10.0) == [key(1)]


def test_retry_now_of_a_queued_dead_delivery_keeps_it_dead() -> None:
    box = outbox(mk(1, state=DeliveryState.DEAD, last_error=f"{RETRYING_PREFIX} down", next_attempt_at=99.0))
    d = box.retry_now(key(1), 5.0)
    assert d.state is DeliveryState.DEAD and box.dead_count("mqtt") == 1
    assert taken(box, 5.0) == [key(1)]


def test_retry_now_of_a_non_head_only_moves_its_time() -> None:
    box = outbox(mk(1), mk(2, next_attempt_at=50.0))
    box.retry_now(key(2), 3.0)
    assert taken(box, 3.0) == [key(1)]
    box.succeeded(key(1), 3.0)
    assert taken(box, 3.0) == [key(2)]


def test_retry_now_of_an_in_flight_delivery_keeps_it_in_flight() -> None:
    box = outbox(mk(1))
    box.take_due("mqtt", 0.0, 1)
    box.retry_now(key(1), 1.0)
    assert box.in_flight("mqtt") == 1 and taken(box, 1.0) == []
    box.succeeded(key(1), 1.0)


# --- restore ------------------------------------------------------------------------------------


def test_add_ignores_delivered_and_duplicate_keys() -> None:
    box = Outbox(EXACT)
    assert box.add(mk(1, state=DeliveryState.DELIVERED)) is False
    assert box.depth("mqtt") == 0
    first = mk(2)
    assert box.add(first) is True
    assert box.add(mk(2, attempts=9)) is False
    assert box.get(key(2)) is first and box.depth("mqtt") == 1


def test_restored_pending_keeps_attempts_and_schedule() -> None:
    box = outbox(mk(1, attempts=3, next_attempt_at=40.0, last_error="timeout"))
    assert box.get_timer("mqtt") == 40.0
    assert taken(box, 39.0) == []
    box.take_due("mqtt", 40.0, 1)
    assert box.failed(key(1), 40.0, "timeout", permanent=False).attempts == 4


def test_restored_dead_rule_parks_rejected_and_requeues_retrying() -> None:
    rejected = mk(1, "kg1", state=DeliveryState.DEAD, last_error="HTTP 400 bad payload", attempts=1)
    retrying = mk(2, "kg2", state=DeliveryState.DEAD, last_error=f"{RETRYING_PREFIX} refused", attempts=10)
    box = outbox(rejected, retrying, mk(3, "kg1"))
    assert box.parked() == [rejected]
    assert taken(box, 0.0) == [key(2), key(3)]  # the rejected one does not block kg1
    assert box.dead_count("mqtt") == 2 and box.depth("mqtt") == 3


# --- timers and counters ----------------------------------------------------------------------


def test_get_timer_is_the_earliest_head_not_in_flight() -> None:
    box = Outbox(EXACT)
    assert box.get_timer() is None and box.get_timer("mqtt") is None
    box.add(mk(1, "k1", next_attempt_at=5.0))
    box.add(mk(2, "k1", next_attempt_at=1.0))  # not a head: does not count
    box.add(mk(3, "k2", next_attempt_at=8.0))
    box.add(mk(4, "k3", sink="webhook", next_attempt_at=3.0))
    assert box.get_timer("mqtt") == 5.0 and box.get_timer("webhook") == 3.0 and box.get_timer() == 3.0
    assert taken(box, 5.0) == [key(1)]
    assert box.get_timer("mqtt") == 8.0  # the in-flight head is excluded, a2 waits behind it
    box.failed(key(1), 5.0, "x", permanent=False)
    assert box.get_timer("mqtt") == 5.5


def test_get_timer_counts_due_heads_left_behind_by_the_limit() -> None:
    box = outbox(mk(1, "k1", next_attempt_at=2.0), mk(2, "k2", next_attempt_at=1.0))
    assert taken(box, 10.0, limit=1) == [key(1)]
    assert box.get_timer() == 1.0


def test_depth_and_dead_count() -> None:
    box = outbox(mk(1, "k1"), mk(2, "k1"), mk(3, "k2"), mk(4, "k3"), policy=RetryPolicy(dead_after=1))
    assert box.depth("mqtt") == 4 and box.dead_count("mqtt") == 0 and box.depth("gb") == 0
    box.take_due("mqtt", 0.0, 10)
    box.failed(key(1), 0.0, "down", permanent=False)  # dead, queued
    box.failed(key(3), 0.0, "400", permanent=True)  # dead, parked
    box.succeeded(key(4), 0.0)
    assert box.depth("mqtt") == 3 and box.dead_count("mqtt") == 2 and box.dead_count("gb") == 0
    assert [d.key for d in box.pending()] == [key(1), key(2), key(3)]
    assert [d.key for d in box.pending("mqtt")] == [key(1), key(2), key(3)] and list(box.pending("gb")) == []


def test_stale_heap_entries_stay_bounded() -> None:
    box = outbox(mk(1, "k1"), mk(2, "k2"))
    for i in range(20_000):
        box.retry_now(key(1), float(i))
    assert box.get_timer() == 0.0
    state = box._sinks["mqtt"]
    assert len(state.waiting) + len(state.due) + len(state.due_times) < 1_000
    assert taken(box, 20_000.0) == [key(1), key(2)]


# --- property: random operation sequences keep the invariants -----------------------------------

SINKS = ("mqtt", "webhook")
KGS = ("k1", "k2", "k3")
TAKE = st.tuples(st.just("take"), st.sampled_from(SINKS), st.integers(0, 4))
OPS = st.one_of(
    TAKE,
    TAKE,  # twice: taking is what most sequences need to get anywhere
    st.tuples(st.just("ok"), st.integers(0, 10)),
    st.tuples(st.just("fail"), st.integers(0, 10), st.booleans()),
    st.tuples(st.just("release"), st.integers(0, 10)),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.3, 1.0, 4.0, 30.0, -2.0, -20.0])),
    st.tuples(st.just("retry"), st.integers(0, 10)),
    st.tuples(st.just("retry_any"), st.integers(0, 30)),
    st.tuples(st.just("add"), st.sampled_from(SINKS), st.sampled_from(KGS), st.booleans()),
)
INITIAL = st.lists(
    st.tuples(st.sampled_from(SINKS), st.sampled_from(KGS), st.integers(1, 12), st.sampled_from(list(DeliveryEvent))),
    max_size=25,
    unique_by=lambda t: (t[0], t[2], t[3]),
)


def _order(d: Delivery) -> tuple[int, int, DeliveryKey]:
    return (d.seq, 0 if d.event is ALARM else 1, d.key)


def _expected_heads(box: Outbox, in_flight: set[DeliveryKey], sink: str) -> list[Delivery]:
    """Brute force: the head of every queue of ``sink`` with nothing in flight."""
    parked = {d.key for d in box.parked(sink)}
    queues: dict[str, list[Delivery]] = defaultdict(list)
    busy = set()
    for d in box.pending(sink):
        if d.key in in_flight:
            busy.add(d.order_key)
        elif d.key not in parked:
            queues[d.order_key].append(d)
    return [min(q, key=_order) for ok, q in queues.items() if ok not in busy]


@settings(max_examples=300, deadline=None)
@given(INITIAL, st.randoms(use_true_random=False), st.lists(OPS, min_size=15, max_size=60))
def test_random_operations_keep_the_invariants(
    initial: list[tuple[str, str, int, DeliveryEvent]], rng: random.Random, ops: list[tuple]
) -> None:
    box = Outbox(RetryPolicy(base=1.0, cap=8.0, dead_after=3), rnd=rng.random)
    seqs = {seq: kg for _, kg, seq, _ in initial}  # one kindergarten per alarm, like real alarms
    deliveries = [Delivery(f"a{seq}", sink, event, seqs[seq], seq, 0.0) for sink, _, seq, event in initial]
    rng.shuffle(deliveries)
    added: dict[str, int] = defaultdict(int)
    for d in deliveries:
        assert box.add(d)
        added[d.sink] += 1
    delivered: dict[str, int] = defaultdict(int)
    in_flight: set[DeliveryKey] = set()
    ever_parked: set[DeliveryKey] = set()
    success_order: dict[tuple[str, str], list[tuple[int, int, DeliveryKey]]] = defaultdict(list)
    next_seq = max(seqs, default=0) + 1
    now = 0.0

    for op in ops:
        flying = sorted(in_flight)
        if op[0] == "take":
            _, sink, limit = op
            due = sorted((d for d in _expected_heads(box, in_flight, sink) if d.next_attempt_at <= now), key=_order)
            got = box.take_due(sink, now, limit)
            assert [d.key for d in got] == [d.key for d in due[:limit]]
            in_flight.update(d.key for d in got)
        elif op[0] in ("ok", "fail", "release") and flying:
            k = flying[op[1] % len(flying)]
            in_flight.discard(k)
            if op[0] == "ok":
                d = box.succeeded(k, now)
                delivered[d.sink] += 1
                if k not in ever_parked:
                    success_order[(d.sink, d.order_key)].append(_order(d))
            elif op[0] == "fail":
                d = box.failed(k, now, "boom", permanent=op[2])
                if op[2]:
                    ever_parked.add(k)
                else:
                    assert d.next_attempt_at >= now
                    assert (d.state is DeliveryState.DEAD) == (d.attempts >= 3)
            else:
                assert box.release(k)
        elif op[0] == "tick":
            now += op[1]
        elif op[0] == "retry":
            parked = box.parked()
            if parked:
                d = box.retry_now(parked[op[1] % len(parked)].key, now)
                assert d.state is DeliveryState.PENDING
        elif op[0] == "retry_any":
            everything = list(box.pending())
            if everything:
                d = everything[op[1] % len(everything)]
                before = DeliveryState.PENDING if d in box.parked() else d.state
                assert box.retry_now(d.key, now).next_attempt_at == now
                assert d.state is before
        elif op[0] == "add":
            _, sink, kg, _ = op
            box.add(Delivery(f"a{next_seq}", sink, ALARM, kg, next_seq, now, next_attempt_at=now))
            added[sink] += 1
            next_seq += 1

        # invariants
        per_queue: dict[tuple[str, str], int] = defaultdict(int)
        for k in in_flight:
            flying_d = box.get(k)
            assert flying_d is not None
            per_queue[(flying_d.sink, flying_d.order_key)] += 1
        assert all(n == 1 for n in per_queue.values())
        timers = []
        for sink in SINKS:
            assert box.in_flight(sink) == sum(1 for k in in_flight if k[1] == sink)
            assert box.depth(sink) == added[sink] - delivered[sink]
            pending = list(box.pending(sink))
            assert len(pending) == box.depth(sink)
            assert box.dead_count(sink) == sum(d.state is DeliveryState.DEAD for d in pending)
            assert all(d.state is DeliveryState.DEAD for d in box.parked(sink))
            heads = [d.next_attempt_at for d in _expected_heads(box, in_flight, sink)]
            assert box.get_timer(sink) == min(heads, default=None)
            timers.extend(heads)
        assert box.get_timer() == min(timers, default=None)
    for order in success_order.values():
        assert order == sorted(order)
