"""MANSCDP commands as frozen dataclasses (:mod:`.xmlmap` parses and serialises them).

GB/T 28181-2016 Annex A defines the bodies carried in SIP MESSAGE (and NOTIFY): a root
of ``Query``/``Control``/``Notify``/``Response`` whose first children are ``CmdType``,
``SN`` and ``DeviceID`` (docs/gb28181.md §5.1). We model the commands the gateway acts on
(Keepalive, Catalog, DeviceInfo, DeviceStatus) and hand everything else back as
:class:`UnknownCommand` so the caller can answer 200 and ignore it.

Reading is lenient where devices differ and strict where we would otherwise act on a
wrong value: a missing or non-numeric ``SN``/``CmdType`` is an error, a malformed
optional field of a catalog item (``Longitude="abc"``) becomes ``None`` rather than
losing the other channels of the chunk. Child tags match exactly first and then
case-insensitively (WVP relays ``<info>``); text values are whitespace-trimmed and an
empty element counts as absent, as WVP's ``getTextTrim`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Final, TypeAlias
from xml.etree.ElementTree import Element

from gateway.errors import ManscdpError

__all__ = [
    "AlarmDuty",
    "AlarmNotify",
    "DRILL_MARK",
    "CatalogItem",
    "CatalogQuery",
    "CatalogResponse",
    "CmdType",
    "DeviceInfoQuery",
    "DeviceInfoResponse",
    "DeviceStatusQuery",
    "DeviceStatusResponse",
    "InvalidField",
    "Keepalive",
    "ManscdpMessage",
    "ResultResponse",
    "Root",
    "UnknownCommand",
    "UnsupportedRoot",
]


class Root(StrEnum):
    """The four MANSCDP root elements (GB/T 28181-2016 Annex A)."""

    QUERY = "Query"
    CONTROL = "Control"
    NOTIFY = "Notify"
    RESPONSE = "Response"


class CmdType(StrEnum):
    """``CmdType`` values this module models; others parse as :class:`UnknownCommand`."""

    KEEPALIVE = "Keepalive"
    CATALOG = "Catalog"
    DEVICE_INFO = "DeviceInfo"
    DEVICE_STATUS = "DeviceStatus"
    ALARM = "Alarm"


class UnsupportedRoot(ManscdpError):
    """The document root is not Query/Control/Notify/Response: not MANSCDP at all."""

    status_hint = 415

    def __init__(self, root: str) -> None:
        super().__init__(f"unsupported MANSCDP root {root[:40]!r}")
        self.root = root


class InvalidField(ManscdpError):
    """A mandatory header field (CmdType, SN, DeviceID, SumNum) is missing or malformed."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


# Status spellings seen in the field (docs/gb28181.md §19 item 12).
_ONLINE_WORDS: Final = frozenset({"ON", "ONLINE", "OK"})
_OFFLINE_WORDS: Final = frozenset({"OFF", "OFFLINE"})
# SN is an integer chosen by the requester; camsim uses 13-digit millisecond stamps.


def _status_to_bool(value: str | None) -> bool | None:
    word = (value or "").strip().upper()
    return True if word in _ONLINE_WORDS else False if word in _OFFLINE_WORDS else None


# --- messages -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keepalive:
    """Device heartbeat, ``Notify/Keepalive`` (docs/gb28181.md §4).

    ``info_device_ids`` lists faulty sub-devices reported inside ``<Info>``.
    """

    root: ClassVar[Root] = Root.NOTIFY
    cmd_type: ClassVar[str] = CmdType.KEEPALIVE

    sn: int
    device_id: str
    status: str | None = "OK"
    info_device_ids: tuple[str, ...] = ()

    @property
    def online(self) -> bool:
        """True for OK/ON/ONLINE in any case; panjjo treats anything else as offline."""
        return _status_to_bool(self.status) is True


