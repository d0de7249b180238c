"""The registry: kindergartens, devices and channels, their presence, and the store.

Values live in :mod:`.model`; :class:`Store` is the persistence interface
(SQLite now, PostgreSQL later), picked with :func:`open_store`; presence
changes go through :class:`PresenceBuffer` so the store is written in batches.
"""

from __future__ import annotations

from gateway.registry.model import (
    MAX_PAGE_LIMIT,
    AreaTag,
    Channel,
    ChannelChanges,
    ChannelFilter,
    Device,
    DeviceFilter,
    DistrictCount,
    EntityKind,
    InvalidFilter,
    Kindergarten,
    Page,
    PresenceCounts,
    StatusEvent,
    guess_area,
)
from gateway.registry.presence import DEFAULT_MAX_EVENTS, PresenceBatch, PresenceBuffer
from gateway.registry.sqlite_schema import MIGRATIONS
from gateway.registry.sqlite_store import SqliteStore
from gateway.registry.store import Store, StoreConstraintError, open_store, write_presence_batch

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "MAX_PAGE_LIMIT",
    "MIGRATIONS",
    "AreaTag",
    "Channel",
    "ChannelChanges",
    "ChannelFilter",
    "Device",
    "DeviceFilter",
    "DistrictCount",
    "EntityKind",
    "InvalidFilter",
    "Kindergarten",
    "Page",
    "PresenceBatch",
    "PresenceBuffer",
    "PresenceCounts",
    "SqliteStore",
    "StatusEvent",
    "Store",
    "StoreConstraintError",
    "guess_area",
    "open_store",
    "write_presence_batch",
]
