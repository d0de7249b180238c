"""The gateway processes of a deployment, in the shared database: who serves what, and who is alive.

Each process of a split city (gateway/cluster.py) writes one row every few
seconds — its node name, SIP ID, districts, SIP address and console URL — and
reads everyone's. That heartbeat is how any process tells that another one
died: nobody can mark a SIGKILLed process's devices offline, so the whole-city
view (gateway/city_view.py) shows a district's devices offline while the row
of the node serving it is stale, and as the store says again once the node is
back (its restored sessions and its devices' keepalives keep the rows right).

A table of its own (``kgw_node``, created if missing on either backend) and
plain SQL: the heartbeat is not registry state and must not wait behind the
registry's write-behind batches.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

from gateway.errors import StoreError
from gateway.pg_connect import is_postgres_url, open_pool
from gateway.sqlite_connect import connect_wal

__all__ = ["HEARTBEAT_PERIOD", "NodeBook", "NodeRecord"]

HEARTBEAT_PERIOD = 2.0  # s between two rows of one process
_CREATE = (
    "CREATE TABLE IF NOT EXISTS kgw_node (name TEXT PRIMARY KEY, gateway_id TEXT NOT NULL, "
    "districts TEXT NOT NULL, sip TEXT NOT NULL, console TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL, "
    "seen_at DOUBLE PRECISION NOT NULL)"
)
_UPSERT = (
    "INSERT INTO kgw_node (name, gateway_id, districts, sip, console, started_at, seen_at) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (name) DO UPDATE SET gateway_id = excluded.gateway_id, "
    "districts = excluded.districts, sip = excluded.sip, console = excluded.console, "
    "started_at = excluded.started_at, seen_at = excluded.seen_at"
)
_SELECT = "SELECT name, gateway_id, districts, sip, console, started_at, seen_at FROM kgw_node ORDER BY name"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One gateway process as it last described itself (``districts`` empty: every district)."""

    name: str
    gateway_id: str
    districts: tuple[str, ...]
    sip: str  # HOST:PORT devices register at
    console: str  # base URL of its console/API ("" when unknown)
    started_at: float
    seen_at: float

    def alive(self, now: float, stale_after: float) -> bool:
        """Whether its last heartbeat is recent (wall-clock seconds)."""
        return now - self.seen_at <= stale_after

    def serves(self, district: str) -> bool:
        """Whether it serves ``district``."""
        return not self.districts or district in self.districts


class NodeBook:
    """The ``kgw_node`` rows on the registry's database (SQLite file or PostgreSQL); blocking, for a thread.

    One lock around every use of the connection: a heartbeat runs on a worker thread and
    may still be executing when the loop's shutdown closes the book — closing a SQLite
    connection under a running statement crashes the process (seen as a segfault).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._pool: Any = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Connect and create the table if missing."""
        try:
            if is_postgres_url(self.url):
                self._pool = open_pool(self.url, name="nodes", min_size=1, max_size=1)
            else:
                path = self.url.removeprefix("sqlite:///") if self.url.startswith("sqlite:///") else self.url
                self._sqlite = connect_wal(path)
            self._execute(_CREATE, ())
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the node table: {exc}") from exc

    def close(self) -> None:
        """Disconnect (after a statement another thread is running)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def heartbeat(self, record: NodeRecord) -> None:
        """Write (or refresh) this process's row."""
        districts = json.dumps(list(record.districts))
        row = (record.name, record.gateway_id, districts, record.sip, record.console, record.started_at, record.seen_at)
        self._execute(_UPSERT, row)

    def nodes(self) -> list[NodeRecord]:
        """Every process's last row, by name."""
        out = []
        for name, gateway_id, districts, sip, console, started_at, seen_at in self._query(_SELECT):
            codes = json.loads(districts) if districts else []
            out.append(NodeRecord(name, gateway_id, tuple(str(c) for c in codes), sip, console, started_at, seen_at))
        return out

    def _execute(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            self._execute_locked(sql, params)

    def _execute_locked(self, sql: str, params: tuple[Any, ...]) -> None:
        if self._pool is not None:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(sql.format(p="%s"), params)
            return
        if self._sqlite is None:
            raise StoreError("node table not open")
        try:
            self._sqlite.execute(sql.format(p="?"), params)
        except sqlite3.Error as exc:
            raise StoreError(f"node table: {exc}") from exc

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._query_locked(sql)

    def _query_locked(self, sql: str) -> list[tuple[Any, ...]]:
        if self._pool is not None:
            with self._pool.connection() as conn:
                return list(conn.execute(sql).fetchall())
        if self._sqlite is None:
            raise StoreError("node table not open")
        try:
            return list(self._sqlite.execute(sql).fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"node table: {exc}") from exc
