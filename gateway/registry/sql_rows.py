"""What the SQL registry backends share: columns, row mapping, upsert and filter SQL.

Both :class:`~gateway.registry.sqlite_store.SqliteStore` and
:class:`~gateway.registry.pg_store.PgStore` store the same tables with the same
columns (the schemas are held equal by a test), so the mapping between model
dataclasses and rows is written once, here. Column lists come from the model's
dataclass fields: a field added to ``Device`` or ``Channel`` later needs only a
migration (in both schema lists). The backends differ only in the placeholder
(``?`` for sqlite3, ``%s`` for psycopg), which every SQL builder takes as ``mark``.

Booleans are stored as INTEGER 0/1 on both backends; rows going in carry ``int``
(psycopg would send a Python ``bool`` as a PostgreSQL ``boolean``), rows coming
out become ``bool`` again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields, replace
from operator import attrgetter
from typing import Any, Final

from gateway.errors import StoreConstraintError
from gateway.registry.model import (
    CONFIRMATION_FIELDS,
    AreaConfirmation,
    AreaTag,
    Channel,
    ChannelChanges,
    ChannelFilter,
    Device,
    DeviceFilter,
    EntityKind,
    Kindergarten,
    StatusEvent,
)

__all__ = [
    "CHANNEL_COLS",
    "CONFIRMATION_COLS",
    "DEVICE_COLS",
    "DISTRICT_COUNTS_SQL",
    "KG_COLS",
    "STATUS_EVENT_COLS",
    "channel_changes",
    "channel_from",
    "channel_row",
    "channel_where",
    "confirmation_from",
    "confirmation_row",
    "confirmation_upsert_sql",
    "device_from",
    "device_row",
    "device_where",
    "event_from",
    "event_row",
    "kg_row",
    "select_sql",
    "status_event_where",
    "upsert_sql",
    "wanted_channels",
]

KG_COLS: Final = tuple(f.name for f in fields(Kindergarten))
DEVICE_COLS: Final = tuple(f.name for f in fields(Device))
CHANNEL_COLS: Final = tuple(f.name for f in fields(Channel) if f.name not in CONFIRMATION_FIELDS)
CONFIRMATION_COLS: Final = tuple(f.name for f in fields(AreaConfirmation))
STATUS_EVENT_COLS: Final = tuple(f.name for f in fields(StatusEvent))
#: The ``rtsp_camera`` table (schema v7): rows are plain tuples in this order (gateway/rtsp/store.py maps them).
RTSP_CAMERA_COLS: Final = (
    "channel_id",
    "device_id",
    "kindergarten_id",
    "district_code",
    "name",
    "area",
    "url",
    "username",
    "password",
    "enabled",
    "created_by",
    "created_at",
)

_DEVICE_ONLINE: Final = DEVICE_COLS.index("online")
_CHANNEL_ONLINE: Final = CHANNEL_COLS.index("online")
_CHANNEL_AREA: Final = CHANNEL_COLS.index("area")
_device_values: Final = attrgetter(*DEVICE_COLS)
_kg_values: Final = attrgetter(*KG_COLS)
_channel_values: Final = attrgetter(*CHANNEL_COLS)

# A channel's confirmed area and its effective area (confirmed, else suggested), for list filters.
_CONFIRMED_AREA: Final = "(SELECT a.area FROM channel_confirmation a WHERE a.channel_id = channel.id)"
_EFFECTIVE_AREA: Final = f"COALESCE({_CONFIRMED_AREA}, area)"
_PUBLIC_AREAS: Final = tuple(sorted(a.value for a in AreaTag if a.is_public))

#: Per-district totals (every district seen in any table); portable SQL.
DISTRICT_COUNTS_SQL: Final = """
WITH k AS (SELECT district_code, COUNT(*) AS n
           FROM kindergarten GROUP BY district_code),
     d AS (SELECT district_code, COUNT(*) AS n, SUM(online) AS up
           FROM device GROUP BY district_code),
     c AS (SELECT district_code, COUNT(*) AS n, SUM(online) AS up
           FROM channel GROUP BY district_code),
     codes AS (SELECT district_code FROM k UNION SELECT district_code FROM d
               UNION SELECT district_code FROM c)
SELECT codes.district_code, COALESCE(k.n, 0), COALESCE(d.n, 0), COALESCE(d.up, 0),
       COALESCE(c.n, 0), COALESCE(c.up, 0)
FROM codes
LEFT JOIN k ON k.district_code = codes.district_code
LEFT JOIN d ON d.district_code = codes.district_code
LEFT JOIN c ON c.district_code = codes.district_code
ORDER BY codes.district_code
"""

# --- SQL builders ------------------------------------------------------------------------


def upsert_sql(table: str, cols: tuple[str, ...], mark: str, key: str = "id") -> str:
    """INSERT … ON CONFLICT(key) DO UPDATE: a full overwrite by key (SQLite ≥ 3.24 and PostgreSQL)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key)
    marks = ", ".join(mark for _ in cols)
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) ON CONFLICT ({key}) DO UPDATE SET {updates}"


def confirmation_upsert_sql(mark: str) -> str:
    """Upsert of an area confirmation by channel id."""
    return upsert_sql("channel_confirmation", CONFIRMATION_COLS, mark, key="channel_id")


def select_sql(table: str, cols: tuple[str, ...]) -> str:
    """``SELECT cols FROM table`` (callers append WHERE / ORDER BY)."""
    return f"SELECT {', '.join(cols)} FROM {table}"


def _where(pairs: Iterable[tuple[str, object]], mark: str) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in pairs:
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    return clauses, params


