"""RTSP cameras as GB/T 28181 channels: configuration, directory entries, pullers, live streams.

One :class:`RtspCameraService` per gateway. Each kindergarten with RTSP cameras gets a
virtual device (an NVR, type 118, network digit 8: :mod:`gateway.rtsp.model`) in the
directory, and each camera a channel of it. The device is online while the gateway
runs (it is the gateway); a channel is up while its camera's connection delivers
frames, so the console tree, ``/metrics``, the upper platforms' catalogs (through the
directory's change feed: NOTIFY ON/OFF) and the status history all follow the
connection like they follow a registered device.

Upstream policy: each enabled camera is pulled **always**, by one thread, whatever the
number of viewers. Why: a consumer camera's GOP is 1-4 s, so opening on demand could
not give a first frame in under 1 s (RTSP handshake + the wait for the next key frame);
with the connection open the fan-out's GOP cache hands a new viewer a key frame at
once. It also makes online/offline the connection's real state rather than a guess
from periodic probes. The cost is the camera's bitrate on the kindergarten's line all
the time; small day-care points have a few cameras, and an operator can point the URL
at the camera's sub-stream or disable a camera.

Each connection has its own :class:`RtspFeed` (fan-out, wake-up event, codec), like a
GB session has its own: when the connection drops, :class:`~gateway.live.LiveService`
closes the stream built on it, so viewers and upper platforms see the end (and the
upper relay its BYE) exactly as for a device's BYE.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily

from gateway.errors import GatewayError
from gateway.media.ps import AccessUnit, StreamType
from gateway.media.relay import StreamFanout
from gateway.registry.directory import ChannelChange, Directory
from gateway.registry.model import AreaTag, Channel, Device, EntityKind, StatusEvent
from gateway.registry.writer import RegistryWriter
from gateway.rtsp.model import (
    MAX_CAMERAS_PER_KINDERGARTEN,
    CameraState,
    InvalidRtspCamera,
    RtspCamera,
    RtspCameraConfig,
    channel_id_for,
    virtual_device_id,
)
from gateway.rtsp.puller import DEFAULT_TIMING, PullerTiming, RtspPuller
from gateway.rtsp.store import RtspCameraStore

__all__ = ["RtspCameraService", "RtspFeed", "RtspStatus", "UnknownRtspCamera"]

log = logging.getLogger("kgw.rtsp")

VIRTUAL_DEVICE_TYPE = 118  # an NVR: what a kindergarten's set of cameras looks like to a GB platform
CAMERA_TYPE = 131
MANUFACTURER = "kgw"
MODEL = "RTSP"


class UnknownRtspCamera(GatewayError, LookupError):
    """No RTSP camera with that channel ID."""


class AreaConfirmer(Protocol):
    """Records an operator's confirmed area (the provisioning service)."""

    def __call__(self, channel_id: str, area: AreaTag, name: str, by: str) -> Awaitable[None]: ...


@dataclass(slots=True)
class RtspFeed:
    """One connection's output: what a :class:`~gateway.live.LiveStream` of the channel reads."""

    fanout: StreamFanout
    codec: StreamType
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    opened_at: float = 0.0


@dataclass(slots=True)
class RtspStatus:
    """A camera's connection as the API and the console show it."""

    state: CameraState = CameraState.CONNECTING
    detail: str = ""  # the codec, or why it is not online (credentials never in it)
    since: float = 0.0  # wall clock
    attempts: int = 0

    @property
    def label(self) -> str:
        if self.state is CameraState.UNSUPPORTED_CODEC:
            return f"{self.state.label} ({self.detail})"
        return self.state.label


@dataclass(slots=True)
class _Entry:
    camera: RtspCamera
    status: RtspStatus
    puller: RtspPuller | None = None
    feed: RtspFeed | None = None


