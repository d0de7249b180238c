"""The registry store on both backends: CRUD, filters, pagination, batches, counts, migrations.

Store-level tests take the ``store``/``city`` fixtures (or ``db_url``) and run once on
SQLite and once on a real PostgreSQL; SQLite's file behaviour (WAL, pragmas, busy
close) is tested on SQLite only. PostgreSQL's own behaviour (concurrent migration,
reconnects, connection errors) is in tests/integration/test_pg_store.py.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.errors import StoreError
from gateway.registry import (
    AreaTag,
    Channel,
    ChannelFilter,
    Device,
    DeviceFilter,
    DistrictCount,
    EntityKind,
    InvalidFilter,
    Kindergarten,
    PresenceCounts,
    StatusEvent,
    Store,
    StoreConstraintError,
)
from gateway.registry.backends import open_store, sqlite_path
from gateway.registry.model import CONFIRMATION_FIELDS, AreaConfirmation
from gateway.registry.pg_store import PgStore
from gateway.registry.sqlite_schema import MIGRATIONS
from gateway.registry.sqlite_store import SqliteStore
from simulators.postgres import PostgresServer

DISTRICTS = ["120101", "120102", "120103", "120104", "120105", "120106", "120110", "120111"]
AREAS = list(AreaTag)
N_KG = 200
DEVICES_PER_KG = 10  # 2,000 devices
CHANNELS_PER_DEVICE = 10  # 20,000 channels


def kg_id(k: int) -> str:
    return f"{DISTRICTS[k % len(DISTRICTS)]}0011216{k:07d}"


def dev_id(k: int, n: int) -> str:
    return f"{DISTRICTS[k % len(DISTRICTS)]}0011132{k * DEVICES_PER_KG + n:07d}"


def make_city() -> tuple[list[Kindergarten], list[Device], list[Channel]]:
    kgs, devices, channels = [], [], []
    for k in range(N_KG):
        district = DISTRICTS[k % len(DISTRICTS)]
        kgs.append(Kindergarten(kg_id(k), f"{district}区第{k}幼儿园", district, "天津市某路1号"))
        for n in range(DEVICES_PER_KG):
            did = dev_id(k, n)
            devices.append(Device(did, kg_id(k), district, f"NVR {n}", 118, online=(n % 2 == 0)))
            for c in range(CHANNELS_PER_DEVICE):
                serial = (k * DEVICES_PER_KG + n) * CHANNELS_PER_DEVICE + c
                channels.append(
                    Channel(
                        f"{district}0011131{serial:07d}",
                        did,
                        kg_id(k),
                        district,
                        name=f"通道{c}",
                        area=AREAS[c % len(AREAS)],
                        type_code=131,
                        online=(c % 3 == 0),
                    )
                )
    return kgs, devices, channels


City = tuple[Store, list[Device], list[Channel]]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def city(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    """A read-only populated store shared by the query tests (built once per backend: fast)."""
    kgs, devices, channels = make_city()
    if request.param == "sqlite":
        url = str(tmp_path_factory.mktemp("city") / "city.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database(f"city_{next(_city_numbers)}")
    store = open_store(url)
    started = time.perf_counter()
    assert store.upsert_kindergartens(kgs) == N_KG
    assert store.upsert_devices(devices) == len(devices)
    assert store.upsert_channels(channels) == len(channels)
    print(f"loaded {len(devices)} devices, {len(channels)} channels in {time.perf_counter() - started:.3f}s")
    yield store, devices, channels
    store.close()


_city_numbers = itertools.count(1)
T = TypeVar("T")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated empty store, once per backend."""
    s = open_store(db_url)
    yield s
    s.close()


def test_store_satisfies_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert isinstance(store, (SqliteStore, PgStore))


def _version_table(store: Store) -> str:
    return "kgw_schema" if isinstance(store, PgStore) else "schema_version"


def _sql(store: Store, statement: str) -> list[tuple[object, ...]]:
    """Run raw SQL on the store's own database (tests only)."""
    if isinstance(store, SqliteStore):
        assert store._conn is not None
        return list(store._conn.execute(statement).fetchall())
    assert isinstance(store, PgStore)
    with store._transaction() as conn:
        cursor = conn.execute(statement)
        return list(cursor.fetchall()) if cursor.description else []


