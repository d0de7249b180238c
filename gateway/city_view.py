"""The whole city on any gateway process: its own districts from memory, the others' from the shared store.

A process of a split city (gateway/cluster.py) holds only its districts' devices
in its directory (they register here; its catalog upward is theirs). The
operator's lists — devices, channels, kindergartens, district figures — must
show the whole city on any process, so they read a merged directory: this
process's live entries plus the other districts' rows as the processes serving
them last flushed them to the shared store (PostgreSQL, or one SQLite file).

Online state of another district comes from the store, unless the process
serving it is dead: its heartbeat row (gateway/cluster_nodes.py) is older than
``stale_after`` and nobody else can mark its devices offline, so they are shown
offline until it is back. The merged directory is rebuilt at most every
``ttl`` seconds, and only when someone looks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from gateway.cluster import Cluster
from gateway.cluster_nodes import HEARTBEAT_PERIOD, NodeBook, NodeRecord
from gateway.errors import StoreError
from gateway.registry.directory import Directory
from gateway.registry.model import Channel, Device, Kindergarten
from gateway.registry.store import Store
from gateway.registry.store_thread import StoreThread

__all__ = ["CityView"]

log = logging.getLogger("kgw.cluster")
PAGE = 1000


class CityView:
    """A merged, briefly cached directory of the whole city, and who holds a district."""

    def __init__(
        self,
        store: StoreThread,
        local: Directory,
        cluster: Cluster,
        nodes: NodeBook | None,
        *,
        ttl: float = 2.0,
        stale_after: float = 4 * HEARTBEAT_PERIOD,
    ) -> None:
        self.store = store
        self.local = local
        self.cluster = cluster
        self.nodes = nodes
        self.ttl = ttl
        self.stale_after = stale_after
        self._merged: Directory | None = None
        self._built_at = float("-inf")
        self._holders: list[NodeRecord] = []
        self._lock = asyncio.Lock()

    async def directory(self) -> Directory:
        """The local directory for a process serving every district; else the merged city (at most ``ttl`` old)."""
        if self.cluster.serves_everything:
            return self.local
        async with self._lock:
            if self._merged is None or time.monotonic() - self._built_at > self.ttl:
                await self._rebuild()
            assert self._merged is not None
            return self._merged

    def holder(self, district: str) -> NodeRecord | None:
        """The node serving ``district`` as last read (None: this process, or unknown)."""
        if self.cluster.serves(district):
            return None
        return next((n for n in self._holders if n.serves(district) and n.name != self.cluster.node), None)

    async def refresh_holders(self) -> list[NodeRecord]:
        """Read the node rows now."""
        if self.nodes is not None:
            try:
                self._holders = await asyncio.to_thread(self.nodes.nodes)
            except StoreError as exc:
                log.warning("cannot read the gateway nodes: %s", exc)
        return self._holders

    async def _rebuild(self) -> None:
        cluster = self.cluster
        devices, channels, kindergartens = await self.store.call(_foreign_rows, cluster)
        await self.refresh_holders()
        now = time.time()
        dead = {
            code
            for code in {d.district_code for d in devices}
            if (node := self.holder(code)) is not None and not node.alive(now, self.stale_after)
        }
        if dead:
            devices = [replace(d, online=False) if d.district_code in dead else d for d in devices]
        local = self.local
        merged = Directory()
        merged.restore(
            [*devices, *(entry.row for entry in local.devices.values())],
            [*channels, *local.channels.values()],
            [*kindergartens, *local.kindergartens.values()],
            local.confirmations.values(),
        )
        merged.devices.update(local.devices)  # this process's live entries (their channels' reported states)
        self._merged, self._built_at = merged, time.monotonic()


def _foreign_rows(store: Store, cluster: Cluster) -> tuple[list[Device], list[Channel], list[Kindergarten]]:
    """Devices and channels of the districts this process does not serve, and every kindergarten."""
    devices = [d for d in store.load_all_devices() if not cluster.serves(d.district_code)]
    ids = {d.id for d in devices}
    channels = [c for c in store.load_channels() if c.device_id in ids]
    kindergartens: list[Kindergarten] = []
    offset = 0
    while True:
        page = store.list_kindergartens(None, offset, PAGE)
        kindergartens.extend(page.items)
        offset += PAGE
        if offset >= page.total:
            return devices, channels, kindergartens
