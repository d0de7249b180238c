"""The alarm store's SQL and row mapping, shared by the SQLite and PostgreSQL backends.

Both backends hold the same tables (schema migrations v3-v6 in
:mod:`~gateway.registry.sqlite_schema` and :mod:`~gateway.registry.pg_schema`),
so every query is written once, with ``?`` placeholders (the PostgreSQL
connection turns them into ``%s``). :class:`AlarmQueries` implements
:class:`~gateway.alarms.store.AlarmStore` on top of one hook each backend
provides: ``_transaction(write=...)``, a context manager yielding a connection
with DB-API ``execute``/``executemany``.

Values map to columns of the same names; enums are stored as their text or
integer value, booleans as 0/1 and ``Alarm.problems`` as a JSON list.

Several gateway nodes may share one database: every alarm row names its
``node``; the startup reloads (:meth:`AlarmQueries.load_open_deliveries`,
:meth:`AlarmQueries.load_alarms_since`) return only this node's, while the
listings and lookups see every node's. Seqs come from one counter row in
blocks (:meth:`AlarmQueries.reserve_seqs`), so two nodes never number two
alarms alike.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import fields, replace
from operator import attrgetter
from typing import Any, Final, Protocol

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
from gateway.errors import StoreError
from gateway.registry.model import InvalidFilter, Page, check_page

__all__ = ["DEFAULT_NODE", "AlarmQueries", "SqlConnection", "check_node"]

DEFAULT_NODE: Final = "gateway"
MAX_NODE_NAME: Final = 64

_ALARM_COLS: Final = tuple(f.name for f in fields(Alarm))
_DELIVERY_COLS: Final = tuple(f.name for f in fields(Delivery))
_DELIVERY_KEY: Final = ("alarm_id", "sink", "event")
_TRANSITION_COLS: Final = tuple(f.name for f in fields(Transition))


class SqlCursor(Protocol):
    """What a statement gives back (sqlite3 and psycopg cursors both fit)."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class SqlConnection(Protocol):
    """A connection inside one transaction, with ``?`` placeholders."""

    def execute(self, sql: str, parameters: Any = ..., /) -> SqlCursor: ...

    def executemany(self, sql: str, parameters: Any, /) -> object: ...


def check_node(node: str) -> str:
    """A node name as stored with its alarms: 1-64 printable characters (ValueError otherwise)."""
    if not node or len(node) > MAX_NODE_NAME or not node.isprintable() or node != node.strip():
        raise ValueError(f"invalid node name {node!r}: 1-{MAX_NODE_NAME} printable characters")
    return node


