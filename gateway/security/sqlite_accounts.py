"""SQLite implementation of :class:`~gateway.security.accounts.AccountStore`.

Users, sessions and API tokens live in the node's SQLite file (``--db``) in
tables of their own, with a schema version of their own (``account_schema``),
so they migrate independently of the registry and alarm tables. Like the
alarm store it opens its own connection and is used from its own worker
thread (:class:`~gateway.security.service.AccountService`) or, by ``kgw user``,
synchronously while the gateway runs: WAL and the busy timeout serialise the
writers at the file level.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from gateway.errors import StoreError
from gateway.security.account_sql import SqlAccountStore
from gateway.security.accounts import DuplicateAccount
from gateway.sqlite_connect import connect_wal

__all__ = ["SqliteAccountStore", "open_account_store"]

# Append only: _MIGRATIONS[n - 1] takes the account tables from version n-1 to n.
_MIGRATIONS: Final = [
    """
    CREATE TABLE account_user (
        username        TEXT PRIMARY KEY,
        password_hash   TEXT NOT NULL,
        role            TEXT NOT NULL,
        district_code   TEXT,
        kindergarten_id TEXT,
        disabled        INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        created_at      REAL NOT NULL,
        changed_at      REAL NOT NULL
    );
    CREATE TABLE account_session (
        id_hash      TEXT PRIMARY KEY,
        username     TEXT NOT NULL REFERENCES account_user (username) ON DELETE CASCADE,
        created_at   REAL NOT NULL,
        last_seen_at REAL NOT NULL
    );
    CREATE INDEX account_session_user ON account_session (username);
    CREATE TABLE account_token (
        name            TEXT PRIMARY KEY,
        token_hash      TEXT NOT NULL UNIQUE,
        role            TEXT NOT NULL,
        district_code   TEXT,
        kindergarten_id TEXT,
        metrics_only    INTEGER NOT NULL DEFAULT 0 CHECK (metrics_only IN (0, 1)),
        created_at      REAL NOT NULL,
        revoked_at      REAL,
        last_used_at    REAL
    );
    """,
]


class SqliteAccountStore(SqlAccountStore):
    """The account tables on one SQLite file (or ``:memory:``). One thread at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Connect (WAL, foreign keys) and create or migrate the account tables."""
        if self._conn is not None:
            return
        try:
            conn = connect_wal(self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from exc
        self._conn = conn
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Disconnect (a second call does nothing)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._conn is None:
            raise StoreError("account store is not open")
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            raise DuplicateAccount(f"exists already ({exc})") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def _migrate(self) -> None:
        for version, script in enumerate(_MIGRATIONS, start=1):
            with self._tx() as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS account_schema (version INTEGER PRIMARY KEY)")
                current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM account_schema").fetchone()[0]
                if current > len(_MIGRATIONS):
                    raise StoreError(f"account tables v{current} are newer than this code")
                if current >= version:
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO account_schema (version) VALUES (?)", (version,))


def open_account_store(url: str) -> SqlAccountStore:
    """Open the account tables of a store URL (``--db``): PostgreSQL for ``postgresql://…``, else the
    SQLite file it names (its folder is made)."""
    from gateway.pg_connect import is_postgres_url  # noqa: PLC0415 (keeps this module light)
    from gateway.registry.backends import sqlite_path  # noqa: PLC0415

    if is_postgres_url(url):
        from gateway.security.pg_accounts import PgAccountStore  # noqa: PLC0415 (psycopg only when asked for)

        pg = PgAccountStore(url)
        pg.open()
        return pg
    path = sqlite_path(url)
    if path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    store = SqliteAccountStore(path)
    store.open()
    return store
