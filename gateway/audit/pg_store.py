"""The audit trail on PostgreSQL: table ``audit_log``, append-only enforced by the database.

Several gateway nodes (and ``kgw user …`` commands) append to one database, and
their records must still form ONE hash chain. Each append runs in a transaction
that first takes ``pg_advisory_xact_lock(AUDIT_LOCK_KEY)``, then reads the head,
chains after it, inserts and commits: the next appender, wherever it runs, waits
on the lock and chains after that commit. ``seq`` is the primary key, so even a
writer that skipped the lock could not fork the chain silently (its insert fails).

Append-only: a trigger raises on every UPDATE and DELETE of a row and another on
TRUNCATE, for every role including the owner (only someone who first drops a
trigger can change a row, which the hash chain then exposes: ``kgw audit
verify``). Commits are durable (:mod:`gateway.pg_tx`): a record is evidence.

Same columns, mapping and filters as :mod:`gateway.audit.sqlite_store`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

import psycopg

from gateway.audit.audit_sql import _HEAD, _INSERT, AppendOnlyViolation, AuditQueries, _row
from gateway.audit.chain import AuditEntry, AuditRecord, ChainHead, chain
from gateway.errors import StoreError
from gateway.pg_tx import DurablePool, PgConnection

__all__ = ["AUDIT_LOCK_KEY", "PG_SCHEMA", "PgAuditStore"]

# pg_advisory_xact_lock key serialising appends (any constant unique to kgw's audit chain).
AUDIT_LOCK_KEY: Final = 2818_1_2013

PG_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq BIGINT PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        via TEXT NOT NULL,
        source TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        duration DOUBLE PRECISION,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at)",
    "CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor)",
    "CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target)",
    """CREATE OR REPLACE FUNCTION kgw_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'restrict_violation'; END $$""",
    """CREATE OR REPLACE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION kgw_audit_log_append_only()""",
    """CREATE OR REPLACE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION kgw_audit_log_append_only()""",
    """CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
       FOR EACH STATEMENT EXECUTE FUNCTION kgw_audit_log_append_only()""",
)


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "append-only" in text:
            raise AppendOnlyViolation(text) from exc
        raise StoreError(f"audit store: {text}") from exc


class PgAuditStore(AuditQueries):
    """:class:`~gateway.audit.store.AuditStore` on PostgreSQL (one thread at a time per instance)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self._db = DurablePool(url, name="audit", max_size=1, timeout=timeout)

    def __enter__(self) -> PgAuditStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect and create the table and its guards (under the append lock: nodes may start at once)."""
        if self._db.is_open:
            return
        try:
            with _mapped():
                self._db.open()
                with self._db.transaction(lock=AUDIT_LOCK_KEY) as conn:
                    for statement in PG_SCHEMA:
                        conn.raw.execute(statement.encode())  # DDL without parameters
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Disconnect (a second call does nothing)."""
        self._db.close()

    @contextmanager
    def _tx(self, *, write: bool = False, lock: bool = False) -> Iterator[PgConnection]:
        with _mapped(), self._db.transaction(write=write, lock=AUDIT_LOCK_KEY if lock else None) as conn:
            yield conn

    def append(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Chain after the head read under the append lock, insert, commit: all or nothing."""
        with self._tx(write=True, lock=True) as conn:
            row = conn.execute(_HEAD).fetchone()
            head = ChainHead(int(row[0]), str(row[1])) if row else ChainHead()
            records, _ = chain(head, entries)
            conn.executemany(_INSERT, [_row(r) for r in records])
        return records

    @contextmanager
    def _reading(self) -> Iterator[PgConnection]:
        with self._tx() as conn:
            yield conn
