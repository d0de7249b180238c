"""Acceptance runs and their snapshots on either backend (the v7 tables ``acceptance``, ``acceptance_snapshot``).

Each query is written once with ``?`` placeholders (:class:`AcceptanceQueries`);
the SQLite store is a :class:`~gateway.registry.sqlite_store.SqliteStore` with a
connection of its own on the node's file, the PostgreSQL one a small pool of its
own (:class:`~gateway.pg_tx.DurablePool`), so a run's writes never wait behind a
registry flush. ``checks`` and ``devices`` are JSON text, ``report`` the HTML.
Synchronous; the service calls it from a worker thread, one call at a time.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final

from gateway.acceptance.model import (
    Acceptance,
    AcceptanceState,
    AcceptanceSummary,
    CheckName,
    CheckState,
    DeviceRecord,
    checks_from_json,
    checks_to_json,
    devices_from_json,
    devices_to_json,
)
from gateway.pg_tx import DurablePool, PgConnection
from gateway.registry.alarm_sql import SqlConnection
from gateway.registry.sqlite_store import SqliteStore

__all__ = [
    "AcceptanceQueries",
    "AcceptanceStore",
    "PgAcceptanceStore",
    "SqliteAcceptanceStore",
    "open_acceptance_store",
]

MAX_LIST: Final = 200  # runs listed per kindergarten

_COLS: Final = (
    "id",
    "kindergarten_id",
    "district_code",
    "state",
    "started_by",
    "started_at",
    "finished_at",
    "drill_alarm_id",
    "checks",
    "devices",
    "report",
)
_LIST_COLS: Final = _COLS[:-1]  # lists leave the report out (it carries the snapshots)
_UPSERT: Final = (
    f"INSERT INTO acceptance ({', '.join(_COLS)}) VALUES ({', '.join('?' for _ in _COLS)})"
    f" ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _COLS[1:])}"
)
_SNAPSHOT_UPSERT: Final = (
    "INSERT INTO acceptance_snapshot (acceptance_id, channel_id, taken_at, jpeg) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (acceptance_id, channel_id) DO UPDATE SET taken_at = excluded.taken_at, jpeg = excluded.jpeg"
)
_LATEST: Final = (
    f"SELECT {', '.join(f'a.{c}' for c in _LIST_COLS)} FROM acceptance a"
    " WHERE a.started_at = (SELECT MAX(b.started_at) FROM acceptance b WHERE b.kindergarten_id = a.kindergarten_id)"
)
_DRILLED: Final = (
    "SELECT kindergarten_id, finished_at, checks FROM acceptance"
    " WHERE drill_alarm_id IS NOT NULL AND finished_at IS NOT NULL"
)
_PASSED: Final = (
    f"SELECT {', '.join(f'a.{c}' for c in _LIST_COLS)} FROM acceptance a WHERE a.state = 'passed'"
    " AND a.finished_at = (SELECT MAX(b.finished_at) FROM acceptance b"
    " WHERE b.kindergarten_id = a.kindergarten_id AND b.state = 'passed')"
)


def _values(run: Acceptance) -> tuple[Any, ...]:
    return (
        run.id,
        run.kindergarten_id,
        run.district_code,
        run.state.value,
        run.started_by,
        run.started_at,
        run.finished_at,
        run.drill_alarm_id,
        json.dumps(checks_to_json(run.checks), ensure_ascii=False),
        json.dumps(devices_to_json(run.devices), ensure_ascii=False),
        run.report,
    )


def _run(row: Any) -> Acceptance:
    return Acceptance(
        id=str(row[0]),
        kindergarten_id=str(row[1]),
        district_code=str(row[2]),
        state=AcceptanceState(row[3]),
        started_by=str(row[4]),
        started_at=float(row[5]),
        finished_at=float(row[6]) if row[6] is not None else None,
        drill_alarm_id=str(row[7]) if row[7] is not None else None,
        checks=checks_from_json(json.loads(row[8] or "[]")),
        devices=devices_from_json(json.loads(row[9] or "[]")),
        report=str(row[10]) if len(row) > 10 and row[10] is not None else "",
    )


def _drill_passed(checks_text: str) -> bool:
    return any(
        c.name is CheckName.DRILL and c.state is CheckState.PASSED for c in checks_from_json(json.loads(checks_text))
    )


class AcceptanceQueries(ABC):
    """The store's queries over one backend hook, :meth:`_transaction`."""

    @abstractmethod
    def _transaction(self, *, write: bool = True) -> AbstractContextManager[SqlConnection]:
        """One transaction yielding a connection that takes ``?`` placeholders."""

    def put(self, run: Acceptance) -> None:
        """Insert or overwrite a run."""
        with self._transaction() as conn:
            conn.execute(_UPSERT, _values(run))

    def put_snapshot(self, acceptance_id: str, channel_id: str, taken_at: float, jpeg: bytes) -> None:
        """Keep a camera's snapshot with its run (the run's row must exist)."""
        with self._transaction() as conn:
            conn.execute(_SNAPSHOT_UPSERT, (acceptance_id, channel_id, taken_at, jpeg))

    def get(self, acceptance_id: str) -> Acceptance | None:
        """A run with its report, or None."""
        with self._transaction(write=False) as conn:
            row = conn.execute(f"SELECT {', '.join(_COLS)} FROM acceptance WHERE id = ?", (acceptance_id,)).fetchone()
        return _run(row) if row is not None else None

    def snapshots(self, acceptance_id: str) -> dict[str, bytes]:
        """Every snapshot of a run: channel id -> JPEG."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT channel_id, jpeg FROM acceptance_snapshot WHERE acceptance_id = ? ORDER BY channel_id",
                (acceptance_id,),
            ).fetchall()
        return {str(r[0]): bytes(r[1]) for r in rows}

    def snapshot(self, acceptance_id: str, channel_id: str) -> bytes | None:
        """One snapshot of a run, or None."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT jpeg FROM acceptance_snapshot WHERE acceptance_id = ? AND channel_id = ?",
                (acceptance_id, channel_id),
            ).fetchone()
        return bytes(row[0]) if row is not None else None

    def list_for(self, kindergarten_id: str, limit: int = 50) -> list[Acceptance]:
        """A kindergarten's runs, newest first, without their reports."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_LIST_COLS)} FROM acceptance WHERE kindergarten_id = ?"
                " ORDER BY started_at DESC, id DESC LIMIT ?",
                (kindergarten_id, max(1, min(limit, MAX_LIST))),
            ).fetchall()
        return [_run(r) for r in rows]

    def unfinished(self) -> list[Acceptance]:
        """Runs a stopped gateway left open (to mark aborted at start-up)."""
        states = ", ".join(f"'{s.value}'" for s in AcceptanceState if not s.finished)
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"SELECT {', '.join(_COLS)} FROM acceptance WHERE state IN ({states})").fetchall()
        return [_run(r) for r in rows]

    def latest_by_kindergarten(self) -> dict[str, AcceptanceSummary]:
        """Each kindergarten's latest run (state, when) and its latest passed drill."""
        with self._transaction(write=False) as conn:
            latest = conn.execute(_LATEST).fetchall()
            drilled = conn.execute(_DRILLED).fetchall()
        drill_at: dict[str, float] = {}
        for kindergarten_id, finished_at, checks in drilled:
            if _drill_passed(checks) and float(finished_at) > drill_at.get(kindergarten_id, 0.0):
                drill_at[str(kindergarten_id)] = float(finished_at)
        out: dict[str, AcceptanceSummary] = {}
        for row in latest:
            run = _run(row)
            out[run.kindergarten_id] = AcceptanceSummary(
                run.id,
                run.kindergarten_id,
                run.state,
                run.started_at,
                run.finished_at,
                drill_at.get(run.kindergarten_id),
            )
        return out

    def latest_passed_devices(self) -> dict[str, tuple[DeviceRecord, ...]]:
        """Per kindergarten, the devices its latest passed run recorded (what re-acceptance compares)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(_PASSED).fetchall()
        return {str(r[1]): _run(r).devices for r in rows}


class SqliteAcceptanceStore(SqliteStore, AcceptanceQueries):
    """On the node's SQLite file, a connection of its own (migrated like the registry)."""

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[Any]:
        with SqliteStore._transaction(self, write=write) as conn:
            yield conn


