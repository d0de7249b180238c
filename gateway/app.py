"""The gateway service: wires the SIP cores, the registry store, HTTP and metrics.

This is the only place where the sans-I/O device-access core meets the
outside world. Core events become in-memory state at once; the store is
written by one worker thread, in batches every ``flush_interval`` seconds
(registrations, presence changes and status history together), so a
registration storm or 20,000 keepalives a minute cost a handful of
transactions, never one write per message.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.gb28181.access import (
    AccessConfig,
    CatalogReceived,
    DeviceAccess,
    DeviceInfoReceived,
    DeviceOffline,
    DeviceOnline,
    DeviceRegistered,
    DeviceSession,
    DeviceStatusReceived,
    DeviceUnregistered,
    MessageRefused,
    QueryFailed,
    RegistrationRefused,
)
from gateway.gb28181.auth_throttle import AuthThrottle
from gateway.gb28181.ids import GbId
from gateway.gb28181.registrar import EnrolmentMode, Registrar, RegistrarConfig
from gateway.gb28181.sdp import MediaTransport
from gateway.gb28181.sip.auth import Algorithm, DigestServer
from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.idsource import RandomIds
from gateway.gb28181.sip.transport import Peer, Transport
from gateway.httpapi.metrics import GatewayMetrics
from gateway.httpapi.routes import make_app
from gateway.io.sip_io import SipDriver
from gateway.live import LiveService
from gateway.registry import (
    Channel,
    Device,
    EntityKind,
    Kindergarten,
    PresenceBuffer,
    StatusEvent,
    Store,
    open_store,
    write_presence_batch,
)
from gateway.registry.placement import channel_from_item, kindergarten_id_by_convention

log = logging.getLogger("kgw.gateway")
LAST_SEEN_PERIOD = 300.0  # s between batched writes of every device's last keepalive time
GC_FREEZE_PERIOD = 30.0  # s between gc.freeze() calls (see _flush_loop)
T = TypeVar("T")


@dataclass(slots=True)
class DeviceState:
    """What the service keeps in memory per device (the store is behind)."""

    row: Device
    channels: dict[str, bool | None] = field(default_factory=dict)  # id -> status the device reported


class GatewayService:
    """One gateway: SIP device access + registry + HTTP API + metrics."""

    def __init__(self, config: GatewayConfig, *, store: Store | None = None) -> None:
        self.config = config
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgw-store")
        self.devices: dict[str, DeviceState] = {}
        self.channel_owner: dict[str, str] = {}  # channel id -> device id (live streams look it up)
        self.kindergarten_names: dict[str, str] = {}  # id -> name, for placement and log lines
        self.presence = PresenceBuffer()
        self.metrics = GatewayMetrics(self)
        self._pending_devices: dict[str, Device] = {}
        self._pending_catalogs: list[tuple[str, list[Channel], bool]] = []
        self._waiters: dict[tuple[str, str, int], asyncio.Future[Any]] = {}
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._provisioned = {d.id: d for d in config.devices}
        self.driver: SipDriver | None = None
        self.access: DeviceAccess | None = None
        self.live: LiveService | None = None
        self._runner: web.AppRunner | None = None
        self.sip_port = 0
        self.http_port = 0
        self.wall_offset = 0.0
        self.started_at = time.time()

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, restore state, bind SIP and HTTP, start the flusher."""
        loop = asyncio.get_running_loop()
        self.wall_offset = time.time() - loop.time()
        if self._store is None:
            if self.config.db not in (":memory:",) and not self.config.db.startswith(("sqlite:", "postgresql:")):
                os.makedirs(os.path.dirname(os.path.abspath(self.config.db)), exist_ok=True)
            self._store = await self._run(open_store, self.config.db)
        await self._restore()
        gc.freeze()  # the restored registry is long-lived: keep it out of GC scans
        endpoint = SipEndpoint(
            RandomIds(), local_host=_advertised_host(self.config), max_message_size=self.config.max_message_size,
            user_agent="kgw-gateway",
        )
        registrar = Registrar(
            RegistrarConfig(
                gateway_id=self.config.id, realm=self.config.domain, device_password=self.config.password,
                mode=EnrolmentMode(self.config.enrolment),
            ),
            # Challenge with MD5 (what GB/T 28181 devices expect) but accept SHA-256
            # credentials (RFC 7616) from peers that use it.
            DigestServer(self.config.domain, os.urandom(32), nonce_ttl=self.config.nonce_ttl,
                         algorithms=(Algorithm.MD5, Algorithm.SHA256)),
            AuthThrottle(),
            provisioned_password=lambda d: (p.password if (p := self._provisioned.get(d)) else None),
            is_provisioned=lambda d: d in self._provisioned,
        )
        self.access = DeviceAccess(
            endpoint, registrar,
            AccessConfig(
                gateway_id=self.config.id, realm=self.config.domain,
                keepalive_interval=self.config.keepalive_interval, keepalive_missed=self.config.keepalive_missed,
                query_timeout=self.config.query_timeout,
            ),
            wall_offset=self.wall_offset,
        )  # fmt: skip
        self._restore_sessions(loop.time())
        self.driver = SipDriver(self.access, on_activity=self._drain_events)
        self.live = LiveService(
            self, media_host=_advertised_host(self.config),
            default_transport=MediaTransport[self.config.media_transport.upper().replace("-", "_")],
            play_timeout=self.config.play_timeout, rtp_timeout=self.config.rtp_timeout,
            media_ports=self.config.media_port_range,
        )
        self.access.media_router = self.live.route
        self.sip_port = await self.driver.listen(self.config.sip_host, self.config.sip_port, tcp=self.config.sip_tcp)
        self._runner = web.AppRunner(make_app(self), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http_host, self.config.http_port)
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="kgw-flush"))
        log.info(
            "gateway %s listening: SIP udp/tcp %s:%d, HTTP http://%s:%d/ (db %s, enrolment %s)",
            self.config.id, self.config.sip_host, self.sip_port, self.config.http_host, self.http_port,
            self.config.db, self.config.enrolment,
        )  # fmt: skip

    async def stop(self) -> None:
        """Flush what is pending and close everything."""
        if self.live is not None:
            for channel_id in list(self.live.streams):
                self.live.close(channel_id, "gateway stopping")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.driver is not None:
            self.driver.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._store is not None:
            await self.flush()
            await self._run(self._store.close)
        self._executor.shutdown(wait=True)
        log.info("gateway %s stopped", self.config.id)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the store thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def store(self) -> Store:
        """The registry store (only valid after start)."""
        assert self._store is not None
        return self._store

    async def store_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(store, *args)`` on the store thread (for the HTTP API)."""
        return await self._run(fn, self.store, *args)

    # --- restore after restart ------------------------------------------------------------

    async def _restore(self) -> None:
        rows = await self._run(self.store.load_all_devices)
        for row in rows:
            self.devices[row.id] = DeviceState(row=row)
        for channel_id, device_id in await self._run(self.store.load_channel_index):
            state = self.devices.get(device_id)
            if state is not None:
                state.channels[channel_id] = None  # status unknown until the next catalog
                self.channel_owner[channel_id] = device_id
        page_size = 1000
        offset = 0
        while True:
            page = await self._run(self.store.list_kindergartens, None, offset, page_size)
            self.kindergarten_names.update((k.id, k.name) for k in page.items)
            offset += page_size
            if offset >= page.total:
                break
        log.info("restored %d devices and %d kindergartens from the store", len(rows), len(self.kindergarten_names))

    def _restore_sessions(self, now: float) -> None:
        """Devices whose registration is still valid need not re-register after a restart."""
        assert self.access is not None
        wall = now + self.wall_offset
        for state in self.devices.values():
            row = state.row
            if row.registered_at is None or row.registered_at + row.expires <= wall or not row.host:
                continue
            peer = Peer(Transport(row.transport) if row.transport in ("UDP", "TCP") else Transport.UDP, row.host, row.port)
            session = DeviceSession(row.id, peer, call_id="", expires=row.expires, registered_at=row.registered_at - self.wall_offset)
            # We cannot know whether it kept alive while we were down: give every
            # device a full silence window from now to prove it (no offline flap).
            self.access.restore_session(
                session, online=row.online, last_seen=now, expires_at=row.registered_at + row.expires - self.wall_offset
            )

    # --- core events -----------------------------------------------------------------------

    def _drain_events(self) -> None:
        assert self.access is not None
        while (event := self.access.next_event()) is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("handling %s failed", type(event).__name__)

    def _wall(self, loop_time: float) -> float:
        return loop_time + self.wall_offset

    def _on_event(self, event: Any) -> None:
        if isinstance(event, DeviceRegistered):
            self._on_registered(event)
        elif isinstance(event, DeviceOnline | DeviceOffline):
            self._on_presence(event.device_id, isinstance(event, DeviceOnline), event.at, event.reason)
        elif isinstance(event, DeviceUnregistered):
            log.info("device %s unregistered", event.device_id)
            self.metrics.registrations.labels(result="unregistered").inc()
        elif isinstance(event, CatalogReceived):
            self._on_catalog(event)
        elif isinstance(event, DeviceInfoReceived):
            self._on_device_info(event)
        elif isinstance(event, DeviceStatusReceived):
            self._resolve(event.device_id, "DeviceStatus", event.status.sn, event.status)
        elif isinstance(event, QueryFailed):
            log.info("query %s to %s failed: %s", event.cmd_type, event.device_id, event.reason)
            self.metrics.query_failures.labels(cmd=event.cmd_type).inc()
            self._resolve(event.device_id, event.cmd_type, event.sn, None)
        elif isinstance(event, RegistrationRefused):
            self._on_refused(event)
        elif isinstance(event, MessageRefused):
            self.metrics.messages_refused.labels(status=str(event.status)).inc()
            log.debug("MESSAGE from %s (%s) refused %d: %s", event.device_id, event.peer, event.status, event.reason)

    def _on_registered(self, event: DeviceRegistered) -> None:
        self.metrics.registrations.labels(result="ok" if event.first else "refresh").inc()
        state = self.devices.get(event.device_id)
        gb = GbId.parse(event.device_id)
        row = state.row if state else Device(id=event.device_id, kindergarten_id=None, district_code=gb.civil_code)
        row = replace(
            row,
            kindergarten_id=self._place(event.device_id) or row.kindergarten_id,
            device_type=gb.type_code,
            transport=event.peer.transport.value, host=event.peer.host, port=event.peer.port,
            registered_at=self._wall(event.at), expires=event.expires, user_agent=event.user_agent[:120],
        )  # fmt: skip
        if state is None:
            self.devices[event.device_id] = DeviceState(row=row)
        else:
            state.row = row
        self._pending_devices[event.device_id] = row
        if event.first:
            where = self.kindergarten_names.get(row.kindergarten_id or "", "unplaced")
            log.info("device %s (%s) registered from %s (expires %d)", event.device_id, where, event.peer, event.expires)

    def _place(self, device_id: str) -> str | None:
        provisioned = self._provisioned.get(device_id)
        if provisioned is not None and provisioned.kindergarten_id:
            return provisioned.kindergarten_id
        candidate = kindergarten_id_by_convention(device_id)
        return candidate if candidate in self.kindergarten_names else None

    def _on_presence(self, device_id: str, online: bool, at: float, reason: str) -> None:
        state = self.devices.get(device_id)
        if state is None:
            return
        wall = self._wall(at)
        state.row = replace(state.row, online=online, last_seen=wall)
        self.presence.mark_device(device_id, online, wall)
        self.presence.add_event(StatusEvent(device_id, EntityKind.DEVICE, online, wall, reason))
        for channel_id, reported in state.channels.items():
            self.presence.mark_channel(channel_id, online and reported is not False)
        log.info("device %s %s (%s)", device_id, "online" if online else "OFFLINE", reason)

    def _on_catalog(self, event: CatalogReceived) -> None:
        state = self.devices.get(event.device_id)
        if state is None:
            return
        now = self._wall(event.at)
        channels = [c for item in event.items if (c := channel_from_item(item, state.row, now)) is not None]
        if not event.partial:
            for channel_id in state.channels:
                self.channel_owner.pop(channel_id, None)
            state.channels = {}
        state.channels.update({c.id: c.online for c in channels})
        self.channel_owner.update({c.id: event.device_id for c in channels})
        state.row = replace(state.row, channel_count=len(state.channels))
        self._pending_devices[event.device_id] = state.row
        stored = [replace(c, online=c.online and state.row.online) for c in channels]
        self._pending_catalogs.append((event.device_id, stored, event.partial))
        self.metrics.catalogs.labels(result="partial" if event.partial else "complete").inc()
        log.info(
            "catalog of %s: %d channels%s", event.device_id, len(channels), " (partial)" if event.partial else ""
        )

    def _on_device_info(self, event: DeviceInfoReceived) -> None:
        self._resolve(event.device_id, "DeviceInfo", event.info.sn, event.info)
        state = self.devices.get(event.device_id)
        if state is None:
            return
        info = event.info
        state.row = replace(
            state.row, name=(info.device_name or state.row.name)[:120], manufacturer=(info.manufacturer or "")[:80],
            model=(info.model or "")[:80], firmware=(info.firmware or "")[:80],
        )  # fmt: skip
        self._pending_devices[event.device_id] = state.row

    def _on_refused(self, event: RegistrationRefused) -> None:
        self.metrics.registrations.labels(result=event.reason).inc()
        if event.status == 401:
            return  # a challenge is the normal first step
        if event.newly_blocked:
            log.warning(
                "device %s from %s: repeated wrong passwords, REGISTER blocked for a while", event.device_id, event.peer.host
            )
        elif event.reason != "throttled":
            log.info("REGISTER of %s from %s refused %d (%s)", event.device_id, event.peer, event.status, event.reason)

    # --- queries the API can await ----------------------------------------------------------------

    async def query(self, device_id: str, cmd_type: str, timeout: float | None = None) -> Any:
        """Send DeviceInfo / DeviceStatus / Catalog to a device; await the answer (None on failure)."""
        assert self.access is not None and self.driver is not None
        now = asyncio.get_running_loop().time()
        send = {
            "DeviceInfo": self.access.query_device_info,
            "DeviceStatus": self.access.query_device_status,
            "Catalog": self.access.query_catalog,
        }[cmd_type]
        sn = send(device_id, now)
        self.driver.flush()
        if sn is None:
            return None
        if cmd_type == "Catalog":
            return sn
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[(device_id, cmd_type, sn)] = future
        try:
            return await asyncio.wait_for(future, timeout or self.config.query_timeout + 1)
        except TimeoutError:
            return None
        finally:
            self._waiters.pop((device_id, cmd_type, sn), None)

    def _resolve(self, device_id: str, cmd_type: str, sn: int, value: Any) -> None:
        future = self._waiters.get((device_id, cmd_type, sn))
        if future is not None and not future.done():
            future.set_result(value)

    # --- provisioning --------------------------------------------------------------------------------

    async def add_kindergartens(self, kindergartens: list[Kindergarten]) -> int:
        """Store kindergartens and re-place devices that were waiting for them."""
        count = await self._run(self.store.upsert_kindergartens, kindergartens)
        self.kindergarten_names.update((k.id, k.name) for k in kindergartens)
        for device_id, state in self.devices.items():
            if state.row.kindergarten_id is None:
                placed = self._place(device_id)
                if placed is not None:
                    state.row = replace(state.row, kindergarten_id=placed)
                    self._pending_devices[device_id] = state.row
        await self.flush()
        return count

    # --- batched writes ---------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_last_seen = loop.time() + LAST_SEEN_PERIOD
        next_freeze = loop.time() + GC_FREEZE_PERIOD
        while True:
            await asyncio.sleep(self.config.flush_interval)
            if loop.time() >= next_last_seen:
                next_last_seen = loop.time() + LAST_SEEN_PERIOD
                self._mark_last_seen()
            if loop.time() >= next_freeze:
                next_freeze = loop.time() + GC_FREEZE_PERIOD
                # A city's registry is ~10^6 long-lived objects; letting the cyclic GC
                # rescan them cost a quarter of the keepalive CPU and 230 ms pauses.
                # Frozen objects are still freed by reference counting when they die.
                gc.freeze()
                if self.access is not None:  # forget wrong-password records that went quiet
                    self.access.registrar.throttle.prune(loop.time())
            try:
                await self.flush()
            except Exception:
                log.exception("registry flush failed; will retry")

    def _mark_last_seen(self) -> None:
        """Queue every online device's last keepalive time: one batched write a period."""
        assert self.access is not None
        liveness = self.access.liveness
        for device_id, state in self.devices.items():
            seen = liveness.last_seen(device_id)
            if state.row.online and seen is not None:
                self.presence.mark_device(device_id, True, self._wall(seen))

    async def flush(self) -> None:
        """Write pending registrations, catalogs and presence in one go on the store thread."""
        async with self._flush_lock:
            devices, self._pending_devices = list(self._pending_devices.values()), {}
            catalogs, self._pending_catalogs = self._pending_catalogs, []
            batch = self.presence.drain()
            if not devices and not catalogs and batch.is_empty:
                return
            try:
                await self._run(_write_all, self.store, devices, catalogs, batch)
            except Exception:
                self.presence.restore(batch)
                for row in devices:
                    self._pending_devices.setdefault(row.id, row)
                self._pending_catalogs[:0] = catalogs
                raise

    # --- views for the API and metrics ----------------------------------------------------------------

    def online_counts(self) -> tuple[int, int, int]:
        """(devices registered, devices online, channels online) from memory."""
        devices_online = channels_online = 0
        for state in self.devices.values():
            if state.row.online:
                devices_online += 1
                channels_online += sum(1 for reported in state.channels.values() if reported is not False)
        return len(self.devices), devices_online, channels_online


def _write_all(store: Store, devices: list[Device], catalogs: list[tuple[str, list[Channel], bool]], batch: Any) -> None:
    """One flush: device rows first (channels reference them), then catalogs, then presence."""
    if devices:
        store.upsert_devices(devices)
    for device_id, channels, partial in catalogs:
        if partial:
            store.upsert_channels(channels)
        else:
            store.replace_channels(device_id, channels)
    if not batch.is_empty:
        write_presence_batch(store, batch)


def _advertised_host(config: GatewayConfig) -> str:
    """The address devices should reach us at (Via, Contact): never a wildcard."""
    if config.sip_advertise:
        return config.sip_advertise
    if config.sip_host not in ("0.0.0.0", "::"):
        return config.sip_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        log.warning("cannot tell this host's address; set sip_advertise in the config")
        return "127.0.0.1"
