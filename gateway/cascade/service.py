"""The cascade on asyncio: the gateway registers with its upper platforms and serves them.

The sans-I/O :class:`~gateway.cascade.upper.CascadeHost` shares the device side's
endpoint (one SIP socket); this adapter builds each upper's catalog from the
gateway's memory through its :class:`~gateway.cascade.policy.SharePolicy`,
pushes catalog changes to subscribed uppers, turns the alarm outbox's GB/T
28181 deliveries into ``Notify/Alarm`` MESSAGEs and waits for their answers,
and reports each link's state to the log, the API and the metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.alarms.model import Alarm
from gateway.alarms.sinks.base import OutboundMessage
from gateway.cascade.policy import SharePolicy, build_catalog, catalog_changes
from gateway.cascade.relay import UpperRelay
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
from gateway.gb28181.manscdp import AlarmNotify, CatalogItem, format_gb_time
from gateway.registry.model import Channel

if TYPE_CHECKING:
    from gateway.app import GatewayService
    from gateway.config import UpperSpec

log = logging.getLogger("kgw.cascade")

__all__ = ["CascadeService"]

NOT_REGISTERED = 480  # SIP "Temporarily Unavailable": what an alarm gets while the upper is away
ANSWER_TIMEOUT = 40.0  # s: longer than a non-INVITE transaction (32 s) so its 408 comes first


class CascadeService:
    """Every upper platform of one gateway."""

    def __init__(self, gateway: GatewayService, specs: Sequence[UpperSpec]) -> None:
        assert gateway.access is not None
        self.gateway = gateway
        self.host = CascadeHost(gateway.access.endpoint)
        self.policies: dict[str, SharePolicy] = {}
        self._answers: dict[object, asyncio.Future[int]] = {}
        self._keys = itertools.count(1)
        self._sn = itertools.count(1)
        self._tcp_tasks: list[asyncio.Future[None]] = []
        info = PlatformInfo(name=f"kgw {gateway.config.id}", model="gateway")
        for spec in specs:
            policy = spec.policy
            link = UpperLink(
                spec.link,
                gateway.config.id,
                gateway.config.domain,
                gateway.access.endpoint,
                catalog=lambda p=policy: self.catalog_for(p),  # type: ignore[misc]
                channel_status=lambda channel_id, p=policy: self.channel_status(p, channel_id),  # type: ignore[misc]
                device_info=info,
            )
            self.host.add(link)
            self.policies[link.name] = policy
        gateway.access.attached.append(self.host)
        self.relay = UpperRelay(gateway, self.host.links, self.policies)  # the uppers' live INVITEs

    @property
    def links(self) -> tuple[UpperLink, ...]:
        """Every upper link."""
        return self.host.links

    def start(self, now: float) -> None:
        """Register with every upper (over TCP once a connection is open, see ``_keep_connected``)."""
        self.host.start_all(now)
        for link in self.links:
            if link.config.transport == "TCP":
                self._tcp_tasks.append(asyncio.ensure_future(self._keep_connected(link)))
        for link in self.links:
            log.info(
                "registering with upper platform %s (%s at %s:%d, %s policy)",
                link.name,
                link.config.server_id,
                link.config.host,
                link.config.port,
                self.policies[link.name].level.value,
            )

    async def _keep_connected(self, link: UpperLink) -> None:
        """Keep a TCP connection to a TCP upper open; the link's retries ride on the new one.

        Requests to ``Peer(TCP, host, port)`` go over whatever connection to that
        address is open, so reconnecting is all it takes after an upper restarts.
        """
        driver = self.gateway.driver
        assert driver is not None
        host, port = link.config.host, link.config.port
        delay, logged = 1.0, False
        while True:
            if not driver.has_connection(host, port):
                try:
                    await asyncio.wait_for(driver.open_tcp(host, port), 5.0)
                    log.info("TCP connection to upper platform %s (%s:%d) open", link.name, host, port)
                    delay, logged = 1.0, False
                    link.retry_now(asyncio.get_running_loop().time())
                    driver.flush()
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

    def stop(self, now: float) -> None:
        """Unregister from every upper; pending alarm answers fail (their outbox retries them)."""
        for task in self._tcp_tasks:
            task.cancel()
        self.relay.close()  # BYE to every upper still watching
        self.host.stop_all(now, unregister=True)
        for future in self._answers.values():
            if not future.done():
                future.set_result(NOT_REGISTERED)

    # --- what the uppers see ----------------------------------------------------------------

    def _current_channels(self) -> list[Channel]:
        """Channels with their online state as an upper should see it (the device must be up too)."""
        out = []
        for channel in self.gateway.channels.values():
            state = self.gateway.devices.get(channel.device_id)
            online = bool(channel.online and state is not None and state.row.online)
            out.append(channel if channel.online == online else replace(channel, online=online))
        return out

    def catalog_for(self, policy: SharePolicy) -> list[CatalogItem]:
        """The catalog one upper may see: its policy's subset, as a tree."""
        return build_catalog(
            policy,
            system_id=self.gateway.config.id,
            kindergartens=self.gateway.kindergartens.values(),
            channels=self._current_channels(),
        )

    def channel_status(self, policy: SharePolicy, channel_id: str) -> bool | None:
        """Online state of a channel the upper may see; None when it may not."""
        channel = self.gateway.channels.get(channel_id)
        if channel is None or not policy.allows_channel(channel):
            return None
        state = self.gateway.devices.get(channel.device_id)
        return bool(channel.online and state is not None and state.row.online)

    def channels_changed(self, before: Mapping[str, Channel], after: Mapping[str, Channel], now: float) -> None:
        """Push what changed to every upper subscribed to our catalog (notes §14.3)."""
        for link in self.links:
            if not link.subscriptions:
                continue
            items = catalog_changes(
                self.policies[link.name],
                before,
                after,
                system_id=self.gateway.config.id,
                kindergartens=self.gateway.kindergartens.values(),
            )
            if items:
                link.notify_catalog(items, now)

    # --- alarms upward (the outbox's "gb" sink) ---------------------------------------------------

    def alarm_targets(self, alarm: Alarm) -> list[str]:
        """The uppers whose policy covers this alarm."""
        source = self.gateway.channels.get(alarm.source_id)
        return [name for name, policy in self.policies.items() if policy.allows_alarm(alarm, source=source)]

    async def send_alarm(self, name: str, message: OutboundMessage) -> int:
        """Send one alarm to one upper and wait for the final answer (480 while it is not registered)."""
        link = self.host.link(name)
        loop = asyncio.get_running_loop()
        key = ("alarm", next(self._keys))
        if not link.send_alarm(_alarm_notify(message.alarm, next(self._sn)), loop.time(), key):
            return NOT_REGISTERED
        future: asyncio.Future[int] = loop.create_future()
        self._answers[key] = future
        if self.gateway.driver is not None:
            self.gateway.driver.flush()
        try:
            return await asyncio.wait_for(future, ANSWER_TIMEOUT)
        except TimeoutError:
            return 408
        finally:
            self._answers.pop(key, None)

    # --- events -----------------------------------------------------------------------------------

    def drain(self) -> None:
        """Take every link's events (called whenever the SIP driver did something)."""
        for link in self.links:
            while (event := link.next_event()) is not None:
                self._on_event(event)

    def _on_event(self, event: UpperEvent) -> None:
        metrics = self.gateway.metrics
        if isinstance(event, UpperOnline):
            log.info("registered with upper platform %s", event.name)
            metrics.upper_transitions.labels(platform=event.name, state="online").inc()
        elif isinstance(event, UpperOffline):
            level = logging.INFO if event.reason == "stopped" else logging.WARNING  # our own shutdown is no news
            log.log(level, "upper platform %s is offline: %s", event.name, event.reason)
            metrics.upper_transitions.labels(platform=event.name, state="offline").inc()
            self.relay.upper_offline(event.name)
        elif isinstance(event, AlarmAnswered):
            future = self._answers.get(event.key)
            if future is not None and not future.done():
                future.set_result(event.status)
        elif isinstance(event, CatalogSent):
            log.info(
                "catalog to %s: %d items in %d messages (SN %d)", event.name, event.items, event.messages, event.sn
            )
            metrics.upper_catalog_items.labels(platform=event.name).inc(event.items)
        elif isinstance(event, SubscriptionChanged):
            log.info(
                "upper platform %s %s our catalog",
                event.name,
                "subscribed to" if event.active else "no longer subscribes to",
            )

    def status(self) -> list[dict[str, Any]]:
        """Per upper: state, registration, failures, subscriptions, policy."""
        wall = self.gateway.wall_offset
        calls = self.relay.status()
        out = []
        for link in self.links:
            status = link.status()
            status["live_calls"] = [c for c in calls if c["upper"] == link.name]
            policy = self.policies[link.name]
            for key in ("registered_at", "retry_at"):
                if status.get(key) is not None:
                    status[key] = status[key] + wall
            status["level"] = policy.level.value
            status["district"] = policy.district_code
            out.append(status)
        return out


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
    )
