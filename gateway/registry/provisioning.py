"""Provisioning: kindergartens an operator (or the simulator) declares, and the devices they place.

A device registers before or after its kindergarten is known; when the
kindergarten arrives, devices that were waiting for it are placed in it
(provisioned, or by the numbering convention, see :mod:`gateway.registry.placement`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from gateway.registry.directory import Directory
from gateway.registry.model import Kindergarten
from gateway.registry.placement import place_device
from gateway.registry.store import Store
from gateway.registry.store_thread import StoreThread
from gateway.registry.writer import RegistryWriter

__all__ = ["Provisioning"]


class Provisioning:
    """Adds kindergartens: stored at once (the caller is told when they are), placed in the directory."""

    def __init__(
        self,
        store: StoreThread,
        directory: Directory,
        writer: RegistryWriter,
        provisioned_kindergarten: Callable[[str], str | None] = lambda device_id: None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.writer = writer
        self.provisioned_kindergarten = provisioned_kindergarten

    async def add_kindergartens(self, kindergartens: Sequence[Kindergarten]) -> int:
        """Store kindergartens (StoreError if that fails), then place the devices that waited for them."""
        count = await self.store.call(_upsert, kindergartens)
        directory = self.directory
        directory.add_kindergartens(kindergartens)
        for device_id, entry in directory.devices.items():
            if entry.row.kindergarten_id is not None:
                continue
            placed = place_device(device_id, self.provisioned_kindergarten(device_id), directory.kindergartens)
            if placed is not None:
                entry.row = replace(entry.row, kindergarten_id=placed)
                self.writer.device(entry.row)
        await self.writer.flush()
        return count


def _upsert(store: Store, kindergartens: Sequence[Kindergarten]) -> int:
    return store.upsert_kindergartens(kindergartens)