def test_columns_equal_model_fields() -> None:
    conn = sqlite3.connect(":memory:")
    for script in MIGRATIONS:
        conn.executescript(script)
    for table, model in (("kindergarten", Kindergarten), ("device", Device), ("channel", Channel)):
        columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
        # A channel's confirmed area is kept apart (channel_confirmation) and merged by the directory.
        assert columns == [f.name for f in fields(model) if f.name not in CONFIRMATION_FIELDS]
    columns = [row[1] for row in conn.execute("PRAGMA table_info(channel_confirmation)")]
    assert columns == [f.name for f in fields(AreaConfirmation)]


def test_file_database_runs_wal_with_foreign_keys(tmp_path: Path) -> None:
    with SqliteStore(str(tmp_path / "kgw.db")) as s:
        s.migrate()
        assert s.journal_mode == "wal"
        conn = s._conn
        assert conn is not None
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_kindergarten_round_trip_and_chinese_names(store: Store) -> None:
    kg = Kindergarten("12010100112160000001", "和平区第三幼儿园", "120101", "和平区南京路1号", 117.2, 39.1)
    store.upsert_kindergartens([kg])
    assert store.get_kindergarten(kg.id) == kg
    renamed = replace(kg, name="和平区第三幼儿园（总园）")
    store.upsert_kindergartens([renamed])
    assert store.get_kindergarten(kg.id) == renamed
    assert store.get_kindergarten("nope") is None


def test_device_crud_and_cascade(store: Store) -> None:
    d = Device(
        "12010100111180000001",
        None,
        "120101",
        "大门NVR · 海康",
        118,
        "Hikvision",
        host="10.0.0.2",
        port=5060,
        online=True,
        registered_at=1.5,
        expires=3600,
    )
    store.upsert_devices([d])
    assert store.get_device(d.id) == d
    ch = Channel("12010100111310000001", d.id, None, "120101", "大门口", AreaTag.ENTRANCE)
    store.upsert_channels([ch])
    assert store.get_channel(ch.id) == ch
    assert store.delete_device(d.id) is True
    assert store.get_device(d.id) is None
    assert store.get_channel(ch.id) is None  # ON DELETE CASCADE
    assert store.delete_device(d.id) is False


def test_channel_of_unknown_device_is_a_constraint_error(store: Store) -> None:
    with pytest.raises(StoreConstraintError):
        store.upsert_channels([Channel("c1", "no-such-device", None, "120101")])


def test_list_devices_filters_and_pages(city: City) -> None:
    store, devices, _ = city
    district = DISTRICTS[2]
    expected = sorted(d.id for d in devices if d.district_code == district and d.online)
    seen: list[str] = []
    offset = 0
    while True:
        flt = DeviceFilter(district_code=district, online=True, offset=offset, limit=37)
        page = store.list_devices(flt)
        assert page.total == len(expected)
        seen.extend(d.id for d in page.items)
        offset += page.limit
        if offset >= page.total:
            break
    assert seen == expected
    assert store.list_devices(DeviceFilter(kindergarten_id=kg_id(5))).total == DEVICES_PER_KG
    assert store.list_devices(DeviceFilter(device_type=132)).total == 0
    all_page = store.list_devices(DeviceFilter(limit=1000, offset=1500))
    assert all_page.total == len(devices) and len(all_page.items) == 500


