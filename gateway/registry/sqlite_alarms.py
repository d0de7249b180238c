"""SQLite implementation of :class:`~gateway.alarms.store.AlarmStore` (schema migrations v3, v4).

It is a :class:`~gateway.registry.sqlite_store.SqliteStore` on the same file as
the registry but with its own connection, used from its own worker thread, so
an alarm commit never queues behind a registry flush inside one connection;
WAL plus the busy timeout serialise the two writers at the file level.

The one difference in setup is ``synchronous=FULL``: the device is answered
"received" only after :meth:`SqliteAlarmStore.save_intake` returns, so every
commit must reach the disk (fsync), not just the WAL in the page cache.

Values map to columns of the same names; enums are stored as their text or
integer value, booleans as 0/1 and ``Alarm.problems`` as a JSON list.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Any, Final

from gateway.alarms.model import (
    MAX_ALARM_PAGE,
    Alarm,
    AlarmFilter,
    AlarmState,
    Delivery,
    DeliveryEvent,
    DeliveryState,
    Transition,
    TransitionAction,
)
from gateway.registry.model import InvalidFilter, Page, check_page
from gateway.registry.sqlite_store import SqliteStore, _mapped_errors

__all__ = ["SqliteAlarmStore"]

_ALARM_COLS: Final = tuple(f.name for f in fields(Alarm))
_DELIVERY_COLS: Final = tuple(f.name for f in fields(Delivery))
_DELIVERY_KEY: Final = ("alarm_id", "sink", "event")
_TRANSITION_COLS: Final = tuple(f.name for f in fields(Transition))


def _insert_sql(table: str, cols: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"


def _upsert_sql(table: str, cols: tuple[str, ...], key: tuple[str, ...]) -> str:
    """A full overwrite of every non-key column when ``key`` exists already."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key)
    return f"{_insert_sql(table, cols)} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"


