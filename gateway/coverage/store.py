"""The coverage dashboard's SQL, once for both backends, run on the registry store's worker thread.

Three reads and one write: device offline transitions since a time (flapping: lapsed, not unregistered),
device events in a window plus the state each device had before it (the daily
history), and the kept ``coverage_day`` rows (schema v7) with their upsert. They
run on the registry store's own connection (``StoreThread.call(fn, …)`` with a
function of the :class:`~gateway.registry.store.Store`), so a private in-memory
SQLite database is the same one the registry writes. SQL uses ``?`` placeholders;
on PostgreSQL :class:`~gateway.pg_tx.PgConnection` turns them into ``%s``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from gateway.coverage.history import CoverageDay
from gateway.errors import StoreError
from gateway.gb28181.liveness import OfflineReason
from gateway.pg_tx import PgConnection
from gateway.registry.alarm_sql import SqlConnection
from gateway.registry.sqlite_store import SqliteStore
from gateway.registry.store import Store

__all__ = ["device_events", "load_days", "offline_counts", "save_days"]

_DEVICE: Final = "'device'"

# Flapping is the uplink dropping: keepalives or registrations that lapsed. A device that said
# goodbye (REGISTER Expires: 0, e.g. an orderly reboot or the simulators stopping) did not flap.
_LAPSED: Final = ", ".join(
    f"'{r.value}'" for r in (OfflineReason.KEEPALIVE_TIMEOUT, OfflineReason.REGISTRATION_EXPIRED)
)
OFFLINE_COUNTS: Final = (
    f"SELECT entity_id, COUNT(*) FROM status_event WHERE kind = {_DEVICE} AND online = 0 AND at >= ? "
    f"AND reason IN ({_LAPSED}) GROUP BY entity_id"
)
EVENTS_BETWEEN: Final = (
    f"SELECT entity_id, online, at FROM status_event WHERE kind = {_DEVICE} AND at >= ? AND at < ? ORDER BY at"
)
# The state each device's latest event before the window left (status_event_entity: (entity_id, at)).
STATE_BEFORE: Final = (
    "SELECT e.entity_id, e.online FROM status_event e JOIN ("
    f"SELECT entity_id, MAX(at) AS at FROM status_event WHERE kind = {_DEVICE} AND at < ? GROUP BY entity_id"
    f") last ON e.entity_id = last.entity_id AND e.at = last.at WHERE e.kind = {_DEVICE}"
)
DAYS_SELECT: Final = (
    "SELECT day, district_code, complete, partial, missing FROM coverage_day WHERE day >= ? ORDER BY day, district_code"
)
DAYS_UPSERT: Final = (
    "INSERT INTO coverage_day (day, district_code, complete, partial, missing) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (day, district_code) DO UPDATE SET complete = excluded.complete, "
    "partial = excluded.partial, missing = excluded.missing"
)


@contextmanager
def _transaction(store: Store, *, write: bool = False) -> Iterator[SqlConnection]:
    """A transaction on the registry store's own connection, speaking ``?`` SQL."""
    if isinstance(store, SqliteStore):
        with store._transaction(write=write) as conn:
            yield conn
        return
    from gateway.registry.pg_store import PgStore  # noqa: PLC0415 (psycopg only when asked for)

    if isinstance(store, PgStore):
        with store._transaction() as raw:
            yield PgConnection(raw)
        return
    raise StoreError(f"coverage queries need a SQLite or PostgreSQL registry store, not {type(store).__name__}")


def offline_counts(store: Store, since: float) -> dict[str, int]:
    """Device id -> offline transitions at or after ``since``."""
    with _transaction(store) as conn:
        rows = conn.execute(OFFLINE_COUNTS, (since,)).fetchall()
    return {str(device_id): int(count) for device_id, count in rows}


def device_events(store: Store, start: float, end: float) -> tuple[dict[str, bool], list[tuple[str, bool, float]]]:
    """(state each device's latest event before ``start`` left, device events in [start, end) by time)."""
    with _transaction(store) as conn:
        before = conn.execute(STATE_BEFORE, (start,)).fetchall()
        rows = conn.execute(EVENTS_BETWEEN, (start, end)).fetchall()
    return (
        {str(device_id): bool(online) for device_id, online in before},
        [(str(device_id), bool(online), float(at)) for device_id, online, at in rows],
    )


def load_days(store: Store, first_day: str) -> list[CoverageDay]:
    """Kept rows from ``first_day`` (``YYYY-MM-DD``) on."""
    with _transaction(store) as conn:
        rows: Sequence[Any] = conn.execute(DAYS_SELECT, (first_day,)).fetchall()
    return [CoverageDay(str(d), str(c), int(a), int(b), int(m)) for d, c, a, b, m in rows]


def save_days(store: Store, days: Sequence[CoverageDay]) -> int:
    """Keep (insert or overwrite) rows; the count written."""
    if not days:
        return 0
    with _transaction(store, write=True) as conn:
        conn.executemany(DAYS_UPSERT, [(d.day, d.district_code, d.complete, d.partial, d.missing) for d in days])
    return len(days)