def test_list_channels_filters(city: City) -> None:
    store, devices, channels = city
    did = devices[3].id
    page = store.list_channels(ChannelFilter(device_id=did))
    assert [c.id for c in page.items] == sorted(c.id for c in channels if c.device_id == did)
    assert store.list_channels(ChannelFilter(limit=1)).total == len(channels)

    # The police view lists confirmed public areas only: a name-derived tag is a suggestion.
    assert store.list_channels(ChannelFilter(public_only=True)).total == 0
    public = [c for c in channels if c.district_code == DISTRICTS[0] and c.area.is_public]
    store.upsert_area_confirmations(AreaConfirmation(c.id, c.area, "installer", 1.0, c.name) for c in public)
    store.upsert_area_confirmations([AreaConfirmation(public[0].id, AreaTag.CLASSROOM, "operator", 2.0)])
    police = store.list_channels(ChannelFilter(district_code=DISTRICTS[0], public_only=True, limit=1000))
    assert police.total == len(public) - 1
    assert police.items and all(c.area.is_public for c in police.items)
    assert store.delete_area_confirmations([public[0].id]) == 1
    loaded = store.load_area_confirmations()
    assert len(loaded) == len(public) - 1 and loaded[0].confirmed_by == "installer" and loaded[0].confirmed_at == 1.0

    classrooms = store.list_channels(ChannelFilter(area=AreaTag.CLASSROOM, online=True))
    assert classrooms.total == sum(1 for c in channels if c.area is AreaTag.CLASSROOM and c.online)
    assert store.list_channels(ChannelFilter(area=AreaTag.CLASSROOM, public_only=True)).total == 0
    assert store.list_channels(ChannelFilter(kindergarten_id=kg_id(7), type_code=131)).total == (
        DEVICES_PER_KG * CHANNELS_PER_DEVICE
    )
    first = store.get_channel(channels[0].id)
    assert first == channels[0] and first.name == "通道0"


