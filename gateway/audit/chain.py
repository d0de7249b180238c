"""The audit trail's hash chain: a record's canonical bytes, its hash, and verification.

Pure: no clock, no I/O. Each stored record carries ``seq`` (1, 2, 3, …), the
hash of the record before it (``prev_hash``; :data:`GENESIS` for the first) and
its own ``hash = SHA-256(bytes.fromhex(prev_hash) || canonical_json(record))``,
where the canonical JSON covers every field but the two hashes (sorted keys, no
spaces, UTF-8). Editing any field of any record, deleting, inserting or
reordering records therefore breaks the chain at the first record touched, and
:func:`verify` names that record's sequence number.

What a chain cannot show on its own is a *truncated tail* (the last records
deleted): the remaining chain is intact. ``kgw audit verify`` prints the head
(last seq and hash) so an operator can keep it elsewhere and compare.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "GENESIS",
    "AuditEntry",
    "AuditRecord",
    "BadDetail",
    "ChainHead",
    "VerifyResult",
    "canonical_detail",
    "canonical_bytes",
    "chain",
    "link",
    "record_hash",
    "verify",
]

GENESIS: Final = hashlib.sha256(b"kgw audit trail v1").hexdigest()
"""The ``prev_hash`` of record 1: a fixed, documented value (not all zeros, so it names the format)."""


class BadDetail(ValueError):
    """A record's detail is not a JSON object of finite values."""


def canonical_detail(detail: Mapping[str, object] | None) -> str:
    """``detail`` as canonical JSON text (``{}`` when None); stored as is, so verification re-reads the same bytes."""
    try:
        return json.dumps(
            dict(detail or {}), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
        )
    except (TypeError, ValueError) as exc:
        raise BadDetail(f"audit detail is not canonical JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What happened, before it is chained: who (``actor``, ``role``, ``via``, ``source``), what, when, how long."""

    at: float  # wall-clock seconds (epoch)
    actor: str
    role: str
    via: str  # "session", "token", "upper_platform", "cli", …
    source: str  # the client address as the server trusts it
    action: str
    target: str = ""  # channel, alarm, device or user ID
    outcome: str = "ok"
    detail: str = "{}"  # canonical JSON text (see canonical_detail)
    duration: float | None = None  # seconds, for sessions that ended

    def __post_init__(self) -> None:
        if not math.isfinite(self.at):
            raise ValueError("audit time must be finite")
        if self.duration is not None and not math.isfinite(self.duration):
            raise ValueError("audit duration must be finite")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A chained, stored entry."""

    seq: int
    entry: AuditEntry
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the chain ends: the next record gets ``seq + 1`` and ``prev_hash = hash``."""

    seq: int = 0
    hash: str = GENESIS


def canonical_bytes(seq: int, entry: AuditEntry) -> bytes:
    """The bytes a record's hash covers: every field but the hashes, as sorted compact UTF-8 JSON."""
    body = {
        "seq": seq,
        "at": entry.at,
        "actor": entry.actor,
        "role": entry.role,
        "via": entry.via,
        "source": entry.source,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "detail": entry.detail,
        "duration": entry.duration,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def record_hash(prev_hash: str, seq: int, entry: AuditEntry) -> str:
    """``SHA-256(prev_hash bytes || canonical_bytes)`` as 64 hex digits."""
    try:
        prev = bytes.fromhex(prev_hash)
    except ValueError:
        prev = prev_hash.encode()  # a damaged prev_hash still hashes (and then fails to match)
    return hashlib.sha256(prev + canonical_bytes(seq, entry)).hexdigest()


def link(head: ChainHead, entry: AuditEntry) -> AuditRecord:
    """Chain one entry after ``head``."""
    seq = head.seq + 1
    return AuditRecord(seq, entry, head.hash, record_hash(head.hash, seq, entry))


def chain(head: ChainHead, entries: Iterable[AuditEntry]) -> tuple[list[AuditRecord], ChainHead]:
    """Chain entries after ``head``; returns the records and the new head."""
    records = []
    for entry in entries:
        record = link(head, entry)
        records.append(record)
        head = ChainHead(record.seq, record.hash)
    return records, head


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of :func:`verify`: ``bad_seq`` is None when the chain is intact."""

    count: int
    head: ChainHead
    bad_seq: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when every record is where it should be and unchanged."""
        return self.bad_seq is None


def verify(records: Iterable[AuditRecord], start: ChainHead | None = None) -> VerifyResult:
    """Walk the records in stored order and find the first one that breaks the chain.

    Expected: seq ``start.seq + 1``, ``+ 2``, … with no gap; each ``prev_hash`` equal to
    the previous record's hash; each ``hash`` equal to the recomputed one. The reason
    says which check failed (``missing`` for a gap, ``out of order`` for a seq that went
    back, ``prev_hash`` for a broken link, ``edited`` for a hash that does not match).
    """
    head = start or ChainHead()
    count = 0
    for record in records:
        expected = head.seq + 1
        if record.seq != expected:
            reason = (
                f"seq {expected} missing (next stored record is {record.seq})"
                if record.seq > expected
                else f"seq {record.seq} out of order (expected {expected})"
            )
            return VerifyResult(count, head, expected, reason)
        if record.prev_hash != head.hash:
            return VerifyResult(
                count, head, record.seq, f"seq {record.seq}: prev_hash does not match record {head.seq}"
            )
        if record_hash(record.prev_hash, record.seq, record.entry) != record.hash:
            return VerifyResult(count, head, record.seq, f"seq {record.seq}: edited (hash does not match its content)")
        head = ChainHead(record.seq, record.hash)
        count += 1
    return VerifyResult(count, head)
