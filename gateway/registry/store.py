"""The registry store interface (backends: :mod:`gateway.registry.backends` opens one from a URL).

The store is synchronous on purpose: the app runs it on one dedicated worker
thread (``loop.run_in_executor`` with a single-thread executor), so a backend
never sees two calls at once and needs no locking. Hot, per-keepalive state
stays in memory (:mod:`gateway.registry.presence`) and reaches the store in
batches; nothing here is meant to be called once per keepalive.

SQLite (:class:`~gateway.registry.sqlite_store.SqliteStore`) is the embedded
default; :class:`~gateway.registry.pg_store.PgStore` implements the same protocol on
PostgreSQL (``--db postgresql://…``), which several gateway processes share.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from gateway.errors import StoreConstraintError
from gateway.registry.model import (
    AreaConfirmation,
    Channel,
    ChannelChanges,
    ChannelFilter,
    Device,
    DeviceFilter,
    DistrictCount,
    Kindergarten,
    Page,
    PresenceCounts,
    StatusEvent,
)
from gateway.registry.presence import PresenceBatch

__all__ = ["Store", "StoreConstraintError", "write_presence_batch"]


@runtime_checkable
class Store(Protocol):
    """Persistent registry. Every method raises :class:`StoreError` on failure.

    ``get_*`` return ``None`` for an unknown id; ``upsert_*`` insert or fully
    overwrite by id. Implementations are used from one thread at a time.
    """

    def open(self) -> None:
        """Connect (idempotent); does not change the schema."""

    def close(self) -> None:
        """Release the connection (idempotent)."""

    def migrate(self) -> int:
        """Bring the schema up to date; return how many migrations were applied."""

    def schema_version(self) -> int:
        """The schema version the database is at (0 when empty)."""

    def upsert_kindergartens(self, kindergartens: Iterable[Kindergarten]) -> int:
        """Insert or overwrite kindergartens in one transaction; return the count written."""

    def get_kindergarten(self, kindergarten_id: str) -> Kindergarten | None:
        """One kindergarten by id."""

    def list_kindergartens(
        self, district_code: str | None = None, offset: int = 0, limit: int = 100
    ) -> Page[Kindergarten]:
        """Kindergartens ordered by id, optionally of one district."""

    def upsert_devices(self, devices: Iterable[Device]) -> int:
        """Insert or overwrite devices in one transaction; return the count written."""

    def get_device(self, device_id: str) -> Device | None:
        """One device by id."""

    def list_devices(self, flt: DeviceFilter) -> Page[Device]:
        """Devices matching ``flt`` ordered by id."""

    def delete_device(self, device_id: str) -> bool:
        """Forget a device and its channels; False if it was unknown."""

    def replace_channels(self, device_id: str, channels: Iterable[Channel]) -> ChannelChanges:
        """Make ``channels`` the device's whole channel set (a full catalog), atomically.

        Channels of the device that are absent are deleted; a channel id held by
        another device moves to this one (it was re-wired).
        """

    def upsert_channels(self, channels: Iterable[Channel]) -> int:
        """Insert or overwrite channels (a partial catalog); return the count written."""

    def delete_channels(self, channel_ids: Iterable[str]) -> int:
        """Forget channels by id in one transaction; return the count deleted."""

    def get_channel(self, channel_id: str) -> Channel | None:
        """One channel by id (as its catalog said: confirmations are kept apart, see below)."""

    def list_channels(self, flt: ChannelFilter) -> Page[Channel]:
        """Channels matching ``flt`` ordered by id (``public_only``: confirmed entrance/perimeter)."""

    def upsert_area_confirmations(self, confirmations: Iterable[AreaConfirmation]) -> int:
        """Insert or overwrite operators' area confirmations (a channel need not exist yet)."""

    def delete_area_confirmations(self, channel_ids: Iterable[str]) -> int:
        """Withdraw confirmations; return the count deleted."""

    def load_area_confirmations(self) -> list[AreaConfirmation]:
        """Every confirmation, for the warm-up (the directory merges them into its channels)."""

    def upsert_rtsp_camera(self, row: tuple[Any, ...]) -> None:
        """Insert or overwrite one RTSP camera (a tuple in ``sql_rows.RTSP_CAMERA_COLS`` order)."""

    def delete_rtsp_camera(self, channel_id: str) -> bool:
        """Forget an RTSP camera; False when there was none."""

    def load_rtsp_cameras(self) -> list[tuple[Any, ...]]:
        """Every RTSP camera, ordered by channel id."""

    def update_presence(
        self,
        devices: Iterable[tuple[str, bool, float | None]],
        channels: Iterable[tuple[str, bool]] = (),
    ) -> PresenceCounts:
        """Write many (id, online, last_seen) and (id, online) rows in ONE transaction.

        A ``last_seen`` of ``None`` keeps the stored value. Unknown ids are ignored.
        """

    def append_status_events(self, events: Iterable[StatusEvent]) -> int:
        """Append status history in one transaction; return the count written."""

    def list_status_events(
        self, entity_id: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[StatusEvent]:
        """Newest first, optionally of one entity and at or after ``since``."""

    def prune_status_events(self, before: float) -> int:
        """Delete history older than ``before`` (retention); return the count deleted."""

    def district_counts(self) -> list[DistrictCount]:
        """Per-district totals and online counts, ordered by district code."""

    def load_all_devices(self) -> list[Device]:
        """Every device, for warming up the in-memory state at startup."""

    def load_channels(self) -> list[Channel]:
        """Every channel, for the same warm-up (catalogs to upper platforms are built from memory)."""


def write_presence_batch(store: Store, batch: PresenceBatch) -> PresenceCounts:
    """Write a drained presence batch: one presence transaction, one history transaction.

    Call it on the store's worker thread. Presence goes first: if the history
    write then fails, re-queuing the whole batch rewrites presence harmlessly.
    """
    counts = PresenceCounts(devices=0, channels=0)
    if batch.devices or batch.channels:
        counts = store.update_presence(batch.devices, batch.channels)
    if batch.events:
        store.append_status_events(batch.events)
    return counts
