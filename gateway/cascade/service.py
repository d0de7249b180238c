"""The cascade on asyncio: the gateway registers with its upper platforms and serves them.

The sans-I/O :class:`~gateway.cascade.upper.CascadeHost` is a handler on the
gateway's SIP router (one socket for devices and uppers); this adapter builds
each upper's catalog from the directory through its
:class:`~gateway.cascade.policy.SharePolicy`, pushes the directory's channel
changes to subscribed uppers, turns the alarm outbox's GB/T 28181 deliveries
into ``Notify/Alarm`` MESSAGEs and waits for their answers, keeps TCP uppers
connected, and reports each link's state to the log, the API and the metrics.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import Counter, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.alarms.model import Alarm
from gateway.alarms.sinks.base import OutboundMessage
from gateway.cascade.control_relay import ControlRelay
from gateway.cascade.history import PlaybackSource, UpperHistory
from gateway.cascade.policy import SharePolicy, build_catalog, catalog_changes
from gateway.cascade.relay import LiveSource, UpperRelay
from gateway.cascade.upper import (
    AlarmAnswered,
    CascadeHost,
    CatalogSent,
    PlatformInfo,
    SubscriptionChanged,
    UpperEvent,
    UpperLink,
    UpperOffline,
    UpperOnline,
)
from gateway.cascade.upper_config import UpperSpec
from gateway.cascade.upper_records import RecordSearcher, UpperRecordQueries
from gateway.gb28181.manscdp import AlarmNotify, CatalogItem, format_gb_time
from gateway.gb28181.sip.transport import Peer
from gateway.live import SipIdentity
from gateway.registry.directory import ChannelChange, Directory
from gateway.registry.model import Channel

log = logging.getLogger("kgw.cascade")

__all__ = ["CascadeService", "TcpConnector"]

NOT_REGISTERED = 480  # SIP "Temporarily Unavailable": what an alarm gets while the upper is away
ANSWER_TIMEOUT = 40.0  # s: longer than a non-INVITE transaction (32 s) so its 408 comes first
UNREGISTER_WAIT = 3.0  # s a shutdown waits for the uppers' answers to our REGISTER Expires: 0
RESOLVE_EVERY = 60.0  # s between look-ups of an upper's host name (whose address may move)


class TcpConnector(Protocol):
    """Opens SIP-over-TCP connections to uppers (the SIP driver)."""

    def has_connection(self, host: str, port: int) -> bool: ...
    async def open_tcp(self, host: str, port: int) -> Peer: ...


class CascadeService(Collector):
    """Every upper platform of one gateway."""

    def __init__(
        self,
        specs: Sequence[UpperSpec],
        sip: SipIdentity,
        directory: Directory,
        live: LiveSource,
        *,
        wall_offset: float,
    ) -> None:
        self.sip = sip
        self.directory = directory
        self.wall_offset = wall_offset
        self.host = CascadeHost(sip.endpoint)
        self.policies: dict[str, SharePolicy] = {}
        self._answers: dict[object, asyncio.Future[int]] = {}
        self._keys = itertools.count(1)
        self._sn = itertools.count(1)
        self._tcp_tasks: list[asyncio.Task[None]] = []
        self._unregistered: asyncio.Event | None = None
        self.record_queries: UpperRecordQueries | None = None
        info = PlatformInfo(name=f"kgw {sip.local_id}", model="gateway")
        for spec in specs:
            self._add_link(spec, info)
        self.relay = UpperRelay(
            self.host.links, self.policies, live=live, channels=directory.channels
        )  # the uppers' INVITEs
        self.control = ControlRelay(self.policies, directory.channels)  # the uppers' DeviceControl
        for link in self.host.links:
            link.commands.append(self.control)
        directory.subscribe(self.channels_changed)
        self.transitions = Counter(
            "kgw_upper_platform_transitions",
            "Upper platform links going online/offline",
            ["platform", "state"],
            registry=None,
        )
        self.catalog_items = Counter(
            "kgw_upper_catalog_items",
            "Catalog items sent to an upper platform (answers and NOTIFYs)",
            ["platform"],
            registry=None,
        )

    def serve_recordings(self, records: RecordSearcher, playback: PlaybackSource) -> None:
        """Serve the uppers' RecordInfo, Playback/Download INVITEs and their INFO (issue 11, docs/gb28181.md §16.4)."""
        queries = self.record_queries = UpperRecordQueries(records, self.directory.channels, self.policies)
        for link in self.links:
            link.commands.append(queries)
        self.relay.history = UpperHistory(playback)

    def _add_link(self, spec: UpperSpec, info: PlatformInfo) -> None:
        policy = spec.policy  # one per link: the closures below see this link's policy
        link = UpperLink(
            spec.link,
            self.sip.local_id,
            self.sip.domain,
            self.sip.endpoint,
            catalog=lambda: self.catalog_for(policy),
            channel_status=lambda channel_id: self.channel_status(policy, channel_id),
            device_info=info,
        )
        self.host.add(link)
        self.policies[link.name] = policy

    @property
    def links(self) -> tuple[UpperLink, ...]:
        """Every upper link."""
        return self.host.links

    def start(self, now: float, tcp: TcpConnector) -> None:
        """Register with every upper (over TCP once a connection is open, see ``_keep_connected``)."""
        self.host.start_all(now)
        loop = asyncio.get_running_loop()
        for link in self.links:
            if not _is_ip(link.config.host):
                self._tcp_tasks.append(loop.create_task(self._keep_resolved(link)))
            if link.config.transport == "TCP":
                self._tcp_tasks.append(loop.create_task(self._keep_connected(link, tcp)))
            log.info(
                "registering with upper platform %s (%s at %s:%d, %s policy)",
                link.name,
                link.config.server_id,
                link.config.host,
                link.config.port,
                self.policies[link.name].level.value,
            )

    async def _keep_connected(self, link: UpperLink, tcp: TcpConnector) -> None:
        """Keep a TCP connection to a TCP upper open; the link's retries ride on the new one.

        Requests to ``Peer(TCP, host, port)`` go over whatever connection to that
        address is open, so reconnecting is all it takes after an upper restarts.
        """
        host, port = link.config.host, link.config.port
        delay, logged = 1.0, False
        while True:
            if not tcp.has_connection(host, port):
                try:
                    async with asyncio.timeout(5.0):
                        await tcp.open_tcp(host, port)
                    log.info("TCP connection to upper platform %s (%s:%d) open", link.name, host, port)
                    delay, logged = 1.0, False
                    link.retry_now(asyncio.get_running_loop().time())
                except (OSError, TimeoutError) as exc:
                    if not logged:
                        log.warning(
                            "cannot connect to upper platform %s over TCP (%s:%d): %s",
                            link.name,
                            host,
                            port,
                            exc or type(exc).__name__,
                        )
                        logged = True
                    delay = min(delay * 2, 30.0)
            await asyncio.sleep(delay)

    async def _keep_resolved(self, link: UpperLink) -> None:
        """Keep the addresses an upper named by host name may speak from (C1: requests are checked against them)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                infos = await loop.getaddrinfo(link.config.host, link.config.port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                log.warning("cannot resolve upper platform %s (%s): %s", link.name, link.config.host, exc)
            else:
                link.resolved(sorted({str(info[4][0]) for info in infos}))
            await asyncio.sleep(RESOLVE_EVERY)

    async def stop(self, now: float) -> None:
        """Hang up the uppers' calls, unregister from every upper and wait (a while) for the answers.

        Pending alarm answers fail with 480: their outbox retries them after a restart.
        """
        for task in self._tcp_tasks:
            task.cancel()
        await asyncio.gather(*self._tcp_tasks, return_exceptions=True)
        self.relay.close()  # BYE to every upper still watching
        self.control.close()
        if self.record_queries is not None:
            self.record_queries.close()
        self._unregistered = asyncio.Event()
        self.host.stop_all(now, unregister=True)
        self.drain()
        try:
            async with asyncio.timeout(UNREGISTER_WAIT):
                await self._unregistered.wait()
        except TimeoutError:
            log.info(
                "%d upper platform(s) did not answer our unregistration",
                sum(1 for link in self.links if link.unregistering),
            )
        for future in self._answers.values():
            if not future.done():
                future.set_result(NOT_REGISTERED)

    # --- what the uppers see ----------------------------------------------------------------

    def catalog_for(self, policy: SharePolicy) -> list[CatalogItem]:
        """The catalog one upper may see: its policy's subset, as a tree."""
        directory = self.directory
        return build_catalog(
            policy,
            system_id=self.sip.local_id,
            kindergartens=directory.kindergartens.values(),
            channels=[directory.view(channel) for channel in directory.channels.values()],
        )

    def channel_status(self, policy: SharePolicy, channel_id: str) -> bool | None:
        """Whether a channel the upper may see is up; None when it may not see it."""
        channel = self.directory.channels.get(channel_id)
        if channel is None or not policy.allows_channel(channel):
            return None
        return self.directory.is_up(channel)

    def channels_changed(self, change: ChannelChange) -> None:
        """Push what changed to every upper subscribed to our catalog (docs/gb28181.md §14.3)."""
        for link in self.links:
            if not link.subscriptions:
                continue
            policy = self.policies[link.name]
            items = catalog_changes(
                policy,
                change.before,
                change.after,
                system_id=self.sip.local_id,
                kindergartens=self.directory.kindergartens.values(),
                unchanged=self._staying(policy, change),
            )
            if items:
                link.notify_catalog(items, change.at)

    def _staying(self, policy: SharePolicy, change: ChannelChange) -> list[Channel]:
        """One unchanged channel this upper sees per kindergarten and district the change touches.

        They keep those tree nodes in the upper's catalog: removing one camera must not
        delete its kindergarten while other cameras still hang there.
        """
        changed = change.before.keys() | change.after.keys()
        touched = [*change.before.values(), *change.after.values()]

        def shared(channel: Channel) -> bool:
            return channel.id not in changed and policy.allows_channel(channel)

        found = [
            self.directory.first_channel(shared, kindergarten=k) for k in {c.kindergarten_id for c in touched} if k
        ]
        # A district this upper does not cover holds no channel it may see: no need to scan it (issue 12:
        # 16 district uppers scanning every other district per catalog took half the loop in a storm).
        districts = {c.district_code for c in touched if policy.covers_district(c.district_code)}
        found += [self.directory.first_channel(shared, district=d) for d in districts]
        return [channel for channel in found if channel is not None]

    # --- alarms upward (the outbox's "gb" sink) ---------------------------------------------------

    def alarm_targets(self, alarm: Alarm) -> list[str]:
        """The uppers whose policy covers this alarm."""
        source = self.directory.channels.get(alarm.source_id)
        return [name for name, policy in self.policies.items() if policy.allows_alarm(alarm, source=source)]

    def level_of(self, name: str) -> str:
        """The level an upper serves (district, municipal, police), as its policy says."""
        policy = self.policies.get(name)
        return policy.level.value if policy is not None else ""

    async def send_alarm(self, name: str, message: OutboundMessage) -> int:
        """Send one alarm to one upper and wait for the final answer (480 while it is not registered)."""
        link = self.host.link(name)
        loop = asyncio.get_running_loop()
        key = ("alarm", next(self._keys))
        if not link.send_alarm(_alarm_notify(message.alarm, next(self._sn)), loop.time(), key):
            return NOT_REGISTERED
        future: asyncio.Future[int] = loop.create_future()
        self._answers[key] = future
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT):
                return await future
        except TimeoutError:
            return 408
        finally:
            self._answers.pop(key, None)

    # --- events -----------------------------------------------------------------------------------

    def drain(self) -> None:
        """Take every link's and the relay's events (called whenever the SIP driver did something)."""
        for link in self.links:
            while (event := link.next_event()) is not None:
                try:
                    self._on_event(event)
                except Exception:  # a bug: contain it to this event
                    log.exception("upper %s: event %s failed", event.name, type(event).__name__)
        if self._unregistered is not None and not any(link.unregistering for link in self.links):
            self._unregistered.set()

    def _on_event(self, event: UpperEvent) -> None:
        match event:
            case UpperOnline():
                log.info("registered with upper platform %s", event.name)
                self.transitions.labels(platform=event.name, state="online").inc()
            case UpperOffline():
                level = logging.INFO if event.reason == "stopped" else logging.WARNING  # our own shutdown is no news
                log.log(level, "upper platform %s is offline: %s", event.name, event.reason)
                self.transitions.labels(platform=event.name, state="offline").inc()
                self.relay.upper_offline(event.name)
            case AlarmAnswered():
                future = self._answers.get(event.key)
                if future is not None and not future.done():
                    future.set_result(event.status)
            case CatalogSent():
                log.info(
                    "catalog to %s: %d items in %d messages (SN %d)", event.name, event.items, event.messages, event.sn
                )
                self.catalog_items.labels(platform=event.name).inc(event.items)
            case SubscriptionChanged():
                verb = "subscribed to" if event.active else "no longer subscribes to"
                log.info("upper platform %s %s our catalog", event.name, verb)

    def status(self) -> list[dict[str, Any]]:
        """Per upper: state, registration, failures, subscriptions, policy, live calls (times are wall time)."""
        calls = self.relay.status()
        out = []
        for link in self.links:
            status = link.status()
            status["live_calls"] = [c for c in calls if c["upper"] == link.name]
            policy = self.policies[link.name]
            for key in ("registered_at", "retry_at"):
                if status.get(key) is not None:
                    status[key] = status[key] + self.wall_offset
            status["level"] = policy.level.value
            status["district"] = policy.district_code
            out.append(status)
        return out

    def collect(self) -> Iterator[Metric]:
        """Link transitions and catalog items sent; whether each upper has us registered; the relay's calls."""
        yield from self.transitions.collect()
        yield from self.catalog_items.collect()
        up = GaugeMetricFamily(
            "kgw_upper_platform_registered", "1 while registered with the upper platform", labels=["platform", "level"]
        )
        for link in self.links:
            up.add_metric([link.name, self.policies[link.name].level.value], 1 if link.registered else 0)
        yield up
        forged = CounterMetricFamily(
            "kgw_upper_forged_requests",
            "Requests claiming an upper platform's ID from an address that is not the upper's (refused 403)",
            labels=["platform"],
        )
        for link in self.links:
            forged.add_metric([link.name], link.forged_requests)
        yield forged
        yield from self.relay.collect()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _alarm_notify(alarm: Alarm, sn: int) -> AlarmNotify:
    """The alarm as a GB/T 28181 ``Notify/Alarm`` for an upper (channel IDs are not renumbered)."""
    device_time = alarm.alarm_time or format_gb_time(datetime.fromtimestamp(alarm.received_at))
    return AlarmNotify(
        sn,
        alarm.source_id,
        priority=str(alarm.priority) if alarm.priority is not None else None,
        method=str(alarm.method) if alarm.method is not None else None,
        alarm_time=device_time,
        description=alarm.description or None,
        longitude=alarm.longitude,
        latitude=alarm.latitude,
        alarm_type=str(alarm.alarm_type) if alarm.alarm_type is not None else None,
        event_type=str(alarm.event_type) if alarm.event_type is not None else None,
        drill=alarm.drill,  # 【演练】 + Info/Drill (docs/gb28181.md §9.3)
    )