def _insert_sql(table: str, cols: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"


def _upsert_sql(table: str, cols: tuple[str, ...], key: tuple[str, ...], keep: tuple[str, ...] = ()) -> str:
    """A full overwrite of every column but the key (and ``keep``) when ``key`` exists already."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key and c not in keep)
    return f"{_insert_sql(table, cols)} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"


def _in_list(values: Sequence[str]) -> str:
    """An SQL ``IN (...)`` of constant enum texts (never user input), so indexes apply."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


ALARM_INSERT: Final = _insert_sql("alarm", _ALARM_COLS)
# Progress never moves an alarm to another node: ``node`` is written once, at intake.
ALARM_UPSERT: Final = _upsert_sql("alarm", _ALARM_COLS, ("id",), keep=("node",))
ALARM_SELECT: Final = f"SELECT {', '.join(_ALARM_COLS)} FROM alarm"
DELIVERY_INSERT: Final = _insert_sql("alarm_delivery", _DELIVERY_COLS)
DELIVERY_UPSERT: Final = _upsert_sql("alarm_delivery", _DELIVERY_COLS, _DELIVERY_KEY)
DELIVERY_SELECT: Final = f"SELECT {', '.join(_DELIVERY_COLS)} FROM alarm_delivery"
TRANSITION_INSERT: Final = _insert_sql("alarm_transition", _TRANSITION_COLS)
TRANSITION_SELECT: Final = f"SELECT {', '.join(_TRANSITION_COLS)} FROM alarm_transition"

# `d.state <> 'delivered'` spelled exactly like the partial index alarm_delivery_open's WHERE
# clause, which is what lets SQLite use that index; CROSS JOIN keeps the deliveries the outer
# loop in SQLite (already in outbox order), each looking its alarm up by primary key.
OPEN_DELIVERIES: Final = (
    f"SELECT {', '.join(f'd.{c}' for c in _DELIVERY_COLS)} FROM alarm_delivery d CROSS JOIN alarm a"
    f" WHERE d.state <> '{DeliveryState.DELIVERED.value}' AND a.id = d.alarm_id AND a.node = ?"
    " ORDER BY d.seq, d.sink, d.event"
)
# "not resolved" as an IN list (not <>) so the OR can use alarm_state and alarm_received.
_UNRESOLVED: Final = _in_list([s.value for s in AlarmState if s is not AlarmState.RESOLVED])
ALARMS_SINCE: Final = f"{ALARM_SELECT} WHERE (received_at >= ? OR state IN {_UNRESOLVED}) AND node = ? ORDER BY seq"

# A drill proves the alarm path only when it had deliveries and every one of them was delivered.
LAST_SUCCESSFUL_DRILLS: Final = (
    "SELECT a.kindergarten_id, MAX(a.received_at) FROM alarm a WHERE a.drill = 1 AND a.kindergarten_id IS NOT NULL"
    " AND EXISTS (SELECT 1 FROM alarm_delivery d WHERE d.alarm_id = a.id)"
    f" AND NOT EXISTS (SELECT 1 FROM alarm_delivery d WHERE d.alarm_id = a.id AND d.state <> '{DeliveryState.DELIVERED.value}')"
    " GROUP BY a.kindergarten_id"
)

_alarm_values: Final = attrgetter(*_ALARM_COLS)
_A_STATE: Final = _ALARM_COLS.index("state")
_A_REGISTERED: Final = _ALARM_COLS.index("sender_registered")
_A_PROBLEMS: Final = _ALARM_COLS.index("problems")
_A_VERIFIED: Final = _ALARM_COLS.index("verified")
_A_DRILL: Final = _ALARM_COLS.index("drill")
_INT_COLS: Final = tuple(_ALARM_COLS.index(c) for c in ("priority", "method", "alarm_type", "event_type"))


def alarm_row(a: Alarm) -> tuple[Any, ...]:
    """An alarm as column values, in ``_ALARM_COLS`` order."""
    row: list[Any] = list(_alarm_values(a))
    for i in _INT_COLS:  # AlarmMethod and friends: plain ints in the database
        row[i] = None if row[i] is None else int(row[i])
    row[_A_STATE] = AlarmState(a.state).value
    row[_A_REGISTERED] = int(bool(a.sender_registered))
    row[_A_PROBLEMS] = json.dumps(list(a.problems), ensure_ascii=False)
    row[_A_VERIFIED] = int(bool(a.verified))
    row[_A_DRILL] = int(bool(a.drill))
    return tuple(row)


def alarm_from(row: Sequence[Any]) -> Alarm:
    """An alarm from its column values."""
    values = list(row)
    values[_A_STATE] = AlarmState(values[_A_STATE])
    values[_A_REGISTERED] = bool(values[_A_REGISTERED])
    values[_A_PROBLEMS] = tuple(json.loads(values[_A_PROBLEMS]))
    values[_A_VERIFIED] = bool(values[_A_VERIFIED])
    values[_A_DRILL] = bool(values[_A_DRILL])
    return Alarm(*values)


def delivery_row(d: Delivery) -> tuple[Any, ...]:
    """A delivery as column values."""
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


def delivery_from(row: Sequence[Any]) -> Delivery:
    """A delivery from its column values."""
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


def transition_row(t: Transition) -> tuple[Any, ...]:
    """An audit line as column values (the table's own seq is assigned by the database)."""
    return (t.alarm_id, t.at, TransitionAction(t.action).value, t.actor, t.detail)


def transition_from(row: Sequence[Any]) -> Transition:
    """An audit line from its column values."""
    alarm_id, at, action, actor, detail = row
    return Transition(alarm_id, at, TransitionAction(action), actor, detail)


class AlarmQueries(ABC):
    """:class:`~gateway.alarms.store.AlarmStore` written once over ``_transaction`` (module doc).

    A backend sets ``node`` and ``_greatest`` (its two-argument max: ``MAX`` in
    SQLite, ``GREATEST`` in PostgreSQL) and provides ``_transaction``.
    """

    node: str = DEFAULT_NODE
    _greatest: str = "MAX"

    @abstractmethod
    def _transaction(self, *, write: bool = True) -> AbstractContextManager[SqlConnection]:
        """One transaction on the backend's connection (committed on success, rolled back on error)."""

    # --- writes -----------------------------------------------------------------

    def save_intake(
        self, alarms: Sequence[Alarm], deliveries: Sequence[Delivery], transitions: Sequence[Transition]
    ) -> None:
        """Insert new alarms (as this node's), deliveries and audit lines in one durable transaction.

        An alarm id (or seq) already stored raises StoreConstraintError and the
        whole batch is rolled back: intake must not half-record an alarm.
        """
        node = self.node
        rows = [alarm_row(a if a.node == node else replace(a, node=node)) for a in alarms]
        with self._transaction() as conn:
            conn.executemany(ALARM_INSERT, rows)
            conn.executemany(DELIVERY_INSERT, [delivery_row(d) for d in deliveries])
            conn.executemany(TRANSITION_INSERT, [transition_row(t) for t in transitions])

    def save_progress(
        self, alarms: Sequence[Alarm], deliveries: Sequence[Delivery], transitions: Sequence[Transition]
    ) -> None:
        """Overwrite alarms by id (never their node) and deliveries by key (inserting new ones), append audit lines."""
        with self._transaction() as conn:
            conn.executemany(ALARM_UPSERT, [alarm_row(a) for a in alarms])
            conn.executemany(DELIVERY_UPSERT, [delivery_row(d) for d in deliveries])
            conn.executemany(TRANSITION_INSERT, [transition_row(t) for t in transitions])

    def reserve_seqs(self, count: int) -> int:
        """Reserve ``count`` alarm seqs nobody has had (any node) above every stored seq; the first.

        One committed UPDATE of the counter row: concurrent nodes queue on its row lock, so
        their blocks never overlap, and a block handed out is never handed out again.
        """
        if count < 1:
            raise StoreError(f"cannot reserve {count} seqs")
        with self._transaction() as conn:
            row = conn.execute(
                f"UPDATE alarm_seq_block SET next_seq = {self._greatest}("
                "next_seq, (SELECT COALESCE(MAX(seq), 0) + 1 FROM alarm)) + ? WHERE id = 1 RETURNING next_seq",
                (count,),
            ).fetchone()
        if row is None:
            raise StoreError("alarm_seq_block has no row: schema not migrated to v6")
        return int(row[0]) - count

    # --- startup reloads ----------------------------------------------------------

    def load_open_deliveries(self) -> list[Delivery]:
        """This node's pending and dead deliveries, ordered by (seq, sink, event)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(OPEN_DELIVERIES, (self.node,)).fetchall()
        return [delivery_from(r) for r in rows]

    def load_alarms_since(self, since: float) -> list[Alarm]:
        """This node's alarms received at or after ``since`` plus its unresolved ones, by seq."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(ALARMS_SINCE, (since, self.node)).fetchall()
        return [alarm_from(r) for r in rows]

    def max_seq(self) -> int:
        """The highest alarm seq stored (any node), 0 when there is none."""
        with self._transaction(write=False) as conn:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM alarm").fetchone()
        return int(row[0])

    # --- queries (every node's) -----------------------------------------------------------

    def get_alarm(self, alarm_id: str) -> Alarm | None:
        """One alarm by id, or None."""
        with self._transaction(write=False) as conn:
            row = conn.execute(f"{ALARM_SELECT} WHERE id = ?", (alarm_id,)).fetchone()
        return None if row is None else alarm_from(row)

    def list_alarms(self, flt: AlarmFilter) -> Page[Alarm]:
        """Alarms matching ``flt``, newest first; InvalidFilter on a bad page.

        Newest is the latest received (seq breaks ties): with several nodes, seqs come in
        blocks per node, so only the receipt time orders the whole city's alarms.
        """
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
        if flt.drill is not None:
            clauses.append("drill = 1" if flt.drill else "drill = 0")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._transaction(write=False) as conn:  # one snapshot: total and page agree
            total = conn.execute(f"SELECT COUNT(*) FROM alarm {where}", params).fetchone()[0]
            rows = conn.execute(
                f"{ALARM_SELECT} {where} ORDER BY received_at DESC, seq DESC LIMIT ? OFFSET ?",
                [*params, flt.limit, flt.offset],
            ).fetchall()
        return Page(tuple(map(alarm_from, rows)), int(total), flt.offset, flt.limit)

    def last_successful_drills(self) -> dict[str, float]:
        """Kindergarten id -> receipt time of its latest drill alarm that every delivery reached (coverage)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(LAST_SUCCESSFUL_DRILLS).fetchall()
        return {str(kg): float(at) for kg, at in rows}

    def deliveries_of(self, alarm_id: str) -> list[Delivery]:
        """The deliveries of one alarm, by (sink, event)."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"{DELIVERY_SELECT} WHERE alarm_id = ? ORDER BY sink, event", (alarm_id,)).fetchall()
        return [delivery_from(r) for r in rows]

    def transitions_of(self, alarm_id: str) -> list[Transition]:
        """The audit trail of one alarm in the order it was appended."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(f"{TRANSITION_SELECT} WHERE alarm_id = ? ORDER BY seq", (alarm_id,)).fetchall()
        return [transition_from(r) for r in rows]

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
                f"{DELIVERY_SELECT} {where} ORDER BY seq, sink, event LIMIT ? OFFSET ?", [*params, limit, offset]
            ).fetchall()
        return Page(tuple(map(delivery_from, rows)), int(total), offset, limit)
