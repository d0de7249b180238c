"""The directory: devices, channels and kindergartens as they are now, in memory.

Everything that asks "what is there and is it online" reads this: the HTTP
lists, ``/metrics``, the catalogs sent to upper platforms, live-stream lookups
and alarm placement, so they can never disagree. The store lags behind by one
write-behind interval and serves history and what is not kept here
(:mod:`gateway.registry.writer` writes it).

A channel is *up* when its device is online and its device did not report it
off. After a restart the reported state is unknown until the next catalog and
counts as up while the device is.

Pure data and bookkeeping: no I/O, no clock (times come in as arguments).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from gateway.registry.model import AreaConfirmation, AreaTag, Channel, ChannelConflict, Device, Kindergarten

__all__ = ["ChannelChange", "DeviceEntry", "Directory"]

MAX_CONFLICTS = 1000  # the conflict events kept for the API (the counter counts them all)

CAMERA_TYPES = frozenset({131, 132})  # camera, IPC (GB/T 28181 type codes): what an alarm's live link shows


@dataclass(slots=True)
class DeviceEntry:
    """A device's registry row and what its catalog said of each of its channels."""

    row: Device
    reported: dict[str, bool | None] = field(default_factory=dict)  # channel id -> on (None: unknown since restart)


@dataclass(frozen=True, slots=True)
class ChannelChange:
    """Channels as they were and as they are, online meaning *up* (upper platforms' catalog NOTIFYs)."""

    before: Mapping[str, Channel]
    after: Mapping[str, Channel]
    at: float


def _is_central(device_id: str) -> bool:
    """A lower platform or gateway (GB/T 28181 central device types 200-214), not a front-end device."""
    code = device_id[10:13]
    return len(device_id) == 20 and code.isdigit() and 200 <= int(code) <= 214


