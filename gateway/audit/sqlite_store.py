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

from gateway.audit.chain import AuditEntry, AuditRecord, ChainHead, chain
from gateway.audit.store import AuditFilter, AuditPage
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

_COLS: Final = "seq, at, actor, role, via, source, action, target, outcome, detail, duration, prev_hash, hash"
_INSERT: Final = f"INSERT INTO audit_log ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_HEAD: Final = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
_CHUNK: Final = 2000


class AppendOnlyViolation(StoreError):
    """Something tried to change or delete an audit record."""


def _row(record: AuditRecord) -> tuple[Any, ...]:
    e = record.entry
    return (
        record.seq,
        e.at,
        e.actor,
        e.role,
        e.via,
        e.source,
        e.action,
        e.target,
        e.outcome,
        e.detail,
        e.duration,
        record.prev_hash,
        record.hash,
    )


def _record(row: Sequence[Any]) -> AuditRecord:
    seq, at, actor, role, via, source, action, target, outcome, detail, duration, prev_hash, hash_ = row
    entry = AuditEntry(
        at=float(at),
        actor=str(actor),
        role=str(role),
        via=str(via),
        source=str(source),
        action=str(action),
        target=str(target),
        outcome=str(outcome),
        detail=str(detail),
        duration=None if duration is None else float(duration),
    )
    return AuditRecord(int(seq), entry, str(prev_hash), str(hash_))


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


class SqliteAuditStore:
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

    def head(self) -> ChainHead:
        """The last record's seq and hash."""
        with _mapped():
            row = self._require().execute(_HEAD).fetchone()
        return ChainHead(int(row[0]), str(row[1])) if row else ChainHead()

    def page(self, flt: AuditFilter) -> AuditPage:
        """Matching records newest first, with the total count."""
        where, args = _where(flt)
        conn = self._require()
        with _mapped():
            total = int(conn.execute(f"SELECT COUNT(*) FROM audit_log{where}", args).fetchone()[0])
            rows = conn.execute(
                f"SELECT {_COLS} FROM audit_log{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                [*args, flt.limit, flt.offset],
            ).fetchall()
        return AuditPage([_record(r) for r in rows], total, flt.offset, flt.limit)

    def records(self, flt: AuditFilter | None = None) -> Iterator[AuditRecord]:
        """Records in seq order (all, or those ``flt`` matches), fetched in chunks by seq."""
        where, args = _where(flt or AuditFilter())
        clause = f"{where} AND seq > ?" if where else " WHERE seq > ?"
        last = 0
        while True:
            with _mapped():
                rows = (
                    self._require()
                    .execute(f"SELECT {_COLS} FROM audit_log{clause} ORDER BY seq LIMIT ?", [*args, last, _CHUNK])
                    .fetchall()
                )
            for row in rows:
                yield _record(row)
            if len(rows) < _CHUNK:
                return
            last = int(rows[-1][0])


def _where(flt: AuditFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in (("actor", flt.actor), ("action", flt.action), ("target", flt.target)):
        if value:
            clauses.append(f"{column} = ?")
            args.append(value)
    if flt.since is not None:
        clauses.append("at >= ?")
        args.append(flt.since)
    if flt.until is not None:
        clauses.append("at <= ?")
        args.append(flt.until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
