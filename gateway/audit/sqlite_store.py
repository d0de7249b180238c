"""The audit trail in the node's SQLite file: table ``audit_log``, append-only by triggers.

The trail shares the registry's database file (its own connection, like the
alarm store) so a backup of one file holds everything. Nothing in the code
updates or deletes a row, and two triggers make SQLite refuse it for anyone
else too (``RAISE(ABORT)``): a row can only be changed by someone who first
drops a trigger — which the hash chain then exposes (``kgw audit verify``).

Appends run in ``BEGIN IMMEDIATE`` transactions that read the head inside the
write lock, so the gateway's recorder and a CLI command (``kgw user add``)
writing to the same file at once still form one chain.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from gateway.audit.audit_sql import _HEAD, _INSERT, AppendOnlyViolation, AuditQueries, _row
from gateway.audit.chain import AuditEntry, AuditRecord, ChainHead, chain
from gateway.errors import StoreError
from gateway.sqlite_connect import connect_wal

__all__ = ["SCHEMA", "SqliteAuditStore", "AppendOnlyViolation"]

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        via TEXT NOT NULL,
        source TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        duration REAL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at)",
    "CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor)",
    "CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target)",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
)


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "append-only" in str(exc):
            raise AppendOnlyViolation(str(exc)) from exc
        raise StoreError(f"audit store: {exc}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"audit store: {exc}") from exc


class SqliteAuditStore(AuditQueries):
    """:class:`~gateway.audit.store.AuditStore` on a SQLite file (or ``:memory:``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> SqliteAuditStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect (WAL, synchronous=FULL: an audit record is evidence) and create the table and triggers."""
        if self._conn is not None:
            return
        with _mapped():
            conn = connect_wal(self.path, synchronous="FULL", foreign_keys=False)
            try:
                conn.execute("BEGIN IMMEDIATE")
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                conn.close()
                raise
        self._conn = conn

    def close(self) -> None:
        """Disconnect."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with _mapped():
                conn.close()

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("audit store is not open")
        return self._conn

    def append(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Chain after the head read under the write lock, insert, commit: all or nothing."""
        conn = self._require()
        with _mapped():
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(_HEAD).fetchone()
                head = ChainHead(int(row[0]), str(row[1])) if row else ChainHead()
                records, _ = chain(head, entries)
                conn.executemany(_INSERT, map(_row, records))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return records

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        with _mapped():
            yield self._require()
