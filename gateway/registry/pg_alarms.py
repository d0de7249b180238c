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

from gateway.pg_tx import DURABLE_COMMIT, DurablePool, PgConnection
from gateway.registry.alarm_sql import DEFAULT_NODE, AlarmQueries, check_node
from gateway.registry.pg_migrate import mapped_pg_errors, migrate_pool, schema_version_of

__all__ = ["PgAlarmStore"]


class PgAlarmStore(AlarmQueries):
    """Alarms, the delivery outbox and the audit trail on PostgreSQL. One thread at a time."""

    _greatest = "GREATEST"

    def __init__(self, url: str, node: str = DEFAULT_NODE, *, pool_size: int = 2, timeout: float = 10.0) -> None:
        self.url = url
        self.node = check_node(node)
        self._db = DurablePool(url, name=f"alarms-{self.node}", max_size=pool_size, timeout=timeout)

    def __enter__(self) -> PgAlarmStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect (a pool of its own) and check that commits are durable (module doc)."""
        with mapped_pg_errors():
            self._db.open()

    def close(self) -> None:
        """Close the pool (idempotent)."""
        self._db.close()

    @property
    def commit_setting(self) -> str:
        """``synchronous_commit`` as the server set it for us (read at open)."""
        return self._db.commit_setting

    @property
    def durable_by_default(self) -> bool:
        """Whether the server's own setting already makes commits durable (no ``SET LOCAL`` needed)."""
        return self.commit_setting in DURABLE_COMMIT

    def _require(self) -> ConnectionPool[Any]:
        return self._db.require()

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
        with mapped_pg_errors(), self._db.transaction(write=write) as conn:
            yield conn
