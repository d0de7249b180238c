"""Provisioning: kindergartens an operator (or the simulator) declares, the devices they place, confirmed areas.

A device registers before or after its kindergarten is known; when the
kindergarten arrives, devices that were waiting for it are placed in it
(provisioned, or by the numbering convention, see :mod:`gateway.registry.placement`).

An operator (or an installer's bulk provisioning) confirms where a camera looks;
that confirmation, never the name a device gives it, decides whether police may
see it. A confirmation may come before the camera's device ever registers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from gateway.registry.directory import ChannelChange, Directory
from gateway.registry.model import AreaConfirmation, AreaTag, Kindergarten
from gateway.registry.placement import place_device
from gateway.registry.store import Store
from gateway.registry.store_thread import StoreThread
from gateway.registry.writer import RegistryWriter

__all__ = ["AreaChoice", "Provisioning"]


@dataclass(frozen=True, slots=True)
class AreaChoice:
    """One channel's confirmed area as an operator sets it; ``area`` None withdraws the confirmation.

    ``name`` is the name the operator saw (default: the channel's current name), so a
    later rename by the device flags the confirmation for review.
    """

    channel_id: str
    area: AreaTag | None
    name: str | None = None


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

    async def confirm_areas(self, choices: Sequence[AreaChoice], by: str, wall: float) -> list[ChannelChange]:
        """Store confirmations (StoreError if that fails), then apply them: upper platforms hear at once."""
        directory = self.directory
        confirmations: list[AreaConfirmation] = []
        cleared: list[str] = []
        for choice in choices:
            if choice.area is None:
                cleared.append(choice.channel_id)
                continue
            channel = directory.channels.get(choice.channel_id)
            name = choice.name if choice.name is not None else (channel.name if channel is not None else "")
            confirmations.append(AreaConfirmation(choice.channel_id, AreaTag(choice.area), by[:120], wall, name[:200]))
        await self.store.call(_confirm, confirmations, cleared)
        at = asyncio.get_running_loop().time()
        changes = [c for conf in confirmations if (c := directory.confirm_area(conf, at)) is not None]
        changes += [c for channel_id in cleared if (c := directory.clear_area(channel_id, at)) is not None]
        for change in changes:
            directory.publish(change)  # police gain (ADD) or lose (DEL) the camera now
        return changes


def _confirm(store: Store, confirmations: Sequence[AreaConfirmation], cleared: Sequence[str]) -> None:
    if confirmations:
        store.upsert_area_confirmations(confirmations)
    if cleared:
        store.delete_area_confirmations(cleared)


def _upsert(store: Store, kindergartens: Sequence[Kindergarten]) -> int:
    return store.upsert_kindergartens(kindergartens)
