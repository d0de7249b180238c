"""One way to open kgw's SQLite files: WAL, explicit transactions, used from a store's worker thread.

The registry, the alarm store, the account store and the audit trail share the
node's database file through their own connections; each used to repeat these
lines. sqlite3 errors propagate: each store maps them to its own StoreError.
"""

from __future__ import annotations

import sqlite3
from typing import Literal

__all__ = ["connect_wal"]


def connect_wal(
    path: str, *, synchronous: Literal["NORMAL", "FULL"] = "NORMAL", foreign_keys: bool = True
) -> sqlite3.Connection:
    """A connection in autocommit mode (callers ``BEGIN`` themselves), WAL, any thread; closed again on failure."""
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn
