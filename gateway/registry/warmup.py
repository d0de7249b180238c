"""Start-up: the directory is filled from the store, so a restart forgets no device or channel."""

from __future__ import annotations

import logging

from gateway.registry.directory import Directory
from gateway.registry.model import AreaConfirmation, Channel, Device, Kindergarten
from gateway.registry.store import Store
from gateway.registry.store_thread import StoreThread

__all__ = ["load_directory"]

log = logging.getLogger("kgw.registry")
PAGE = 1000


async def load_directory(store: StoreThread, directory: Directory) -> list[Device]:
    """Load every device, channel and kindergarten into ``directory``; returns the devices."""
    devices, channels, kindergartens, confirmations = await store.call(_load)
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
