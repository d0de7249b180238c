"""SQLite implementation of :class:`~gateway.alarms.store.AlarmStore` (schema migrations v3-v6).

It is a :class:`~gateway.registry.sqlite_store.SqliteStore` on the same file as
the registry but with its own connection, used from its own worker thread, so
an alarm commit never queues behind a registry flush inside one connection;
WAL plus the busy timeout serialise the two writers at the file level.

The one difference in setup is ``synchronous=FULL``: the device is answered
"received" only after :meth:`SqliteAlarmStore.save_intake` returns, so every
commit must reach the disk (fsync), not just the WAL in the page cache.

The queries and the row mapping are shared with the PostgreSQL store
(:mod:`gateway.registry.alarm_sql`).
"""

from __future__ import annotations

from gateway.registry.alarm_sql import DEFAULT_NODE, OPEN_DELIVERIES, AlarmQueries, check_node
from gateway.registry.sqlite_store import SqliteStore, _mapped_errors

__all__ = ["SqliteAlarmStore"]

_OPEN_DELIVERIES = OPEN_DELIVERIES  # the outbox reload, checked against SQLite's query plan by the tests


class SqliteAlarmStore(SqliteStore, AlarmQueries):
    """Alarms, the delivery outbox and the audit trail on the registry's SQLite file.

    ``node`` names this gateway node (several may share a database): its alarms are
    stored with it and only its own are reloaded at startup. Not thread-safe: use it
    from one thread at a time (the alarm store worker). Every failure comes out as
    :class:`~gateway.errors.StoreError`.
    """

    _greatest = "MAX"

    def __init__(self, path: str, node: str = DEFAULT_NODE) -> None:
        super().__init__(path)
        self.node = check_node(node)

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
