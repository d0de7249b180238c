"""SQLite implementation of :class:`~gateway.registry.store.Store` (the embedded default).

One connection, opened with ``check_same_thread=False`` because the app creates
the store on the event-loop thread and then uses it only from its single store
worker thread: one thread at a time, never concurrently. The connection runs in
autocommit mode (``isolation_level=None``) and every method opens its own
explicit transaction, so a batch of thousands of rows is exactly one commit.

WAL journaling lets HTTP readers in other processes (``sqlite3`` CLI, backups)
read while the gateway writes; ``synchronous=NORMAL`` is the WAL setting that
stays consistent after a power loss and may only lose the last commits, which
presence flushing tolerates by design.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from operator import attrgetter
from typing import Any, Final

from gateway.errors import StoreError
from gateway.registry.model import (
    AreaTag,
    Channel,
    ChannelChanges,
    ChannelFilter,
    Device,
    DeviceFilter,
    DistrictCount,
    EntityKind,
    Kindergarten,
    Page,
    PresenceCounts,
    StatusEvent,
    check_page,
)
from gateway.registry.store import StoreConstraintError

__all__ = ["MIGRATIONS", "SqliteStore"]

# Ordered schema migrations: MIGRATIONS[n - 1] takes the schema from version n-1 to n.
# Append only; never edit a released entry. Column names equal the model's field
# names (a test holds them together), which keeps row <-> value mapping trivial.
MIGRATIONS: Final[list[str]] = [
    # v1: the registry proper.
    """
    CREATE TABLE kindergarten (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        district_code TEXT NOT NULL,
        address       TEXT NOT NULL DEFAULT '',
        longitude     REAL,
        latitude      REAL
    );
    -- No foreign key to kindergarten: a device may register before its site is
    -- onboarded, and deleting a site must not silently rewrite device rows.
    CREATE TABLE device (
        id              TEXT PRIMARY KEY,
        kindergarten_id TEXT,
        district_code   TEXT NOT NULL,
        name            TEXT NOT NULL DEFAULT '',
        device_type     INTEGER NOT NULL DEFAULT 0,
        manufacturer    TEXT NOT NULL DEFAULT '',
        model           TEXT NOT NULL DEFAULT '',
        firmware        TEXT NOT NULL DEFAULT '',
        transport       TEXT NOT NULL DEFAULT 'UDP',
        host            TEXT NOT NULL DEFAULT '',
        port            INTEGER NOT NULL DEFAULT 0,
        online          INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
        registered_at   REAL,
        expires         INTEGER NOT NULL DEFAULT 0,
        last_seen       REAL,
        channel_count   INTEGER NOT NULL DEFAULT 0,
        user_agent      TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE channel (
        id              TEXT PRIMARY KEY,
        device_id       TEXT NOT NULL REFERENCES device (id) ON DELETE CASCADE,
        kindergarten_id TEXT,
        district_code   TEXT NOT NULL,
        name            TEXT NOT NULL DEFAULT '',
        area            TEXT NOT NULL DEFAULT 'other',
        type_code       INTEGER NOT NULL DEFAULT 0,
        manufacturer    TEXT NOT NULL DEFAULT '',
        model           TEXT NOT NULL DEFAULT '',
        address         TEXT NOT NULL DEFAULT '',
        parent_id       TEXT NOT NULL DEFAULT '',
        online          INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
        longitude       REAL,
        latitude        REAL,
        ptz_type        INTEGER,
        updated_at      REAL
    );
    -- Needed by the ON DELETE CASCADE and by replace_channels.
    CREATE INDEX channel_device ON channel (device_id);
    """,
    # v2: status history, and the indexes behind list filters and district counts.
    """
    CREATE TABLE status_event (
        seq       INTEGER PRIMARY KEY,
        entity_id TEXT NOT NULL,
        kind      TEXT NOT NULL,
        online    INTEGER NOT NULL CHECK (online IN (0, 1)),
        at        REAL NOT NULL,
        reason    TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX status_event_entity ON status_event (entity_id, at);
    CREATE INDEX status_event_at ON status_event (at);
    CREATE INDEX kindergarten_district ON kindergarten (district_code);
    CREATE INDEX device_district ON device (district_code, online);
    CREATE INDEX device_kindergarten ON device (kindergarten_id, online);
    CREATE INDEX device_online ON device (online);
    CREATE INDEX channel_district ON channel (district_code, online);
    CREATE INDEX channel_kindergarten ON channel (kindergarten_id, online);
    CREATE INDEX channel_online ON channel (online);
    CREATE INDEX channel_area ON channel (area, district_code);
    """,
    # v3: alarms, their outbox deliveries and their audit trail (gateway.registry.sqlite_alarms).
    """
    -- No foreign key to device or kindergarten: an alarm from an unregistered
    -- sender is still kept (sender_registered = 0), and the audit trail must
    -- survive the device being deleted.
    CREATE TABLE alarm (
        id                TEXT PRIMARY KEY,
        seq               INTEGER NOT NULL UNIQUE,
        dedupe_key        TEXT NOT NULL,
        device_id         TEXT NOT NULL,
        source_id         TEXT NOT NULL,
        kindergarten_id   TEXT,
        district_code     TEXT NOT NULL,
        priority          INTEGER,
        method            INTEGER,
        alarm_type        INTEGER,
        event_type        INTEGER,
        alarm_time        TEXT,
        description       TEXT NOT NULL DEFAULT '',
        longitude         REAL,
        latitude          REAL,
        sn                INTEGER NOT NULL,
        received_at       REAL NOT NULL,
        state             TEXT NOT NULL DEFAULT 'new',
        escalated_at      REAL,
        acknowledged_by   TEXT,
        acknowledged_at   REAL,
        resolved_by       TEXT,
        resolved_at       REAL,
        sender_registered INTEGER NOT NULL DEFAULT 1 CHECK (sender_registered IN (0, 1)),
        problems          TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX alarm_received ON alarm (received_at);
    CREATE INDEX alarm_district ON alarm (district_code, received_at);
    CREATE INDEX alarm_kindergarten ON alarm (kindergarten_id, received_at);
    CREATE INDEX alarm_state ON alarm (state);
    CREATE INDEX alarm_dedupe ON alarm (dedupe_key);
    CREATE TABLE alarm_delivery (
        alarm_id        TEXT NOT NULL REFERENCES alarm (id) ON DELETE CASCADE,
        sink            TEXT NOT NULL,
        event           TEXT NOT NULL,
        order_key       TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        created_at      REAL NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        last_error      TEXT NOT NULL DEFAULT '',
        delivered_at    REAL,
        PRIMARY KEY (alarm_id, sink, event)
    );
    -- Dead-letter listings (state = 'dead', oldest first).
    CREATE INDEX alarm_delivery_state ON alarm_delivery (state, seq);
    -- Startup reloads the open outbox: a partial index holds only those rows,
    -- already in the order the outbox wants them.
    CREATE INDEX alarm_delivery_open ON alarm_delivery (seq, sink, event)
        WHERE state <> 'delivered';
    CREATE TABLE alarm_transition (
        seq      INTEGER PRIMARY KEY,
        alarm_id TEXT NOT NULL,
        at       REAL NOT NULL,
        action   TEXT NOT NULL,
        actor    TEXT NOT NULL DEFAULT 'system',
        detail   TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX alarm_transition_alarm ON alarm_transition (alarm_id, seq);
    """,
]

_KG_COLS: Final = tuple(f.name for f in fields(Kindergarten))
_DEVICE_COLS: Final = tuple(f.name for f in fields(Device))
_CHANNEL_COLS: Final = tuple(f.name for f in fields(Channel))
_DEVICE_ONLINE: Final = _DEVICE_COLS.index("online")
_CHANNEL_ONLINE: Final = _CHANNEL_COLS.index("online")
_CHANNEL_AREA: Final = _CHANNEL_COLS.index("area")
_device_values: Final = attrgetter(*_DEVICE_COLS)
_kg_values: Final = attrgetter(*_KG_COLS)
_channel_values: Final = attrgetter(*_CHANNEL_COLS)


def _upsert_sql(table: str, cols: tuple[str, ...]) -> str:
    """INSERT … ON CONFLICT(id) DO UPDATE: a full overwrite by id (SQLite ≥ 3.24, PostgreSQL)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "id")
    marks = ", ".join("?" for _ in cols)
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) ON CONFLICT (id) DO UPDATE SET {updates}"


_KG_UPSERT: Final = _upsert_sql("kindergarten", _KG_COLS)
_DEVICE_UPSERT: Final = _upsert_sql("device", _DEVICE_COLS)
_CHANNEL_UPSERT: Final = _upsert_sql("channel", _CHANNEL_COLS)
_KG_SELECT: Final = f"SELECT {', '.join(_KG_COLS)} FROM kindergarten"
_DEVICE_SELECT: Final = f"SELECT {', '.join(_DEVICE_COLS)} FROM device"
_CHANNEL_SELECT: Final = f"SELECT {', '.join(_CHANNEL_COLS)} FROM channel"

_DISTRICT_COUNTS_SQL: Final = """
WITH k AS (SELECT district_code, COUNT(*) AS n
           FROM kindergarten GROUP BY district_code),
     d AS (SELECT district_code, COUNT(*) AS n, SUM(online) AS up
           FROM device GROUP BY district_code),
     c AS (SELECT district_code, COUNT(*) AS n, SUM(online) AS up
           FROM channel GROUP BY district_code),
     codes AS (SELECT district_code FROM k UNION SELECT district_code FROM d
               UNION SELECT district_code FROM c)
SELECT codes.district_code, COALESCE(k.n, 0), COALESCE(d.n, 0), COALESCE(d.up, 0),
       COALESCE(c.n, 0), COALESCE(c.up, 0)
FROM codes
LEFT JOIN k ON k.district_code = codes.district_code
LEFT JOIN d ON d.district_code = codes.district_code
LEFT JOIN c ON c.district_code = codes.district_code
ORDER BY codes.district_code
"""


def _device_row(d: Device) -> tuple[Any, ...]:
    row: tuple[Any, ...] = _device_values(d)
    return row


def _channel_row(c: Channel) -> tuple[Any, ...]:
    row = list(_channel_values(c))
    row[_CHANNEL_AREA] = AreaTag(c.area).value
    return tuple(row)


def _device_from(row: tuple[Any, ...]) -> Device:
    values = list(row)
    values[_DEVICE_ONLINE] = bool(values[_DEVICE_ONLINE])
    return Device(*values)


def _channel_from(row: tuple[Any, ...]) -> Channel:
    values = list(row)
    values[_CHANNEL_ONLINE] = bool(values[_CHANNEL_ONLINE])
    values[_CHANNEL_AREA] = AreaTag(values[_CHANNEL_AREA])
    return Channel(*values)


def _event_from(row: tuple[Any, ...]) -> StatusEvent:
    entity_id, kind, online, at, reason = row
    return StatusEvent(entity_id, EntityKind(kind), bool(online), at, reason)


def _split_statements(script: str) -> Iterator[str]:
    """Split a migration script into statements (sqlite3.complete_statement knows triggers)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    leftover = (ln.strip() for ln in pending.splitlines())
    if any(ln and not ln.startswith("--") for ln in leftover):
        raise StoreError("migration script ends with an incomplete statement")


def _changes(cursor: sqlite3.Cursor) -> int:
    """Rows a statement changed (executemany sums them; -1 when nothing ran)."""
    return max(cursor.rowcount, 0)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Translate sqlite3 exceptions into the gateway's StoreError taxonomy."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise StoreConstraintError(f"constraint failed: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"sqlite: {exc}") from exc


class SqliteStore:
    """Registry store on one SQLite file (WAL), or ``:memory:`` for tests.

    Not thread-safe: use it from one thread at a time (the app's store worker).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    # --- lifecycle ------------------------------------------------------------

    def __enter__(self) -> SqliteStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect and set the pragmas (WAL, synchronous=NORMAL, foreign keys)."""
        if self._conn is not None:
            return
        with _mapped_errors():
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except BaseException:
                conn.close()
                raise
        self._conn = conn

    def close(self) -> None:
        """Let SQLite refresh its planner statistics, then disconnect."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with _mapped_errors():
            try:
                conn.execute("PRAGMA optimize")
            finally:
                conn.close()

    @property
    def journal_mode(self) -> str:
        """The journal mode in force ('wal' for a file, 'memory' for ``:memory:``)."""
        with _mapped_errors():
            return str(self._require().execute("PRAGMA journal_mode").fetchone()[0])

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is not open")
        return self._conn

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One explicit transaction; IMMEDIATE for writes so lock waits happen up front."""
        conn = self._require()
        with _mapped_errors():
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # also after a failed COMMIT (e.g. SQLITE_BUSY)
                    conn.execute("ROLLBACK")
                raise

    # --- schema ---------------------------------------------------------------

    def schema_version(self) -> int:
        """The version recorded in ``schema_version`` (0 for an empty database)."""
        conn = self._require()
        with _mapped_errors():
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            if exists is None:
                return 0
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def migrate(self, target: int | None = None) -> int:
        """Apply missing migrations up to ``target`` (default: all), one transaction each.

        Returns how many were applied; 0 means the schema was already current.
        Refuses a database written by newer code rather than guessing.
        """
        goal = len(MIGRATIONS) if target is None else target
        if not 0 <= goal <= len(MIGRATIONS):
            raise StoreError(f"no schema version {goal}")
        current = self.schema_version()
        if current > len(MIGRATIONS):
            raise StoreError(f"database schema v{current} is newer than this code")
        if current >= goal:
            return 0  # a true no-op: no write transaction at all
        applied = 0
        for version in range(1, goal + 1):
            with self._transaction() as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version ("
                    " version INTEGER PRIMARY KEY,"
                    " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
                )
                if self.schema_version() >= version:  # re-read under the write lock:
                    continue  # another process migrated meanwhile
                for statement in _split_statements(MIGRATIONS[version - 1]):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                applied += 1
        return applied

    # --- kindergartens --------------------------------------------------------

    def upsert_kindergartens(self, kindergartens: Iterable[Kindergarten]) -> int:
        """Insert or overwrite kindergartens in one transaction."""
        with self._transaction() as conn:
            return _changes(conn.executemany(_KG_UPSERT, map(_kg_values, kindergartens)))

    def get_kindergarten(self, kindergarten_id: str) -> Kindergarten | None:
        """One kindergarten by id, or None."""
        with self._transaction(write=False) as conn:
            row = conn.execute(f"{_KG_SELECT} WHERE id = ?", (kindergarten_id,)).fetchone()
        return None if row is None else Kindergarten(*row)

    def list_kindergartens(
        self, district_code: str | None = None, offset: int = 0, limit: int = 100
    ) -> Page[Kindergarten]:
        """Kindergartens ordered by id, optionally of one district."""
        check_page(offset, limit)
        where, params = ("WHERE district_code = ?", [district_code]) if district_code else ("", [])
        rows, total = self._page("kindergarten", _KG_SELECT, where, params, offset, limit)
        return Page(tuple(Kindergarten(*r) for r in rows), total, offset, limit)

    # --- devices ---------------------------------------------------------------

    def upsert_devices(self, devices: Iterable[Device]) -> int:
        """Insert or overwrite devices in one transaction."""
        with self._transaction() as conn:
            return _changes(conn.executemany(_DEVICE_UPSERT, map(_device_row, devices)))

    def get_device(self, device_id: str) -> Device | None:
        """One device by id, or None."""
        with self._transaction(write=False) as conn:
            row = conn.execute(f"{_DEVICE_SELECT} WHERE id = ?", (device_id,)).fetchone()
        return None if row is None else _device_from(row)

    def list_devices(self, flt: DeviceFilter) -> Page[Device]:
        """Devices matching the filter, ordered by id."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("district_code", flt.district_code),
            ("kindergarten_id", flt.kindergarten_id),
            ("online", None if flt.online is None else int(flt.online)),
            ("device_type", flt.device_type),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows, total = self._page("device", _DEVICE_SELECT, where, params, flt.offset, flt.limit)
        return Page(tuple(map(_device_from, rows)), total, flt.offset, flt.limit)

    def delete_device(self, device_id: str) -> bool:
        """Forget a device; its channels go with it (ON DELETE CASCADE)."""
        with self._transaction() as conn:
            return _changes(conn.execute("DELETE FROM device WHERE id = ?", (device_id,))) > 0

    def load_all_devices(self) -> list[Device]:
        """Every device ordered by id (startup warm-up)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"{_DEVICE_SELECT} ORDER BY id").fetchall()
        return [_device_from(r) for r in rows]

    def load_channels(self) -> list[Channel]:
        """Every channel ordered by id (startup warm-up)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"{_CHANNEL_SELECT} ORDER BY id").fetchall()
        return [_channel_from(r) for r in rows]

    # --- channels --------------------------------------------------------------

    def replace_channels(self, device_id: str, channels: Iterable[Channel]) -> ChannelChanges:
        """Make ``channels`` the device's full channel set in one transaction."""
        wanted: dict[str, Channel] = {}
        for channel in channels:
            if channel.device_id != device_id:
                raise StoreConstraintError(f"channel {channel.id} belongs to {channel.device_id}, not {device_id}")
            wanted[channel.id] = channel  # a duplicate id in one catalog: last wins
        with self._transaction() as conn:
            old = {
                c.id: c
                for c in map(
                    _channel_from,
                    conn.execute(f"{_CHANNEL_SELECT} WHERE device_id = ?", (device_id,)),
                )
            }
            removed = sorted(old.keys() - wanted.keys())
            conn.executemany("DELETE FROM channel WHERE id = ?", ((i,) for i in removed))
            conn.executemany(_CHANNEL_UPSERT, map(_channel_row, wanted.values()))
        added = tuple(i for i in wanted if i not in old)
        changed = tuple(
            i
            for i, new in wanted.items()
            if i in old and replace(new, online=old[i].online, updated_at=old[i].updated_at) != old[i]
        )
        return ChannelChanges(added=added, changed=changed, removed=tuple(removed))

    def upsert_channels(self, channels: Iterable[Channel]) -> int:
        """Insert or overwrite channels (e.g. one part of a multi-part catalog)."""
        with self._transaction() as conn:
            return _changes(conn.executemany(_CHANNEL_UPSERT, map(_channel_row, channels)))

    def delete_channels(self, channel_ids: Iterable[str]) -> int:
        """Forget channels (a lower platform's catalog NOTIFY said DEL); return the count deleted."""
        with self._transaction() as conn:
            return _changes(conn.executemany("DELETE FROM channel WHERE id = ?", ((i,) for i in channel_ids)))

    def get_channel(self, channel_id: str) -> Channel | None:
        """One channel by id, or None."""
        with self._transaction(write=False) as conn:
            row = conn.execute(f"{_CHANNEL_SELECT} WHERE id = ?", (channel_id,)).fetchone()
        return None if row is None else _channel_from(row)

    def list_channels(self, flt: ChannelFilter) -> Page[Channel]:
        """Channels matching the filter, ordered by id."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("district_code", flt.district_code),
            ("kindergarten_id", flt.kindergarten_id),
            ("device_id", flt.device_id),
            ("online", None if flt.online is None else int(flt.online)),
            ("type_code", flt.type_code),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        areas = flt.areas
        if areas is not None:
            if not areas:  # e.g. area=CLASSROOM with public_only: nothing may match
                return Page((), 0, flt.offset, flt.limit)
            clauses.append(f"area IN ({', '.join('?' for _ in areas)})")
            params.extend(sorted(a.value for a in areas))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows, total = self._page("channel", _CHANNEL_SELECT, where, params, flt.offset, flt.limit)
        return Page(tuple(map(_channel_from, rows)), total, flt.offset, flt.limit)

    def _page(
        self, table: str, select: str, where: str, params: list[Any], offset: int, limit: int
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Rows of one page plus the total, read in one snapshot so they agree."""
        with self._transaction(write=False) as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM {table} {where}", params).fetchone()[0]
            rows = conn.execute(f"{select} {where} ORDER BY id LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
        return rows, int(total)

    # --- presence and history ----------------------------------------------------

    def update_presence(
        self,
        devices: Iterable[tuple[str, bool, float | None]],
        channels: Iterable[tuple[str, bool]] = (),
    ) -> PresenceCounts:
        """Write a whole presence batch in ONE transaction (one fsync, not one per row)."""
        with self._transaction() as conn:
            n_devices = _changes(
                conn.executemany(
                    "UPDATE device SET online = ?, last_seen = COALESCE(?, last_seen) WHERE id = ?",
                    ((int(online), seen, i) for i, online, seen in devices),
                )
            )
            n_channels = _changes(
                conn.executemany(
                    "UPDATE channel SET online = ? WHERE id = ?",
                    ((int(online), i) for i, online in channels),
                )
            )
        return PresenceCounts(devices=n_devices, channels=n_channels)

    def append_status_events(self, events: Iterable[StatusEvent]) -> int:
        """Append status history in one transaction."""
        with self._transaction() as conn:
            return _changes(
                conn.executemany(
                    "INSERT INTO status_event (entity_id, kind, online, at, reason) VALUES (?, ?, ?, ?, ?)",
                    ((e.entity_id, EntityKind(e.kind).value, int(e.online), e.at, e.reason) for e in events),
                )
            )

    def list_status_events(
        self, entity_id: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[StatusEvent]:
        """Newest first (ties in insertion order reversed), optionally filtered."""
        check_page(0, limit)
        clauses: list[str] = []
        params: list[Any] = []
        if entity_id is not None:
            clauses.append("entity_id = ?")
            params.append(entity_id)
        if since is not None:
            clauses.append("at >= ?")
            params.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT entity_id, kind, online, at, reason FROM status_event "
                f"{where} ORDER BY at DESC, seq DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [_event_from(r) for r in rows]

    def prune_status_events(self, before: float) -> int:
        """Delete history strictly older than ``before``."""
        with self._transaction() as conn:
            return _changes(conn.execute("DELETE FROM status_event WHERE at < ?", (before,)))

    def district_counts(self) -> list[DistrictCount]:
        """Per-district totals via GROUP BY (every district seen in any table)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(_DISTRICT_COUNTS_SQL).fetchall()
        return [DistrictCount(*r) for r in rows]
