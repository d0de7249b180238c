"""Migrating a PostgreSQL database exactly once, however many processes start at the same time.

The version lives in ``kgw_schema`` (one row per applied version, like SQLite's
``schema_version`` table). Every migration runs in its own transaction holding
``pg_advisory_xact_lock(SCHEMA_LOCK_KEY)``: a second process starting at the same
moment waits on the lock, then re-reads the version and finds nothing left to do.
PostgreSQL's DDL is transactional, so a failed migration leaves no half-made table.
Shared by every PostgreSQL store (registry, alarms, …): they all migrate one schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from gateway.errors import StoreConstraintError, StoreError
from gateway.registry.pg_schema import PG_MIGRATIONS, SCHEMA_LOCK_KEY

__all__ = ["VERSION_TABLE", "mapped_pg_errors", "migrate_pool", "schema_version_of"]

VERSION_TABLE: Final = "kgw_schema"

_CREATE_VERSION_TABLE: Final = (
    f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
    " version INTEGER PRIMARY KEY,"
    " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)


@contextmanager
def mapped_pg_errors() -> Iterator[None]:
    """Translate psycopg exceptions into the gateway's StoreError taxonomy (like SQLite's)."""
    try:
        yield
    except pg_errors.IntegrityError as exc:
        raise StoreConstraintError(f"constraint failed: {_first_line(exc)}") from exc
    except psycopg.Error as exc:  # also PoolTimeout: the server went away and did not come back in time
        raise StoreError(f"postgresql: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def schema_version_of(conn: psycopg.Connection[Any]) -> int:
    """The version a database is at (0 when ``kgw_schema`` does not exist yet)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    if row is None or not row[0]:
        return 0
    row = conn.execute(f"SELECT MAX(version) FROM {VERSION_TABLE}").fetchone()
    return int(row[0] or 0) if row is not None else 0


def migrate_pool(pool: ConnectionPool[Any], target: int | None = None) -> int:
    """Apply missing migrations up to ``target`` (default: all), one locked transaction each.

    Returns how many this call applied (0 when current, or when another process
    did the work while we waited for the lock). Refuses a database written by
    newer code rather than guessing.
    """
    goal = len(PG_MIGRATIONS) if target is None else target
    if not 0 <= goal <= len(PG_MIGRATIONS):
        raise StoreError(f"no schema version {goal}")
    with mapped_pg_errors(), pool.connection() as conn:
        current = schema_version_of(conn)
        conn.rollback()
        if current > len(PG_MIGRATIONS):
            raise StoreError(f"database schema v{current} is newer than this code")
        if current >= goal:
            return 0  # a true no-op: no lock, no write
        applied = 0
        for version in range(current + 1, goal + 1):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
                conn.execute(_CREATE_VERSION_TABLE)
                if schema_version_of(conn) >= version:  # re-read under the lock:
                    continue  # another process migrated meanwhile
                conn.execute(PG_MIGRATIONS[version - 1].encode())  # several statements, no parameters
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (version,))
                applied += 1
        return applied