class Directory:
    """Current devices, channels and kindergartens, with indexes and a change feed."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceEntry] = {}
        self.channels: dict[str, Channel] = {}  # as last reported; ``online`` is what the device said
        self.kindergartens: dict[str, Kindergarten] = {}
        self.confirmations: dict[str, AreaConfirmation] = {}  # channel id -> operator-confirmed area
        self.conflicts: deque[ChannelConflict] = deque(maxlen=MAX_CONFLICTS)  # newest last
        self.conflicts_total = 0
        self.unknown_kindergartens_total = 0  # 216 nodes in catalogs that were not learned (L5)
        self._by_kindergarten: dict[str, set[str]] = {}
        self._by_district: dict[str, set[str]] = {}
        self._listeners: list[Callable[[ChannelChange], None]] = []

    # --- lookups ---------------------------------------------------------------------

    def device(self, device_id: str) -> Device | None:
        """A device's row, or None."""
        entry = self.devices.get(device_id)
        return entry.row if entry is not None else None

    def device_of(self, channel_id: str) -> str | None:
        """The device that serves a channel (an IPC's own ID serves as its channel), or None."""
        channel = self.channels.get(channel_id)
        if channel is not None:
            return channel.device_id
        return channel_id if channel_id in self.devices else None

    def is_up(self, channel: Channel) -> bool:
        """Whether a channel is up: its device online, and not reported off."""
        entry = self.devices.get(channel.device_id)
        return entry is not None and entry.row.online and entry.reported.get(channel.id) is not False

    def view(self, channel: Channel) -> Channel:
        """The channel with ``online`` meaning up (what lists and upper platforms are shown)."""
        up = self.is_up(channel)
        return channel if channel.online == up else replace(channel, online=up)

    def channels_of_kindergarten(self, kindergarten_id: str) -> list[Channel]:
        """A kindergarten's channels (a lower platform's too: they hang under its 216 node)."""
        return [self.channels[i] for i in self._by_kindergarten.get(kindergarten_id, ()) if i in self.channels]

    def channels_of_district(self, district_code: str) -> list[Channel]:
        """A district's channels (by the civil code their catalog gave)."""
        return [self.channels[i] for i in self._by_district.get(district_code, ()) if i in self.channels]

    def first_channel(
        self, where: Callable[[Channel], bool], *, kindergarten: str | None = None, district: str | None = None
    ) -> Channel | None:
        """The first channel of a kindergarten (or district) that ``where`` accepts, without listing them all."""
        index, key = (
            (self._by_kindergarten, kindergarten) if kindergarten is not None else (self._by_district, district)
        )
        for channel_id in index.get(key or "", ()):
            channel = self.channels.get(channel_id)
            if channel is not None and where(channel):
                return channel
        return None

    def channels_of_device(self, device_id: str) -> list[Channel]:
        """The channels a device's catalog reported."""
        entry = self.devices.get(device_id)
        if entry is None:
            return []
        return [c for i in entry.reported if (c := self.channels.get(i)) is not None]

    def owner_conflict(self, device_id: str, channel_id: str) -> str | None:
        """The other device that owns ``channel_id``, when ``device_id``'s catalog may not describe it.

        The one ownership rule of every catalog path (full catalog and NOTIFY): a
        device describes only its own channels. A channel owned by another device
        that is still in the registry stays with it; the ID of another registered
        device is that device's own. A channel moves only when its owner let go of
        it (the owner's own catalog no longer lists it, or the owner was deleted),
        so re-wiring a camera to another NVR works after the old NVR's next catalog.
        """
        old = self.channels.get(channel_id)
        if old is not None and old.device_id != device_id and old.device_id in self.devices:
            return old.device_id
        if old is None and channel_id != device_id and channel_id in self.devices:
            return channel_id
        return None

    def record_conflict(self, conflict: ChannelConflict) -> None:
        """Keep a conflict event for the API (bounded) and count it."""
        self.conflicts.append(conflict)
        self.conflicts_total += 1

    def confirm_area(self, confirmation: AreaConfirmation, at: float) -> ChannelChange | None:
        """Record an operator's confirmation; the change of the channel (if known) as upper platforms see it.

        ``at`` is the event loop's clock, like every :class:`ChannelChange`.
        """
        self.confirmations[confirmation.channel_id] = confirmation
        return self._reconfirm(confirmation.channel_id, at)

    def clear_area(self, channel_id: str, at: float) -> ChannelChange | None:
        """Withdraw a confirmation (the camera is shared with police no more)."""
        self.confirmations.pop(channel_id, None)
        return self._reconfirm(channel_id, at)

    def _reconfirm(self, channel_id: str, at: float) -> ChannelChange | None:
        channel = self.channels.get(channel_id)
        if channel is None:
            return None
        before = self.view(channel)
        self._put_channel(channel)
        return ChannelChange({channel_id: before}, {channel_id: self.view(self.channels[channel_id])}, at)

    def entrance_camera(self, kindergarten_id: str | None) -> str | None:
        """The kindergarten's confirmed entrance camera, an up one first: for alarms' live links and snapshots.

        Only an operator-confirmed entrance counts (what goes with an alarm goes to
        police): a device naming an indoor camera "大门口" must not put it there.
        A platform's channels come from its lower platforms' catalogs, already
        filtered by their sharing policy: there, a channel of a lower platform or
        gateway (a central device) that nobody confirmed here counts by its tag.
        """
        if not kindergarten_id:
            return None
        candidates = sorted(
            c.id
            for c in self.channels_of_kindergarten(kindergarten_id)
            if c.type_code in CAMERA_TYPES
            and (
                c.confirmed_area is AreaTag.ENTRANCE
                or (c.confirmed_area is None and c.area is AreaTag.ENTRANCE and _is_central(c.device_id))
            )
        )
        confirmed = [i for i in candidates if self.channels[i].confirmed_area is AreaTag.ENTRANCE]
        candidates = confirmed or candidates
        up = next((i for i in candidates if self.is_up(self.channels[i])), None)
        return up or (candidates[0] if candidates else None)

    def online_counts(self) -> tuple[int, int, int]:
        """(devices known, devices online, channels up)."""
        devices_online = channels_up = 0
        for entry in self.devices.values():
            if entry.row.online:
                devices_online += 1
                channels_up += sum(1 for reported in entry.reported.values() if reported is not False)
        return len(self.devices), devices_online, channels_up

    # --- changes ------------------------------------------------------------------------

    def restore(
        self,
        devices: Iterable[Device],
        channels: Iterable[Channel],
        kindergartens: Iterable[Kindergarten],
        confirmations: Iterable[AreaConfirmation] = (),
    ) -> None:
        """Load what the store had at start-up (reported channel states are unknown until a catalog)."""
        self.kindergartens.update((k.id, k) for k in kindergartens)
        self.confirmations.update((c.channel_id, c) for c in confirmations)
        for row in devices:
            self.devices[row.id] = DeviceEntry(row)
        for channel in channels:
            entry = self.devices.get(channel.device_id)
            if entry is not None:
                entry.reported[channel.id] = None
                self._put_channel(channel)

    def put_device(self, row: Device) -> DeviceEntry:
        """Insert or replace a device's row (its channels stay)."""
        entry = self.devices.get(row.id)
        if entry is None:
            entry = self.devices[row.id] = DeviceEntry(row)
        else:
            entry.row = row
        return entry

    def add_kindergartens(self, kindergartens: Iterable[Kindergarten], *, overwrite: bool = True) -> list[Kindergarten]:
        """Add (or overwrite) kindergartens; returns the ones that were written."""
        written = [k for k in kindergartens if overwrite or k.id not in self.kindergartens]
        self.kindergartens.update((k.id, k) for k in written)
        return written

    def replace_channels(self, device_id: str, channels: Iterable[Channel]) -> dict[str, Channel]:
        """Make ``channels`` the device's whole set (a full catalog); returns the old ones, as views."""
        entry = self.devices[device_id]
        before = {c.id: self.view(c) for c in self.channels_of_device(device_id)}
        for channel_id in list(entry.reported):
            self._drop_channel(channel_id)
        entry.reported = {}
        self.upsert_channels(device_id, channels)
        return before

    def upsert_channels(self, device_id: str, channels: Iterable[Channel]) -> dict[str, Channel]:
        """Add or update some of a device's channels; returns the ones replaced, as views."""
        entry = self.devices[device_id]
        before: dict[str, Channel] = {}
        for channel in channels:
            old = self.channels.get(channel.id)
            if old is not None and old.device_id == device_id:
                before[old.id] = self.view(old)
            elif old is not None:
                self._forget(old)  # re-wired to another device
            entry.reported[channel.id] = channel.online
            self._put_channel(channel)
        entry.row = replace(entry.row, channel_count=len(entry.reported))
        return before

    def remove_channels(self, device_id: str, channel_ids: Iterable[str]) -> dict[str, Channel]:
        """Forget some of a device's channels (others' are left alone); returns the removed ones, as views."""
        entry = self.devices[device_id]
        removed: dict[str, Channel] = {}
        for channel_id in channel_ids:
            channel = self.channels.get(channel_id)
            if channel is None or channel.device_id != device_id:
                continue
            removed[channel_id] = self.view(channel)
            self._forget(channel)
        entry.row = replace(entry.row, channel_count=len(entry.reported))
        return removed

    def subscribe(self, listener: Callable[[ChannelChange], None]) -> None:
        """Be told of every change of channels (added, removed, up or down)."""
        self._listeners.append(listener)

    def publish(self, change: ChannelChange) -> None:
        """Tell every listener (a change with nothing in it is not told)."""
        if change.before or change.after:
            for listener in self._listeners:
                listener(change)

    # --- internals -----------------------------------------------------------------------

    def _put_channel(self, channel: Channel) -> None:
        old = self.channels.get(channel.id)
        if old is not None:
            self._unindex(old)
        # A catalog never changes a confirmation: every row put here carries the operator's word.
        channel = channel.with_confirmation(self.confirmations.get(channel.id))
        self.channels[channel.id] = channel
        if channel.kindergarten_id:
            self._by_kindergarten.setdefault(channel.kindergarten_id, set()).add(channel.id)
        self._by_district.setdefault(channel.district_code, set()).add(channel.id)

    def _forget(self, channel: Channel) -> None:
        entry = self.devices.get(channel.device_id)
        if entry is not None:
            entry.reported.pop(channel.id, None)
            entry.row = replace(entry.row, channel_count=len(entry.reported))
        self._drop_channel(channel.id)

    def _drop_channel(self, channel_id: str) -> None:
        channel = self.channels.pop(channel_id, None)
        if channel is not None:
            self._unindex(channel)

    def _unindex(self, channel: Channel) -> None:
        for index, key in (
            (self._by_kindergarten, channel.kindergarten_id),
            (self._by_district, channel.district_code),
        ):
            ids = index.get(key) if key else None
            if key and ids is not None:
                ids.discard(channel.id)
                if not ids:
                    del index[key]
