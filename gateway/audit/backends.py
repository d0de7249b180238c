"""Opening the audit store a node's database URL names, and appending from a command (no running node).

The trail lives in the same database as the registry (``--db``): SQLite (a file,
or ``:memory:``) or PostgreSQL, which several gateway nodes share (one chain). :func:`append_now` is how one-shot commands
such as ``kgw user add`` or ``kgw token revoke`` record what they changed: one
record, chained and committed before the command exits, safe while a gateway
writes to the same file.
"""

from __future__ import annotations

import dataclasses
import getpass
import time
from collections.abc import Mapping

from gateway.audit.actions import AuditAction
from gateway.audit.chain import AuditRecord
from gateway.audit.sqlite_store import SqliteAuditStore
from gateway.audit.store import AuditStore
from gateway.audit.trail import make_entry
from gateway.pg_connect import is_postgres_url
from gateway.registry.backends import sqlite_path
from gateway.security.principal import Principal

__all__ = ["append_now", "open_audit_store"]


def open_audit_store(url: str) -> AuditStore:
    """The (unopened) audit store of a database URL or path: PostgreSQL for ``postgresql://…``, else SQLite."""
    if is_postgres_url(url):
        from gateway.audit.pg_store import PgAuditStore  # noqa: PLC0415 (psycopg only when asked for)

        return PgAuditStore(url)
    return SqliteAuditStore(sqlite_path(url))


def append_now(
    db: str,
    action: AuditAction,
    *,
    actor: Principal | None = None,
    target: str = "",
    source: str = "",
    outcome: str = "ok",
    detail: Mapping[str, object] | None = None,
) -> AuditRecord:
    """Append one record to the trail in ``db`` now and return it as stored.

    Without ``actor`` the record names the operating-system user who ran the
    command (``os:<login>``, via ``cli``); ``source`` defaults to ``local``.
    """
    entry = make_entry(
        action,
        at=time.time(),
        actor=actor,
        target=target,
        source=source or (actor.source if actor is not None else "") or "local",
        outcome=outcome,
        detail=detail,
        via=actor.via if actor is not None else "cli",
    )
    if actor is None:
        entry = dataclasses.replace(entry, actor=f"os:{_login()}")
    store = open_audit_store(db)
    store.open()
    try:
        return store.append([entry])[0]
    finally:
        store.close()


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
