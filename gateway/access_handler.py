"""What device access reports becomes state: the directory, the store, queries, alarms, logs and metrics.

Every :data:`~gateway.gb28181.access.AccessEvent` goes through one ``match``
that names each event type, so a new event cannot be dropped without mypy
saying so (``assert_never``). Registrations and presence update the
directory at once and queue their writes; catalogs go through the node's
:class:`~gateway.registry.catalogs.CatalogApplier`; answers to queries reach
the :class:`~gateway.query_broker.QueryBroker`; alarms the
:class:`~gateway.alarms.receiver.AlarmReceiver`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import assert_never

from prometheus_client import Counter, Metric
from prometheus_client.registry import Collector

from gateway.alarms.receiver import AlarmReceiver
from gateway.command_broker import CommandBroker
from gateway.gb28181.access_events import (
    AccessEvent,
    AlarmNotified,
    CatalogNotified,
    CatalogReceived,
    CommandDelivered,
    DeviceInfoReceived,
    DeviceOffline,
    DeviceOnline,
    DeviceRegistered,
    DeviceRehomed,
    DeviceStatusReceived,
    DeviceUnregistered,
    ManscdpReceived,
    MessageRefused,
    QueryFailed,
    RegistrationRefused,
)
from gateway.gb28181.ids import GbId
from gateway.logsafe import printable
from gateway.query_broker import QueryBroker
from gateway.registry.catalogs import CatalogApplier, CatalogUpdate
from gateway.registry.directory import ChannelChange, Directory
from gateway.registry.model import Device, EntityKind, StatusEvent
from gateway.registry.placement import place_device
from gateway.registry.writer import RegistryWriter

__all__ = ["AccessEventHandler"]

log = logging.getLogger("kgw.gateway")
REFUSED_ALARM_LOG_EVERY = 60.0  # s between WARNING lines about one sender's refused alarms


class AccessEventHandler(Collector):
    """Applies device access's events; reports registrations, catalogs, queries and refusals as metrics."""

    def __init__(
        self,
        directory: Directory,
        writer: RegistryWriter,
        catalogs: CatalogApplier,
        queries: QueryBroker,
        alarms: AlarmReceiver,
        *,
        commands: CommandBroker | None = None,
        wall: Callable[[float], float],
        provisioned_kindergarten: Callable[[str], str | None] = lambda device_id: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.writer = writer
        self.catalogs = catalogs
        self.queries = queries
        self.commands = commands
        self.alarms = alarms
        self.wall = wall
        self.provisioned_kindergarten = provisioned_kindergarten
        self.clock = clock
        self._refused_alarm_logged: dict[str, float] = {}  # sender -> when its refused alarm was logged
        self.registrations = Counter("kgw_registrations", "REGISTER outcomes by result", ["result"], registry=None)
        self.catalogs_received = Counter("kgw_catalogs", "Catalogs received by completeness", ["result"], registry=None)
        self.query_failures = Counter(
            "kgw_query_failures", "Queries to devices that failed, by CmdType", ["cmd"], registry=None
        )
        self.messages_refused = Counter(
            "kgw_messages_refused", "MESSAGEs answered with an error, by status", ["status"], registry=None
        )
        self.refusal_reasons = Counter(
            "kgw_messages_refused_by_reason",
            "MESSAGE/NOTIFY refusals by reason (address_mismatch: not from the registered address)",
            ["reason"],
            registry=None,
        )
        self.rehomed = Counter(
            "kgw_devices_rehomed",
            "Live devices whose session an authenticated REGISTER moved to another address",
            registry=None,
        )
        self.untrusted_alarms = Counter(
            "kgw_alarms_untrusted",
            "Alarms kept but not trusted (not from the registered session at its address), by reason",
            ["reason"],
            registry=None,
        )
        self.alarms_refused = Counter(
            "kgw_alarms_refused", "Alarm notifications refused, by reason (unknown_device)", ["reason"], registry=None
        )
        self.ignored = Counter(
            "kgw_manscdp_ignored", "MANSCDP messages from devices that kgw does not act on, by type", ["type"],
            registry=None,
        )  # fmt: skip

    def handle(self, event: AccessEvent) -> None:
        """Apply one event."""
        match event:
            case DeviceRegistered():
                self._registered(event)
                self.alarms.registered(event)  # releases alarms held from this address
            case DeviceRehomed():
                self._rehomed(event)
            case DeviceOnline() | DeviceOffline():
                self._presence(event.device_id, isinstance(event, DeviceOnline), event.at, event.reason)
            case DeviceUnregistered():
                log.info("device %s unregistered", event.device_id)
                self.registrations.labels(result="unregistered").inc()
            case RegistrationRefused():
                self._refused(event)
            case CatalogReceived():
                self._catalog(event)
            case CatalogNotified():
                self._catalog_notify(event)
            case DeviceInfoReceived():
                self.queries.resolve(event.device_id, "DeviceInfo", event.info.sn, event.info)
                self._device_info(event)
            case DeviceStatusReceived():
                self.queries.resolve(event.device_id, "DeviceStatus", event.status.sn, event.status)
            case QueryFailed():
                log.info("query %s to %s failed: %s", event.cmd_type, event.device_id, event.reason)
                self.query_failures.labels(cmd=event.cmd_type).inc()
                self.queries.resolve(event.device_id, event.cmd_type, event.sn, None)
                if self.commands is not None:
                    self.commands.fail(event.device_id, event.cmd_type, event.sn, event.reason)
            case AlarmNotified():
                if event.untrusted_reason:
                    self.untrusted_alarms.labels(reason=event.untrusted_reason).inc()
                    log.warning(
                        "UNTRUSTED ALARM from %s at %s (%s): kept as unverified, answered 404 so the device re-registers",
                        printable(event.device_id),
                        event.peer,
                        event.untrusted_reason,
                    )
                self.alarms.receive(event)
            case MessageRefused():
                self._message_refused(event)
            case CommandDelivered():
                if self.commands is not None:
                    self.commands.delivered(event.device_id, event.cmd_type, event.sn)
            case ManscdpReceived() if self.commands is not None and self.commands.deliver(
                event.device_id, event.message
            ):
                pass  # an answer someone awaits (DeviceControl, RecordInfo, …) or a service's notify
            case ManscdpReceived():
                # Devices' notifications kgw does not use (MobilePosition, …): answered 200.
                kind = type(event.message).__name__
                self.ignored.labels(type=kind).inc()
                log.debug("%s from %s answered and not used", kind, event.device_id)
            case _:
                assert_never(event)

    def collect(self) -> Iterator[Metric]:
        """The counters of what device access reported."""
        for counter in (
            self.registrations,
            self.catalogs_received,
            self.query_failures,
            self.messages_refused,
            self.refusal_reasons,
            self.rehomed,
            self.untrusted_alarms,
            self.alarms_refused,
            self.ignored,
        ):
            yield from counter.collect()

    # --- registration and presence ---------------------------------------------------------

    def _registered(self, event: DeviceRegistered) -> None:
        self.registrations.labels(result="ok" if event.first else "refresh").inc()
        directory = self.directory
        known = directory.device(event.device_id)
        gb = GbId.parse(event.device_id)
        row = known or Device(id=event.device_id, kindergarten_id=None, district_code=gb.civil_code)
        placed = place_device(event.device_id, self.provisioned_kindergarten(event.device_id), directory.kindergartens)
        row = replace(
            row,
            kindergarten_id=placed or row.kindergarten_id,
            device_type=gb.type_code,
            transport=event.peer.transport.value,
            host=event.peer.host,
            port=event.peer.port,
            registered_at=self.wall(event.at),
            expires=event.expires,
            user_agent=event.user_agent[:120],
        )
        directory.put_device(row)
        self.writer.device(row)
        if event.first:
            kg = directory.kindergartens.get(row.kindergarten_id or "")
            where = kg.name if kg else "unplaced"
            log.info(
                "device %s (%s) registered from %s (expires %d)", event.device_id, where, event.peer, event.expires
            )

    def _rehomed(self, event: DeviceRehomed) -> None:
        """A live device moved: with the shared password anyone could do it (H1), so it is loud and kept."""
        self.rehomed.inc()
        log.warning(
            "device %s re-homed by an authenticated REGISTER: %s -> %s", event.device_id, event.old_peer, event.new_peer
        )
        if self.directory.devices.get(event.device_id) is None:
            return
        reason = f"rehomed {event.old_peer} -> {event.new_peer}"
        self.writer.presence.add_event(
            StatusEvent(event.device_id, EntityKind.DEVICE, True, self.wall(event.at), reason)
        )

    def _presence(self, device_id: str, online: bool, at: float, reason: str) -> None:
        entry = self.directory.devices.get(device_id)
        if entry is None:
            return
        wall = self.wall(at)
        before = {c.id: self.directory.view(c) for c in self.directory.channels_of_device(device_id)}
        entry.row = replace(entry.row, online=online, last_seen=wall)
        presence = self.writer.presence
        presence.mark_device(device_id, online, wall)
        presence.add_event(StatusEvent(device_id, EntityKind.DEVICE, online, wall, reason))
        for channel_id, reported in entry.reported.items():
            presence.mark_channel(channel_id, online and reported is not False)
        log.info("device %s %s (%s)", device_id, "online" if online else "OFFLINE", reason)
        after = {c.id: self.directory.view(c) for c in self.directory.channels_of_device(device_id)}
        self.directory.publish(ChannelChange(before, after, at))  # upper platforms see its channels go ON/OFF

    def _refused(self, event: RegistrationRefused) -> None:
        self.registrations.labels(result=event.reason).inc()
        if event.status in (401, 302):
            return  # a challenge is the normal first step; a redirect (gateway/cluster.py) the city's routing
        if event.newly_blocked:
            log.warning(
                "device %s from %s: repeated wrong passwords, REGISTER blocked for a while",
                printable(event.device_id),
                event.peer.host,
            )
        elif event.reason != "throttled":
            log.info(
                "REGISTER of %s from %s refused %d (%s)",
                printable(event.device_id),
                event.peer,
                event.status,
                event.reason,
            )

    def _device_info(self, event: DeviceInfoReceived) -> None:
        entry = self.directory.devices.get(event.device_id)
        if entry is None:
            return
        info = event.info
        entry.row = replace(
            entry.row,
            name=(info.device_name or entry.row.name)[:120],
            manufacturer=(info.manufacturer or "")[:80],
            model=(info.model or "")[:80],
            firmware=(info.firmware or "")[:80],
        )
        self.writer.device(entry.row)

    # --- catalogs --------------------------------------------------------------------------------

    def _catalog(self, event: CatalogReceived) -> None:
        wall = self.wall(event.at)
        update = self.catalogs.apply_catalog(self.directory, event.device_id, event.items, event.partial, wall)
        if update is None:
            return
        self._write(update, event.at)
        self.catalogs_received.labels(result="partial" if event.partial else "complete").inc()
        log.info(
            "catalog of %s: %d channels%s", event.device_id, len(update.stored), " (partial)" if event.partial else ""
        )

    def _catalog_notify(self, event: CatalogNotified) -> None:
        update = self.catalogs.apply_notify(self.directory, event.device_id, event.items, self.wall(event.at))
        if update is None:
            log.info("catalog NOTIFY from %s not applied (%d items)", event.device_id, len(event.items))
            return
        if update.stored or update.deleted or update.kindergartens:
            self._write(update, event.at)
            log.info(
                "catalog NOTIFY from %s: %d changed, %d removed",
                event.device_id,
                len(update.stored),
                len(update.deleted),
            )

    def _write(self, update: CatalogUpdate, at: float) -> None:
        writer = self.writer
        if update.kindergartens:
            writer.kindergartens(update.kindergartens)
        row = self.directory.device(update.device_id)
        if row is not None:
            writer.device(row)  # its channel count
        if update.stored or update.replace:
            writer.catalog(update.device_id, update.stored, replace=update.replace)
        if update.deleted:
            writer.delete_channels(update.deleted)
        self.directory.publish(ChannelChange(update.before, update.after, at))

    # --- refusals ----------------------------------------------------------------------------------

    def _message_refused(self, event: MessageRefused) -> None:
        self.messages_refused.labels(status=str(event.status)).inc()
        self.refusal_reasons.labels(reason=event.reason).inc()
        if event.reason == "alarm_from_unknown_device":
            self.alarms_refused.labels(reason="unknown_device").inc()
            self._log_refused_alarm(event)
        log.debug(
            "MESSAGE from %s (%s) refused %d: %s", printable(event.device_id), event.peer, event.status, event.reason
        )

    def _log_refused_alarm(self, event: MessageRefused) -> None:
        """A loud line per sender and minute (a flood of forged alarms must not flood the log)."""
        now = self.clock()
        key = event.device_id or event.peer.host
        if now - self._refused_alarm_logged.get(key, float("-inf")) < REFUSED_ALARM_LOG_EVERY:
            return
        if len(self._refused_alarm_logged) > 10_000:
            self._refused_alarm_logged.clear()
        self._refused_alarm_logged[key] = now
        log.warning(
            "ALARM REFUSED (404): %s at %s is not a device this gateway knows; it must register",
            printable(event.device_id),
            event.peer,
        )