def test_bad_pages_are_rejected() -> None:
    for kwargs in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        with pytest.raises(InvalidFilter):
            DeviceFilter(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(ValueError):  # InvalidFilter is also a ValueError
            ChannelFilter(**kwargs)  # type: ignore[arg-type]


def test_list_kindergartens(city: City) -> None:
    store, _, _ = city
    page = store.list_kindergartens(DISTRICTS[1], offset=0, limit=10)
    assert page.total == N_KG // len(DISTRICTS)
    ids = sorted(kg_id(k) for k in range(N_KG) if k % len(DISTRICTS) == 1)
    assert [k.id for k in page.items] == ids[:10]
    assert store.list_kindergartens(limit=1000).total == N_KG


def test_district_counts_match_python(city: City) -> None:
    store, devices, channels = city
    kg_n = Counter(DISTRICTS[k % len(DISTRICTS)] for k in range(N_KG))
    expected = [
        DistrictCount(
            code,
            kg_n[code],
            sum(1 for d in devices if d.district_code == code),
            sum(1 for d in devices if d.district_code == code and d.online),
            sum(1 for c in channels if c.district_code == code),
            sum(1 for c in channels if c.district_code == code and c.online),
        )
        for code in sorted(DISTRICTS)
    ]
    assert store.district_counts() == expected


def test_load_all_devices(city: City) -> None:
    store, devices, _ = city
    assert store.load_all_devices() == sorted(devices, key=lambda d: d.id)


def _small_device(store: Store, did: str = "dev-a") -> None:
    store.upsert_devices([Device(did, None, "120101")])


def _ch(cid: str, did: str = "dev-a", **kw: object) -> Channel:
    return Channel(cid, did, None, "120101", **kw)  # type: ignore[arg-type]


def test_replace_channels_inserts_updates_and_deletes(store: Store) -> None:
    _small_device(store)
    _small_device(store, "dev-b")
    first = store.replace_channels("dev-a", [_ch("c1", name="大门口"), _ch("c2"), _ch("c3")])
    assert first.added == ("c1", "c2", "c3") and not first.changed and not first.removed
    store.upsert_channels([_ch("c9", "dev-b")])

    second = store.replace_channels(
        "dev-a",
        [
            _ch("c1", name="大门口", online=True, updated_at=5.0),  # presence only: not "changed"
            _ch("c2", name="教室门口", area=AreaTag.CLASSROOM),
            _ch("c9"),  # moved over from dev-b
            _ch("c4"),
        ],
    )
    assert set(second.added) == {"c9", "c4"}
    assert second.changed == ("c2",)
    assert second.removed == ("c3",)
    page = store.list_channels(ChannelFilter(device_id="dev-a"))
    assert [c.id for c in page.items] == ["c1", "c2", "c4", "c9"]
    assert store.list_channels(ChannelFilter(device_id="dev-b")).total == 0
    assert store.replace_channels("dev-a", []).removed == ("c1", "c2", "c4", "c9")


def test_replace_channels_is_atomic(store: Store) -> None:
    _small_device(store)
    store.replace_channels("dev-a", [_ch("c1"), _ch("c2")])
    unbindable = _ch("c3", name=object())  # fails half-way, after the deletes
    with pytest.raises(StoreError):
        store.replace_channels("dev-a", [_ch("c1"), unbindable])
    kept = store.list_channels(ChannelFilter(device_id="dev-a")).items
    assert [c.id for c in kept] == ["c1", "c2"]
    with pytest.raises(StoreConstraintError):
        store.replace_channels("dev-a", [_ch("c5", "dev-b")])
    with pytest.raises(StoreConstraintError):
        store.replace_channels("dev-zzz", [_ch("c5", "dev-zzz")])  # unknown device


def _one_transaction(store: Store, run: Callable[[], T]) -> T:
    """Run ``run`` and check it committed exactly once: SQLite's statement trace, PostgreSQL's row xmin."""
    if isinstance(store, SqliteStore):
        statements: list[str] = []
        assert store._conn is not None
        store._conn.set_trace_callback(statements.append)
        try:
            result = run()
        finally:
            store._conn.set_trace_callback(None)
        assert sum(1 for st in statements if st.startswith("BEGIN")) == 1
        assert sum(1 for st in statements if st == "COMMIT") == 1
        return result
    result = run()
    # Every row a PostgreSQL transaction wrote carries its transaction id (xmin): one id, one transaction.
    xids = _sql(store, "SELECT DISTINCT xmin::text FROM device UNION SELECT DISTINCT xmin::text FROM channel")
    assert len(xids) == 1, xids
    return result


def test_update_presence_of_20000_devices_in_one_transaction(store: Store) -> None:
    store.upsert_devices(Device(f"d{n:05d}", None, "120101", last_seen=1.0) for n in range(20_000))
    store.upsert_channels(_ch(f"c{n:05d}", f"d{n:05d}") for n in range(20_000))
    started = time.perf_counter()
    counts = _one_transaction(
        store,
        lambda: store.update_presence(
            ((f"d{n:05d}", True, None if n == 0 else 120.0) for n in range(20_000)),
            [(f"c{n:05d}", n % 2 == 0) for n in range(20_000)] + [("ghost", True)],
        ),
    )
    elapsed = time.perf_counter() - started
    print(f"update_presence ({type(store).__name__}): 20,000 devices + 20,000 channels in {elapsed * 1000:.1f} ms")
    assert (counts.devices, counts.channels) == (20_000, 20_000)
    assert store.list_devices(DeviceFilter(online=True)).total == 20_000
    d0, d1 = store.get_device("d00000"), store.get_device("d00001")
    assert d0 is not None and d0.last_seen == 1.0  # None keeps the stored value
    assert d1 is not None and d1.last_seen == 120.0
    assert store.list_channels(ChannelFilter(online=True)).total == 10_000


def test_update_presence_of_one_id_twice_keeps_the_last(store: Store) -> None:
    store.upsert_devices([Device("d1", None, "120101", last_seen=1.0)])
    store.update_presence([("d1", True, 5.0), ("d1", False, None)])
    d1 = store.get_device("d1")
    assert d1 is not None and not d1.online and d1.last_seen in (1.0, 5.0)
    assert store.update_presence([], []) == PresenceCounts(0, 0)


def test_status_events(store: Store) -> None:
    events = [
        StatusEvent("d1", EntityKind.DEVICE, True, 10.0, "registered"),
        StatusEvent("c1", EntityKind.CHANNEL, True, 11.0, "catalog"),
        StatusEvent("d1", EntityKind.DEVICE, False, 200.0, "3 keepalives missed"),
        StatusEvent("d1", EntityKind.DEVICE, True, 260.0, "心跳恢复"),
    ]
    assert store.append_status_events(events) == 4
    assert store.list_status_events() == events[::-1]
    assert store.list_status_events(entity_id="d1", since=100.0) == [events[3], events[2]]
    assert store.list_status_events(limit=1) == [events[3]]
    assert store.prune_status_events(before=100.0) == 2
    assert len(store.list_status_events()) == 2
    with pytest.raises(InvalidFilter):
        store.list_status_events(limit=0)


def _indexes(store: Store) -> set[str]:
    if isinstance(store, PgStore):
        return {str(r[0]) for r in _sql(store, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    return {str(r[0]) for r in _sql(store, "SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_migration_from_v1_upgrades_and_rerun_is_a_noop(db_url: str) -> None:
    old = open_store(db_url, migrate=False)
    try:
        assert old.schema_version() == 0
        assert old.migrate(target=1) == 1  # type: ignore[call-arg]
        assert old.schema_version() == 1
        old.upsert_devices([Device("d1", None, "120101", "旧设备")])
        with pytest.raises(StoreError):  # v1 has no status history yet
            old.append_status_events([StatusEvent("d1", EntityKind.DEVICE, True, 1.0, "")])
    finally:
        old.close()

    s = open_store(db_url, migrate=False)
    try:
        assert s.migrate() == len(MIGRATIONS) - 1
        assert s.schema_version() == len(MIGRATIONS)
        assert s.migrate() == 0
        device = s.get_device("d1")
        assert device is not None and device.name == "旧设备"
        assert s.append_status_events([StatusEvent("d1", EntityKind.DEVICE, True, 1.0, "")]) == 1
        assert {"device_district", "channel_device", "channel_area"} <= _indexes(s)
    finally:
        s.close()

    reopened = open_store(db_url)
    try:
        assert reopened.schema_version() == len(MIGRATIONS)
    finally:
        reopened.close()


def test_database_from_newer_code_is_refused(db_url: str) -> None:
    s = open_store(db_url)
    try:
        _sql(s, f"INSERT INTO {_version_table(s)} (version) VALUES (99)")
    finally:
        s.close()
    with pytest.raises(StoreError, match="newer"):
        open_store(db_url)


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url, expected_file in (
        ("sqlite:///rel.db", tmp_path / "rel.db"),
        (f"sqlite:///{tmp_path / 'abs.db'}", tmp_path / "abs.db"),
        (str(tmp_path / "plain.db"), tmp_path / "plain.db"),
    ):
        s = open_store(url)
        try:
            assert s.schema_version() == len(MIGRATIONS)
        finally:
            s.close()
        assert expected_file.exists(), url
    for url in (":memory:", "sqlite://"):
        s = open_store(url)
        s.close()
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        open_store("postgresql://kgw@127.0.0.1:1/kgw")  # nothing listens on port 1
    for url in ("mysql://x", "postgresql+mysql://x"):
        with pytest.raises(StoreError, match="unsupported"):
            open_store(url)


def test_open_store_picks_postgresql_by_url(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1),
                postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)):  # fmt: skip
        s = open_store(url)
        try:
            assert isinstance(s, PgStore) and s.schema_version() == len(MIGRATIONS)
        finally:
            s.close()
    with pytest.raises(StoreError, match="SQLite"):
        sqlite_path(postgres_url)


def test_closed_store_raises_store_error(db_url: str) -> None:
    s = open_store(db_url, migrate=False)
    s.close()
    with pytest.raises(StoreError):
        s.get_device("d1")
    s.open()
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError):
        s.list_devices(DeviceFilter())


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        SqliteStore(str(tmp_path / "missing-dir" / "x.db")).open()


def test_close_succeeds_when_the_file_is_busy(tmp_path: Path) -> None:
    """This used to raise "database is locked" at shutdown: the registry and the alarm store share one file,
    and ``PRAGMA optimize`` on close needs it. Closing must not fail for planner statistics."""

    class Busy:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn
            self.closed = False

        def execute(self, sql: str, *args: object) -> object:
            if sql.startswith("PRAGMA optimize"):
                raise sqlite3.OperationalError("database is locked")
            return self.conn.execute(sql, *args)

        def close(self) -> None:
            self.closed = True
            self.conn.close()

    store = open_store(str(tmp_path / "busy.db"))
    busy = Busy(store._conn)  # type: ignore[arg-type]
    store._conn = busy  # type: ignore[assignment]
    store.close()
    assert busy.closed and store._conn is None
