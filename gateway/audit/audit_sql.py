"""The audit trail's SQL, written once for both backends (SQLite and PostgreSQL).

Columns, row mapping, filters and the read queries (head, page, records) are the
same on both; :mod:`gateway.pg_tx` lets the ``?`` placeholders run on psycopg. A
backend supplies ``_reading()`` (a connection for one read, its errors mapped to
StoreError) and its own append (each serialises the chain its own way).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

from gateway.audit.chain import AuditEntry, AuditRecord, ChainHead
from gateway.audit.store import AuditFilter, AuditPage
from gateway.errors import StoreError

__all__ = ["AppendOnlyViolation", "AuditQueries"]

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


class AuditQueries(ABC):
    """The read side of an audit store; subclasses give ``_reading()``."""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Any]:
        """A connection for one read, its errors mapped to StoreError."""

    def head(self) -> ChainHead:
        """The last record's seq and hash."""
        with self._reading() as conn:
            row = conn.execute(_HEAD).fetchone()
        return ChainHead(int(row[0]), str(row[1])) if row else ChainHead()

    def page(self, flt: AuditFilter) -> AuditPage:
        """Matching records newest first, with the total count (one read)."""
        where, args = _where(flt)
        with self._reading() as conn:
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
            with self._reading() as conn:
                rows = conn.execute(
                    f"SELECT {_COLS} FROM audit_log{clause} ORDER BY seq LIMIT ?", [*args, last, _CHUNK]
                ).fetchall()
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
