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

from prometheus_client import CollectorRegistry

from gateway.access_handler import AccessEventHandler
from gateway.alarms.enrichment import AlarmEnrichment
from gateway.alarms.receiver import AlarmReceiver
from gateway.alarms.service import AlarmService
from gateway.alarms.setup import start_alarm_service
from gateway.alarms.sinks.gb import GbAlarmSink
from gateway.cascade.service import CascadeService
from gateway.config import GatewayConfig
from gateway.gb28181.sdp import MediaTransport
from gateway.housekeeping import housekeeping
from gateway.httpapi.app import WebPart, build_app, serve
from gateway.httpapi.live_routes import PEERS
from gateway.httpapi.metrics import DirectoryMetrics, NodeInfo, metrics_registry
from gateway.httpapi.webrtc_peers import WebRtcPeers
from gateway.io.conn_limits import GATE, InboundLimits, raise_nofile_limit
from gateway.live import LiveService
from gateway.query_broker import QueryBroker
from gateway.registry.catalogs import CatalogApplier, DeviceCatalogs
from gateway.registry.directory import Directory
from gateway.registry.provisioning import Provisioning
from gateway.registry.store import Store
from gateway.registry.store_thread import StoreThread
from gateway.registry.warmup import load_directory
from gateway.registry.writer import RegistryWriter
from gateway.sip_stack import SipStack, advertised_host

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
        self.directory = Directory()
        self.writer = RegistryWriter(self.store, config.flush_interval)
        self._provisioned_kindergarten = {d.id: d.kindergarten_id for d in config.devices}.get
        self.provisioning = Provisioning(self.store, self.directory, self.writer, self._provisioned_kindergarten)
        self.wall_offset = 0.0
        self.http_port = 0
        self.cascade: CascadeService | None = None
        # Built by start() (they need the running loop):
        self.sip: SipStack
        self.live: LiveService
        self.alarms: AlarmService
        self.queries: QueryBroker
        self.events: AccessEventHandler
        self.metrics: CollectorRegistry
        self.webrtc: WebRtcPeers
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
        return (self.config.public_url or f"http://{self.config.http_host}:{self.http_port}").rstrip("/")

    async def start(self) -> None:
        """Open the store, restore state, start alarms, bind SIP and HTTP, then register upward."""
        config, directory, stack = self.config, self.directory, self._stack
        loop = asyncio.get_running_loop()
        GATE.configure(_inbound_limits(config), raise_nofile_limit())  # H4: caps, timeouts, fd reserve
        self.wall_offset = time.time() - loop.time()
        await self.store.open()
        stack.push_async_callback(self.store.close)
        rows = await load_directory(self.store, directory)
        gc.freeze()  # the restored registry is long-lived: keep it out of GC scans
        self.writer.start()
        stack.push_async_callback(self.writer.stop)  # the last writes, after SIP closed

        sip = self.sip = SipStack(
            config,
            wall_offset=self.wall_offset,
            known_device=directory.devices.__contains__,
            subscribe_catalogs=self.catalogs.subscribes,
        )
        sip.restore_sessions(rows, loop.time())
        self.live = LiveService(
            sip,
            directory,
            media_host=advertised_host(config),
            default_transport=MediaTransport[config.media_transport.upper().replace("-", "_")],
            play_timeout=config.play_timeout,
            rtp_timeout=config.rtp_timeout,
            media_ports=config.media_port_range,
        )
        if config.upper_platforms:
            self.cascade = CascadeService(
                config.upper_platforms, sip, directory, self.live, wall_offset=self.wall_offset
            )
        enrichment = AlarmEnrichment(directory, config.id, self.public_base, self.live)
        cascade = self.cascade
        upward = GbAlarmSink(cascade.alarm_targets, cascade.send_alarm) if cascade is not None else None
        self.alarms = await start_alarm_service(
            config, enrich=enrichment.enrich, capture_snapshot=enrichment.entrance_snapshot, upward=upward
        )
        stack.push_async_callback(self.alarms.stop)

        self.queries = QueryBroker(sip.access, config.query_timeout)
        receiver = AlarmReceiver(self.alarms, directory, sip.access, self.wall)
        self.events = AccessEventHandler(
            directory,
            self.writer,
            self.catalogs,
            self.queries,
            receiver,
            wall=self.wall,
            provisioned_kindergarten=self._provisioned_kindergarten,
        )
        handlers = [self.live, *((cascade.host, cascade.relay) if cascade is not None else ())]
        driver = await sip.listen(handlers, on_activity=self._drain)
        stack.callback(sip.close)

        collectors = [DirectoryMetrics(directory), self.writer, sip, self.events, self.live, self.alarms, GATE]
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
            parts=self.web_parts,
        )
        peers = app[PEERS]  # M2: WebRTC caps
        peers.per_user, peers.total = config.webrtc_per_user, config.webrtc_total
        peers.connect_timeout = config.webrtc_ice_timeout
        self.webrtc = peers
        runner, self.http_port = await serve(app, config.http_host, config.http_port)
        stack.push_async_callback(runner.cleanup)
        stack.push_async_callback(receiver.stop)  # alarms being stored are answered before SIP closes

        chores = loop.create_task(housekeeping(directory, self.writer, sip.access, self.wall), name="kgw-chores")
        stack.callback(chores.cancel)
        if cascade is not None:
            cascade.start(loop.time(), driver)
            stack.push_async_callback(lambda: cascade.stop(asyncio.get_running_loop().time()))
        stack.callback(self._close_streams)
        log.info(
            "gateway %s listening: SIP udp/tcp %s:%d, HTTP http://%s:%d/ (db %s, enrolment %s)",
            config.id,
            config.sip_host,
            sip.port,
            config.http_host,
            self.http_port,
            config.db,
            config.enrolment,
        )

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
        for channel_id in list(self.live.streams):
            self.live.close(channel_id, "gateway stopping")


def _inbound_limits(config: GatewayConfig) -> InboundLimits:
    """The inbound TCP limits the configuration asks for (issue 10, H4)."""
    return InboundLimits(
        per_address=config.tcp_per_address,
        fd_reserve=config.fd_reserve,
        idle_timeout=config.tcp_idle_timeout,
        header_timeout=config.tcp_header_timeout,
        body_timeout=config.http_body_timeout,
    )
