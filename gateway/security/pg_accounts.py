"""PostgreSQL implementation of :class:`~gateway.security.accounts.AccountStore`.

Every gateway node of a deployment shares one database, so an operator created
with ``kgw user add --db postgresql://…`` logs in on any node, and a session or a
revoked token is the same everywhere. Same tables and queries as SQLite
(:mod:`gateway.security.account_sql`), in PostgreSQL's dialect, on a small pool
of its own; the tables migrate under an advisory lock (several nodes start at once).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import psycopg
from psycopg import errors as pg_errors

from gateway.errors import StoreError
from gateway.pg_tx import DurablePool, PgConnection
from gateway.security.account_sql import SqlAccountStore
from gateway.security.accounts import DuplicateAccount

__all__ = ["PgAccountStore"]

ACCOUNT_LOCK_KEY: Final = 2818_1_2014  # pg_advisory_xact_lock key while migrating the account tables

# Append only, in step with sqlite_accounts._MIGRATIONS (same tables and columns).
_MIGRATIONS: Final = [
    """
    CREATE TABLE account_user (
        username        TEXT PRIMARY KEY,
        password_hash   TEXT NOT NULL,
        role            TEXT NOT NULL,
        district_code   TEXT,
        kindergarten_id TEXT,
        disabled        INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        created_at      DOUBLE PRECISION NOT NULL,
        changed_at      DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE account_session (
        id_hash      TEXT PRIMARY KEY,
        username     TEXT NOT NULL REFERENCES account_user (username) ON DELETE CASCADE,
        created_at   DOUBLE PRECISION NOT NULL,
        last_seen_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX account_session_user ON account_session (username);
    CREATE TABLE account_token (
        name            TEXT PRIMARY KEY,
        token_hash      TEXT NOT NULL UNIQUE,
        role            TEXT NOT NULL,
        district_code   TEXT,
        kindergarten_id TEXT,
        metrics_only    INTEGER NOT NULL DEFAULT 0 CHECK (metrics_only IN (0, 1)),
        created_at      DOUBLE PRECISION NOT NULL,
        revoked_at      DOUBLE PRECISION,
        last_used_at    DOUBLE PRECISION
    );
    """,
]


class PgAccountStore(SqlAccountStore):
    """The account tables on PostgreSQL. One thread at a time."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self._db = DurablePool(url, name="accounts", max_size=2, timeout=timeout)

    def open(self) -> None:
        """Connect and create or migrate the account tables."""
        if self._db.is_open:
            return
        try:
            with self._mapped():
                self._db.open()
            self._migrate()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Disconnect (a second call does nothing)."""
        self._db.close()

    @staticmethod
    @contextmanager
    def _mapped() -> Iterator[None]:
        try:
            yield
        except pg_errors.IntegrityError as exc:
            raise DuplicateAccount(f"exists already ({str(exc).strip().splitlines()[0]})") from exc
        except psycopg.Error as exc:
            raise StoreError(f"postgresql: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}") from exc

    @contextmanager
    def _tx(self, *, lock: int | None = None) -> Iterator[PgConnection]:
        with self._mapped(), self._db.transaction(lock=lock) as conn:
            yield conn

    def _migrate(self) -> None:
        for version, script in enumerate(_MIGRATIONS, start=1):
            with self._tx(lock=ACCOUNT_LOCK_KEY) as conn:
                conn.raw.execute(b"CREATE TABLE IF NOT EXISTS account_schema (version INTEGER PRIMARY KEY)")
                current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM account_schema").fetchone()[0]
                if current > len(_MIGRATIONS):
                    raise StoreError(f"account tables v{current} are newer than this code")
                if current >= version:
                    continue
                conn.raw.execute(script.encode())
                conn.execute("INSERT INTO account_schema (version) VALUES (?)", (version,))
