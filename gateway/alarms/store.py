"""The alarm outbox store interface, and ``open_alarm_store`` to pick a backend.

Alarms, their deliveries and their audit trail live in the same database as
the registry (the same schema migrations), but through their own connection
and their own worker thread: an alarm commit must never wait behind a
registry flush, and it is made with ``synchronous=FULL`` (fsync on every
commit) because the device is told "received" only after it returns.

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
        """Every delivery not yet delivered (pending and dead), ordered by (seq, sink, event)."""

    def load_alarms_since(self, since: float) -> list[Alarm]:
        """Alarms received at or after ``since`` plus every alarm not yet resolved, by seq.

        Startup uses it to rebuild the dedupe window and the open-alarm lifecycle.
        """

    def max_seq(self) -> int:
        """The highest alarm seq stored (0 when empty)."""

    def get_alarm(self, alarm_id: str) -> Alarm | None:
        """One alarm by id."""

    def list_alarms(self, flt: AlarmFilter) -> Page[Alarm]:
        """Alarms matching ``flt``, newest (highest seq) first, with the total count."""

    def deliveries_of(self, alarm_id: str) -> list[Delivery]:
        """The deliveries of one alarm, by (sink, event)."""

    def transitions_of(self, alarm_id: str) -> list[Transition]:
        """The audit trail of one alarm, oldest first."""

    def list_deliveries(self, state: str | None, sink: str | None, offset: int, limit: int) -> Page[Delivery]:
        """Deliveries in a state (e.g. ``dead``) and/or of a sink, oldest first."""


def open_alarm_store(url: str) -> AlarmStore:
    """Open (and migrate) the alarm store the registry URL names (see ``open_store``)."""
    from gateway.registry.backends import opened, sqlite_path  # noqa: PLC0415
    from gateway.registry.sqlite_alarms import SqliteAlarmStore  # noqa: PLC0415 (cycle)

    return opened(SqliteAlarmStore(sqlite_path(url)))
