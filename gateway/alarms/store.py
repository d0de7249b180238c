"""The alarm outbox store interface, and ``open_alarm_store`` to pick a backend.

Alarms, their deliveries and their audit trail live in the same database as
the registry (the same schema migrations), but through their own connection
and their own worker thread: an alarm commit must never wait behind a
registry flush, and it is durable when it returns (SQLite ``synchronous=FULL``,
PostgreSQL ``synchronous_commit=on``) because the device is told "received" only
after it returns. Several gateway nodes may share one PostgreSQL database; each
opens the store under its own ``node`` name.

Like the registry :class:`~gateway.registry.store.Store`, implementations are
synchronous and used from one thread at a time; every method raises
:class:`~gateway.errors.StoreError` on failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from gateway.alarms.model import Alarm, AlarmFilter, Delivery, Transition
from gateway.registry.model import Page

__all__ = ["AlarmStore", "open_alarm_store"]


@runtime_checkable
class AlarmStore(Protocol):
    """Persistent alarms, deliveries (the outbox) and transitions (the audit trail)."""

    def close(self) -> None:
        """Release the connection (idempotent)."""

    def save_intake(
        self, alarms: Sequence[Alarm], deliveries: Sequence[Delivery], transitions: Sequence[Transition]
    ) -> None:
        """Insert new alarms with their deliveries and audit lines in ONE durable transaction.

        Inserting an alarm id that exists already is an error (intake deduplicates first).
        """

    def save_progress(
        self,
        alarms: Sequence[Alarm],
        deliveries: Sequence[Delivery],
        transitions: Sequence[Transition],
    ) -> None:
        """Overwrite changed alarms (state, ack, escalation) and deliveries (attempts, state),
        insert new deliveries (escalations) and append audit lines, in one transaction."""

    def load_open_deliveries(self) -> list[Delivery]:
        """This node's deliveries not yet delivered (pending and dead), ordered by (seq, sink, event)."""

    def load_alarms_since(self, since: float) -> list[Alarm]:
        """This node's alarms received at or after ``since`` plus its alarms not yet resolved, by seq.

        Startup uses it to rebuild the dedupe window and the open-alarm lifecycle.
        """

    node: str
    """The gateway node this store writes for: new alarms are stored as its own, and only its
    own come back from ``load_open_deliveries`` and ``load_alarms_since``."""

    def max_seq(self) -> int:
        """The highest alarm seq stored by any node (0 when empty)."""

    def reserve_seqs(self, count: int) -> int:
        """Reserve ``count`` consecutive alarm seqs no node has had, above every stored one; the first.

        Several nodes share one database: intake numbers its alarms from such blocks.
        """

    def get_alarm(self, alarm_id: str) -> Alarm | None:
        """One alarm by id."""

    def list_alarms(self, flt: AlarmFilter) -> Page[Alarm]:
        """Every node's alarms matching ``flt``, newest (latest received) first, with the total count."""

    def last_successful_drills(self) -> dict[str, float]:
        """Kindergarten id -> receipt time of its latest drill alarm whose deliveries were all delivered."""

    def deliveries_of(self, alarm_id: str) -> list[Delivery]:
        """The deliveries of one alarm, by (sink, event)."""

    def transitions_of(self, alarm_id: str) -> list[Transition]:
        """The audit trail of one alarm, oldest first."""

    def list_deliveries(self, state: str | None, sink: str | None, offset: int, limit: int) -> Page[Delivery]:
        """Deliveries in a state (e.g. ``dead``) and/or of a sink, oldest first."""


def open_alarm_store(url: str, node: str = "gateway") -> AlarmStore:
    """Open (and migrate) the alarm store the registry URL names (see ``open_store``), as ``node``'s.

    ``postgresql://…`` opens the PostgreSQL store (a pool of its own), anything else SQLite.
    """
    from gateway.pg_connect import is_postgres_url  # noqa: PLC0415
    from gateway.registry.backends import opened, sqlite_path  # noqa: PLC0415

    if is_postgres_url(url):
        from gateway.registry.pg_alarms import PgAlarmStore  # noqa: PLC0415 (psycopg only when asked for)

        store = PgAlarmStore(url, node)
        store.open()
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store
    from gateway.registry.sqlite_alarms import SqliteAlarmStore  # noqa: PLC0415 (cycle)

    return opened(SqliteAlarmStore(sqlite_path(url), node))