def _in_list(values: Sequence[str]) -> str:
    """An SQL ``IN (...)`` of constant enum texts (never user input), so indexes apply."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


_ALARM_INSERT: Final = _insert_sql("alarm", _ALARM_COLS)
_ALARM_UPSERT: Final = _upsert_sql("alarm", _ALARM_COLS, ("id",))
_ALARM_SELECT: Final = f"SELECT {', '.join(_ALARM_COLS)} FROM alarm"
_DELIVERY_INSERT: Final = _insert_sql("alarm_delivery", _DELIVERY_COLS)
_DELIVERY_UPSERT: Final = _upsert_sql("alarm_delivery", _DELIVERY_COLS, _DELIVERY_KEY)
_DELIVERY_SELECT: Final = f"SELECT {', '.join(_DELIVERY_COLS)} FROM alarm_delivery"
_TRANSITION_INSERT: Final = _insert_sql("alarm_transition", _TRANSITION_COLS)
_TRANSITION_SELECT: Final = f"SELECT {', '.join(_TRANSITION_COLS)} FROM alarm_transition"

# `state <> 'delivered'` spelled exactly like the partial index alarm_delivery_open's
# WHERE clause, which is what lets SQLite use that index.
_OPEN_DELIVERIES: Final = (
    f"{_DELIVERY_SELECT} WHERE state <> '{DeliveryState.DELIVERED.value}' ORDER BY seq, sink, event"
)
# "not resolved" as an IN list (not <>) so the OR can use alarm_state and alarm_received.
_UNRESOLVED: Final = _in_list([s.value for s in AlarmState if s is not AlarmState.RESOLVED])
_ALARMS_SINCE: Final = f"{_ALARM_SELECT} WHERE received_at >= ? OR state IN {_UNRESOLVED} ORDER BY seq"

_alarm_values: Final = attrgetter(*_ALARM_COLS)
_A_STATE: Final = _ALARM_COLS.index("state")
_A_REGISTERED: Final = _ALARM_COLS.index("sender_registered")
_A_PROBLEMS: Final = _ALARM_COLS.index("problems")
_A_VERIFIED: Final = _ALARM_COLS.index("verified")
_INT_COLS: Final = tuple(_ALARM_COLS.index(c) for c in ("priority", "method", "alarm_type", "event_type"))


def _alarm_row(a: Alarm) -> tuple[Any, ...]:
    row: list[Any] = list(_alarm_values(a))
    for i in _INT_COLS:  # AlarmMethod and friends: plain ints in the database
        row[i] = None if row[i] is None else int(row[i])
    row[_A_STATE] = AlarmState(a.state).value
    row[_A_REGISTERED] = int(bool(a.sender_registered))
    row[_A_PROBLEMS] = json.dumps(list(a.problems), ensure_ascii=False)
    row[_A_VERIFIED] = int(bool(a.verified))
    return tuple(row)


def _alarm_from(row: Sequence[Any]) -> Alarm:
    values = list(row)
    values[_A_STATE] = AlarmState(values[_A_STATE])
    values[_A_REGISTERED] = bool(values[_A_REGISTERED])
    values[_A_PROBLEMS] = tuple(json.loads(values[_A_PROBLEMS]))
    values[_A_VERIFIED] = bool(values[_A_VERIFIED])
    return Alarm(*values)


def _delivery_row(d: Delivery) -> tuple[Any, ...]:
    return (
        d.alarm_id,
        d.sink,
        DeliveryEvent(d.event).value,
        d.order_key,
        d.seq,
        d.created_at,
        DeliveryState(d.state).value,
        d.attempts,
        d.next_attempt_at,
        d.last_error,
        d.delivered_at,
        int(bool(d.urgent)),
    )


def _delivery_from(row: Sequence[Any]) -> Delivery:
    alarm_id, sink, event, order_key, seq, created_at, state, attempts, next_at, error, done_at, urgent = row
    return Delivery(
        alarm_id,
        sink,
        DeliveryEvent(event),
        order_key,
        seq,
        created_at,
        DeliveryState(state),
        attempts,
        next_at,
        error,
        done_at,
        bool(urgent),
    )


def _transition_row(t: Transition) -> tuple[Any, ...]:
    return (t.alarm_id, t.at, TransitionAction(t.action).value, t.actor, t.detail)


def _transition_from(row: Sequence[Any]) -> Transition:
    alarm_id, at, action, actor, detail = row
    return Transition(alarm_id, at, TransitionAction(action), actor, detail)


class SqliteAlarmStore(SqliteStore):
    """Alarms, the delivery outbox and the audit trail on the registry's SQLite file.

    Not thread-safe: use it from one thread at a time (the alarm store worker).
    Every failure comes out as :class:`~gateway.errors.StoreError`.
    """

    def __enter__(self) -> SqliteAlarmStore:
        self.open()
        return self

    def open(self) -> None:
        """Connect like the registry store, then make every commit durable (synchronous=FULL)."""
        super().open()
        conn = self._require()
        try:
            with _mapped_errors():
                conn.execute("PRAGMA synchronous=FULL")
        except BaseException:
            self._conn = None
            conn.close()
            raise

    # --- writes -----------------------------------------------------------------

    def save_intake(
        self, alarms: Sequence[Alarm], deliveries: Sequence[Delivery], transitions: Sequence[Transition]
    ) -> None:
        """Insert new alarms, deliveries and audit lines in one fsynced transaction.

        An alarm id (or seq) already stored raises StoreConstraintError and the
        whole batch is rolled back: intake must not half-record an alarm.
        """
        with self._transaction() as conn:
            conn.executemany(_ALARM_INSERT, map(_alarm_row, alarms))
            conn.executemany(_DELIVERY_INSERT, map(_delivery_row, deliveries))
            conn.executemany(_TRANSITION_INSERT, map(_transition_row, transitions))

    def save_progress(
        self, alarms: Sequence[Alarm], deliveries: Sequence[Delivery], transitions: Sequence[Transition]
    ) -> None:
        """Overwrite alarms by id and deliveries by key (inserting new ones), append audit lines."""
        with self._transaction() as conn:
            conn.executemany(_ALARM_UPSERT, map(_alarm_row, alarms))
            conn.executemany(_DELIVERY_UPSERT, map(_delivery_row, deliveries))
            conn.executemany(_TRANSITION_INSERT, map(_transition_row, transitions))

    # --- startup reloads ----------------------------------------------------------

    def load_open_deliveries(self) -> list[Delivery]:
        """Pending and dead deliveries, ordered by (seq, sink, event)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(_OPEN_DELIVERIES).fetchall()
        return [_delivery_from(r) for r in rows]

    def load_alarms_since(self, since: float) -> list[Alarm]:
        """Alarms received at or after ``since`` plus every unresolved one, by seq."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(_ALARMS_SINCE, (since,)).fetchall()
        return [_alarm_from(r) for r in rows]

    def max_seq(self) -> int:
        """The highest alarm seq stored, 0 when there is none."""
        with self._transaction(write=False) as conn:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM alarm").fetchone()
        return int(row[0])

    # --- queries ------------------------------------------------------------------

    def get_alarm(self, alarm_id: str) -> Alarm | None:
        """One alarm by id, or None."""
        with self._transaction(write=False) as conn:
            row = conn.execute(f"{_ALARM_SELECT} WHERE id = ?", (alarm_id,)).fetchone()
        return None if row is None else _alarm_from(row)

    def list_alarms(self, flt: AlarmFilter) -> Page[Alarm]:
        """Alarms matching ``flt``, newest (highest seq) first; InvalidFilter on a bad page."""
        check_page(flt.offset, flt.limit, MAX_ALARM_PAGE)
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("district_code = ?", flt.district_code),
            ("kindergarten_id = ?", flt.kindergarten_id),
            ("state = ?", None if flt.state is None else AlarmState(flt.state).value),
            ("received_at >= ?", flt.since),
            ("received_at < ?", flt.until),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if flt.escalated is not None:
            clauses.append("escalated_at IS NOT NULL" if flt.escalated else "escalated_at IS NULL")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._transaction(write=False) as conn:  # one snapshot: total and page agree
            total = conn.execute(f"SELECT COUNT(*) FROM alarm {where}", params).fetchone()[0]
            rows = conn.execute(
                f"{_ALARM_SELECT} {where} ORDER BY seq DESC LIMIT ? OFFSET ?", [*params, flt.limit, flt.offset]
            ).fetchall()
        return Page(tuple(map(_alarm_from, rows)), int(total), flt.offset, flt.limit)

    def deliveries_of(self, alarm_id: str) -> list[Delivery]:
        """The deliveries of one alarm, by (sink, event)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"{_DELIVERY_SELECT} WHERE alarm_id = ? ORDER BY sink, event", (alarm_id,)).fetchall()
        return [_delivery_from(r) for r in rows]

    def transitions_of(self, alarm_id: str) -> list[Transition]:
        """The audit trail of one alarm in the order it was appended."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"{_TRANSITION_SELECT} WHERE alarm_id = ? ORDER BY seq", (alarm_id,)).fetchall()
        return [_transition_from(r) for r in rows]

    def list_deliveries(self, state: str | None, sink: str | None, offset: int, limit: int) -> Page[Delivery]:
        """Deliveries in ``state`` and/or of ``sink``, oldest (seq) first.

        An unknown state name raises InvalidFilter (a typo must not look like "none dead").
        """
        check_page(offset, limit, MAX_ALARM_PAGE)
        clauses: list[str] = []
        params: list[Any] = []
        if state is not None:
            try:
                params.append(DeliveryState(state).value)
            except ValueError:
                raise InvalidFilter(f"unknown delivery state {state!r}") from None
            clauses.append("state = ?")
        if sink is not None:
            clauses.append("sink = ?")
            params.append(sink)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._transaction(write=False) as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM alarm_delivery {where}", params).fetchone()[0]
            rows = conn.execute(
                f"{_DELIVERY_SELECT} {where} ORDER BY seq, sink, event LIMIT ? OFFSET ?", [*params, limit, offset]
            ).fetchall()
        return Page(tuple(map(_delivery_from, rows)), int(total), offset, limit)
