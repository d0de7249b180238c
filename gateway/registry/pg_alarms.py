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
from typing import Any

from psycopg_pool import ConnectionPool

from gateway.errors import StoreError
from gateway.pg_connect import open_pool
from gateway.pg_tx import DURABLE_COMMIT, PgConnection, commit_setting, durable_transaction
from gateway.registry.alarm_sql import DEFAULT_NODE, AlarmQueries, check_node
from gateway.registry.pg_migrate import mapped_pg_errors, migrate_pool, schema_version_of

__all__ = ["PgAlarmStore"]


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
            with mapped_pg_errors():
                self.commit_setting = commit_setting(pool)
        except BaseException:
            pool.close()
            raise
        self._pool = pool

    def close(self) -> None:
        """Close the pool (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    @property
    def durable_by_default(self) -> bool:
        """Whether the server's own setting already makes commits durable (no ``SET LOCAL`` needed)."""
        return self.commit_setting in DURABLE_COMMIT

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
    def _transaction(self, *, write: bool = True) -> Iterator[PgConnection]:
        with mapped_pg_errors(), durable_transaction(self._require(), self.commit_setting, write=write) as conn:
            yield conn
