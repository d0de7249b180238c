"""What the audit trail needs from a database: append a chained batch, read pages, walk the chain.

The SQLite implementation is :class:`gateway.audit.sqlite_store.SqliteAuditStore`;
a PostgreSQL one will implement the same protocol. Implementations are
synchronous and used from one thread at a time (the recorder's worker thread,
or a CLI command).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.audit.chain import AuditEntry, AuditRecord, ChainHead

__all__ = ["AuditFilter", "AuditPage", "AuditStore"]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which records a page or an export holds (every given field must match; times inclusive)."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: float | None = None
    until: float | None = None
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Records newest first, and how many match the filter in all."""

    items: list[AuditRecord]
    total: int
    offset: int
    limit: int


class AuditStore(Protocol):
    """An append-only, hash-chained table of audit records."""

    def open(self) -> None:
        """Connect and create the table (and its append-only guards) when missing."""

    def close(self) -> None:
        """Disconnect (a second call does nothing)."""

    def append(self, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Chain ``entries`` after the stored head and insert them in one transaction; the stored records."""

    def head(self) -> ChainHead:
        """The last stored record's seq and hash (the genesis head when empty)."""

    def page(self, flt: AuditFilter) -> AuditPage:
        """One page of matching records, newest first."""

    def records(self, flt: AuditFilter | None = None) -> Iterator[AuditRecord]:
        """Every record (or those ``flt`` matches; its offset and limit are ignored) in chain order, in chunks."""
