"""Lists of current state, from the directory: devices, channels, kindergartens, district figures.

The same filters and paging as the store's list queries (ordered by id, ``total``
counting every match), answered from memory so that a console never disagrees
with ``/metrics``: a device that has just registered is listed at once, not
after the next write-behind flush. Channels are listed with ``online`` meaning
up (see :mod:`gateway.registry.directory`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from gateway.registry.directory import Directory
from gateway.registry.model import (
    Channel,
    ChannelFilter,
    Device,
    DeviceFilter,
    DistrictCount,
    Kindergarten,
    Page,
    check_page,
)

__all__ = ["district_counts", "list_channels", "list_devices", "list_kindergartens"]

T = TypeVar("T", Device, Channel, Kindergarten)


def list_devices(directory: Directory, flt: DeviceFilter) -> Page[Device]:
    """Devices matching ``flt``, ordered by id."""
    rows = (
        entry.row
        for entry in directory.devices.values()
        if (flt.district_code is None or entry.row.district_code == flt.district_code)
        and (flt.kindergarten_id is None or entry.row.kindergarten_id == flt.kindergarten_id)
        and (flt.online is None or entry.row.online == flt.online)
        and (flt.device_type is None or entry.row.device_type == flt.device_type)
    )
    return _page(rows, flt.offset, flt.limit)


def list_channels(directory: Directory, flt: ChannelFilter) -> Page[Channel]:
    """Channels matching ``flt``, ordered by id, ``online`` meaning up."""
    areas = flt.areas
    if areas is not None and not areas:  # e.g. a classroom asked for in the police view
        return Page((), 0, flt.offset, flt.limit)
    if flt.kindergarten_id is not None:
        candidates: Iterable[Channel] = directory.channels_of_kindergarten(flt.kindergarten_id)
    elif flt.device_id is not None:
        candidates = directory.channels_of_device(flt.device_id)
    else:
        candidates = directory.channels.values()
    views = (
        directory.view(channel)
        for channel in candidates
        if (flt.district_code is None or channel.district_code == flt.district_code)
        and (flt.kindergarten_id is None or channel.kindergarten_id == flt.kindergarten_id)
        and (flt.device_id is None or channel.device_id == flt.device_id)
        and (flt.type_code is None or channel.type_code == flt.type_code)
        and (flt.area is None or channel.effective_area is flt.area)
        and (not flt.public_only or (channel.confirmed_area is not None and channel.confirmed_area.is_public))
    )
    return _page((v for v in views if flt.online is None or v.online == flt.online), flt.offset, flt.limit)


def list_kindergartens(
    directory: Directory, district_code: str | None = None, offset: int = 0, limit: int = 100
) -> Page[Kindergarten]:
    """Kindergartens ordered by id, optionally of one district."""
    check_page(offset, limit)
    rows = (k for k in directory.kindergartens.values() if district_code is None or k.district_code == district_code)
    return _page(rows, offset, limit)


def district_counts(directory: Directory) -> list[DistrictCount]:
    """Per district: kindergartens, devices (online) and channels (up), ordered by district code."""
    figures: dict[str, list[int]] = {}

    def of(code: str) -> list[int]:
        return figures.setdefault(code, [0, 0, 0, 0, 0])

    for kindergarten in directory.kindergartens.values():
        of(kindergarten.district_code)[0] += 1
    for entry in directory.devices.values():
        counts = of(entry.row.district_code)
        counts[1] += 1
        counts[2] += entry.row.online
    for channel in directory.channels.values():
        counts = of(channel.district_code)
        counts[3] += 1
        counts[4] += directory.is_up(channel)
    return [DistrictCount(code, *counts) for code, counts in sorted(figures.items())]


def _page(rows: Iterable[T], offset: int, limit: int) -> Page[T]:
    ordered = sorted(rows, key=lambda row: row.id)
    return Page(tuple(ordered[offset : offset + limit]), len(ordered), offset, limit)
