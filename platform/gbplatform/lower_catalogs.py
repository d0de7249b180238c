"""Lower platforms' catalogs, as a monitoring platform applies them (docs/gb28181.md §6.4, §14.3).

A lower platform (the access gateway, or a district platform under the
municipal one) answers a Catalog query with its tree: business group and
district nodes, kindergartens as virtual-organisation (216) nodes, and the
channels hanging under them. The platform learns the kindergartens from the
216 nodes and places every channel in the kindergarten its ParentID names.
It also subscribes to the lower platform's catalog and applies its NOTIFYs:
ADD and UPDATE (the item itself), DEL, and ON/OFF (VLOST and DEFECT count as
off). A lower platform may change only its own channels
(:func:`gateway.registry.catalogs.claim`, the same rule as full catalogs), and
teaches only kindergartens of its own area; a front-end device teaches none
(:func:`gateway.registry.placement.kindergartens_taught`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from gateway.gb28181.manscdp import CatalogItem
from gateway.registry.catalogs import CatalogUpdate, apply_channels, claim
from gateway.registry.directory import Directory
from gateway.registry.model import Channel, ChannelConflict, Kindergarten
from gateway.registry.placement import channel_from_item, kindergartens_taught

__all__ = ["LowerPlatformCatalogs"]

PRESENCE_EVENTS = frozenset({"ON", "OFF", "VLOST", "DEFECT"})

log = logging.getLogger("kgw.registry")


class LowerPlatformCatalogs:
    """A platform's :class:`~gateway.registry.catalogs.CatalogApplier`: trees in, subscriptions kept."""

    subscribes = True

    def apply_catalog(
        self, directory: Directory, device_id: str, items: Sequence[CatalogItem], partial: bool, wall: float
    ) -> CatalogUpdate | None:
        """A lower platform's whole tree (an NVR's flat catalog passes through unchanged)."""
        learned = _learn(directory, device_id, items)
        update = apply_channels(
            directory, device_id, items, partial, wall, lambda item: _kindergarten_node(directory, item.parent_id)
        )
        return replace(update, kindergartens=tuple(learned)) if update is not None else None

    def apply_notify(
        self, directory: Directory, device_id: str, items: Sequence[CatalogItem], wall: float
    ) -> CatalogUpdate | None:
        """ADD/UPDATE/DEL/ON/OFF items of a catalog NOTIFY."""
        entry = directory.devices.get(device_id)
        if entry is None:
            return None
        learned = _learn(directory, device_id, items)
        conflicts: list[ChannelConflict] = []
        before: dict[str, Channel] = {}
        after: dict[str, Channel] = {}
        stored: dict[str, Channel] = {}
        deleted: list[str] = []
        for item in items:
            kind = (item.event or "UPDATE").upper()
            conflict = claim(directory, device_id, item.device_id, wall, "notify")
            if conflict is not None:
                conflicts.append(conflict)  # another device's channel: a lower platform may only change its own
                continue
            old = directory.channels.get(item.device_id)
            if kind == "DEL":
                for channel_id, gone in directory.remove_channels(device_id, [item.device_id]).items():
                    before.setdefault(channel_id, gone)
                    after.pop(channel_id, None)
                    stored.pop(channel_id, None)
                    deleted.append(channel_id)
                continue
            if kind in PRESENCE_EVENTS:
                if old is None:
                    continue
                channel = replace(old, online=kind == "ON", updated_at=wall)
            else:  # ADD / UPDATE (and items without an Event)
                made = channel_from_item(
                    item, entry.row, wall, kindergarten_id=_kindergarten_node(directory, item.parent_id)
                )
                if made is None:
                    continue  # a tree node
                channel = made
            for channel_id, prior in directory.upsert_channels(device_id, [channel]).items():
                before.setdefault(channel_id, prior)
            after[channel.id] = directory.view(directory.channels[channel.id])
            stored[channel.id] = replace(channel, online=channel.online and entry.row.online)
        return CatalogUpdate(
            device_id,
            tuple(stored.values()),
            False,
            before,
            after,
            deleted=tuple(deleted),
            kindergartens=tuple(learned),
            conflicts=tuple(conflicts),
        )


def _learn(directory: Directory, device_id: str, items: Sequence[CatalogItem]) -> list[Kindergarten]:
    """Kindergartens the sender may teach (new ones only); refused 216 nodes are counted and logged."""
    taught, refused = kindergartens_taught(device_id, items)
    if refused:
        directory.unknown_kindergartens_total += refused
        log.warning("catalog of %s named %d kindergarten node(s) it may not create; ignored", device_id, refused)
    return directory.add_kindergartens(taught, overwrite=False)


def _kindergarten_node(directory: Directory, parent_id: str | None) -> str | None:
    """The kindergarten a lower platform's channel hangs under (its ParentID), if known."""
    return parent_id if parent_id and parent_id in directory.kindergartens else None
