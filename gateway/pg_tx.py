"""Running kgw's shared ``?``-placeholder SQL on PostgreSQL, in durable transactions.

The alarm, audit and account stores write each query once for both backends with
sqlite3's ``?`` placeholders; :class:`PgConnection` hands them to psycopg as
``%s``. :func:`durable_transaction` is how those stores write: the device (or
operator) is told "done" once the commit returns, so the commit must be on disk
then — PostgreSQL's ``synchronous_commit = on``, the default. The setting the
server gives our role and database is read once (:func:`commit_setting`); when
someone turned it off there, each of our write transactions turns it back on for
itself (``SET LOCAL``), so the guarantee does not hang on that setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import Any, Final

import psycopg
from psycopg_pool import ConnectionPool

from gateway.errors import StoreError
from gateway.pg_connect import open_pool

__all__ = ["DURABLE_COMMIT", "DurablePool", "PgConnection", "commit_setting", "durable_transaction", "pg_sql"]

# synchronous_commit values that flush the commit record to this server's disk before COMMIT returns.
DURABLE_COMMIT: Final = frozenset({"on", "remote_write", "remote_apply", "local"})


@lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the shared SQL holds no literal ``%`` or ``?``)."""
    if "%" in sql:
        raise StoreError("shared SQL must not contain '%'")
    return sql.replace("?", "%s")


class PgConnection:
    """A psycopg connection inside one transaction, speaking the shared ``?`` SQL."""

    __slots__ = ("raw",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # a psycopg cursor (rows as tuples)
        return self.raw.execute(pg_sql(sql), parameters)

    def executemany(self, sql: str, parameters: Any, /) -> object:
        rows = list(parameters)
        if rows:  # executemany pipelines the rows: one round trip per batch, not per row
            with self.raw.cursor() as cur:
                cur.executemany(pg_sql(sql), rows)
        return None


def commit_setting(pool: ConnectionPool[Any]) -> str:
    """``synchronous_commit`` as the server sets it for the pool's role and database."""
    with pool.connection() as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
        conn.rollback()
    return str(row[0]) if row else ""


@contextmanager
def durable_transaction(
    pool: ConnectionPool[Any], setting: str, *, write: bool = True, lock: int | None = None
) -> Iterator[PgConnection]:
    """One transaction on a pooled connection; a write commits durably whatever ``setting`` says.

    A read runs in one REPEATABLE READ snapshot (a page and its total agree); ``lock`` takes
    that transaction-scoped advisory lock first (several nodes appending to one chain).
    """
    with pool.connection() as conn, conn.transaction():
        if not write:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        elif setting not in DURABLE_COMMIT:
            conn.execute("SET LOCAL synchronous_commit = on")
        if lock is not None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        yield PgConnection(conn)


class DurablePool:
    """A store's own connection pool and the server's ``synchronous_commit``, read once at open.

    The alarm, audit and account stores each hold one (apart from the registry's,
    so a commit of theirs never waits behind a registry flush); their transactions
    go through :meth:`transaction`, which keeps every write durable.
    """

    def __init__(self, url: str, *, name: str, max_size: int, timeout: float) -> None:
        self.url = url
        self.name = name
        self.max_size = max_size
        self.timeout = timeout  # s to reach the server at open (StoreError after)
        self.commit_setting = ""  # synchronous_commit as the server sets it for us (open)
        self._pool: ConnectionPool[Any] | None = None

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` succeeded and :meth:`close` has not run since."""
        return self._pool is not None

    def open(self) -> None:
        """Connect and read the commit setting (idempotent); psycopg errors propagate for the store to map."""
        if self._pool is not None:
            return
        pool = open_pool(self.url, name=self.name, min_size=1, max_size=self.max_size, timeout=self.timeout)
        try:
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

    def require(self) -> ConnectionPool[Any]:
        """The open pool; StoreError when the store is not open."""
        if self._pool is None:
            raise StoreError(f"{self.name} store is not open")
        return self._pool

    def transaction(self, *, write: bool = True, lock: int | None = None) -> AbstractContextManager[PgConnection]:
        """:func:`durable_transaction` on this pool."""
        return durable_transaction(self.require(), self.commit_setting, write=write, lock=lock)
