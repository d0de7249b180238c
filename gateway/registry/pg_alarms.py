"""PostgreSQL implementation of :class:`~gateway.alarms.store.AlarmStore` (schema migrations v3-v6).

The same queries and row mapping as the SQLite store (:mod:`gateway.registry.alarm_sql`),
on a connection pool of its own, apart from the registry's: an alarm commit never
waits behind a registry flush. Several gateway nodes may share the database; each
opens the store with its ``node`` name (see :class:`~gateway.registry.alarm_sql.AlarmQueries`).

Durability: the device is answered "received" only after :meth:`save_intake`
returns, so its commit must be on disk (WAL flushed) when COMMIT returns, which is
PostgreSQL's ``synchronous_commit = on``, the default. :meth:`PgAlarmStore.open`
reads the setting the server gives this role and database; when someone turned it
off there (a common "tuning"), every write transaction of this store sets it back
on for itself (``SET LOCAL``), so the guarantee does not depend on that setting.

Reads that run two statements (a page and its total) run in one REPEATABLE READ
snapshot so they agree, like SQLite's read transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Final

import psycopg
from psycopg_pool import ConnectionPool

from gateway.errors import StoreError
from gateway.pg_connect import open_pool
from gateway.registry.alarm_sql import DEFAULT_NODE, AlarmQueries, SqlCursor, check_node
from gateway.registry.pg_migrate import mapped_pg_errors, migrate_pool, schema_version_of

__all__ = ["PgAlarmStore", "pg_sql"]

# synchronous_commit values that flush the commit record to this server's disk before COMMIT returns.
_DURABLE_COMMIT: Final = frozenset({"on", "remote_write", "remote_apply", "local"})


@lru_cache(maxsize=256)
def pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the shared SQL has no literal ``%`` or ``?``)."""
    if "%" in sql:
        raise StoreError("shared SQL must not contain '%'")
    return sql.replace("?", "%s")


class _PgConnection:
    """A psycopg connection inside one transaction, speaking the shared ``?`` SQL."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> SqlCursor:
        return self._conn.execute(pg_sql(sql), parameters)

    def executemany(self, sql: str, parameters: Any, /) -> object:
        rows = list(parameters)
        if rows:  # executemany pipelines the rows: one round trip per batch, not per row
            with self._conn.cursor() as cur:
                cur.executemany(pg_sql(sql), rows)
        return None


class PgAlarmStore(AlarmQueries):
    """Alarms, the delivery outbox and the audit trail on PostgreSQL. One thread at a time."""

    _greatest = "GREATEST"

    def __init__(self, url: str, node: str = DEFAULT_NODE, *, pool_size: int = 2, timeout: float = 10.0) -> None:
        self.url = url
        self.node = check_node(node)
        self.pool_size = pool_size
        self.timeout = timeout  # s to reach the server at open (StoreError after)
        self._pool: ConnectionPool[Any] | None = None
        self.commit_setting = ""  # synchronous_commit as the server set it for us (open)

    def __enter__(self) -> PgAlarmStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect (a pool of its own) and check that commits are durable (module doc)."""
        if self._pool is not None:
            return
        pool = open_pool(
            self.url, name=f"alarms-{self.node}", min_size=1, max_size=self.pool_size, timeout=self.timeout
        )
        try:
            with mapped_pg_errors(), pool.connection() as conn:
                row = conn.execute("SHOW synchronous_commit").fetchone()
                conn.rollback()
        except BaseException:
            pool.close()
            raise
        self.commit_setting = str(row[0]) if row else ""
        self._pool = pool

    def close(self) -> None:
        """Close the pool (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    @property
    def durable_by_default(self) -> bool:
        """Whether the server's own setting already makes commits durable (no ``SET LOCAL`` needed)."""
        return self.commit_setting in _DURABLE_COMMIT

    def _require(self) -> ConnectionPool[Any]:
        if self._pool is None:
            raise StoreError("alarm store is not open")
        return self._pool

    def schema_version(self) -> int:
        """The schema version of the database (0 when empty)."""
        with mapped_pg_errors(), self._require().connection() as conn:
            version = schema_version_of(conn)
            conn.rollback()
        return version

    def migrate(self, target: int | None = None) -> int:
        """Apply missing migrations (shared with the registry: one schema), under the schema lock."""
        return migrate_pool(self._require(), target)

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[_PgConnection]:
        pool = self._require()
        with mapped_pg_errors(), pool.connection() as conn, conn.transaction():
            if not write:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            elif not self.durable_by_default:
                conn.execute("SET LOCAL synchronous_commit = on")
            yield _PgConnection(conn)
