"""PostgreSQL implementation of :class:`~gateway.registry.store.Store` (``--db postgresql://…``).

Same semantics as :class:`~gateway.registry.sqlite_store.SqliteStore`, with the
row mapping and filter SQL shared through :mod:`gateway.registry.sql_rows`; only
the placeholder (``%s``) and the batch statements differ. It stays synchronous:
the app runs it on the store's single worker thread, exactly like SQLite.

Connections come from a small ``psycopg_pool`` pool (one is in use at a time; a
second lets the pool replace a broken one without waiting). Each method is one
transaction. A batch is one statement, whatever its size: upserts, presence
updates and history send each column as one array (``unnest``), deletes one
array (``= ANY``), so a flush of thousands of devices is one round trip and one
commit, and costs the gateway's thread little Python per row. Several gateway
processes may write the same database; a write that loses a deadlock or
serialization race against another process is retried as a whole (it is
idempotent: upserts, presence overwrites).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.errors import StoreError
from gateway.pg_connect import open_pool
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
from gateway.registry.pg_migrate import mapped_pg_errors, migrate_pool, schema_version_of
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
)

__all__ = ["PgStore"]

log = logging.getLogger("kgw.registry")

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]

#: Attempts of a write that lost a deadlock / serialization race against another process.
WRITE_ATTEMPTS: Final = 3

_KG_SELECT: Final = select_sql("kindergarten", KG_COLS)
_DEVICE_SELECT: Final = select_sql("device", DEVICE_COLS)
_CHANNEL_SELECT: Final = select_sql("channel", CHANNEL_COLS)
_CONFIRMATION_SELECT: Final = select_sql("channel_confirmation", CONFIRMATION_COLS)
_RTSP_UPSERT: Final = rows_.upsert_sql("rtsp_camera", rows_.RTSP_CAMERA_COLS, "%s", key="channel_id")
_RTSP_SELECT: Final = select_sql("rtsp_camera", rows_.RTSP_CAMERA_COLS)
_EVENT_SELECT: Final = select_sql("status_event", STATUS_EVENT_COLS)
# Status history keeps its insertion order (ties on ``at`` list newest-inserted first): ORDINALITY.
_EVENT_INSERT: Final = (
    f"INSERT INTO status_event ({', '.join(STATUS_EVENT_COLS)}) "
    f"SELECT {', '.join(STATUS_EVENT_COLS)} FROM unnest(%s::text[], %s::text[], %s::integer[],"
    f" %s::double precision[], %s::text[]) WITH ORDINALITY AS v({', '.join(STATUS_EVENT_COLS)}, n) ORDER BY n"
)
# A presence flush: one UPDATE per table whatever the batch size (``last_seen`` NULL keeps the stored value).
_DEVICE_PRESENCE: Final = (
    "UPDATE device AS d SET online = v.online, last_seen = COALESCE(v.seen, d.last_seen)"
    " FROM unnest(%s::text[], %s::integer[], %s::double precision[]) AS v(id, online, seen) WHERE d.id = v.id"
)
_CHANNEL_PRESENCE: Final = (
    "UPDATE channel AS c SET online = v.online"
    " FROM unnest(%s::text[], %s::integer[]) AS v(id, online) WHERE c.id = v.id"
)
# A table's column types, exactly as declared (for the ``unnest`` arrays of batch upserts).
_COLUMN_TYPES: Final = (
    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
    " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
)
# Races another process may win; the transaction is rolled back and safe to run again.
_RETRYABLE: Final = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


class PgStore:
    """Registry store on a PostgreSQL database named by a ``postgresql://`` URL.

    Use it from one thread at a time (the app's store worker), like SQLite.
    """

    def __init__(
        self, url: str, *, pool_name: str = "registry", max_connections: int = 2, timeout: float = 10.0
    ) -> None:
        self.url = url
        self._pool_name = pool_name
        self._max_connections = max_connections
        self._timeout = timeout  # how long a call waits for a connection (e.g. while the server restarts)
        self._pool: ConnectionPool[Any] | None = None
        self._open = False
        self._upserts: dict[str, str] = {}

    # --- lifecycle ------------------------------------------------------------

    def __enter__(self) -> PgStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the pool (one connection made and checked); StoreError if the server refuses us."""
        self._open = True
        self._require()

    def close(self) -> None:
        """Close the pool's connections (idempotent)."""
        self._open = False
        self._discard_pool()

    def _require(self) -> ConnectionPool[Any]:
        """The pool, opened again if a lost server made us drop it (StoreError at once while it is down)."""
        if not self._open:
            raise StoreError("store is not open")
        if self._pool is None:
            self._pool = open_pool(
                self.url, name=self._pool_name, min_size=1, max_size=self._max_connections, timeout=self._timeout
            )
        return self._pool

    def _discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=1.0)

    @contextmanager
    def _transaction(self, *, snapshot: bool = False) -> Iterator[Conn]:
        """One transaction on a pooled connection; ``snapshot``: several reads that must agree.

        No connection within the timeout means the server went away: the pool is dropped
        rather than left retrying with a growing back-off, and the next call connects anew
        (failing fast while the server is still down, working as soon as it is back).
        """
        pool = self._require()
        try:
            with mapped_pg_errors(), pool.connection() as conn, conn.transaction():
                if snapshot:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield conn
        except StoreError as exc:
            if isinstance(exc.__cause__, PoolTimeout):
                log.warning("registry: PostgreSQL unreachable, reconnecting on the next call: %s", exc)
                self._discard_pool()
            raise

    def _write(self, body: Callable[[Conn], T]) -> T:
        """Run ``body`` in one transaction, again if it lost a race against another process."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._transaction() as conn:
                    return body(conn)
            except StoreError as exc:
                if attempt == WRITE_ATTEMPTS or not isinstance(exc.__cause__, _RETRYABLE):
                    raise
                log.info("registry write retried after %s (attempt %d)", type(exc.__cause__).__name__, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _upsert_sql(self, conn: Conn, table: str, cols: tuple[str, ...], key: str) -> str:
        """INSERT … SELECT FROM unnest(one array per column) ON CONFLICT DO UPDATE, typed as the table is.

        The array types are read from the database once per table (the schema only grows by
        migration), so a column added to a model needs no code here.
        """
        sql = self._upserts.get(table)
        if sql is None:
            found: dict[str, str] = dict(conn.execute(_COLUMN_TYPES, (table,)).fetchall())
            missing = [c for c in cols if c not in found]
            if missing:
                raise StoreError(f"table {table} has no column {', '.join(missing)}: migrate the database")
            arrays = ", ".join(f"%s::{found[c]}[]" for c in cols)
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key)
            sql = self._upserts[table] = (
                f"INSERT INTO {table} ({', '.join(cols)}) SELECT * FROM unnest({arrays})"
                f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
            )
        return sql

    def _upsert_rows(
        self, conn: Conn, table: str, cols: tuple[str, ...], rows: dict[Any, tuple[Any, ...]], key: str = "id"
    ) -> int:
        """Write ``rows`` (by key) in one statement inside the caller's transaction."""
        columns = [list(column) for column in zip(*rows.values(), strict=True)]
        return max(conn.execute(self._upsert_sql(conn, table, cols, key), columns).rowcount, 0)

    def _upsert(self, table: str, cols: tuple[str, ...], rows: Iterable[tuple[Any, ...]], key: str = "id") -> int:
        """Insert or overwrite rows by ``key`` in ONE transaction of ONE statement (each column one array).

        A key given twice in one batch is written once, with its last row (one INSERT may not
        update a row twice); the count is of distinct keys.
        """
        at = cols.index(key)
        latest = {row[at]: row for row in rows}
        if not latest:
            return 0
        return self._write(lambda conn: self._upsert_rows(conn, table, cols, latest, key))

    def _execute(self, sql: str, params: tuple[Any, ...] | list[Any]) -> int:
        """One statement in its own transaction; rows it changed."""

        def run(conn: Conn) -> int:
            return max(conn.execute(sql, params).rowcount, 0)

        return self._write(run)

    def _all(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        with self._transaction() as conn:
            return conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self._transaction() as conn:
            return conn.execute(sql, params).fetchone()

    # --- schema ---------------------------------------------------------------

    def schema_version(self) -> int:
        """The version recorded in ``kgw_schema`` (0 for an empty database)."""
        with self._transaction() as conn:
            return schema_version_of(conn)

    def migrate(self, target: int | None = None) -> int:
        """Apply missing migrations (exactly once across processes, see :mod:`.pg_migrate`)."""
        return migrate_pool(self._require(), target)

    # --- kindergartens --------------------------------------------------------

    def upsert_kindergartens(self, kindergartens: Iterable[Kindergarten]) -> int:
        """Insert or overwrite kindergartens in one transaction."""
        return self._upsert("kindergarten", KG_COLS, map(rows_.kg_row, kindergartens))

    def get_kindergarten(self, kindergarten_id: str) -> Kindergarten | None:
        """One kindergarten by id, or None."""
        row = self._one(f"{_KG_SELECT} WHERE id = %s", (kindergarten_id,))
        return None if row is None else Kindergarten(*row)

    def list_kindergartens(
        self, district_code: str | None = None, offset: int = 0, limit: int = 100
    ) -> Page[Kindergarten]:
        """Kindergartens ordered by id, optionally of one district."""
        check_page(offset, limit)
        where, params = ("WHERE district_code = %s", [district_code]) if district_code else ("", [])
        rows, total = self._page("kindergarten", _KG_SELECT, where, params, offset, limit)
        return Page(tuple(Kindergarten(*r) for r in rows), total, offset, limit)

    # --- devices ---------------------------------------------------------------

    def upsert_devices(self, devices: Iterable[Device]) -> int:
        """Insert or overwrite devices in one transaction."""
        return self._upsert("device", DEVICE_COLS, map(rows_.device_row, devices))

    def get_device(self, device_id: str) -> Device | None:
        """One device by id, or None."""
        row = self._one(f"{_DEVICE_SELECT} WHERE id = %s", (device_id,))
        return None if row is None else device_from(row)

    def list_devices(self, flt: DeviceFilter) -> Page[Device]:
        """Devices matching the filter, ordered by id."""
        where, params = rows_.device_where(flt, "%s")
        rows, total = self._page("device", _DEVICE_SELECT, where, params, flt.offset, flt.limit)
        return Page(tuple(map(device_from, rows)), total, flt.offset, flt.limit)

    def delete_device(self, device_id: str) -> bool:
        """Forget a device; its channels go with it (ON DELETE CASCADE)."""
        return self._execute("DELETE FROM device WHERE id = %s", (device_id,)) > 0

    def load_all_devices(self) -> list[Device]:
        """Every device ordered by id (startup warm-up)."""
        return [device_from(r) for r in self._all(f"{_DEVICE_SELECT} ORDER BY id")]

    def load_channels(self) -> list[Channel]:
        """Every channel ordered by id (startup warm-up)."""
        return [channel_from(r) for r in self._all(f"{_CHANNEL_SELECT} ORDER BY id")]

    # --- channels --------------------------------------------------------------

    def replace_channels(self, device_id: str, channels: Iterable[Channel]) -> ChannelChanges:
        """Make ``channels`` the device's full channel set in one transaction."""
        wanted = rows_.wanted_channels(device_id, channels)
        new_rows = {i: rows_.channel_row(c) for i, c in wanted.items()}

        def run(conn: Conn) -> tuple[dict[str, Channel], list[str]]:
            old_rows = conn.execute(f"{_CHANNEL_SELECT} WHERE device_id = %s FOR UPDATE", (device_id,)).fetchall()
            old = {c.id: c for c in map(channel_from, old_rows)}
            removed = sorted(old.keys() - wanted.keys())
            if removed:
                conn.execute("DELETE FROM channel WHERE id = ANY(%s)", (removed,))
            if new_rows:
                self._upsert_rows(conn, "channel", CHANNEL_COLS, new_rows)
            return old, removed

        old, removed = self._write(run)
        return rows_.channel_changes(old, wanted, removed)

    def upsert_channels(self, channels: Iterable[Channel]) -> int:
        """Insert or overwrite channels (e.g. one part of a multi-part catalog)."""
        return self._upsert("channel", CHANNEL_COLS, map(rows_.channel_row, channels))

    def delete_channels(self, channel_ids: Iterable[str]) -> int:
        """Forget channels (a lower platform's catalog NOTIFY said DEL); return the count deleted."""
        ids = list(channel_ids)
        return self._execute("DELETE FROM channel WHERE id = ANY(%s)", (ids,)) if ids else 0

    def get_channel(self, channel_id: str) -> Channel | None:
        """One channel by id, or None."""
        row = self._one(f"{_CHANNEL_SELECT} WHERE id = %s", (channel_id,))
        return None if row is None else channel_from(row)

    def list_channels(self, flt: ChannelFilter) -> Page[Channel]:
        """Channels matching the filter, ordered by id."""
        found = rows_.channel_where(flt, "%s")
        if found is None:
            return Page((), 0, flt.offset, flt.limit)
        where, params = found
        rows, total = self._page("channel", _CHANNEL_SELECT, where, params, flt.offset, flt.limit)
        return Page(tuple(map(channel_from, rows)), total, flt.offset, flt.limit)

    def _page(
        self, table: str, select: str, where: str, params: list[Any], offset: int, limit: int
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Rows of one page plus the total, read in one snapshot (REPEATABLE READ) so they agree."""
        with self._transaction(snapshot=True) as conn:
            count = conn.execute(f"SELECT COUNT(*) FROM {table} {where}", params).fetchone()
            rows = conn.execute(f"{select} {where} ORDER BY id LIMIT %s OFFSET %s", [*params, limit, offset]).fetchall()
        return rows, int(count[0]) if count is not None else 0

    # --- confirmed areas ------------------------------------------------------------

    def upsert_area_confirmations(self, confirmations: Iterable[AreaConfirmation]) -> int:
        """Insert or overwrite operators' area confirmations in one transaction."""
        return self._upsert(
            "channel_confirmation", CONFIRMATION_COLS, map(rows_.confirmation_row, confirmations), key="channel_id"
        )

    def delete_area_confirmations(self, channel_ids: Iterable[str]) -> int:
        """Withdraw confirmations by channel id; return the count deleted."""
        ids = list(channel_ids)
        return self._execute("DELETE FROM channel_confirmation WHERE channel_id = ANY(%s)", (ids,)) if ids else 0

    def load_area_confirmations(self) -> list[AreaConfirmation]:
        """Every confirmation ordered by channel id (startup warm-up)."""
        return [rows_.confirmation_from(r) for r in self._all(f"{_CONFIRMATION_SELECT} ORDER BY channel_id")]

    # --- RTSP cameras (gateway/rtsp) ----------------------------------------------------

    def upsert_rtsp_camera(self, row: tuple[Any, ...]) -> None:
        """Insert or overwrite one RTSP camera."""
        self._execute(_RTSP_UPSERT, row)

    def delete_rtsp_camera(self, channel_id: str) -> bool:
        """Forget an RTSP camera; False when there was none."""
        return self._execute("DELETE FROM rtsp_camera WHERE channel_id = %s", (channel_id,)) > 0

    def load_rtsp_cameras(self) -> list[tuple[Any, ...]]:
        """Every RTSP camera, ordered by channel id."""
        return self._all(f"{_RTSP_SELECT} ORDER BY channel_id")

    # --- presence and history ----------------------------------------------------

    def update_presence(
        self,
        devices: Iterable[tuple[str, bool, float | None]],
        channels: Iterable[tuple[str, bool]] = (),
    ) -> PresenceCounts:
        """Write a whole presence batch in ONE transaction of two statements (arrays via ``unnest``).

        An id given twice counts once with its last values (one UPDATE touches a row once).
        """
        device_rows = {i: (int(online), seen) for i, online, seen in devices}
        channel_rows = {i: int(online) for i, online in channels}
        device_params = (
            list(device_rows),
            [v[0] for v in device_rows.values()],
            [v[1] for v in device_rows.values()],
        )
        channel_params = (list(channel_rows), list(channel_rows.values()))

        def run(conn: Conn) -> PresenceCounts:
            n_devices = conn.execute(_DEVICE_PRESENCE, device_params).rowcount if device_rows else 0
            n_channels = conn.execute(_CHANNEL_PRESENCE, channel_params).rowcount if channel_rows else 0
            return PresenceCounts(devices=max(n_devices, 0), channels=max(n_channels, 0))

        return self._write(run)

    def append_status_events(self, events: Iterable[StatusEvent]) -> int:
        """Append status history in one transaction (one INSERT … SELECT FROM unnest)."""
        rows = [rows_.event_row(e) for e in events]
        if not rows:
            return 0
        columns = tuple(list(column) for column in zip(*rows, strict=True))
        return self._execute(_EVENT_INSERT, columns)

    def list_status_events(
        self, entity_id: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[StatusEvent]:
        """Newest first (ties in insertion order reversed), optionally filtered."""
        check_page(0, limit)
        where, params = rows_.status_event_where(entity_id, since, "%s")
        rows = self._all(f"{_EVENT_SELECT} {where} ORDER BY at DESC, seq DESC LIMIT %s", [*params, limit])
        return [rows_.event_from(r) for r in rows]

    def prune_status_events(self, before: float) -> int:
        """Delete history strictly older than ``before``."""
        return self._execute("DELETE FROM status_event WHERE at < %s", (before,))

    def district_counts(self) -> list[DistrictCount]:
        """Per-district totals via GROUP BY (every district seen in any table)."""
        return [DistrictCount(code, *map(int, counts)) for code, *counts in self._all(DISTRICT_COUNTS_SQL)]
