"""Write-behind of the registry: what changed in memory reaches the store in batches.

Registrations, catalogs, learned kindergartens, presence changes and status
history are queued here and written by one transaction set every
``interval`` seconds on the store's thread, so a registration storm or 20,000
keepalives a minute cost a handful of transactions, never one write per
message. A failed write keeps everything queued for the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.registry.model import Channel, Device, Kindergarten
from gateway.registry.presence import PresenceBatch, PresenceBuffer
from gateway.registry.store import Store, write_presence_batch
from gateway.registry.store_thread import StoreThread

__all__ = ["RegistryWriter"]

log = logging.getLogger("kgw.registry")


@dataclass(frozen=True, slots=True)
class _Catalog:
    device_id: str
    channels: tuple[Channel, ...]
    replace: bool  # the device's whole channel set (a full catalog), else some of its channels


@dataclass(slots=True)
class _Batch:
    kindergartens: list[Kindergarten]
    devices: list[Device]
    catalogs: list[_Catalog]
    deletes: list[str]
    presence: PresenceBatch

    @property
    def empty(self) -> bool:
        return not (self.kindergartens or self.devices or self.catalogs or self.deletes) and self.presence.is_empty


class RegistryWriter(Collector):
    """Queues registry changes and writes them in one go every ``interval`` seconds."""

    def __init__(self, store: StoreThread, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.presence = PresenceBuffer()
        self._devices: dict[str, Device] = {}
        self._catalogs: list[_Catalog] = []
        self._kindergartens: list[Kindergarten] = []
        self._deletes: list[str] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # --- queueing (from the event loop) ------------------------------------------------

    def device(self, row: Device) -> None:
        """Write this device row (the latest row of a device wins)."""
        self._devices[row.id] = row

    def catalog(self, device_id: str, channels: Iterable[Channel], *, replace: bool) -> None:
        """Write a device's channels: its whole set (``replace``) or some of them."""
        self._catalogs.append(_Catalog(device_id, tuple(channels), replace))

    def delete_channels(self, channel_ids: Iterable[str]) -> None:
        """Forget channels."""
        self._deletes.extend(channel_ids)

    def kindergartens(self, kindergartens: Iterable[Kindergarten]) -> None:
        """Write kindergartens (learned from a lower platform's catalog)."""
        self._kindergartens.extend(kindergartens)

    # --- writing -----------------------------------------------------------------------------

    def start(self) -> None:
        """Flush every ``interval`` seconds until :meth:`stop`."""
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="kgw-registry-writer")

    async def stop(self) -> None:
        """Stop the loop and write what is still queued."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write everything queued now, in one go on the store's thread (re-queued if it fails)."""
        async with self._lock:
            batch = self._take()
            if batch.empty:
                return
            try:
                await self.store.call(_write, batch)
            except Exception:
                self._give_back(batch)
                raise

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:
                log.exception("registry flush failed; will retry")

    def _take(self) -> _Batch:
        batch = _Batch(
            self._kindergartens, list(self._devices.values()), self._catalogs, self._deletes, self.presence.drain()
        )
        self._kindergartens, self._devices, self._catalogs, self._deletes = [], {}, [], []
        return batch

    def _give_back(self, batch: _Batch) -> None:
        self.presence.restore(batch.presence)
        for row in batch.devices:
            self._devices.setdefault(row.id, row)
        self._catalogs[:0] = batch.catalogs
        self._kindergartens[:0] = batch.kindergartens
        self._deletes[:0] = batch.deletes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """``kgw_registry_pending_writes``."""
        yield GaugeMetricFamily(
            "kgw_registry_pending_writes", "Presence changes waiting for the next flush", value=self.presence.pending
        )


def _write(store: Store, batch: _Batch) -> None:
    """One flush: kindergartens and devices first (channels reference them), then catalogs, then presence."""
    if batch.kindergartens:
        store.upsert_kindergartens(batch.kindergartens)
    if batch.devices:
        store.upsert_devices(batch.devices)
    for catalog in batch.catalogs:
        if catalog.replace:
            store.replace_channels(catalog.device_id, catalog.channels)
        else:
            store.upsert_channels(catalog.channels)
    if batch.deletes:
        store.delete_channels(batch.deletes)
    if not batch.presence.is_empty:
        write_presence_batch(store, batch.presence)
