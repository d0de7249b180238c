"""``kgw audit verify`` and ``kgw audit export``: check the hash chain, write the trail as CSV or JSON lines.

Both read the node's database file directly (``--db``, default the gateway's
``var/kgw.db``) and may run while the node writes to it.

``verify`` exits 0 with ``N records, chain intact`` (and the head, to keep
elsewhere: a chain cannot show its own truncated tail), or 1 naming the first
bad sequence number and why. ``export`` writes every record (or a time window)
in chain order, hashes included, so the export can be checked on its own.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from datetime import datetime
from typing import TextIO

from gateway.audit.backends import open_audit_store
from gateway.audit.chain import AuditRecord, verify
from gateway.audit.store import AuditFilter, AuditStore
from gateway.errors import StoreError
from gateway.pg_connect import is_postgres_url
from gateway.registry.backends import sqlite_path
from gateway.timetext import parse_when

__all__ = ["add_audit_parser", "run_audit"]

DEFAULT_DB = "var/kgw.db"


def add_audit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kgw audit verify|export``."""
    audit = sub.add_parser("audit", help="check or export the audit trail (who viewed what, when, how long)")
    actions = audit.add_subparsers(dest="audit_command", required=True)
    check = actions.add_parser("verify", help="check the hash chain; exit 1 naming the first bad record")
    check.add_argument("--db", default=DEFAULT_DB, help=f"the node's database (default {DEFAULT_DB})")
    export = actions.add_parser("export", help="write the trail in chain order (hashes included)")
    export.add_argument("--db", default=DEFAULT_DB, help=f"the node's database (default {DEFAULT_DB})")
    export.add_argument("--since", type=_time, help="from this time (epoch seconds or ISO 8601, local time)")
    export.add_argument("--until", type=_time, help="up to this time (inclusive)")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="csv (default) or jsonl")
    export.add_argument("--output", "-o", help="file to write (default standard output)")


def _time(text: str) -> float:
    try:
        return parse_when(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def run_audit(args: argparse.Namespace) -> int:
    """Run ``kgw audit …``; the exit status."""
    try:
        if args.audit_command == "verify":
            return _verify(args.db)
        out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
        try:
            count = _export(args.db, AuditFilter(since=args.since, until=args.until), args.format, out)
        finally:
            if out is not sys.stdout:
                out.close()
        print(f"{count} records exported", file=sys.stderr)
        return 0
    except StoreError as exc:
        print(f"kgw audit: {exc}", file=sys.stderr)
        return 2


def _existing(db: str) -> AuditStore:
    """The opened store of an existing database (a typo must not verify a new, empty file as intact)."""
    if not is_postgres_url(db):  # a PostgreSQL database that does not exist fails to connect
        path = sqlite_path(db)
        if path != ":memory:" and not os.path.isfile(path):
            raise StoreError(f"no database at {path}")
    store = open_audit_store(db)
    store.open()
    return store


def _verify(db: str) -> int:
    store = _existing(db)
    try:
        result = verify(store.records())
    finally:
        store.close()
    if result.ok:
        print(f"{result.count} records, chain intact (head seq {result.head.seq}, hash {result.head.hash})")
        return 0
    print(
        f"chain broken at seq {result.bad_seq}: {result.reason} ({result.count} records before it intact)",
        file=sys.stderr,
    )
    return 1


def record_dict(record: AuditRecord) -> dict[str, object]:
    """A record as a flat dict (the JSON-lines export): every stored field, detail as its stored text."""
    e = record.entry
    return {
        "seq": record.seq,
        "at": e.at,
        "time": datetime.fromtimestamp(e.at).astimezone().isoformat(timespec="milliseconds"),
        "actor": e.actor,
        "role": e.role,
        "via": e.via,
        "source": e.source,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "detail": e.detail,
        "duration": e.duration,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def _export(db: str, flt: AuditFilter, fmt: str, out: TextIO) -> int:
    store = _existing(db)
    count = 0
    try:
        writer = csv.writer(out) if fmt == "csv" else None
        for record in store.records(flt):
            row = record_dict(record)
            if writer is not None:
                if count == 0:
                    writer.writerow(list(row))
                writer.writerow([_cell(v) for v in row.values()])
            else:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    finally:
        store.close()
    return count


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return ("'" + text) if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