@dataclass(frozen=True, slots=True)
class CatalogQuery:
    """``Query/Catalog``; the optional window asks for changes only (docs/gb28181.md §6.1)."""

    root: ClassVar[Root] = Root.QUERY
    cmd_type: ClassVar[str] = CmdType.CATALOG

    sn: int
    device_id: str
    start_time: str | None = None
    end_time: str | None = None


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One ``DeviceList/Item`` (docs/gb28181.md §6.3). Only ``device_id`` is mandatory."""

    device_id: str
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    civil_code: str | None = None
    block: str | None = None
    address: str | None = None
    parental: int | None = None
    parent_id: str | None = None
    safety_way: int | None = None
    register_way: int | None = None
    secrecy: int | None = None
    status: str | None = None
    ip_address: str | None = None
    port: int | None = None
    longitude: float | None = None
    latitude: float | None = None
    ptz_type: int | None = None
    room_type: int | None = None
    business_group_id: str | None = None
    event: str | None = None

    @property
    def online(self) -> bool | None:
        """ON/On/ONLINE/OK → True, OFF/Off/OFFLINE → False, other or absent → None."""
        return _status_to_bool(self.status)


@dataclass(frozen=True, slots=True)
class CatalogResponse:
    """One chunk of a catalog: ``Response/Catalog``, or ``Notify/Catalog`` from a subscription.

    ``sum_num`` is the total over all chunks of the same SN (docs/gb28181.md §6.2).
    """

    cmd_type: ClassVar[str] = CmdType.CATALOG

    sn: int
    device_id: str
    sum_num: int
    items: tuple[CatalogItem, ...] = ()
    root: Root = Root.RESPONSE


@dataclass(frozen=True, slots=True)
class DeviceInfoQuery:
    """``Query/DeviceInfo`` (docs/gb28181.md §7)."""

    root: ClassVar[Root] = Root.QUERY
    cmd_type: ClassVar[str] = CmdType.DEVICE_INFO

    sn: int
    device_id: str


@dataclass(frozen=True, slots=True)
class DeviceInfoResponse:
    """``Response/DeviceInfo``; ``channel`` is the number of channels (docs/gb28181.md §7)."""

    root: ClassVar[Root] = Root.RESPONSE
    cmd_type: ClassVar[str] = CmdType.DEVICE_INFO

    sn: int
    device_id: str
    device_name: str | None = None
    result: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    channel: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceStatusQuery:
    """``Query/DeviceStatus`` (docs/gb28181.md §8)."""

    root: ClassVar[Root] = Root.QUERY
    cmd_type: ClassVar[str] = CmdType.DEVICE_STATUS

    sn: int
    device_id: str


@dataclass(frozen=True, slots=True)
class AlarmDuty:
    """One ``Alarmstatus/Item``: ONDUTY (armed), OFFDUTY (disarmed) or ALARM."""

    device_id: str
    duty_status: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceStatusResponse:
    """``Response/DeviceStatus`` (docs/gb28181.md §8). Values are kept as sent; see the properties."""

    root: ClassVar[Root] = Root.RESPONSE
    cmd_type: ClassVar[str] = CmdType.DEVICE_STATUS

    sn: int
    device_id: str
    result: str | None = None
    online: str | None = None
    status: str | None = None
    encode: str | None = None
    record: str | None = None
    device_time: str | None = None
    reason: str | None = None
    alarm_status: tuple[AlarmDuty, ...] = ()

    @property
    def is_online(self) -> bool | None:
        """``Online`` as a bool (ONLINE → True, OFFLINE → False, else None)."""
        return _status_to_bool(self.online)


@dataclass(frozen=True, slots=True)
class AlarmNotify:
    """``Notify/Alarm``: a device reports an alarm (docs/gb28181.md §9.1).

    The coded fields stay text as received: an alarm with a broken priority is
    still an alarm, so the parser keeps it and the alarm intake judges each
    field (and records what was wrong). ``AlarmType``/``EventType`` are read from
    ``Info`` (any case, as WVP relays ``<info>``) or from the top level, and
    ``AlarmMethod`` from the top level or ``Info`` (owl). ``device_id`` is empty
    when the body has none; the sender's SIP ID stands in for it then.

    ``drill``: the alarm is marked as a drill (docs/gb28181.md §9.3): the standard has
    no such field, so kgw writes ``Info/Drill`` = 1 and starts ``AlarmDescription``
    with :data:`DRILL_MARK`; either one read back sets it. It is a claim: only a
    verified lower platform's counts (``gateway.alarms.drills.relayed_drill``).
    """

    root: ClassVar[Root] = Root.NOTIFY
    cmd_type: ClassVar[str] = CmdType.ALARM

    sn: int
    device_id: str
    priority: str | None = None
    method: str | None = None
    alarm_time: str | None = None
    description: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    alarm_type: str | None = None
    event_type: str | None = None
    drill: bool = False


DRILL_MARK: Final = "【演练】"  # AlarmDescription prefix of a drill alarm (docs/gb28181.md §9.3)


@dataclass(frozen=True, slots=True)
class ResultResponse:
    """A ``Response`` that carries only a ``Result`` we need (DeviceControl, Alarm ack, ...).

    Also what we send to answer a command we do not support (``Result=ERROR``).
    ``element`` keeps the parsed document for callers that need more of it.
    """

    root: ClassVar[Root] = Root.RESPONSE

    cmd_type: str
    sn: int
    device_id: str
    result: str = "OK"
    element: Element | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """True when ``Result`` is OK (case-insensitive)."""
        return self.result.strip().upper() == "OK"


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    """Any other valid MANSCDP command; answer it 200 and ignore it, or inspect ``element``.

    ``device_id`` is empty for commands without one (e.g. ``Notify/Broadcast``).
    """

    root: Root
    cmd_type: str
    sn: int
    device_id: str
    element: Element = field(compare=False, repr=False)


ManscdpMessage: TypeAlias = (
    Keepalive
    | CatalogQuery
    | CatalogResponse
    | DeviceInfoQuery
    | DeviceInfoResponse
    | DeviceStatusQuery
    | DeviceStatusResponse
    | AlarmNotify
    | ResultResponse
    | UnknownCommand
)