def _joined(clauses: list[str]) -> str:
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


def device_where(flt: DeviceFilter, mark: str) -> tuple[str, list[Any]]:
    """The WHERE clause (possibly empty) and parameters of a device filter."""
    clauses, params = _where(
        (
            ("district_code", flt.district_code),
            ("kindergarten_id", flt.kindergarten_id),
            ("online", None if flt.online is None else int(flt.online)),
            ("device_type", flt.device_type),
        ),
        mark,
    )
    return _joined(clauses), params


def channel_where(flt: ChannelFilter, mark: str) -> tuple[str, list[Any]] | None:
    """The WHERE clause and parameters of a channel filter; None when nothing can match.

    ``area`` matches the effective area; ``public_only`` (the police view) only a
    *confirmed* public area, never a suggestion from the name.
    """
    areas = flt.areas
    if areas is not None and not areas:  # e.g. area=CLASSROOM with public_only
        return None
    clauses, params = _where(
        (
            ("district_code", flt.district_code),
            ("kindergarten_id", flt.kindergarten_id),
            ("device_id", flt.device_id),
            ("online", None if flt.online is None else int(flt.online)),
            ("type_code", flt.type_code),
        ),
        mark,
    )
    if flt.area is not None:
        clauses.append(f"{_EFFECTIVE_AREA} = {mark}")
        params.append(AreaTag(flt.area).value)
    if flt.public_only:
        clauses.append(f"{_CONFIRMED_AREA} IN ({', '.join(mark for _ in _PUBLIC_AREAS)})")
        params.extend(_PUBLIC_AREAS)
    return _joined(clauses), params


def status_event_where(entity_id: str | None, since: float | None, mark: str) -> tuple[str, list[Any]]:
    """The WHERE clause of a status history query (one entity, at or after ``since``)."""
    clauses: list[str] = []
    params: list[Any] = []
    if entity_id is not None:
        clauses.append(f"entity_id = {mark}")
        params.append(entity_id)
    if since is not None:
        clauses.append(f"at >= {mark}")
        params.append(since)
    return _joined(clauses), params


# --- rows in and out ---------------------------------------------------------------------


def kg_row(k: Kindergarten) -> tuple[Any, ...]:
    """A kindergarten's column values, in ``KG_COLS`` order."""
    row: tuple[Any, ...] = _kg_values(k)
    return row


def device_row(d: Device) -> tuple[Any, ...]:
    """A device's column values, in ``DEVICE_COLS`` order."""
    row = list(_device_values(d))
    row[_DEVICE_ONLINE] = int(row[_DEVICE_ONLINE])
    return tuple(row)


def channel_row(c: Channel) -> tuple[Any, ...]:
    """A channel's column values (confirmation fields excluded), in ``CHANNEL_COLS`` order."""
    row = list(_channel_values(c))
    row[_CHANNEL_ONLINE] = int(row[_CHANNEL_ONLINE])
    row[_CHANNEL_AREA] = AreaTag(c.area).value
    return tuple(row)


def confirmation_row(c: AreaConfirmation) -> tuple[Any, ...]:
    """An area confirmation's column values, in ``CONFIRMATION_COLS`` order."""
    return (c.channel_id, AreaTag(c.area).value, c.confirmed_by, c.confirmed_at, c.name)


def event_row(e: StatusEvent) -> tuple[Any, ...]:
    """A status event's column values, in ``STATUS_EVENT_COLS`` order."""
    return (e.entity_id, EntityKind(e.kind).value, int(e.online), e.at, e.reason)


def device_from(row: tuple[Any, ...]) -> Device:
    """A device from its row."""
    values = list(row)
    values[_DEVICE_ONLINE] = bool(values[_DEVICE_ONLINE])
    return Device(*values)


def channel_from(row: tuple[Any, ...]) -> Channel:
    """A channel from its row (no confirmation: the directory merges that in)."""
    values = list(row)
    values[_CHANNEL_ONLINE] = bool(values[_CHANNEL_ONLINE])
    values[_CHANNEL_AREA] = AreaTag(values[_CHANNEL_AREA])
    return Channel(*values)


def confirmation_from(row: tuple[Any, ...]) -> AreaConfirmation:
    """An area confirmation from its row."""
    channel_id, area, by, at, name = row
    return AreaConfirmation(channel_id, AreaTag(area), by, at, name)


def event_from(row: tuple[Any, ...]) -> StatusEvent:
    """A status event from its row."""
    entity_id, kind, online, at, reason = row
    return StatusEvent(entity_id, EntityKind(kind), bool(online), at, reason)


# --- replace_channels ----------------------------------------------------------------------


def wanted_channels(device_id: str, channels: Iterable[Channel]) -> dict[str, Channel]:
    """A full catalog by channel id (a duplicate id: last wins); StoreConstraintError for another device's."""
    wanted: dict[str, Channel] = {}
    for channel in channels:
        if channel.device_id != device_id:
            raise StoreConstraintError(f"channel {channel.id} belongs to {channel.device_id}, not {device_id}")
        wanted[channel.id] = channel
    return wanted


def channel_changes(old: dict[str, Channel], wanted: dict[str, Channel], removed: list[str]) -> ChannelChanges:
    """What a full catalog changed: presence alone (``online``, ``updated_at``) is not a change."""
    added = tuple(i for i in wanted if i not in old)
    changed = tuple(
        i
        for i, new in wanted.items()
        if i in old and replace(new, online=old[i].online, updated_at=old[i].updated_at) != old[i]
    )
    return ChannelChanges(added=added, changed=changed, removed=tuple(removed))
