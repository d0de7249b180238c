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

from gateway.alarms.intake import AlarmNotice
from gateway.alarms.model import Alarm
from gateway.alarms.outbox import RetryPolicy
from gateway.alarms.payload import Enrichment, KindergartenInfo
from gateway.alarms.service import AlarmService, AlarmSettings
from gateway.alarms.sinks.base import OutboundMessage, Sink
from gateway.alarms.sinks.gb import GbAlarmSink
from gateway.alarms.store import open_alarm_store
from gateway.cascade.service import CascadeService
from gateway.config import GatewayConfig
from gateway.errors import StoreError
from gateway.gb28181.access import (
    AccessConfig,
    AlarmNotified,
    CatalogNotified,
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
from gateway.gb28181.ids import GbId, district_name
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
    AreaTag,
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
from gateway.registry.placement import channel_from_item, kindergarten_id_by_convention, kindergartens_in_catalog

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
        self.kindergartens: dict[str, Kindergarten] = {}  # for placement, log lines and alarm payloads
        self.channels: dict[str, Channel] = {}  # every channel as last reported (alarms, upper catalogs)
        self.presence = PresenceBuffer()
        self.metrics = GatewayMetrics(self)
        self._pending_devices: dict[str, Device] = {}
        self._pending_catalogs: list[tuple[str, list[Channel], bool]] = []
        self._pending_kindergartens: list[Kindergarten] = []  # learned from lower platforms' catalogs
        self._pending_channel_deletes: list[str] = []  # DELs of lower platforms' catalog NOTIFYs
        self._waiters: dict[tuple[str, str, int], asyncio.Future[Any]] = {}
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._provisioned = {d.id: d for d in config.devices}
        self.driver: SipDriver | None = None
        self.access: DeviceAccess | None = None
        self.live: LiveService | None = None
        self.alarms: AlarmService | None = None
        self.cascade: CascadeService | None = None
        self._alarm_tasks: set[asyncio.Task[None]] = set()
        self._kg_cameras: dict[str, list[str]] = {}  # kindergarten -> entrance cameras (rebuilt lazily)
        self._kg_cameras_at = float("-inf")
        self._refused_alarm_logged: dict[str, float] = {}  # sender -> when its refused alarm was logged
        self._runner: web.AppRunner | None = None
        self.sip_port = 0
        self.http_port = 0
        self.wall_offset = 0.0
        self.started_at = time.time()
        self._stopped = False

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
        await self._start_alarms()
        gc.freeze()  # the restored registry is long-lived: keep it out of GC scans
        endpoint = SipEndpoint(
            RandomIds(),
            local_host=_advertised_host(self.config),
            max_message_size=self.config.max_message_size,
            user_agent="kgw-gateway",
        )
        registrar = Registrar(
            RegistrarConfig(
                gateway_id=self.config.id,
                realm=self.config.domain,
                device_password=self.config.password,
                mode=EnrolmentMode(self.config.enrolment),
            ),
            # Challenge with MD5 (what GB/T 28181 devices expect) but accept SHA-256
            # credentials (RFC 7616) from peers that use it.
            DigestServer(
                self.config.domain,
                os.urandom(32),
                nonce_ttl=self.config.nonce_ttl,
                algorithms=(Algorithm.MD5, Algorithm.SHA256),
            ),
            AuthThrottle(),
            provisioned_password=lambda d: p.password if (p := self._provisioned.get(d)) else None,
            is_provisioned=lambda d: d in self._provisioned,
        )
        self.access = DeviceAccess(
            endpoint,
            registrar,
            AccessConfig(
                gateway_id=self.config.id,
                realm=self.config.domain,
                keepalive_interval=self.config.keepalive_interval,
                keepalive_missed=self.config.keepalive_missed,
                query_timeout=self.config.query_timeout,
            ),
            wall_offset=self.wall_offset,
        )
        self._restore_sessions(loop.time())
        self.driver = SipDriver(self.access, on_activity=self._drain_events)
        self.live = LiveService(
            self,
            media_host=_advertised_host(self.config),
            default_transport=MediaTransport[self.config.media_transport.upper().replace("-", "_")],
            play_timeout=self.config.play_timeout,
            rtp_timeout=self.config.rtp_timeout,
            media_ports=self.config.media_port_range,
        )
        self.access.media_router = self.live.route
        self.access.known_device = self.devices.__contains__  # their alarms are kept even when unregistered
        if self.config.upper_platforms:
            self.cascade = CascadeService(self, self.config.upper_platforms)
        self.sip_port = await self.driver.listen(self.config.sip_host, self.config.sip_port, tcp=self.config.sip_tcp)
        self._runner = web.AppRunner(make_app(self), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http_host, self.config.http_port)
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="kgw-flush"))
        if self.cascade is not None:
            self.cascade.start(loop.time())
            self.driver.flush()
        log.info(
            "gateway %s listening: SIP udp/tcp %s:%d, HTTP http://%s:%d/ (db %s, enrolment %s)",
            self.config.id,
            self.config.sip_host,
            self.sip_port,
            self.config.http_host,
            self.http_port,
            self.config.db,
            self.config.enrolment,
        )

    async def stop(self) -> None:
        """Flush what is pending and close everything (a second call does nothing)."""
        if self._stopped:
            return
        self._stopped = True
        if self.live is not None:
            for channel_id in list(self.live.streams):
                self.live.close(channel_id, "gateway stopping")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._alarm_tasks:  # alarms being stored: let them finish (they are answered after)
            await asyncio.wait(list(self._alarm_tasks), timeout=5.0)
        if self.cascade is not None and self.driver is not None:
            self.cascade.stop(asyncio.get_running_loop().time())  # unregister from the uppers
            self.driver.flush()
            await asyncio.sleep(0.2)
        if self.driver is not None:
            self.driver.flush()
            self.driver.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.alarms is not None:
            await self.alarms.stop()
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
        for channel in await self._run(self.store.load_channels):
            state = self.devices.get(channel.device_id)
            if state is not None:
                state.channels[channel.id] = None  # status unknown until the next catalog
                self.channel_owner[channel.id] = channel.device_id
                self.channels[channel.id] = replace(channel, online=False)
        page_size = 1000
        offset = 0
        while True:
            page = await self._run(self.store.list_kindergartens, None, offset, page_size)
            self.kindergartens.update((k.id, k) for k in page.items)
            offset += page_size
            if offset >= page.total:
                break
        log.info("restored %d devices and %d kindergartens from the store", len(rows), len(self.kindergartens))

    def _restore_sessions(self, now: float) -> None:
        """Devices whose registration is still valid need not re-register after a restart."""
        assert self.access is not None
        wall = now + self.wall_offset
        for state in self.devices.values():
            row = state.row
            if row.registered_at is None or row.registered_at + row.expires <= wall or not row.host:
                continue
            peer = Peer(
                Transport(row.transport) if row.transport in ("UDP", "TCP") else Transport.UDP, row.host, row.port
            )
            session = DeviceSession(
                row.id, peer, call_id="", expires=row.expires, registered_at=row.registered_at - self.wall_offset
            )
            # We cannot know whether it kept alive while we were down: give every
            # device a full silence window from now to prove it (no offline flap).
            self.access.restore_session(
                session, online=row.online, last_seen=now, expires_at=row.registered_at + row.expires - self.wall_offset
            )

    # --- core events -----------------------------------------------------------------------

    def _drain_events(self) -> None:
        assert self.access is not None
        if self.cascade is not None:
            self.cascade.drain()
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
        elif isinstance(event, CatalogNotified):
            self._on_catalog_notify(event)
        elif isinstance(event, DeviceStatusReceived):
            self._resolve(event.device_id, "DeviceStatus", event.status.sn, event.status)
        elif isinstance(event, QueryFailed):
            log.info("query %s to %s failed: %s", event.cmd_type, event.device_id, event.reason)
            self.metrics.query_failures.labels(cmd=event.cmd_type).inc()
            self._resolve(event.device_id, event.cmd_type, event.sn, None)
        elif isinstance(event, RegistrationRefused):
            self._on_refused(event)
        elif isinstance(event, AlarmNotified):
            task = asyncio.ensure_future(self._on_alarm(event))
            self._alarm_tasks.add(task)
            task.add_done_callback(self._alarm_tasks.discard)
        elif isinstance(event, MessageRefused):
            self.metrics.messages_refused.labels(status=str(event.status)).inc()
            if event.reason == "alarm_from_unknown_device":
                self.metrics.alarms_refused.labels(reason="unknown_device").inc()
                self._log_refused_alarm(event)
            log.debug("MESSAGE from %s (%s) refused %d: %s", event.device_id, event.peer, event.status, event.reason)

    def _log_refused_alarm(self, event: MessageRefused) -> None:
        """A loud line per sender and minute (a flood of forged alarms must not flood the log)."""
        now = time.monotonic()
        key = event.device_id or event.peer.host
        if now - self._refused_alarm_logged.get(key, float("-inf")) < 60.0:
            return
        if len(self._refused_alarm_logged) > 10_000:
            self._refused_alarm_logged.clear()
        self._refused_alarm_logged[key] = now
        log.warning(
            "ALARM REFUSED (404): %s at %s is not a device this gateway knows; it must register",
            event.device_id,
            event.peer,
        )

    def _on_registered(self, event: DeviceRegistered) -> None:
        self.metrics.registrations.labels(result="ok" if event.first else "refresh").inc()
        state = self.devices.get(event.device_id)
        gb = GbId.parse(event.device_id)
        row = state.row if state else Device(id=event.device_id, kindergarten_id=None, district_code=gb.civil_code)
        row = replace(
            row,
            kindergarten_id=self._place(event.device_id) or row.kindergarten_id,
            device_type=gb.type_code,
            transport=event.peer.transport.value,
            host=event.peer.host,
            port=event.peer.port,
            registered_at=self._wall(event.at),
            expires=event.expires,
            user_agent=event.user_agent[:120],
        )
        if state is None:
            self.devices[event.device_id] = DeviceState(row=row)
        else:
            state.row = row
        self._pending_devices[event.device_id] = row
        if event.first:
            kg = self.kindergartens.get(row.kindergarten_id or "")
            where = kg.name if kg else "unplaced"
            log.info(
                "device %s (%s) registered from %s (expires %d)", event.device_id, where, event.peer, event.expires
            )

    def _place(self, device_id: str) -> str | None:
        provisioned = self._provisioned.get(device_id)
        if provisioned is not None and provisioned.kindergarten_id:
            return provisioned.kindergarten_id
        candidate = kindergarten_id_by_convention(device_id)
        return candidate if candidate in self.kindergartens else None

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
        if self.cascade is not None and state.channels:  # the uppers see its channels go ON/OFF
            mine = [c for i in state.channels if (c := self.channels.get(i)) is not None]
            before = {c.id: replace(c, online=c.online and not online) for c in mine}
            after = {c.id: replace(c, online=c.online and online) for c in mine}
            self.cascade.channels_changed(before, after, at)

    def _on_catalog(self, event: CatalogReceived) -> None:
        state = self.devices.get(event.device_id)
        if state is None:
            return
        now = self._wall(event.at)
        learned = kindergartens_in_catalog(event.items)  # a lower platform's tree (empty for an NVR)
        fresh = [kg for kg in learned.values() if self.kindergartens.get(kg.id) is None]
        if fresh:
            self.kindergartens.update((kg.id, kg) for kg in fresh)
            self._pending_kindergartens.extend(fresh)
            self._kg_cameras_at = float("-inf")
        channels = [
            c
            for item in event.items
            if (c := channel_from_item(item, state.row, now, kindergarten_id=self._kindergarten_node(item.parent_id)))
        ]
        ids = state.channels if not event.partial else {c.id: None for c in channels}
        before = {
            i: c
            for i in ids
            if (c := self.channels.get(i)) is not None and self.channel_owner.get(i) == event.device_id
        }
        if not event.partial:
            for channel_id in state.channels:
                self.channel_owner.pop(channel_id, None)
                self.channels.pop(channel_id, None)
            state.channels = {}
        state.channels.update({c.id: c.online for c in channels})
        self.channels.update((c.id, c) for c in channels)
        self.channel_owner.update({c.id: event.device_id for c in channels})
        state.row = replace(state.row, channel_count=len(state.channels))
        self._pending_devices[event.device_id] = state.row
        stored = [replace(c, online=c.online and state.row.online) for c in channels]
        self._pending_catalogs.append((event.device_id, stored, event.partial))
        self.metrics.catalogs.labels(result="partial" if event.partial else "complete").inc()
        if self.cascade is not None:
            up = state.row.online
            self.cascade.channels_changed(
                {i: replace(c, online=c.online and up) for i, c in before.items()},
                {c.id: replace(c, online=c.online and up) for c in channels},
                event.at,
            )
        log.info("catalog of %s: %d channels%s", event.device_id, len(channels), " (partial)" if event.partial else "")

    def _kindergarten_node(self, parent_id: str | None) -> str | None:
        """The kindergarten a lower platform's channel hangs under (its ParentID), if known."""
        return parent_id if parent_id and parent_id in self.kindergartens else None

    def _on_catalog_notify(self, event: CatalogNotified) -> None:
        """A lower platform's catalog changes: ADD/UPDATE, DEL, ON/OFF (notes §14.3)."""
        state = self.devices.get(event.device_id)
        if state is None:
            return
        now = self._wall(event.at)
        fresh = [kg for kg in kindergartens_in_catalog(event.items).values() if kg.id not in self.kindergartens]
        if fresh:
            self.kindergartens.update((kg.id, kg) for kg in fresh)
            self._pending_kindergartens.extend(fresh)
            self._kg_cameras_at = float("-inf")
        up = state.row.online
        before: dict[str, Channel] = {}
        after: dict[str, Channel] = {}
        upserts: dict[str, Channel] = {}
        deleted: list[str] = []
        for item in event.items:
            kind = (item.event or "UPDATE").upper()
            old = self.channels.get(item.device_id)
            if old is not None and self.channel_owner.get(item.device_id) != event.device_id:
                continue  # another device's channel: a lower platform may only change its own
            if kind == "DEL":
                if old is not None:
                    before[old.id] = old
                    deleted.append(old.id)
                    self.channels.pop(old.id, None)
                    self.channel_owner.pop(old.id, None)
                    state.channels.pop(old.id, None)
                continue
            if kind in ("ON", "OFF", "VLOST", "DEFECT"):
                if old is None:
                    continue
                channel = replace(old, online=kind == "ON", updated_at=now)
            else:  # ADD / UPDATE (and items without an Event)
                made = channel_from_item(item, state.row, now, kindergarten_id=self._kindergarten_node(item.parent_id))
                if made is None:
                    continue  # a tree node
                channel = made
            if old is not None:
                before[old.id] = replace(old, online=old.online and up)
            after[channel.id] = replace(channel, online=channel.online and up)
            self.channels[channel.id] = channel
            self.channel_owner[channel.id] = event.device_id
            state.channels[channel.id] = channel.online
            upserts[channel.id] = replace(channel, online=channel.online and up)
        if upserts:
            self._pending_catalogs.append((event.device_id, list(upserts.values()), True))
        if deleted:
            self._pending_channel_deletes.extend(deleted)
        if upserts or deleted:
            state.row = replace(state.row, channel_count=len(state.channels))
            self._pending_devices[event.device_id] = state.row
            log.info("catalog NOTIFY from %s: %d changed, %d removed", event.device_id, len(upserts), len(deleted))
            if self.cascade is not None:
                self.cascade.channels_changed(before, after, event.at)

    def _on_device_info(self, event: DeviceInfoReceived) -> None:
        self._resolve(event.device_id, "DeviceInfo", event.info.sn, event.info)
        state = self.devices.get(event.device_id)
        if state is None:
            return
        info = event.info
        state.row = replace(
            state.row,
            name=(info.device_name or state.row.name)[:120],
            manufacturer=(info.manufacturer or "")[:80],
            model=(info.model or "")[:80],
            firmware=(info.firmware or "")[:80],
        )
        self._pending_devices[event.device_id] = state.row

    def _on_refused(self, event: RegistrationRefused) -> None:
        self.metrics.registrations.labels(result=event.reason).inc()
        if event.status == 401:
            return  # a challenge is the normal first step
        if event.newly_blocked:
            log.warning(
                "device %s from %s: repeated wrong passwords, REGISTER blocked for a while",
                event.device_id,
                event.peer.host,
            )
        elif event.reason != "throttled":
            log.info("REGISTER of %s from %s refused %d (%s)", event.device_id, event.peer, event.status, event.reason)

    # --- alarms ---------------------------------------------------------------------------------

    async def _start_alarms(self) -> None:
        """Open the alarm outbox (its own connection and thread) and the configured sinks."""
        config = self.config
        sinks: list[Sink] = []
        if config.mqtt:
            from gateway.alarms.sinks.mqtt import MqttSink  # noqa: PLC0415 (only when configured)

            sinks.append(MqttSink(config.mqtt, config.mqtt_client_id or f"kgw-{config.id}"))
        if config.webhook_url:
            from gateway.alarms.sinks.webhook import WebhookSink  # noqa: PLC0415

            sinks.append(WebhookSink(config.webhook_url, config.webhook_secret, timeout=config.webhook_timeout))
        if config.upper_platforms:  # the cascade exists once SIP is up; deliveries come later
            sinks.append(
                GbAlarmSink(
                    lambda alarm: self.cascade.alarm_targets(alarm) if self.cascade is not None else [],
                    self._send_alarm_upward,
                )
            )
        store = await asyncio.to_thread(open_alarm_store, self.config.db)
        settings = AlarmSettings(
            escalate_after=config.alarm_escalate_after,
            dedupe_window=config.alarm_dedupe_window,
            retry=RetryPolicy(cap=config.alarm_retry_cap, dead_after=config.alarm_dead_after),
            snapshot_budget=config.alarm_snapshot_budget,
        )
        self.alarms = AlarmService(
            store,
            sinks,
            settings,
            enrich=self.enrich_alarm,
            capture_snapshot=self._entrance_snapshot,
            metrics=self.metrics,
        )
        await self.alarms.start()
        if not sinks:
            log.info(
                "no alarm sink configured (--mqtt, webhook_url, upper platforms): alarms reach the API and consoles"
            )

    async def _on_alarm(self, event: AlarmNotified) -> None:
        """Store the alarm, then answer the device (200 + Response MESSAGE)."""
        assert self.access is not None and self.driver is not None and self.alarms is not None
        state = self.devices.get(event.device_id)
        row = state.row if state is not None else None
        # The source channel places the alarm best: behind a lower platform the sender
        # is the platform, which belongs to no kindergarten.
        source = self.channels.get(event.alarm.device_id)
        notice = AlarmNotice(
            device_id=event.device_id,
            body=event.alarm,
            received_at=self._wall(event.at),
            sender_registered=event.registered,
            kindergarten_id=(source.kindergarten_id if source else None) or (row.kindergarten_id if row else None),
            district_code=(source.district_code if source else "") or (row.district_code if row else ""),
        )
        stored = True
        try:
            await self.alarms.receive(notice)
        except StoreError:
            stored = False
            log.error(
                "alarm from %s (SN %d) could not be stored: answered 500 so the device sends it again",
                event.device_id,
                event.alarm.sn,
            )
        except Exception:  # a bug must still leave the device an answer it retries on
            stored = False
            log.exception("alarm from %s (SN %d) failed: answered 500", event.device_id, event.alarm.sn)
        self.access.confirm_alarm(event, asyncio.get_running_loop().time(), stored=stored)
        self.driver.flush()

    async def _send_alarm_upward(self, name: str, message: OutboundMessage) -> int:
        if self.cascade is None:
            return 480
        return await self.cascade.send_alarm(name, message)

    def public_base(self) -> str:
        """Base URL for links in alarm payloads."""
        return (self.config.public_url or f"http://{self.config.http_host}:{self.http_port}").rstrip("/")

    def entrance_camera(self, kindergarten_id: str | None) -> str | None:
        """The kindergarten's entrance camera (an online one first), for live links and snapshots.

        Channels are indexed by kindergarten (rebuilt at most every 30 s): behind a lower
        platform the channels' device is the platform, which belongs to no kindergarten.
        """
        if not kindergarten_id:
            return None
        now = time.monotonic()
        if now - self._kg_cameras_at > 30.0:
            index: dict[str, list[str]] = {}
            for channel in self.channels.values():
                if channel.kindergarten_id and channel.area is AreaTag.ENTRANCE and channel.id[10:13] in ("131", "132"):
                    index.setdefault(channel.kindergarten_id, []).append(channel.id)
            self._kg_cameras, self._kg_cameras_at = index, now
        fallback = None
        for channel_id in self._kg_cameras.get(kindergarten_id, ()):
            camera = self.channels.get(channel_id)
            state = self.devices.get(camera.device_id) if camera is not None else None
            if state is None:
                continue
            if state.row.online and state.channels.get(channel_id) is not False:
                return channel_id
            fallback = fallback or channel_id
        return fallback

    def enrich_alarm(self, alarm: Alarm) -> Enrichment:
        """Kindergarten, device, source and links of an alarm, from memory only (never waits)."""
        kg = self.kindergartens.get(alarm.kindergarten_id or "")
        state = self.devices.get(alarm.device_id)
        source = self.channels.get(alarm.source_id)
        camera = self.entrance_camera(alarm.kindergarten_id)
        base = self.public_base()
        return Enrichment(
            gateway_id=self.config.id,
            kindergarten=KindergartenInfo(
                kg.id,
                kg.name,
                kg.district_code,
                district_name(kg.district_code) or "",
                kg.address,
                kg.longitude,
                kg.latitude,
            )
            if kg
            else None,
            device_name=state.row.name if state else "",
            source_name=source.name if source else "",
            source_area=AreaTag(source.area).value if source else "",
            live_channel_id=camera,
            live_url=f"{base}/live/{camera}" if camera else None,
            snapshot_url=f"{base}/api/alarms/{alarm.id}/snapshot.jpg" if camera else None,
            alarm_url=f"{base}/api/alarms/{alarm.id}",
        )

    async def _entrance_snapshot(self, alarm: Alarm) -> bytes | None:
        camera = self.entrance_camera(alarm.kindergarten_id)
        if camera is None or self.live is None:
            return None
        return await self.live.snapshot(camera)

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
        self.kindergartens.update((k.id, k) for k in kindergartens)
        self._kg_cameras_at = float("-inf")
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
            kindergartens, self._pending_kindergartens = self._pending_kindergartens, []
            deletes, self._pending_channel_deletes = self._pending_channel_deletes, []
            batch = self.presence.drain()
            if not devices and not catalogs and not kindergartens and not deletes and batch.is_empty:
                return
            try:
                await self._run(_write_all, self.store, kindergartens, devices, catalogs, batch, deletes)
            except Exception:
                self.presence.restore(batch)
                for row in devices:
                    self._pending_devices.setdefault(row.id, row)
                self._pending_catalogs[:0] = catalogs
                self._pending_kindergartens[:0] = kindergartens
                self._pending_channel_deletes[:0] = deletes
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


def _write_all(
    store: Store,
    kindergartens: list[Kindergarten],
    devices: list[Device],
    catalogs: list[tuple[str, list[Channel], bool]],
    batch: Any,
    deletes: list[str],
) -> None:
    """One flush: kindergartens and device rows first (channels reference them), then catalogs, then presence."""
    if kindergartens:
        store.upsert_kindergartens(kindergartens)
    if devices:
        store.upsert_devices(devices)
    for device_id, channels, partial in catalogs:
        if partial:
            store.upsert_channels(channels)
        else:
            store.replace_channels(device_id, channels)
    if deletes:
        store.delete_channels(deletes)
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
