"""The composition root of a kgw node: builds the services and hands each the parts it uses.

Nothing imports this module back. Every service gets narrow interfaces (the
directory, a SIP context, the live source…), never the node; each reports its
own metrics, and ``/metrics`` combines them. What differs between the access
gateway and a monitoring platform comes in from outside: how catalogs are
applied (a platform learns its lower platforms' trees, ``gbplatform``) and
extra web routes (the staff console).

Start order is the dependency order; :meth:`GatewayService.stop` undoes it in
reverse (an ``AsyncExitStack``), so a start that fails half-way cleans up too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.acceptance.service import AcceptanceService, AcceptanceSettings, idle_closer
from gateway.acceptance.store import open_acceptance_store
from gateway.access_handler import AccessEventHandler
from gateway.alarms.enrichment import AlarmEnrichment
from gateway.alarms.receiver import AlarmReceiver
from gateway.alarms.service import AlarmService
from gateway.alarms.setup import start_alarm_service
from gateway.alarms.sinks.gb import GbAlarmSink
from gateway.audit.backends import open_audit_store
from gateway.audit.trail import AuditTrail
from gateway.audit.upper_views import upper_view_recorder
from gateway.broadcast import BroadcastService, audio_output_finder
from gateway.cascade.broadcast_relay import UpperBroadcastRelay
from gateway.cascade.service import CascadeService
from gateway.city_view import CityView
from gateway.cluster_nodes import HEARTBEAT_PERIOD, NodeBook, NodeRecord
from gateway.command_broker import CommandBroker
from gateway.config import GatewayConfig
from gateway.coverage.model import CoverageRules
from gateway.coverage.service import CoverageService
from gateway.device_control import DeviceControlService
from gateway.device_credentials import (
    credentials_db,
    hash_credentials,
    load_credentials,
    provisioned_device,
    save_credentials,
    with_credentials,
)
from gateway.device_csv import DeviceCredential
from gateway.downloads import DownloadLimits, DownloadService, download_directory
from gateway.errors import StoreError
from gateway.gb28181.sdp import MediaTransport
from gateway.history_uplink import HistoryUplink
from gateway.housekeeping import GC_THRESHOLDS, housekeeping
from gateway.httpapi.acceptance_routes import acceptance_part
from gateway.httpapi.app import WebPart, build_app, serve, tls_context
from gateway.httpapi.auth import WebGuard
from gateway.httpapi.broadcast_routes import add_broadcast_routes
from gateway.httpapi.city import add_city_routes
from gateway.httpapi.control_routes import add_control_routes
from gateway.httpapi.coverage_routes import coverage_part
from gateway.httpapi.device_import import device_import_part
from gateway.httpapi.download_routes import download_part
from gateway.httpapi.live_routes import PEERS
from gateway.httpapi.metrics import DirectoryMetrics, NodeInfo, NodeMetrics, RegistrationFailures, metrics_registry
from gateway.httpapi.onvif_routes import add_onvif_routes
from gateway.httpapi.record_routes import add_record_routes
from gateway.httpapi.rtsp_routes import rtsp_part
from gateway.httpapi.transcode_routes import transcode_part
from gateway.httpapi.uplink_routes import uplink_part
from gateway.httpapi.webrtc_peers import WebRtcPeers
from gateway.io.conn_limits import GATE, InboundLimits, raise_nofile_limit
from gateway.live import LiveService
from gateway.playback import PlaybackService
from gateway.query_broker import QueryBroker
from gateway.records import RecordService
from gateway.registry.catalogs import CatalogApplier, DeviceCatalogs
from gateway.registry.directory import Directory
from gateway.registry.model import AreaTag
from gateway.registry.placement import place_device
from gateway.registry.provisioning import AreaChoice, Provisioning
from gateway.registry.store import Store
from gateway.registry.store_thread import StoreThread
from gateway.registry.warmup import load_directory
from gateway.registry.writer import RegistryWriter
from gateway.rtsp.model import refusing_virtual_ids
from gateway.rtsp.service import RtspCameraService
from gateway.rtsp.store import RtspCameraStore
from gateway.security.accounts import SessionPolicy
from gateway.security.service import AccountService
from gateway.sip_stack import SipStack, advertised_host
from gateway.stream_config import build_planner, build_uplink
from gateway.transcoding import TranscodeService

__all__ = ["GatewayService"]

log = logging.getLogger("kgw.gateway")


class GatewayService:
    """One node: the access gateway, or (with a platform's catalogs and ID) a monitoring platform."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        store: Store | None = None,
        catalogs: CatalogApplier | None = None,
        web_parts: Sequence[WebPart] = (),
    ) -> None:
        self.config = config
        self.catalogs = catalogs or DeviceCatalogs()
        self.web_parts = tuple(web_parts)
        self.store = StoreThread(config.db, store)
        self.accounts = AccountService(
            config.accounts_db or config.db,
            policy=SessionPolicy(idle=config.session_idle, lifetime=config.session_lifetime),
            static_tokens=config.api_tokens,
        )
        self.directory = Directory()
        self.writer = RegistryWriter(self.store, config.flush_interval)
        # Mutable: credentials imported from CSV (at start and through the API) add to it.
        self._kindergartens: dict[str, str | None] = {d.id: d.kindergarten_id for d in config.devices}
        self._provisioned_kindergarten = self._kindergartens.get
        self.provisioning = Provisioning(self.store, self.directory, self.writer, self._provisioned_kindergarten)
        self.wall_offset = 0.0
        self.http_port = 0
        self.cascade: CascadeService | None = None
        self.nodes: NodeBook | None = None  # the deployment's gateway processes (several-process cities only)
        # Built by start() (they need the running loop):
        self.audit: AuditTrail
        self.sip: SipStack
        self.live: LiveService
        self.downloads: DownloadService
        self.transcodes: TranscodeService
        self.rtsp: RtspCameraService
        self.alarms: AlarmService
        self.acceptance: AcceptanceService
        self.queries: QueryBroker
        self.commands: CommandBroker
        self.records: RecordService
        self.playback: PlaybackService
        self.control: DeviceControlService
        self.events: AccessEventHandler
        self.metrics: CollectorRegistry
        self.http_app: web.Application
        self.webrtc: WebRtcPeers
        self.broadcasts: BroadcastService
        self.coverage: CoverageService
        self._stack = contextlib.AsyncExitStack()
        self._stopped = False

    @property
    def sip_port(self) -> int:
        """The bound SIP port (UDP and TCP)."""
        return self.sip.port

    def wall(self, loop_time: float) -> float:
        """Wall-clock seconds of a loop time."""
        return loop_time + self.wall_offset

    def public_base(self) -> str:
        """Base URL for links in alarm payloads."""
        scheme = "https" if self.config.tls_cert else "http"
        return (self.config.public_url or f"{scheme}://{self.config.http_host}:{self.http_port}").rstrip("/")

    async def start(self) -> None:
        """Open the store, restore state, start alarms, bind SIP and HTTP, then register upward."""
        config, directory, stack = self.config, self.directory, self._stack
        loop = asyncio.get_running_loop()
        GATE.configure(_inbound_limits(config), raise_nofile_limit())  # H4: caps, timeouts, fd reserve
        self.wall_offset = time.time() - loop.time()
        await self.store.open()
        stack.push_async_callback(self.store.close)
        cluster = config.cluster
        rows = await load_directory(self.store, directory, None if cluster.serves_everything else cluster.serves)
        imported = await asyncio.to_thread(load_credentials, credentials_db(config.db), config.domain)
        if imported:  # per-device passwords of `kgw devices import` (strict enrolment)
            config = self.config = with_credentials(config, imported)
            self._kindergartens.update({c.device_id: c.kindergarten_id for c in imported if c.kindergarten_id})
        gc.freeze()  # the restored registry is long-lived: keep it out of GC scans
        gc.set_threshold(*GC_THRESHOLDS)  # a registration storm allocates millions of short-lived objects
        self.writer.start()
        stack.push_async_callback(self.writer.stop)  # the last writes, after SIP closed
        self.audit = AuditTrail(open_audit_store(config.db))
        stack.push_async_callback(self.audit.stop)  # the last audit records, after HTTP and the cascade
        await self.audit.start()

        sip = self.sip = SipStack(
            config,
            wall_offset=self.wall_offset,
            known_device=directory.devices.__contains__,
            # A device numbered under a provisioned kindergarten is expected, not "new" (H5's limit).
            expected_device=lambda d: place_device(d, None, directory.kindergartens) is not None,
            subscribe_catalogs=self.catalogs.subscribes,
        )
        sip.restore_sessions(rows, loop.time())
        registrar = sip.access.registrar  # the RTSP cameras' IDs are the gateway's own (gateway/rtsp/model.py)
        registrar.redirect_for = refusing_virtual_ids(registrar.redirect_for)
        self.live = LiveService(
            sip,
            directory,
            media_host=advertised_host(config),
            default_transport=MediaTransport[config.media_transport.upper().replace("-", "_")],
            play_timeout=config.play_timeout,
            rtp_timeout=config.rtp_timeout,
            media_ports=config.media_port_range,
            # Issue 11: sub-streams spelled per device, and each kindergarten's uplink budget.
            planner=build_planner(config, directory, lambda d: getattr(sip.access.sessions.get(d), "gb_version", None)),
            uplink=(uplink := build_uplink(config)),
            measure_after=config.uplink_measure_after,
        )
        self.downloads = DownloadService(
            sip,
            directory,
            download_directory(config.download_dir, config.db),
            limits=DownloadLimits(
                total=config.downloads_total,
                per_user=config.downloads_per_user,
                max_range=config.download_max_range,
                keep=config.download_keep,
            ),
            media_host=advertised_host(config),
            default_transport=self.live.default_transport,
            play_timeout=config.play_timeout,
            rtp_timeout=config.rtp_timeout,
            media_ports=config.media_port_range,
            uplink=(history_uplink := HistoryUplink(uplink, self.live.planner)),
            measure_after=config.uplink_measure_after,
        )
        await self.downloads.open()
        self.transcodes = TranscodeService(self.live, max_transcodes=config.max_transcodes)
        # Issue 13: RTSP cameras as channels of a virtual device per kindergarten, pulled by PyAV.
        self.rtsp = RtspCameraService(
            RtspCameraStore(self.store),
            directory,
            self.writer,
            confirm_area=self._confirm_rtsp_area,
            on_feed_closed=self.live.external_closed,
            serves=config.cluster.serves,
        )
        self.live.external = self.rtsp
        await self.rtsp.start()
        stack.push_async_callback(self.rtsp.stop)
        stack.callback(self.transcodes.close)
        if config.upper_platforms:
            self.cascade = CascadeService(
                config.upper_platforms, sip, directory, self.live, wall_offset=self.wall_offset
            )
            self.cascade.relay.on_view = upper_view_recorder(self.audit, config.upper_platforms)
        enrichment = AlarmEnrichment(directory, config.id, self.public_base, self.live)
        cascade = self.cascade
        upward = (
            GbAlarmSink(cascade.alarm_targets, cascade.send_alarm, level_of=cascade.level_of)
            if cascade is not None
            else None
        )
        self.alarms = await start_alarm_service(
            config, enrich=enrichment.enrich, capture_snapshot=enrichment.entrance_snapshot, upward=upward
        )
        stack.push_async_callback(self.alarms.stop)
        self.acceptance = AcceptanceService(  # 验收 (issue 13): checks, drill, report
            await asyncio.to_thread(open_acceptance_store, config.db),
            directory,
            self.live,
            self.provisioning,
            self.alarms,
            AcceptanceSettings(
                drill_wait=config.acceptance_drill_wait,
                proof_wait=config.acceptance_proof_wait,
                overdue_after=config.acceptance_overdue_days * 86400.0,
                check_interval=config.acceptance_check_interval,
            ),
            release=idle_closer(self.live),
        )
        await self.acceptance.start()
        stack.push_async_callback(self.acceptance.stop)

        self.queries = QueryBroker(sip.access, config.query_timeout)
        self.commands = CommandBroker(sip.access, config.query_timeout)
        self.control = DeviceControlService(
            self.commands, directory, auto_stop=config.ptz_auto_stop, answer_timeout=config.control_timeout
        )
        stack.callback(self.control.close)
        if cascade is not None:
            cascade.control.attach(self.commands)  # the uppers' DeviceControl reaches devices through it
        receiver = AlarmReceiver(self.alarms, directory, sip.access, self.wall)
        self.events = AccessEventHandler(
            directory,
            self.writer,
            self.catalogs,
            self.queries,
            receiver,
            commands=self.commands,
            wall=self.wall,
            provisioned_kindergarten=self._provisioned_kindergarten,
        )
        # Playback and downloads own their play sessions as live view does (gateway/play_sessions.py).
        self.playback = PlaybackService(
            sip,
            directory,
            media_host=advertised_host(config),
            default_transport=self.live.default_transport,
            play_timeout=config.play_timeout,
            rtp_timeout=config.rtp_timeout,
            media_ports=config.media_port_range,
            uplink=history_uplink,  # playbacks (uppers' too) count against the kindergarten's uplink
            measure_after=config.uplink_measure_after,
        )
        self.records = RecordService(self.commands, directory, timeout=config.query_timeout)
        if cascade is not None:
            cascade.serve_recordings(self.records, self.playback)  # uppers' RecordInfo/playback/download
        self.broadcasts = BroadcastService(
            sip,
            directory,
            self.commands,
            audio_target_of=audio_output_finder(directory),
            media_host=advertised_host(config),
            media_ports=config.media_port_range,
            answer_timeout=config.query_timeout,
            invite_timeout=config.play_timeout,
        )
        if cascade is not None:  # an upper's broadcast to a shared channel, relayed to the device
            upper_broadcasts = UpperBroadcastRelay(
                self.broadcasts,
                sip,
                directory.channels,
                cascade.policies,
                media_host=advertised_host(config),
                media_ports=config.media_port_range,
            )
            for link in cascade.links:
                upper_broadcasts.attach(link)
        handlers = [
            self.downloads,
            self.playback,
            self.live,
            self.broadcasts,
            *((cascade.host, cascade.relay) if cascade is not None else ()),
        ]
        driver = await sip.listen(handlers, on_activity=self._drain)
        stack.callback(sip.close)

        self.coverage = CoverageService(
            directory,
            self.store,
            rules=_coverage_rules(config),
            drills=self.alarms.last_successful_drills,
            live=self.live,
            recordings=self.records.answers,
            districts=frozenset(config.districts),
            refresh=config.coverage_refresh,
        )
        await self.coverage.start()
        stack.push_async_callback(self.coverage.stop)

        await self.accounts.open()
        stack.push_async_callback(self.accounts.close)
        tls = tls_context(config.tls_cert, config.tls_key) if config.tls_cert else None
        node, districts = config.node, tuple(sorted(config.districts))
        collectors = [
            NodeMetrics(node, config.id, config.role, districts),
            DirectoryMetrics(directory, districts),
            self.writer,
            sip,
            self.events,
            RegistrationFailures(self.events.registrations),
            self.live,
            self.downloads,
            self.playback,
            self.transcodes,
            self.rtsp,
            self.broadcasts,
            self.alarms,
            self.acceptance,
            self.audit,
            self.coverage,
            GATE,
        ]
        self.metrics = metrics_registry([*collectors, *((cascade,) if cascade is not None else ())])
        app = build_app(
            node=NodeInfo(config.id, config.role, lambda: sip.port),
            directory=directory,
            store=self.store,
            queries=self.queries,
            provisioning=self.provisioning,
            live=self.live,
            alarms=self.alarms,
            uppers=cascade,
            metrics=self.metrics,
            audit=self.audit,
            accounts=self.accounts,
            guard=WebGuard(
                config.http_host,
                lambda: self.http_port,
                allowed_hosts=config.allowed_hosts,
                trusted_proxies=config.trusted_proxies,
                tls=tls is not None,
                public_url=config.public_url,
            ),
            parts=(
                *self.web_parts,
                device_import_part(self._import_devices),
                uplink_part(uplink, directory),
                lambda app: add_record_routes(app, self.records, self.playback),
                download_part(self.downloads),
                add_onvif_routes,
                lambda app: add_control_routes(app, self.control, directory),
                transcode_part(self.transcodes, directory),
                rtsp_part(self.rtsp, directory),
                lambda app: add_broadcast_routes(app, self.broadcasts),
                coverage_part(self.coverage),
                acceptance_part(self.acceptance),
                *((lambda app: add_city_routes(app, city),) if (city := await self._city_view()) else ()),
            ),
        )
        self.http_app = app  # its routes (tests enumerate them: none may answer without a login)
        peers = app[PEERS]  # M2: WebRTC caps
        peers.per_user, peers.total = config.webrtc_per_user, config.webrtc_total
        peers.connect_timeout = config.webrtc_ice_timeout
        self.webrtc = peers
        runner, self.http_port = await serve(
            app, config.http_host, config.http_port, tls=tls, trusted_proxies=config.trusted_proxies
        )
        stack.push_async_callback(runner.cleanup)
        if self.nodes is not None:
            beat = loop.create_task(self._heartbeat(self.nodes), name="kgw-node-heartbeat")
            stack.callback(beat.cancel)
        stack.push_async_callback(receiver.stop)  # alarms being stored are answered before SIP closes

        chores = loop.create_task(housekeeping(directory, self.writer, sip.access, self.wall), name="kgw-chores")
        stack.callback(chores.cancel)
        if cascade is not None:
            cascade.start(loop.time(), driver)
            stack.push_async_callback(lambda: cascade.stop(asyncio.get_running_loop().time()))
        stack.callback(self._close_streams)
        stack.push_async_callback(self.downloads.close)  # hung up while SIP still sends
        log.info(
            "gateway %s listening: SIP udp/tcp %s:%d, HTTP %s://%s:%d/ (db %s, enrolment %s)",
            config.id,
            config.sip_host,
            sip.port,
            "https" if tls is not None else "http",
            config.http_host,
            self.http_port,
            config.db,
            config.enrolment,
        )

    async def _city_view(self) -> CityView | None:
        """Several gateway processes (gateway/cluster.py): the node table and the whole-city view; else None."""
        cluster = self.config.cluster
        if cluster.serves_everything:
            return None
        self.nodes = NodeBook(self.config.db)
        await asyncio.to_thread(self.nodes.open)
        self._stack.callback(self.nodes.close)
        return CityView(self.store, self.directory, cluster, self.nodes)

    async def _heartbeat(self, nodes: NodeBook) -> None:
        """This process's row in the node table, every HEARTBEAT_PERIOD s (how the others tell it is alive)."""
        config, started = self.config, time.time()
        while True:
            record = NodeRecord(
                config.node,
                config.id,
                config.districts,
                f"{advertised_host(config)}:{self.sip.port}",
                self.public_base(),
                started,
                time.time(),
            )
            try:
                await asyncio.to_thread(nodes.heartbeat, record)
            except StoreError as exc:
                log.warning("node heartbeat not written: %s", exc)
            await asyncio.sleep(HEARTBEAT_PERIOD)

    async def _import_devices(self, rows: Sequence[DeviceCredential]) -> int:
        """Store imported credentials as HA1s (all or nothing), then let the running registrar use them."""
        realm = self.config.domain
        stored = hash_credentials(rows, realm)
        path = credentials_db(self.config.db)
        if path is not None:
            await asyncio.to_thread(save_credentials, path, stored, realm)
        for row in stored:
            self.sip.provisioned[row.device_id] = provisioned_device(row)
            if row.kindergarten_id:
                self._kindergartens[row.device_id] = row.kindergarten_id
        return len(rows)

    async def _confirm_rtsp_area(self, channel_id: str, area: AreaTag, name: str, by: str) -> None:
        """An RTSP camera's area, given by someone allowed to confirm areas, is their confirmation."""
        await self.provisioning.confirm_areas([AreaChoice(channel_id, area, name)], by, time.time())

    async def stop(self) -> None:
        """Undo :meth:`start` in reverse: streams, uppers, HTTP, SIP, alarms, the last writes, the store."""
        if self._stopped:
            return
        self._stopped = True
        await self._stack.aclose()
        log.info("gateway %s stopped", self.config.id)

    def _drain(self) -> None:
        """After the SIP driver moved bytes: the cascade's events, then device access's."""
        if self.cascade is not None:
            self.cascade.drain()
        access = self.sip.access
        while (event := access.next_event()) is not None:
            try:
                self.events.handle(event)
            except Exception:  # a bug: contain it to this event
                log.exception("handling %s failed", type(event).__name__)

    def _close_streams(self) -> None:
        self.playback.close_all()
        self.broadcasts.stop_all()
        for channel_id in list(self.live.streams):
            self.live.close(channel_id, "gateway stopping")


def _coverage_rules(config: GatewayConfig) -> CoverageRules:
    """The coverage dashboard's thresholds (``coverage_*`` settings)."""
    return CoverageRules(
        drill_max_age_days=config.coverage_drill_max_age_days,
        loss_percent=config.coverage_loss_percent,
        flaps_per_day=config.coverage_flaps,
        require_perimeter=config.coverage_require_perimeter,
    )


def _inbound_limits(config: GatewayConfig) -> InboundLimits:
    """The inbound TCP limits the configuration asks for (issue 10, H4)."""
    return InboundLimits(
        per_address=config.tcp_per_address,
        fd_reserve=config.fd_reserve,
        idle_timeout=config.tcp_idle_timeout,
        header_timeout=config.tcp_header_timeout,
        body_timeout=config.http_body_timeout,
    )
