"""What the gateway knows around an alarm, for its payload: the place, the device, the live link.

Read from the directory only, never waiting on I/O: an alarm's delivery must
not wait for a disk or a network. The entrance camera's snapshot is the one
exception, taken in the background by the alarm service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.alarms.model import Alarm
from gateway.alarms.payload import Enrichment, KindergartenInfo
from gateway.gb28181.ids import district_name
from gateway.registry.directory import Directory
from gateway.registry.model import AreaTag

__all__ = ["AlarmEnrichment"]


class Snapshots(Protocol):
    """Where a JPEG of a channel comes from (the live service)."""

    async def snapshot(self, channel_id: str, wait: float = 5.0) -> bytes: ...


class AlarmEnrichment:
    """Builds an alarm's :class:`Enrichment` and takes its entrance snapshot."""

    def __init__(
        self, directory: Directory, gateway_id: str, public_base: Callable[[], str], snapshots: Snapshots
    ) -> None:
        self.directory = directory
        self.gateway_id = gateway_id
        self.public_base = public_base  # the HTTP port is known only once the server listens
        self.snapshots = snapshots

    def enrich(self, alarm: Alarm) -> Enrichment:
        """Kindergarten, device, source and links of an alarm."""
        directory = self.directory
        kg = directory.kindergartens.get(alarm.kindergarten_id or "")
        device = directory.device(alarm.device_id)
        source = directory.channels.get(alarm.source_id)
        camera = directory.entrance_camera(alarm.kindergarten_id)
        base = self.public_base().rstrip("/")
        place = None
        if kg is not None:
            place = KindergartenInfo(
                kg.id,
                kg.name,
                kg.district_code,
                district_name(kg.district_code) or "",
                kg.address,
                kg.longitude,
                kg.latitude,
            )
        return Enrichment(
            gateway_id=self.gateway_id,
            kindergarten=place,
            device_name=device.name if device else "",
            source_name=source.name if source else "",
            source_area=AreaTag(source.area).value if source else "",
            live_channel_id=camera,
            live_url=f"{base}/live/{camera}" if camera else None,
            snapshot_url=f"{base}/api/alarms/{alarm.id}/snapshot.jpg" if camera else None,
            alarm_url=f"{base}/api/alarms/{alarm.id}",
        )

    async def entrance_snapshot(self, alarm: Alarm) -> bytes | None:
        """A JPEG of the kindergarten's entrance camera now, or None when it has none."""
        camera = self.directory.entrance_camera(alarm.kindergarten_id)
        if camera is None:
            return None
        return await self.snapshots.snapshot(camera)
