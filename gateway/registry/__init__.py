"""The registry: kindergartens, devices and channels, their presence, and the store.

Values live in :mod:`.model`; :class:`Store` is the persistence interface
(SQLite, or PostgreSQL by URL), opened with :func:`gateway.registry.backends.open_store`; presence
changes go through :class:`PresenceBuffer` so the store is written in batches.

This package's API is pure (no database driver is loaded by importing it): the
backends are imported from their modules (:mod:`.sqlite_store`, :mod:`.pg_store`) when a store is
opened, so the protocol cores can use the model without pulling in ``sqlite3``.
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
from gateway.registry.store import Store, StoreConstraintError, write_presence_batch

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "MAX_PAGE_LIMIT",
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
    "StatusEvent",
    "Store",
    "StoreConstraintError",
    "guess_area",
    "write_presence_batch",
]