class RtspCameraService:
    """Adds, edits and removes RTSP cameras; pulls them; gives :class:`~gateway.live.LiveService` their feeds."""

    def __init__(
        self,
        store: RtspCameraStore,
        directory: Directory,
        writer: RegistryWriter,
        *,
        confirm_area: AreaConfirmer | None = None,
        timing: PullerTiming = DEFAULT_TIMING,
        on_feed_closed: Callable[[str, str], None] = lambda channel_id, reason: None,
        wall: Callable[[], float] = time.time,
        serves: Callable[[str], bool] = lambda district_code: True,
    ) -> None:
        self.store = store
        self.directory = directory
        self.writer = writer
        self.confirm_area = confirm_area
        self.timing = timing
        self.on_feed_closed = on_feed_closed  # the live service closes the stream on the ended connection
        self.wall = wall
        self.serves = serves  # the districts this process serves (gateway/cluster.py); the others pull theirs
        self.loop = asyncio.get_running_loop()
        self._entries: dict[str, _Entry] = {}
        self._lock = asyncio.Lock()  # add/edit/remove one at a time (channel numbers are allocated)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> int:
        """Load the configured cameras of the kindergartens served here, enter them and start pulling; how many."""
        started = 0
        for camera in await self.store.load():
            if camera.kindergarten_id not in self.directory.kindergartens or not self.serves(camera.district_code):
                # Another gateway process serves its district (gateway/cluster.py: one database, several
                # processes): that one pulls it. One connection per camera in the whole city.
                log.info("rtsp %s: kindergarten %s not served here", camera.channel_id, camera.kindergarten_id)
                continue
            self._enter(camera)
            started += 1
        return started

    async def stop(self) -> None:
        """Stop every puller (their threads end within FFmpeg's read timeout)."""
        pullers = [e.puller for e in self._entries.values() if e.puller is not None]
        for entry in self._entries.values():
            self._drop_feed(entry, "gateway stopping")
            entry.puller = None
        for puller in pullers:
            puller.stop()
        for puller in pullers:
            await asyncio.to_thread(puller.join, self.timing.read_timeout + 1)

    # --- configuration -----------------------------------------------------------------------------

    async def add(self, config: RtspCameraConfig, actor: str, *, confirm: bool = False) -> RtspCamera:
        """Store a new camera (InvalidRtspCamera, StoreError), enter it in the directory and start pulling.

        ``confirm``: the area given counts as the operator's confirmation (the caller checked
        that ``actor`` may confirm areas); otherwise it is a suggestion only and police see
        the camera only after someone allowed to confirms it.
        """
        config = config.checked()
        async with self._lock:
            kindergarten = self.directory.kindergartens.get(config.kindergarten_id)
            if kindergarten is None:
                raise InvalidRtspCamera(f"unknown kindergarten {config.kindergarten_id}")
            if not self.serves(kindergarten.district_code):
                raise InvalidRtspCamera(f"district {kindergarten.district_code} is served by another gateway process")
            camera = RtspCamera(
                channel_id=self._free_channel(config.kindergarten_id),
                device_id=virtual_device_id(config.kindergarten_id),
                kindergarten_id=config.kindergarten_id,
                district_code=kindergarten.district_code,
                name=config.name,
                area=AreaTag(config.area),
                url=config.url,
                username=config.username,
                password=config.password,
                created_by=actor[:120],
                created_at=self.wall(),
            )
            await self.store.save(camera)
            if confirm and self.confirm_area is not None:
                await self.confirm_area(camera.channel_id, camera.area, camera.name, actor)
            self._enter(camera)
        log.info("rtsp %s added by %s: %s (%s)", camera.channel_id, actor, camera.name, camera.safe_url)
        return camera

    async def update(
        self,
        channel_id: str,
        actor: str,
        *,
        name: str | None = None,
        area: str | None = None,
        url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        enabled: bool | None = None,
        confirm: bool = False,
    ) -> RtspCamera:
        """Change a camera; a new URL, credentials or enabling reconnects it at once."""
        async with self._lock:
            entry = self._entry(channel_id)
            old = entry.camera
            checked = RtspCameraConfig(
                old.kindergarten_id,
                name if name is not None else old.name,
                area if area is not None else old.area.value,
                url if url is not None else old.url,
                username if username is not None else old.username,
                password if password is not None else old.password,
            ).checked()
            camera = replace(
                old,
                name=checked.name,
                area=AreaTag(checked.area),
                url=checked.url,
                username=checked.username,
                password=checked.password,
                enabled=old.enabled if enabled is None else enabled,
            )
            await self.store.save(camera)
            if confirm and area is not None and self.confirm_area is not None:
                await self.confirm_area(camera.channel_id, camera.area, camera.name, actor)
            reconnect = (camera.pull_url, camera.enabled) != (old.pull_url, old.enabled)
            if reconnect:
                self._stop_puller(entry, "reconfigured")
            entry.camera = camera
            self._put_channel(entry)
            if reconnect:
                self._start_puller(entry)
        log.info("rtsp %s changed by %s", channel_id, actor)
        return camera

    async def remove(self, channel_id: str, actor: str) -> RtspCamera:
        """Forget a camera: its puller stops, its channel leaves the directory (and the uppers' catalogs)."""
        async with self._lock:
            entry = self._entry(channel_id)
            await self.store.delete(channel_id)
            self._stop_puller(entry, "removed")
            del self._entries[channel_id]
            camera = entry.camera
            removed = self.directory.remove_channels(camera.device_id, [channel_id])
            self.writer.delete_channels([channel_id])
            self.directory.publish(ChannelChange(removed, {}, self.loop.time()))
        log.info("rtsp %s removed by %s", channel_id, actor)
        return camera

    def cameras(self) -> list[tuple[RtspCamera, RtspStatus]]:
        """Every camera with its connection state, by channel ID."""
        for entry in self._entries.values():
            if entry.puller is not None:
                entry.status.attempts = entry.puller.attempts
        return [(e.camera, e.status) for _, e in sorted(self._entries.items())]

    def camera(self, channel_id: str) -> tuple[RtspCamera, RtspStatus]:
        entry = self._entry(channel_id)
        if entry.puller is not None:
            entry.status.attempts = entry.puller.attempts
        return entry.camera, entry.status

    # --- what the live service asks ----------------------------------------------------------------

    def handles(self, channel_id: str) -> bool:
        """Whether the channel is an RTSP camera's (its stream comes from a puller, not an INVITE)."""
        return channel_id in self._entries

    def feed(self, channel_id: str) -> RtspFeed | None:
        """The camera's current connection, or None while it is not online."""
        entry = self._entries.get(channel_id)
        return entry.feed if entry is not None else None

    def state_text(self, channel_id: str) -> str:
        entry = self._entries.get(channel_id)
        return entry.status.label if entry is not None else "未知"

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """``kgw_rtsp_cameras{state}``: cameras by connection state (a bounded label)."""
        family = GaugeMetricFamily("kgw_rtsp_cameras", "RTSP cameras by connection state", labels=["state"])
        counts = dict.fromkeys((s.value for s in CameraState), 0)
        for entry in self._entries.values():
            counts[entry.status.state.value] += 1
        for state, count in counts.items():
            family.add_metric([state], count)
        yield family

    # --- internals ---------------------------------------------------------------------------------

    def _entry(self, channel_id: str) -> _Entry:
        entry = self._entries.get(channel_id)
        if entry is None:
            raise UnknownRtspCamera(f"unknown RTSP camera {channel_id}")
        return entry

    def _free_channel(self, kindergarten_id: str) -> str:
        taken = {e.camera.channel_id for e in self._entries.values()}
        for number in range(1, MAX_CAMERAS_PER_KINDERGARTEN + 1):
            candidate = channel_id_for(kindergarten_id, number)
            if candidate not in taken and candidate not in self.directory.channels:
                return candidate
        raise InvalidRtspCamera(f"kindergarten {kindergarten_id} has {MAX_CAMERAS_PER_KINDERGARTEN} RTSP cameras")

    def _enter(self, camera: RtspCamera) -> None:
        """Put the camera (and its kindergarten's virtual device) in the directory and start pulling."""
        state = CameraState.CONNECTING if camera.enabled else CameraState.DISABLED
        entry = self._entries[camera.channel_id] = _Entry(camera, RtspStatus(state, since=self.wall()))
        self._ensure_device(camera)
        self._put_channel(entry)
        self._start_puller(entry)

    def _ensure_device(self, camera: RtspCamera) -> None:
        kindergarten = self.directory.kindergartens.get(camera.kindergarten_id)
        existing = self.directory.device(camera.device_id)
        row = Device(
            id=camera.device_id,
            kindergarten_id=camera.kindergarten_id,
            district_code=camera.district_code,
            name=f"{kindergarten.name if kindergarten else camera.kindergarten_id} · RTSP 接入",
            device_type=VIRTUAL_DEVICE_TYPE,
            manufacturer=MANUFACTURER,
            model=MODEL,
            transport="RTSP",
            online=True,  # the device is the gateway itself; its channels follow their connections
            registered_at=existing.registered_at if existing is not None else self.wall(),
            last_seen=self.wall(),
            channel_count=existing.channel_count if existing is not None else 0,
        )
        if existing != row:
            self.directory.put_device(row)
            self.writer.device(row)

    def _channel(self, camera: RtspCamera, online: bool) -> Channel:
        kindergarten = self.directory.kindergartens.get(camera.kindergarten_id)
        return Channel(
            id=camera.channel_id,
            device_id=camera.device_id,
            kindergarten_id=camera.kindergarten_id,
            district_code=camera.district_code,
            name=camera.name,
            area=camera.area,  # the operator's word at configuration; police need a confirmation
            type_code=CAMERA_TYPE,
            manufacturer=MANUFACTURER,
            model=MODEL,
            address=kindergarten.address if kindergarten is not None else "",
            parent_id=camera.device_id,
            online=online,
            updated_at=self.wall(),
        )

    def _put_channel(self, entry: _Entry) -> None:
        """The channel as it is now (name, area, up or down) in the directory, the store and the uppers' view."""
        camera = entry.camera
        online = entry.status.state is CameraState.ONLINE
        channel = self._channel(camera, online)
        before = self.directory.upsert_channels(camera.device_id, [channel])
        after = self.directory.view(self.directory.channels[camera.channel_id])
        if before.get(camera.channel_id) != after:
            self.writer.catalog(camera.device_id, [channel], replace=False)
            self.directory.publish(ChannelChange(before, {camera.channel_id: after}, self.loop.time()))

    def _start_puller(self, entry: _Entry) -> None:
        if not entry.camera.enabled:
            self._set_state(entry, CameraState.DISABLED, "")
            return
        channel_id = entry.camera.channel_id
        puller = RtspPuller(
            entry.camera,
            self.loop,
            on_state=lambda state, reason: self._on_state(channel_id, puller, state, reason),
            on_connected=lambda codec: self._on_connected(channel_id, puller, codec),
            on_unit=lambda unit: self._on_unit(channel_id, puller, unit),
            timing=self.timing,
        )
        entry.puller = puller
        puller.start()

    def _stop_puller(self, entry: _Entry, reason: str) -> None:
        if entry.puller is not None:
            entry.puller.stop()
            entry.puller = None
        self._drop_feed(entry, reason)

    def _drop_feed(self, entry: _Entry, reason: str) -> None:
        if entry.feed is not None:
            entry.feed = None
            self.on_feed_closed(entry.camera.channel_id, f"rtsp: {reason}")

    def _current(self, channel_id: str, puller: RtspPuller) -> _Entry | None:
        """The entry when ``puller`` is still its puller (a stopped one's late callbacks are ignored)."""
        entry = self._entries.get(channel_id)
        return entry if entry is not None and entry.puller is puller else None

    def _on_connected(self, channel_id: str, puller: RtspPuller, codec: StreamType) -> None:
        entry = self._current(channel_id, puller)
        if entry is None:
            return
        self._drop_feed(entry, "reconnected")
        entry.feed = RtspFeed(StreamFanout(channel_id), codec, opened_at=self.loop.time())

    def _on_unit(self, channel_id: str, puller: RtspPuller, unit: AccessUnit) -> None:
        entry = self._current(channel_id, puller)
        if entry is None or entry.feed is None:
            return
        entry.feed.fanout.publish(unit, self.loop.time())
        entry.feed.wakeup.set()

    def _on_state(self, channel_id: str, puller: RtspPuller, state: CameraState, reason: str) -> None:
        entry = self._current(channel_id, puller)
        if entry is None:
            return
        if state is not CameraState.ONLINE:
            self._drop_feed(entry, state.value)
        self._set_state(entry, state, reason)

    def _set_state(self, entry: _Entry, state: CameraState, detail: str) -> None:
        was = entry.status.state
        entry.status.detail = detail
        if state is was:
            return
        entry.status.state = state
        entry.status.since = self.wall()
        log.info("rtsp %s: %s (%s)", entry.camera.channel_id, state.label, detail)
        online = state is CameraState.ONLINE
        if online != (was is CameraState.ONLINE) or was is CameraState.CONNECTING:
            presence = self.writer.presence
            presence.mark_channel(entry.camera.channel_id, online)
            presence.add_event(
                StatusEvent(entry.camera.channel_id, EntityKind.CHANNEL, online, self.wall(), f"rtsp {state.value}")
            )
        self._put_channel(entry)
