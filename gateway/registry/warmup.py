"""Start-up: the directory is filled from the store, so a restart forgets no device or channel."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.registry.directory import Directory
from gateway.registry.model import AreaConfirmation, Channel, Device, Kindergarten
from gateway.registry.store import Store
from gateway.registry.store_thread import StoreThread

__all__ = ["load_directory"]

log = logging.getLogger("kgw.registry")
PAGE = 1000


async def load_directory(
    store: StoreThread, directory: Directory, serves: Callable[[str], bool] | None = None
) -> list[Device]:
    """Load every device, channel and kindergarten into ``directory``; returns the devices.

    ``serves`` (a district code -> bool) keeps only the devices of this process's districts
    (gateway/cluster.py): the others registered with another gateway process.
    """
    devices, channels, kindergartens, confirmations = await store.call(_load)
    if serves is not None:
        devices = [d for d in devices if serves(d.district_code)]
        ids = {d.id for d in devices}
        channels = [c for c in channels if c.device_id in ids]
    directory.restore(devices, channels, kindergartens, confirmations)
    log.info("restored %d devices and %d kindergartens from the store", len(devices), len(kindergartens))
    return devices


def _load(store: Store) -> tuple[list[Device], list[Channel], list[Kindergarten], list[AreaConfirmation]]:
    kindergartens: list[Kindergarten] = []
    offset = 0
    while True:
        page = store.list_kindergartens(None, offset, PAGE)
        kindergartens.extend(page.items)
        offset += PAGE
        if offset >= page.total:
            break
    return store.load_all_devices(), store.load_channels(), kindergartens, store.load_area_confirmations()
