"""Periodic chores of a running node that belong to no single service.

* ``gc.freeze()``: a city's registry is ~10^6 long-lived objects; letting the
  cyclic GC rescan them cost a quarter of the keepalive CPU and 230 ms pauses.
  Frozen objects are still freed by reference counting when they die.
* the wrong-password throttle forgets records that went quiet;
* every online device's last keepalive time is queued for the store, once per
  ``LAST_SEEN_PERIOD``: one batched write, never one per keepalive.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from gateway.gb28181.access import DeviceAccess
from gateway.registry.directory import Directory
from gateway.registry.writer import RegistryWriter

__all__ = ["GC_FREEZE_PERIOD", "GC_THRESHOLDS", "LAST_SEEN_PERIOD", "housekeeping", "mark_last_seen"]

GC_FREEZE_PERIOD = 30.0  # s between gc.freeze() calls
# Young collections every 10,000 net allocations instead of 700: a storm's messages die by
# reference counting long before; with the default the cyclic GC cost ~15 % of the storm's CPU.
GC_THRESHOLDS = (10_000, 10, 10)
LAST_SEEN_PERIOD = 300.0  # s between batched writes of every device's last keepalive time


async def housekeeping(
    directory: Directory, writer: RegistryWriter, access: DeviceAccess, wall: Callable[[float], float]
) -> None:
    """Run the chores until cancelled."""
    loop = asyncio.get_running_loop()
    next_last_seen = loop.time() + LAST_SEEN_PERIOD
    while True:
        await asyncio.sleep(GC_FREEZE_PERIOD)
        gc.freeze()
        access.registrar.throttle.prune(loop.time())
        if loop.time() >= next_last_seen:
            next_last_seen = loop.time() + LAST_SEEN_PERIOD
            mark_last_seen(directory, writer, access, wall)


def mark_last_seen(
    directory: Directory, writer: RegistryWriter, access: DeviceAccess, wall: Callable[[float], float]
) -> None:
    """Queue every online device's last keepalive time."""
    liveness = access.liveness
    for device_id, entry in directory.devices.items():
        seen = liveness.last_seen(device_id)
        if entry.row.online and seen is not None:
            writer.presence.mark_device(device_id, True, wall(seen))
