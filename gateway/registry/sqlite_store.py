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

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from gateway.errors import StoreConstraintError, StoreError
from gateway.registry import sql_rows as rows_
from gateway.registry.model import (
    AreaConfirmation,
    Channel,
    ChannelChanges,
    ChannelFilter,
    Device,
    DeviceFilter,
    DistrictCount,
    Kindergarten,
    Page,
    PresenceCounts,
    StatusEvent,
    check_page,
)
from gateway.registry.sql_rows import (
    CHANNEL_COLS,
    CONFIRMATION_COLS,
    DEVICE_COLS,
    DISTRICT_COUNTS_SQL,
    KG_COLS,
    STATUS_EVENT_COLS,
    channel_from,
    device_from,
    select_sql,
    upsert_sql,
)
from gateway.registry.sqlite_schema import MIGRATIONS, split_statements
from gateway.sqlite_connect import connect_wal

__all__ = ["MIGRATIONS", "SqliteStore"]

log = logging.getLogger("kgw.registry")

_KG_UPSERT: Final = upsert_sql("kindergarten", KG_COLS, "?")
_DEVICE_UPSERT: Final = upsert_sql("device", DEVICE_COLS, "?")
_CHANNEL_UPSERT: Final = upsert_sql("channel", CHANNEL_COLS, "?")
_CONFIRMATION_UPSERT: Final = rows_.confirmation_upsert_sql("?")
_KG_SELECT: Final = select_sql("kindergarten", KG_COLS)
_DEVICE_SELECT: Final = select_sql("device", DEVICE_COLS)
_CHANNEL_SELECT: Final = select_sql("channel", CHANNEL_COLS)
_CONFIRMATION_SELECT: Final = select_sql("channel_confirmation", CONFIRMATION_COLS)
_RTSP_UPSERT: Final = rows_.upsert_sql("rtsp_camera", rows_.RTSP_CAMERA_COLS, "?", key="channel_id")
_RTSP_SELECT: Final = select_sql("rtsp_camera", rows_.RTSP_CAMERA_COLS)
_EVENT_INSERT: Final = f"INSERT INTO status_event ({', '.join(STATUS_EVENT_COLS)}) VALUES (?, ?, ?, ?, ?)"
_EVENT_SELECT: Final = select_sql("status_event", STATUS_EVENT_COLS)


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
            conn = connect_wal(self.path)
        self._conn = conn

    def close(self) -> None:
        """Let SQLite refresh its planner statistics (best effort), then disconnect.

        The registry and the alarm store share one file through two connections: at
        shutdown the other may still hold it, and ``PRAGMA optimize`` then fails with
        "database is locked". Statistics are a nicety; closing must not fail for them.
        """
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("PRAGMA optimize")
        except sqlite3.Error as exc:
            log.debug("PRAGMA optimize skipped on %s: %s", self.path, exc)
        with _mapped_errors():
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
                for statement in split_statements(MIGRATIONS[version - 1]):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                applied += 1
        return applied

    # --- kindergartens --------------------------------------------------------

    def upsert_kindergartens(self, kindergartens: Iterable[Kindergarten]) -> int:
        """Insert or overwrite kindergartens in one transaction."""
        with self._transaction() as conn:
            return _changes(conn.executemany(_KG_UPSERT, map(rows_.kg_row, kindergartens)))

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
            return _changes(conn.executemany(_DEVICE_UPSERT, map(rows_.device_row, devices)))

    def get_device(self, device_id: str) -> Device | None:
        """One device by id, or None."""
        with self._transaction(write=False) as conn:
            row = conn.execute(f"{_DEVICE_SELECT} WHERE id = ?", (device_id,)).fetchone()
        return None if row is None else device_from(row)

    def list_devices(self, flt: DeviceFilter) -> Page[Device]:
        """Devices matching the filter, ordered by id."""
        where, params = rows_.device_where(flt, "?")
        rows, total = self._page("device", _DEVICE_SELECT, where, params, flt.offset, flt.limit)
        return Page(tuple(map(device_from, rows)), total, flt.offset, flt.limit)

    def delete_device(self, device_id: str) -> bool:
        """Forget a device; its channels go with it (ON DELETE CASCADE)."""
        with self._transaction() as conn:
            return _changes(conn.execute("DELETE FROM device WHERE id = ?", (device_id,))) > 0

    def load_all_devices(self) -> list[Device]:
        """Every device ordered by id (startup warm-up)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"{_DEVICE_SELECT} ORDER BY id").fetchall()
        return [device_from(r) for r in rows]

    def load_channels(self) -> list[Channel]:
        """Every channel ordered by id (startup warm-up)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"{_CHANNEL_SELECT} ORDER BY id").fetchall()
        return [channel_from(r) for r in rows]

    # --- channels --------------------------------------------------------------

    def replace_channels(self, device_id: str, channels: Iterable[Channel]) -> ChannelChanges:
        """Make ``channels`` the device's full channel set in one transaction."""
        wanted = rows_.wanted_channels(device_id, channels)
        with self._transaction() as conn:
            old = {
                c.id: c
                for c in map(
                    channel_from,
                    conn.execute(f"{_CHANNEL_SELECT} WHERE device_id = ?", (device_id,)),
                )
            }
            removed = sorted(old.keys() - wanted.keys())
            conn.executemany("DELETE FROM channel WHERE id = ?", ((i,) for i in removed))
            conn.executemany(_CHANNEL_UPSERT, map(rows_.channel_row, wanted.values()))
        return rows_.channel_changes(old, wanted, removed)

    def upsert_channels(self, channels: Iterable[Channel]) -> int:
        """Insert or overwrite channels (e.g. one part of a multi-part catalog)."""
        with self._transaction() as conn:
            return _changes(conn.executemany(_CHANNEL_UPSERT, map(rows_.channel_row, channels)))

    def delete_channels(self, channel_ids: Iterable[str]) -> int:
        """Forget channels (a lower platform's catalog NOTIFY said DEL); return the count deleted."""
        with self._transaction() as conn:
            return _changes(conn.executemany("DELETE FROM channel WHERE id = ?", ((i,) for i in channel_ids)))

    def get_channel(self, channel_id: str) -> Channel | None:
        """One channel by id, or None."""
        with self._transaction(write=False) as conn:
            row = conn.execute(f"{_CHANNEL_SELECT} WHERE id = ?", (channel_id,)).fetchone()
        return None if row is None else channel_from(row)

    def list_channels(self, flt: ChannelFilter) -> Page[Channel]:
        """Channels matching the filter, ordered by id."""
        found = rows_.channel_where(flt, "?")
        if found is None:
            return Page((), 0, flt.offset, flt.limit)
        where, params = found
        rows, total = self._page("channel", _CHANNEL_SELECT, where, params, flt.offset, flt.limit)
        return Page(tuple(map(channel_from, rows)), total, flt.offset, flt.limit)

    def _page(
        self, table: str, select: str, where: str, params: list[Any], offset: int, limit: int
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Rows of one page plus the total, read in one snapshot so they agree."""
        with self._transaction(write=False) as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM {table} {where}", params).fetchone()[0]
            rows = conn.execute(f"{select} {where} ORDER BY id LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
        return rows, int(total)

    # --- confirmed areas ------------------------------------------------------------

    def upsert_area_confirmations(self, confirmations: Iterable[AreaConfirmation]) -> int:
        """Insert or overwrite operators' area confirmations in one transaction."""
        with self._transaction() as conn:
            return _changes(conn.executemany(_CONFIRMATION_UPSERT, map(rows_.confirmation_row, confirmations)))

    def delete_area_confirmations(self, channel_ids: Iterable[str]) -> int:
        """Withdraw confirmations by channel id; return the count deleted."""
        with self._transaction() as conn:
            return _changes(
                conn.executemany("DELETE FROM channel_confirmation WHERE channel_id = ?", ((i,) for i in channel_ids))
            )

    def load_area_confirmations(self) -> list[AreaConfirmation]:
        """Every confirmation ordered by channel id (startup warm-up)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"{_CONFIRMATION_SELECT} ORDER BY channel_id").fetchall()
        return [rows_.confirmation_from(r) for r in rows]

    # --- RTSP cameras (gateway/rtsp) ----------------------------------------------------

    def upsert_rtsp_camera(self, row: tuple[Any, ...]) -> None:
        """Insert or overwrite one RTSP camera."""
        with self._transaction() as conn:
            conn.execute(_RTSP_UPSERT, row)

    def delete_rtsp_camera(self, channel_id: str) -> bool:
        """Forget an RTSP camera; False when there was none."""
        with self._transaction() as conn:
            return _changes(conn.execute("DELETE FROM rtsp_camera WHERE channel_id = ?", (channel_id,))) > 0

    def load_rtsp_cameras(self) -> list[tuple[Any, ...]]:
        """Every RTSP camera, ordered by channel id."""
        with self._transaction(write=False) as conn:
            return list(conn.execute(f"{_RTSP_SELECT} ORDER BY channel_id").fetchall())

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
            return _changes(conn.executemany(_EVENT_INSERT, map(rows_.event_row, events)))

    def list_status_events(
        self, entity_id: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[StatusEvent]:
        """Newest first (ties in insertion order reversed), optionally filtered."""
        check_page(0, limit)
        where, params = rows_.status_event_where(entity_id, since, "?")
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                f"{_EVENT_SELECT} {where} ORDER BY at DESC, seq DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [rows_.event_from(r) for r in rows]

    def prune_status_events(self, before: float) -> int:
        """Delete history strictly older than ``before``."""
        with self._transaction() as conn:
            return _changes(conn.execute("DELETE FROM status_event WHERE at < ?", (before,)))

    def district_counts(self) -> list[DistrictCount]:
        """Per-district totals via GROUP BY (every district seen in any table)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(DISTRICT_COUNTS_SQL).fetchall()
        return [DistrictCount(*r) for r in rows]
