"""What device access reports (frozen, past tense): registrations, presence, catalogs, answers, alarms.

:class:`~gateway.gb28181.access.DeviceAccess` queues these; the gateway's
access-event handler applies them to the directory, the store, the query
broker and the alarm service.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.gb28181.manscdp import AlarmNotify, CatalogItem, DeviceInfoResponse, DeviceStatusResponse, ManscdpMessage
from gateway.gb28181.sip.message import SipRequest
from gateway.gb28181.sip.transport import Peer

__all__ = [
    "AccessEvent",
    "AlarmNotified",
    "CatalogNotified",
    "CommandDelivered",
    "CatalogReceived",
    "DeviceInfoReceived",
    "DeviceOffline",
    "DeviceOnline",
    "DeviceRegistered",
    "DeviceRehomed",
    "DeviceStatusReceived",
    "DeviceUnregistered",
    "ManscdpReceived",
    "MessageRefused",
    "QueryFailed",
    "RegistrationRefused",
]


@dataclass(frozen=True, slots=True)
class DeviceRegistered:
    """A device registered (``first`` is False for a refresh of a live registration)."""

    device_id: str
    peer: Peer
    expires: int
    user_agent: str
    first: bool
    at: float


@dataclass(frozen=True, slots=True)
class DeviceRehomed:
    """A live device's session moved to another address by an authenticated REGISTER (logged loudly)."""

    device_id: str
    old_peer: Peer
    new_peer: Peer
    at: float


@dataclass(frozen=True, slots=True)
class DeviceUnregistered:
    """A device sent Expires: 0."""

    device_id: str
    at: float


@dataclass(frozen=True, slots=True)
class DeviceOnline:
    """A device came online."""

    device_id: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    """A device went offline."""

    device_id: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class RegistrationRefused:
    """A REGISTER got 4xx (401 challenges included; ``status`` tells)."""

    device_id: str | None
    peer: Peer
    status: int
    reason: str
    newly_blocked: bool


@dataclass(frozen=True, slots=True)
class CatalogReceived:
    """A catalog finished assembling (``partial`` when chunks were missing)."""

    device_id: str
    items: tuple[CatalogItem, ...]
    sum_num: int
    partial: bool
    at: float


@dataclass(frozen=True, slots=True)
class DeviceInfoReceived:
    """A DeviceInfo answer (solicited or not)."""

    device_id: str
    info: DeviceInfoResponse
    at: float


@dataclass(frozen=True, slots=True)
class DeviceStatusReceived:
    """A DeviceStatus answer."""

    device_id: str
    status: DeviceStatusResponse
    at: float


@dataclass(frozen=True, slots=True)
class QueryFailed:
    """A query got an error status, no transport answer, or no Response in time."""

    device_id: str
    cmd_type: str
    sn: int
    reason: str


@dataclass(frozen=True, slots=True)
class CommandDelivered:
    """A command MESSAGE of ``send_command`` was answered 2xx: the device took it (its Result may follow)."""

    device_id: str
    cmd_type: str
    sn: int


@dataclass(frozen=True, slots=True)
class ManscdpReceived:
    """Any other MANSCDP MESSAGE from a registered device (alarms come here later)."""

    device_id: str
    message: ManscdpMessage
    peer: Peer
    at: float


@dataclass(frozen=True, slots=True)
class CatalogNotified:
    """A lower platform's catalog NOTIFY: items carrying ``Event`` ADD/DEL/UPDATE/ON/OFF (docs/gb28181.md §14.3)."""

    device_id: str
    items: tuple[CatalogItem, ...]
    at: float


@dataclass(frozen=True, slots=True)
class AlarmNotified:
    """An Alarm notification, NOT answered yet: call :meth:`DeviceAccess.confirm_alarm`.

    The device hears "received" (200 OK, then the standard's Response MESSAGE)
    only once the alarm is stored durably; until then its retransmissions are
    absorbed by the open transaction. ``registered`` is False for a device we
    know whose registration lapsed: its alarm is kept all the same.
    """

    device_id: str
    alarm: AlarmNotify
    peer: Peer
    transaction: str
    request: SipRequest
    charset: str
    registered: bool
    at: float
    #: Why the sender is not trusted (e.g. "address_mismatch", "not_registered"); "" when
    #: it is the registered session at its registered address.
    untrusted_reason: str = ""


@dataclass(frozen=True, slots=True)
class MessageRefused:
    """A MESSAGE was answered with an error status."""

    device_id: str | None
    peer: Peer
    status: int
    reason: str


AccessEvent = (
    DeviceRegistered
    | DeviceRehomed
    | DeviceUnregistered
    | DeviceOnline
    | DeviceOffline
    | RegistrationRefused
    | CatalogReceived
    | DeviceInfoReceived
    | DeviceStatusReceived
    | QueryFailed
    | CommandDelivered
    | ManscdpReceived
    | MessageRefused
    | AlarmNotified
    | CatalogNotified
)