class PgAcceptanceStore(AcceptanceQueries):
    """On PostgreSQL, a small pool of its own; commits durable like the alarm store's."""

    def __init__(self, url: str, *, pool_size: int = 2, timeout: float = 10.0) -> None:
        self.url = url
        self._db = DurablePool(url, name="acceptance", max_size=pool_size, timeout=timeout)

    def open(self) -> None:
        from gateway.registry.pg_migrate import mapped_pg_errors  # noqa: PLC0415 (psycopg only when asked for)

        with mapped_pg_errors():
            self._db.open()

    def close(self) -> None:
        self._db.close()

    def migrate(self, target: int | None = None) -> int:
        """Apply missing migrations (shared with the registry: one schema)."""
        from gateway.registry.pg_migrate import migrate_pool  # noqa: PLC0415

        return migrate_pool(self._db.require(), target)

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[PgConnection]:
        from gateway.registry.pg_migrate import mapped_pg_errors  # noqa: PLC0415

        with mapped_pg_errors(), self._db.transaction(write=write) as conn:
            yield conn


AcceptanceStore = SqliteAcceptanceStore | PgAcceptanceStore


def open_acceptance_store(url: str) -> AcceptanceStore:
    """Open (and migrate) the acceptance store the node's database URL names."""
    from gateway.pg_connect import is_postgres_url  # noqa: PLC0415
    from gateway.registry.backends import opened, sqlite_path  # noqa: PLC0415

    if is_postgres_url(url):
        store = PgAcceptanceStore(url)
        store.open()
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store
    return opened(SqliteAcceptanceStore(sqlite_path(url)))
