"""The alarm store on both backends (SQLite, PostgreSQL): round trips, atomic intake, outbox reloads,
filters, durability, concurrency; several nodes on one database."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path

import pytest

from gateway.alarms.model import (
    MAX_ALARM_PAGE,
    Alarm,
    AlarmFilter,
    AlarmMethod,
    AlarmState,
    Delivery,
    DeliveryEvent,
    DeliveryState,
    Transition,
    TransitionAction,
)
from gateway.alarms.store import AlarmStore, open_alarm_store
from gateway.errors import StoreError
from gateway.registry import (
    Device,
    EntityKind,
    InvalidFilter,
    StatusEvent,
    StoreConstraintError,
)
from gateway.registry.pg_alarms import PgAlarmStore
from gateway.registry.sqlite_alarms import SqliteAlarmStore
from gateway.registry.sqlite_schema import MIGRATIONS
from gateway.registry.sqlite_store import SqliteStore
from simulators.postgres import PostgresServer

DISTRICTS = ("120101", "120102", "120103")
KINDERGARTENS = ("12010100112160000001", "12010200112160000002", None)
SINKS = ("mqtt", "webhook")


def make_alarm(n: int, **changes: object) -> Alarm:
    """Alarm number ``n`` (seq n) of a small varied city; ``changes`` override fields."""
    alarm = Alarm(
        id=f"alarm-{n:06d}",
        seq=n,
        dedupe_key=f"dev{n % 7}|src|2|{n}",
        device_id=f"3402000000132000{n % 7:04d}",
        source_id=f"3402000000134000{n % 7:04d}",
        kindergarten_id=KINDERGARTENS[n % 3],
        district_code=DISTRICTS[n % 3],
        priority=1,
        method=int(AlarmMethod.DEVICE),
        alarm_type=None,
        event_type=None,
        alarm_time="2024-05-01T08:00:00",
        description="一键报警",
        longitude=None,
        latitude=None,
        sn=n,
        received_at=1_000.0 + n,
    )
    return replace(alarm, **changes)  # type: ignore[arg-type]


def deliveries_for(alarm: Alarm, event: DeliveryEvent = DeliveryEvent.ALARM) -> list[Delivery]:
    return [Delivery(alarm.id, sink, event, alarm.order_key, alarm.seq, alarm.received_at) for sink in SINKS]


def received(alarm: Alarm) -> Transition:
    return Transition(alarm.id, alarm.received_at, TransitionAction.RECEIVED, "system", "")


def intake(store: AnyStore, *alarms: Alarm) -> None:
    """Save alarms the way intake does: each with two deliveries and a 'received' line."""
    store.save_intake(list(alarms), [d for a in alarms for d in deliveries_for(a)], [received(a) for a in alarms])


AnyStore = SqliteAlarmStore | PgAlarmStore


@pytest.fixture
def store(db_url: str) -> Iterator[AnyStore]:
    """A migrated alarm store, once on SQLite and once on PostgreSQL."""
    s = open_alarm_store(db_url)
    assert isinstance(s, SqliteAlarmStore | PgAlarmStore)
    yield s
    s.close()


def _scalar(store: AnyStore, sql: str) -> object:
    with store._transaction(write=False) as conn:
        return conn.execute(sql).fetchone()[0]


def _count(store: AnyStore, table: str) -> int:
    return int(str(_scalar(store, f"SELECT COUNT(*) FROM {table}")))


# --- schema -----------------------------------------------------------------------


@pytest.fixture
def sqlite_store() -> Iterator[SqliteAlarmStore]:
    """The SQLite store in memory, for what only SQLite has (pragmas, query plans)."""
    s = SqliteAlarmStore(":memory:")
    s.open()
    s.migrate()
    yield s
    s.close()


def test_alarm_store_satisfies_the_protocol(store: AnyStore) -> None:
    assert isinstance(store, AlarmStore)


def test_columns_equal_model_fields() -> None:
    conn = sqlite3.connect(":memory:")
    for script in MIGRATIONS:
        conn.executescript(script)
    for table, model in (("alarm", Alarm), ("alarm_delivery", Delivery)):
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        assert columns == [f.name for f in fields(model)]
    columns = [row[1] for row in conn.execute("PRAGMA table_info(alarm_transition)")]
    assert columns == ["seq", *(f.name for f in fields(Transition))]
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {
        "alarm_received",
        "alarm_district",
        "alarm_kindergarten",
        "alarm_state",
        "alarm_delivery_state",
        "alarm_delivery_open",
        "alarm_transition_alarm",
    } <= indexes
    assert "alarm_dedupe" not in indexes  # v4: dedupe is per session, in memory (issue 10, C4)


def test_open_deliveries_query_uses_the_partial_index(sqlite_store: SqliteAlarmStore) -> None:
    from gateway.registry.sqlite_alarms import _OPEN_DELIVERIES

    assert sqlite_store._conn is not None
    plan = " ".join(
        str(r[3]) for r in sqlite_store._conn.execute(f"EXPLAIN QUERY PLAN {_OPEN_DELIVERIES}", ("gateway",))
    )
    assert "alarm_delivery_open" in plan and "TEMP B-TREE" not in plan


# --- round trips --------------------------------------------------------------------


def test_alarm_round_trip_of_every_field(store: AnyStore) -> None:
    full = Alarm(
        id="alarm-中文-1",
        seq=7,
        dedupe_key="34020000001320000001|34020000001340000001|5|6|2024-05-01T08:00:00",
        device_id="34020000001320000001",
        source_id="34020000001340000001",
        kindergarten_id="12010100112160000001",
        district_code="120101",
        priority=4,
        method=AlarmMethod.VIDEO,
        alarm_type=6,
        event_type=1,
        alarm_time="2024-05-01T08:00:00",
        description="周界入侵：东侧围墙 · 摄像机 3",
        longitude=117.200983,
        latitude=39.084158,
        sn=4_294_967_295,
        received_at=1_714_521_600.123,
        state=AlarmState.RESOLVED,
        escalated_at=1_714_521_900.5,
        acknowledged_by="值班员 张三",
        acknowledged_at=1_714_522_000.25,
        resolved_by="李四",
        resolved_at=1_714_523_000.75,
        sender_registered=False,
        problems=("时间格式错误", "unknown AlarmType 99", ""),
    )
    bare = Alarm(
        id="alarm-2",
        seq=8,
        dedupe_key="k",
        device_id="d",
        source_id="s",
        kindergarten_id=None,
        district_code="",
        priority=None,
        method=None,
        alarm_type=None,
        event_type=None,
        alarm_time=None,
        description="",
        longitude=None,
        latitude=None,
        sn=0,
        received_at=0.0,
    )
    store.save_intake([full, bare], [], [])
    got_full, got_bare = store.get_alarm(full.id), store.get_alarm(bare.id)
    assert got_full == full and got_bare == bare
    assert got_full is not None and got_bare is not None
    assert got_full.state is AlarmState.RESOLVED and got_full.problems == full.problems
    assert got_full.sender_registered is False and got_bare.sender_registered is True
    assert got_bare.problems == () and got_bare.state is AlarmState.NEW
    assert got_full.kind == full.kind
    assert store.get_alarm("nope") is None
    assert _scalar(store, "SELECT problems FROM alarm WHERE seq = 8") == "[]"


def test_every_alarm_state_round_trips(store: AnyStore) -> None:
    alarms = [make_alarm(i + 1, state=state) for i, state in enumerate(AlarmState)]
    store.save_intake(alarms, [], [])
    for alarm in alarms:
        got = store.get_alarm(alarm.id)
        assert got == alarm and got is not None and type(got.state) is AlarmState


def test_every_delivery_event_and_state_round_trips(store: AnyStore) -> None:
    alarm = make_alarm(1)
    deliveries = [
        Delivery(
            alarm.id,
            f"sink-{state.value}",
            event,
            "幼儿园-1",
            alarm.seq,
            10.5,
            state,
            attempts=3,
            next_attempt_at=99.25,
            last_error="连接被拒绝 (111)" if state is not DeliveryState.DELIVERED else "",
            delivered_at=12.0 if state is DeliveryState.DELIVERED else None,
        )
        for event in DeliveryEvent
        for state in DeliveryState
    ]
    store.save_intake([alarm], deliveries, [])
    got = store.deliveries_of(alarm.id)
    assert got == sorted(deliveries, key=lambda d: (d.sink, d.event.value))
    assert all(type(d.event) is DeliveryEvent and type(d.state) is DeliveryState for d in got)


def test_every_transition_action_round_trips_in_append_order(store: AnyStore) -> None:
    alarm = make_alarm(1)
    lines = [
        Transition(alarm.id, 5.0, action, "值班员" if i % 2 else "system", f"第{i}步")
        for i, action in enumerate(TransitionAction)
    ]
    store.save_intake([alarm], [], lines[:1])
    store.save_progress([], [], lines[1:4])
    store.save_progress([], [], lines[4:])
    got = store.transitions_of(alarm.id)
    assert got == lines  # same `at` everywhere: append order decides
    assert all(type(t.action) is TransitionAction for t in got)
    assert store.transitions_of("other") == []


# --- writes ---------------------------------------------------------------------------


def test_save_intake_is_atomic_on_a_duplicate_id(store: AnyStore) -> None:
    first = make_alarm(1)
    intake(store, first)
    batch = [make_alarm(2), make_alarm(3), make_alarm(4, id=first.id), make_alarm(5)]
    with pytest.raises(StoreConstraintError):
        intake(store, *batch)
    for alarm in batch[:2] + batch[3:]:
        assert store.get_alarm(alarm.id) is None
        assert store.deliveries_of(alarm.id) == []
        assert store.transitions_of(alarm.id) == []
    assert store.get_alarm(first.id) == first  # untouched, not overwritten
    assert len(store.deliveries_of(first.id)) == 2 and len(store.transitions_of(first.id)) == 1
    assert (_count(store, "alarm"), _count(store, "alarm_delivery"), _count(store, "alarm_transition")) == (1, 2, 1)
    assert store.max_seq() == 1
    intake(store, *(replace(a, id=f"retry-{a.seq}") for a in batch))  # the store is still usable
    assert store.max_seq() == 5


def test_save_intake_rejects_duplicates_inside_one_batch_and_orphans(store: AnyStore) -> None:
    with pytest.raises(StoreConstraintError):
        intake(store, make_alarm(1), make_alarm(1, seq=2))  # same id twice
    with pytest.raises(StoreConstraintError):
        intake(store, make_alarm(1), make_alarm(2, seq=1))  # same seq twice
    orphan = Delivery("ghost", "mqtt", DeliveryEvent.ALARM, "k", 1, 1.0)
    with pytest.raises(StoreConstraintError):  # foreign key: a delivery needs its alarm
        store.save_intake([make_alarm(3)], [orphan], [])
    assert _count(store, "alarm") == 0 and _count(store, "alarm_delivery") == 0


def test_save_progress_upserts_alarms_and_deliveries_and_appends_transitions(store: AnyStore) -> None:
    alarm = make_alarm(1)
    intake(store, alarm)
    mqtt, webhook = deliveries_for(alarm)
    mqtt.state, mqtt.attempts, mqtt.delivered_at = DeliveryState.DELIVERED, 1, 1_002.0
    webhook.state, webhook.attempts, webhook.last_error = DeliveryState.DEAD, 8, "HTTP 400"
    webhook.next_attempt_at = 2_000.0
    escalated = replace(alarm, escalated_at=1_300.0)
    escalation = deliveries_for(alarm, DeliveryEvent.ESCALATED)
    lines = [
        Transition(alarm.id, 1_002.0, TransitionAction.DELIVERED, detail="mqtt"),
        Transition(alarm.id, 1_003.0, TransitionAction.DEAD_LETTERED, detail="webhook"),
        Transition(alarm.id, 1_300.0, TransitionAction.ESCALATED),
    ]
    store.save_progress([escalated], [mqtt, webhook, *escalation], lines)
    assert store.get_alarm(alarm.id) == escalated
    assert store.deliveries_of(alarm.id) == sorted([mqtt, webhook, *escalation], key=lambda d: (d.sink, d.event.value))
    assert store.transitions_of(alarm.id) == [received(alarm), *lines]

    resolved = replace(
        escalated,
        state=AlarmState.RESOLVED,
        acknowledged_by="张三",
        acknowledged_at=1_400.0,
        resolved_by="张三",
        resolved_at=1_500.0,
        problems=("late",),
    )
    store.save_progress([resolved], [], [Transition(alarm.id, 1_500.0, TransitionAction.RESOLVED, "张三")])
    assert store.get_alarm(alarm.id) == resolved
    assert len(store.transitions_of(alarm.id)) == 5
    assert _count(store, "alarm") == 1 and _count(store, "alarm_delivery") == 4
    new = make_alarm(2)
    store.save_progress([new], [], [])  # an upsert also inserts
    assert store.get_alarm(new.id) == new and store.max_seq() == 2


def test_save_progress_is_atomic(store: AnyStore) -> None:
    alarm = make_alarm(1)
    intake(store, alarm)
    orphan = Delivery("ghost", "mqtt", DeliveryEvent.ALARM, "k", 9, 1.0)
    changed = replace(alarm, state=AlarmState.DELIVERED)
    with pytest.raises(StoreConstraintError):
        store.save_progress([changed], [orphan], [Transition(alarm.id, 2.0, TransitionAction.ALL_DELIVERED)])
    assert store.get_alarm(alarm.id) == alarm
    assert store.transitions_of(alarm.id) == [received(alarm)]


def test_max_seq(store: AnyStore) -> None:
    assert store.max_seq() == 0
    intake(store, make_alarm(5), make_alarm(3))
    assert store.max_seq() == 5


# --- startup reloads ----------------------------------------------------------------------


def test_load_open_deliveries_keeps_pending_and_dead_in_order(store: AnyStore) -> None:
    alarms = [make_alarm(n) for n in (3, 1, 2)]
    intake(store, *alarms)
    by_seq = {a.seq: a for a in alarms}
    m1, w1 = deliveries_for(by_seq[1])
    m2, w2 = deliveries_for(by_seq[2])
    m3, w3 = deliveries_for(by_seq[3])
    m1.state = DeliveryState.DELIVERED
    w1.state = DeliveryState.DEAD
    m2.state = w2.state = DeliveryState.DELIVERED
    w3.attempts, w3.next_attempt_at, w3.last_error = 2, 1_050.0, "timeout"
    esc_m, esc_w = deliveries_for(by_seq[1], DeliveryEvent.ESCALATED)
    store.save_progress([], [m1, w1, m2, w2, w3, esc_w, esc_m], [])
    # (seq, sink, event): seq 1's mqtt alarm is delivered, all of seq 2 is delivered.
    assert store.load_open_deliveries() == [esc_m, w1, esc_w, m3, w3]


def test_load_open_deliveries_when_nothing_is_open(store: AnyStore) -> None:
    assert store.load_open_deliveries() == []
    alarm = make_alarm(1)
    intake(store, alarm)
    done = deliveries_for(alarm)
    for d in done:
        d.state = DeliveryState.DELIVERED
    store.save_progress([], done, [])
    assert store.load_open_deliveries() == []


def test_load_alarms_since_keeps_old_unresolved_alarms(store: AnyStore) -> None:
    old_new = make_alarm(1, received_at=100.0)
    old_delivered = make_alarm(2, received_at=100.0, state=AlarmState.DELIVERED)
    old_acked = make_alarm(3, received_at=100.0, state=AlarmState.ACKNOWLEDGED)
    old_resolved = make_alarm(4, received_at=100.0, state=AlarmState.RESOLVED)
    recent_resolved = make_alarm(5, received_at=500.0, state=AlarmState.RESOLVED)
    boundary_resolved = make_alarm(6, received_at=400.0, state=AlarmState.RESOLVED)
    recent_new = make_alarm(7, received_at=600.0)
    store.save_intake(
        [recent_new, old_resolved, recent_resolved, old_new, boundary_resolved, old_acked, old_delivered], [], []
    )
    got = store.load_alarms_since(400.0)
    assert got == [old_new, old_delivered, old_acked, recent_resolved, boundary_resolved, recent_new]
    assert store.load_alarms_since(1e12) == [old_new, old_delivered, old_acked, recent_new]
    assert store.load_alarms_since(0.0) == sorted(got + [old_resolved], key=lambda a: a.seq)


# --- list queries -----------------------------------------------------------------------------


@pytest.fixture
def city(store: AnyStore) -> tuple[AnyStore, list[Alarm]]:
    """90 alarms across 3 districts and kindergartens (one kindergarten-less), every state."""
    states = list(AlarmState)
    alarms = [
        make_alarm(
            n,
            state=states[(n // 3) % len(states)],
            escalated_at=None if n % 5 else 2_000.0 + n,
        )
        for n in range(1, 91)
    ]
    intake(store, *alarms)
    return store, alarms


def _expected(alarms: list[Alarm], flt: AlarmFilter) -> list[Alarm]:
    def keep(a: Alarm) -> bool:
        return (
            (flt.district_code is None or a.district_code == flt.district_code)
            and (flt.kindergarten_id is None or a.kindergarten_id == flt.kindergarten_id)
            and (flt.state is None or a.state == flt.state)
            and (flt.since is None or a.received_at >= flt.since)
            and (flt.until is None or a.received_at < flt.until)
            and (flt.escalated is None or (a.escalated_at is not None) == flt.escalated)
        )

    return sorted(filter(keep, alarms), key=lambda a: -a.seq)


FILTERS = [
    AlarmFilter(),
    AlarmFilter(district_code="120102"),
    AlarmFilter(district_code="999999"),
    AlarmFilter(kindergarten_id=KINDERGARTENS[0]),
    AlarmFilter(state=AlarmState.NEW),
    AlarmFilter(state=AlarmState.ACKNOWLEDGED),
    AlarmFilter(since=1_030.0),
    AlarmFilter(until=1_030.0),
    AlarmFilter(since=1_010.0, until=1_020.0),
    AlarmFilter(escalated=True),
    AlarmFilter(escalated=False),
    AlarmFilter(district_code="120101", state=AlarmState.RESOLVED, escalated=True),
    AlarmFilter(kindergarten_id=KINDERGARTENS[1], since=1_020.0, until=1_080.0, escalated=False),
    AlarmFilter(
        district_code="120103", kindergarten_id=KINDERGARTENS[0], state=AlarmState.NEW
    ),  # contradictory: nothing
]


@pytest.mark.parametrize("flt", FILTERS, ids=repr)
def test_list_alarms_filters(city: tuple[AnyStore, list[Alarm]], flt: AlarmFilter) -> None:
    store, alarms = city
    expected = _expected(alarms, flt)
    page = store.list_alarms(flt)
    assert list(page.items) == expected[: flt.limit]
    assert page.total == len(expected)
    assert (page.offset, page.limit) == (flt.offset, flt.limit)


def test_list_alarms_filters_select_something(city: tuple[AnyStore, list[Alarm]]) -> None:
    """Guards the parametrized test against vacuous filters."""
    _, alarms = city
    sizes = [len(_expected(alarms, f)) for f in FILTERS]
    assert sizes[0] == 90 and sizes[2] == 0 and sizes[-1] == 0
    assert all(0 < n < 90 for n in sizes[1:2] + sizes[3:-1])


def test_list_alarms_pagination(city: tuple[AnyStore, list[Alarm]]) -> None:
    store, alarms = city
    flt = AlarmFilter(district_code="120101", limit=7)
    expected = _expected(alarms, flt)
    seen: list[Alarm] = []
    offset = 0
    while True:
        page = store.list_alarms(replace(flt, offset=offset))
        assert page.total == len(expected) == 30
        if not page.items:
            break
        assert len(page.items) <= 7
        seen.extend(page.items)
        offset += 7
    assert seen == expected
    assert store.list_alarms(AlarmFilter(offset=1_000)).items == ()
    assert store.list_alarms(AlarmFilter(limit=MAX_ALARM_PAGE)).total == 90
    assert [a.seq for a in store.list_alarms(AlarmFilter(limit=3)).items] == [90, 89, 88]


@pytest.mark.parametrize(
    "flt", [AlarmFilter(limit=0), AlarmFilter(limit=MAX_ALARM_PAGE + 1), AlarmFilter(offset=-1)], ids=repr
)
def test_list_alarms_rejects_a_bad_page(store: AnyStore, flt: AlarmFilter) -> None:
    with pytest.raises(InvalidFilter):
        store.list_alarms(flt)


def test_list_deliveries_by_state_and_sink(store: AnyStore) -> None:
    alarms = [make_alarm(n) for n in range(1, 11)]
    intake(store, *alarms)
    changed: list[Delivery] = []
    for alarm in alarms:
        mqtt, webhook = deliveries_for(alarm)
        mqtt.state = DeliveryState.DELIVERED
        if alarm.seq % 3 == 0:
            webhook.state = DeliveryState.DEAD
        changed += [mqtt, webhook]
    store.save_progress([], changed, [])

    everything = store.list_deliveries(None, None, 0, 100)
    assert everything.total == 20
    assert [(d.seq, d.sink) for d in everything.items] == [(n, s) for n in range(1, 11) for s in SINKS]
    dead = store.list_deliveries("dead", None, 0, 100)
    assert [d.seq for d in dead.items] == [3, 6, 9] and dead.total == 3
    assert all(d.sink == "webhook" and d.state is DeliveryState.DEAD for d in dead.items)
    assert store.list_deliveries(DeliveryState.DEAD, "mqtt", 0, 100).total == 0
    of_webhook = store.list_deliveries(None, "webhook", 0, 100)
    assert of_webhook.total == 10 and {d.sink for d in of_webhook.items} == {"webhook"}
    pending = store.list_deliveries("pending", "webhook", 1, 2)
    assert [d.seq for d in pending.items] == [2, 4] and pending.total == 7
    assert (pending.offset, pending.limit) == (1, 2)
    assert store.list_deliveries(None, "gb", 0, 10).items == ()
    for bad in ((None, None, 0, 0), (None, None, -1, 10), (None, None, 0, MAX_ALARM_PAGE + 1)):
        with pytest.raises(InvalidFilter):
            store.list_deliveries(*bad)
    with pytest.raises(InvalidFilter, match="unknown delivery state"):
        store.list_deliveries("daed", None, 0, 10)


# --- durability, pragmas, errors ---------------------------------------------------------------------


def test_file_database_survives_close_and_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "kgw.db")
    alarms = [make_alarm(n, problems=("重复 SN",) if n == 2 else ()) for n in range(1, 4)]
    with SqliteAlarmStore(path) as s:
        s.migrate()
        intake(s, *alarms)
        acked = replace(alarms[0], state=AlarmState.ACKNOWLEDGED, acknowledged_by="王五", acknowledged_at=9.0)
        s.save_progress([acked], [], [Transition(acked.id, 9.0, TransitionAction.ACKNOWLEDGED, "王五")])
        before = (
            [s.get_alarm(a.id) for a in alarms],
            s.load_open_deliveries(),
            [s.transitions_of(a.id) for a in alarms],
        )
    with SqliteAlarmStore(path) as s:
        assert s.migrate() == 0
        after = (
            [s.get_alarm(a.id) for a in alarms],
            s.load_open_deliveries(),
            [s.transitions_of(a.id) for a in alarms],
        )
        assert after == before
        assert after[0][0] == acked and after[0][1] == alarms[1]
        assert len(after[1]) == 6 and s.max_seq() == 3


def test_alarm_connection_is_fsynced_on_every_commit(tmp_path: Path) -> None:
    path = str(tmp_path / "kgw.db")
    with SqliteAlarmStore(path) as alarms, SqliteStore(path) as registry:
        alarms.migrate()
        assert alarms._conn is not None and registry._conn is not None
        assert alarms._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert registry._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL, unchanged
        assert alarms.journal_mode == "wal"
        assert alarms._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        alarms.open()  # idempotent, still FULL
        assert alarms._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_registry_and_alarm_stores_write_one_file_from_two_threads(tmp_path: Path) -> None:
    path = str(tmp_path / "kgw.db")
    registry = SqliteStore(path)
    registry.open()
    registry.migrate()
    alarms = SqliteAlarmStore(path)
    alarms.open()
    rounds = 200
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def write_registry() -> None:
        registry.upsert_devices([Device("34020000001320000001", None, "120101")])
        for i in range(rounds):
            registry.append_status_events([StatusEvent("34020000001320000001", EntityKind.DEVICE, i % 2 == 0, i)])
            registry.update_presence([("34020000001320000001", i % 2 == 0, float(i))])

    def write_alarms() -> None:
        for n in range(1, rounds + 1):
            intake(alarms, make_alarm(n))

    def run(target: Callable[[], None]) -> None:
        try:
            start.wait()
            target()
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in (write_registry, write_alarms)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert alarms.max_seq() == rounds
        assert len(alarms.load_open_deliveries()) == 2 * rounds
        assert len(registry.list_status_events(limit=1_000)) == rounds
    finally:
        alarms.close()
        registry.close()


def test_open_alarm_store_urls(tmp_path: Path) -> None:
    for url in (":memory:", f"sqlite:///{tmp_path}/a.db"):
        s = open_alarm_store(url)
        try:
            assert isinstance(s, SqliteAlarmStore)
            assert s.schema_version() == len(MIGRATIONS)
            intake(s, make_alarm(1))
            assert s.max_seq() == 1
        finally:
            s.close()
    assert (tmp_path / "a.db").exists()
    with pytest.raises(StoreError, match="cannot connect"):  # nobody listens there
        PgAlarmStore("postgresql://kgw:secret@127.0.0.1:9/kgw", timeout=0.5).open()


def test_alarm_store_migrates_a_registry_database_in_place(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    with SqliteStore(path) as old:
        assert old.migrate(target=2) == 2
        old.upsert_devices([Device("d1", None, "120101", "旧设备")])
    s = open_alarm_store(path)
    try:
        assert isinstance(s, SqliteAlarmStore)
        assert s.schema_version() == len(MIGRATIONS)
        assert s.get_device("d1") is not None
    finally:
        s.close()


def test_failures_come_out_as_store_errors(tmp_path: Path) -> None:
    s = SqliteAlarmStore(":memory:")
    with pytest.raises(StoreError):  # not open
        s.max_seq()
    s.open()
    with pytest.raises(StoreError):  # not migrated: no such table
        s.get_alarm("a")
    with pytest.raises(StoreError):
        intake(s, make_alarm(1))
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError):
        s.list_alarms(AlarmFilter())
    with pytest.raises(StoreError):
        SqliteAlarmStore(str(tmp_path / "missing" / "dir" / "x.db")).open()


# --- several nodes on one database (issue 12) ----------------------------------------------------------


def _open(url: str, node: str) -> AnyStore:
    s = open_alarm_store(url, node)
    assert isinstance(s, SqliteAlarmStore | PgAlarmStore) and s.node == node
    return s


def _numbered(store: AnyStore, count: int, prefix: str) -> list[Alarm]:
    """``count`` alarms numbered the way intake numbers them: from a block the store reserved."""
    first = store.reserve_seqs(count)
    return [make_alarm(first + i, id=f"{prefix}-{first + i}", node=store.node) for i in range(count)]


def test_two_nodes_reload_only_their_own_alarms_and_list_everyone_s(db_url: str) -> None:
    north, south = _open(db_url, "north"), _open(db_url, "south")
    try:
        mine, theirs = _numbered(north, 4, "n"), _numbered(south, 3, "s")
        intake(north, *mine)
        intake(south, *theirs)
        assert {a.seq for a in mine}.isdisjoint(a.seq for a in theirs)
        assert {d.alarm_id for d in north.load_open_deliveries()} == {a.id for a in mine}
        assert {d.alarm_id for d in south.load_open_deliveries()} == {a.id for a in theirs}
        assert north.load_alarms_since(0.0) == sorted(mine, key=lambda a: a.seq)
        assert south.load_alarms_since(0.0) == sorted(theirs, key=lambda a: a.seq)
        for s in (north, south):  # the API on any node shows the whole city
            page = s.list_alarms(AlarmFilter(limit=100))
            assert page.total == 7 and {a.id for a in page.items} == {a.id for a in mine + theirs}
            assert s.get_alarm(theirs[0].id) == theirs[0] and s.get_alarm(mine[0].id) == mine[0]
            assert s.list_deliveries(None, None, 0, 100).total == 14
        # An operator on the south node acknowledges a north alarm: it stays north's.
        acked = replace(mine[0], state=AlarmState.ACKNOWLEDGED, acknowledged_by="张三", node="south")
        south.save_progress([acked], [], [])
        stored = north.get_alarm(mine[0].id)
        assert stored is not None and stored.node == "north" and stored.state is AlarmState.ACKNOWLEDGED
        assert len(north.load_alarms_since(1e12)) == 4 and south.load_alarms_since(1e12) == theirs
    finally:
        north.close()
        south.close()


def test_intake_stores_an_alarm_as_the_store_s_node(db_url: str) -> None:
    with _open(db_url, "east") as east:
        alarm = make_alarm(east.reserve_seqs(1))  # intake forgot the node: the store's own wins
        intake(east, alarm)
        assert east.get_alarm(alarm.id) == replace(alarm, node="east")
        assert [d.alarm_id for d in east.load_open_deliveries()] == [alarm.id, alarm.id]


def test_seq_blocks_never_overlap_when_nodes_reserve_at_once(db_url: str) -> None:
    stores = [_open(db_url, f"node-{i}") for i in range(3)]
    got: dict[str, list[int]] = {s.node: [] for s in stores}
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def reserve(s: AnyStore) -> None:
        try:
            start.wait()
            for _ in range(40):
                first = s.reserve_seqs(5)
                got[s.node].extend(range(first, first + 5))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=reserve, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == [] and not any(t.is_alive() for t in threads)
        every = [seq for seqs in got.values() for seq in seqs]
        assert len(every) == len(set(every)) == 3 * 40 * 5
        for seqs in got.values():
            assert seqs == sorted(seqs)  # one node's seqs only grow: its delivery order is its receipt order
    finally:
        for s in stores:
            s.close()


def test_reserved_seqs_start_above_every_stored_seq(store: AnyStore) -> None:
    intake(store, make_alarm(41))  # stored by a node that numbered it itself (older code)
    first = store.reserve_seqs(10)
    assert first == 42
    assert store.reserve_seqs(1) == 52
    with pytest.raises(StoreError):
        store.reserve_seqs(0)


def _unmigrated(db_url: str) -> AnyStore:
    if db_url.startswith("postgresql"):
        return PgAlarmStore(db_url)
    return SqliteAlarmStore(db_url.removeprefix("sqlite:///"))


def test_migration_v6_gives_old_alarms_to_the_default_node(db_url: str) -> None:
    with _unmigrated(db_url) as v5:
        assert v5.migrate(target=5) == 5
        with v5._transaction() as conn:  # an alarm stored by the single-node code
            conn.execute(
                "INSERT INTO alarm (id, seq, dedupe_key, device_id, source_id, district_code, sn, received_at)"
                " VALUES ('old', 41, 'k', 'd', 's', '120101', 1, 5.0)"
            )
        assert v5.migrate() == len(MIGRATIONS) - 5
        assert v5.schema_version() == len(MIGRATIONS)
        stored = v5.get_alarm("old")
        assert stored is not None and stored.node == "gateway"
        assert v5.reserve_seqs(3) == 42
        assert [a.id for a in v5.load_alarms_since(0.0)] == ["old"]


def test_pg_commits_are_durable_even_when_the_database_says_otherwise(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with PgAlarmStore(postgres_url) as s:
        assert s.commit_setting == "on" and s.durable_by_default
    database = postgres_url.rsplit("/", 1)[1]
    postgres_server.sql("postgres", f"ALTER DATABASE {database} SET synchronous_commit = off")
    with PgAlarmStore(postgres_url) as s:
        assert s.commit_setting == "off" and not s.durable_by_default
        s.migrate()
        with s._transaction() as conn:  # every write transaction of the alarm store turns it back on
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        with s._transaction(write=False) as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"
        intake(s, make_alarm(s.reserve_seqs(1)))
        assert s.max_seq() == 1
