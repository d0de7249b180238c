"""How a catalog changes the directory: a device's channels, or (platform role) a lower platform's tree.

A catalog is one device's word about its *own* channels, and nothing more: a
channel ID another device owns is a conflict (:func:`claim`), recorded and
refused, never a move; a device's catalog never decides what police see either
(a channel's area from its name is a suggestion; only an operator's
:class:`~gateway.registry.model.AreaConfirmation` shares a camera).

An NVR or IPC sends a flat
list; a lower platform sends a tree whose virtual-organisation nodes are
kindergartens (that is the platform role's business: ``gbplatform`` brings its
own :class:`CatalogApplier`). Either way the result is a :class:`CatalogUpdate`:
what to write to the store, and the channel change upper platforms hear of.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from gateway.gb28181.manscdp import CatalogItem
from gateway.registry.directory import Directory
from gateway.registry.model import Channel, ChannelConflict, Kindergarten
from gateway.registry.placement import channel_from_item

__all__ = ["CatalogApplier", "CatalogUpdate", "DeviceCatalogs", "KindergartenOf", "apply_channels", "claim"]

log = logging.getLogger("kgw.registry")


@dataclass(frozen=True, slots=True)
class CatalogUpdate:
    """What a catalog (or a catalog NOTIFY) changed.

    ``stored`` are the channel rows to write (``online`` as of now: reported and
    the device online), the device's whole set when ``replace``; ``deleted`` the
    channels it removed; ``kindergartens`` the ones it taught us; ``before`` and
    ``after`` the changed channels as upper platforms see them (online = up).
    """

    device_id: str
    stored: tuple[Channel, ...]
    replace: bool
    before: Mapping[str, Channel]
    after: Mapping[str, Channel]
    deleted: tuple[str, ...] = ()
    kindergartens: tuple[Kindergarten, ...] = ()
    conflicts: tuple[ChannelConflict, ...] = ()


class CatalogApplier(Protocol):
    """Applies catalogs and catalog NOTIFYs of registered devices to the directory."""

    @property
    def subscribes(self) -> bool:
        """Whether registered lower platforms' catalogs are subscribed to (their NOTIFYs are applied)."""

    def apply_catalog(
        self, directory: Directory, device_id: str, items: Sequence[CatalogItem], partial: bool, wall: float
    ) -> CatalogUpdate | None:
        """A whole catalog (``partial`` when chunks were missing: then only what came is upserted)."""

    def apply_notify(
        self, directory: Directory, device_id: str, items: Sequence[CatalogItem], wall: float
    ) -> CatalogUpdate | None:
        """A catalog NOTIFY: items carrying their own ``Event`` (ADD, UPDATE, DEL, ON, OFF)."""


class DeviceCatalogs:
    """The access gateway's catalogs: devices report flat channel lists; NOTIFYs are not theirs to send."""

    subscribes = False

    def apply_catalog(
        self, directory: Directory, device_id: str, items: Sequence[CatalogItem], partial: bool, wall: float
    ) -> CatalogUpdate | None:
        """Channels placed in the device's kindergarten."""
        return apply_channels(directory, device_id, items, partial, wall, lambda item: None)

    def apply_notify(
        self, directory: Directory, device_id: str, items: Sequence[CatalogItem], wall: float
    ) -> CatalogUpdate | None:
        """Ignored: catalog subscriptions are a platform's (the handler logs it)."""
        return None


class KindergartenOf(Protocol):
    """Where a catalog item's channel belongs, if not in its device's kindergarten."""

    def __call__(self, item: CatalogItem) -> str | None: ...


def claim(directory: Directory, device_id: str, channel_id: str, wall: float, path: str) -> ChannelConflict | None:
    """Whether ``device_id``'s catalog may describe ``channel_id``: None, or the conflict (recorded, logged).

    The single ownership rule of the full-catalog and the NOTIFY paths
    (:meth:`Directory.owner_conflict` says who owns what).
    """
    owner = directory.owner_conflict(device_id, channel_id)
    if owner is None:
        return None
    conflict = ChannelConflict(channel_id, owner, device_id, wall, path)
    directory.record_conflict(conflict)
    log.warning(
        "catalog conflict: %s (%s) listed channel %s, which belongs to %s; not moved",
        device_id,
        path,
        channel_id,
        owner,
    )
    return conflict


def apply_channels(
    directory: Directory,
    device_id: str,
    items: Sequence[CatalogItem],
    partial: bool,
    wall: float,
    kindergarten_of: KindergartenOf,
) -> CatalogUpdate | None:
    """Make a catalog's channels the device's (all of them, or some when ``partial``).

    ``kindergarten_of(item)`` may place a channel in another kindergarten than its
    device's (a lower platform's channel hangs under its kindergarten's node).
    Channels another device owns are left with it and reported as conflicts.
    """
    entry = directory.devices.get(device_id)
    if entry is None:
        return None
    channels: list[Channel] = []
    conflicts: list[ChannelConflict] = []
    for item in items:
        channel = channel_from_item(item, entry.row, wall, kindergarten_id=kindergarten_of(item))
        if channel is None:
            continue
        conflict = claim(directory, device_id, channel.id, wall, "catalog")
        if conflict is not None:
            conflicts.append(conflict)
        else:
            channels.append(channel)
    if partial:
        before = directory.upsert_channels(device_id, channels)
    else:
        before = directory.replace_channels(device_id, channels)
    up = entry.row.online
    stored = tuple(replace(c, online=c.online and up) for c in channels)
    # The directory's rows carry the operator's confirmations (what the policy decides on).
    after = {c.id: directory.view(directory.channels[c.id]) for c in channels if c.id in directory.channels}
    return CatalogUpdate(device_id, stored, not partial, before, after, conflicts=tuple(conflicts))
