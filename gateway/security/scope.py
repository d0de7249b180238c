"""Who may do what, to which object: the permission table and the pure predicates that read it.

:data:`PERMISSIONS` is the one place where the five roles' rights are decided
(README, "Users, roles and scope", is generated from it and a test checks the
two agree). Each cell says how far a role reaches for one :class:`Capability`:

* :attr:`Reach.NONE` — never (the route answers 403);
* :attr:`Reach.ALL` — everything; a district on a 公安 or 运维 account narrows it
  to that district (a 市级管理员 is never narrowed);
* :attr:`Reach.DISTRICT` — objects of the principal's own district only;
* :attr:`Reach.KINDERGARTEN` — objects of the principal's own kindergarten only;
* :attr:`Reach.SHAREABLE` — what the police sharing policy allows
  (:meth:`SharePolicy.allows_channel` / :meth:`SharePolicy.allows_alarm`, the
  same rule the police platform's catalog follows), narrowed like ``ALL``.

A principal whose role needs a district (区级值班员) or a kindergarten (园方)
but has none reaches nothing: a half-configured account fails closed.

Pure and deterministic: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from gateway.alarms.model import Alarm
from gateway.cascade.policy import SharePolicy
from gateway.registry.model import Channel, Device, Kindergarten
from gateway.security.principal import Principal, Role

__all__ = [
    "PERMISSIONS",
    "Capability",
    "Narrowing",
    "Reach",
    "allows",
    "may_see_alarm",
    "may_see_channel",
    "may_see_device",
    "may_see_district",
    "may_see_kindergarten",
    "narrowing",
    "permission_table_markdown",
    "reach",
]


class Capability(StrEnum):
    """One thing a route lets a caller do (stable strings: audit records name them)."""

    DEVICE_READ = "device_read"  # device list and details, a device's channels, online/offline history
    CHANNEL_READ = "channel_read"  # channel list (names, areas, state)
    KINDERGARTEN_READ = "kindergarten_read"  # kindergarten list (name, address, position)
    DISTRICT_READ = "district_read"  # per-district counts
    DEVICE_QUERY = "device_query"  # DeviceInfo / DeviceStatus / Catalog sent to a device
    PROVISION = "provision"  # kindergartens, devices, passwords
    AREA_CONFIRM = "area_confirm"  # an operator confirms a camera's area (what police may see)
    LIVE_VIEW = "live_view"  # live streams, WebRTC, channel snapshots
    LIVE_CLOSE = "live_close"  # end a live upstream for every viewer
    ALARM_READ = "alarm_read"  # alarm list, details, the live alarm feed
    ALARM_SNAPSHOT = "alarm_snapshot"  # the entrance picture taken when an alarm came in
    ALARM_ACK = "alarm_ack"
    ALARM_RESOLVE = "alarm_resolve"
    ALARM_VERIFY = "alarm_verify"  # confirm an unverified (未验证) alarm
    DELIVERY_READ = "delivery_read"  # the outbox, dead letters, sink health
    DELIVERY_RETRY = "delivery_retry"
    SYSTEM_STATUS = "system_status"  # upper-platform links, /metrics
    AUDIT_READ = "audit_read"
    USER_ADMIN = "user_admin"  # users, roles, API tokens
    PTZ_CONTROL = "ptz_control"  # pan/tilt/zoom, focus, iris, presets of a PTZ camera
    DEVICE_CONTROL = "device_control"  # TeleBoot, RecordCmd, GuardCmd/AlarmCmd, HomePosition, DragZoom
    RECORD_READ = "record_read"  # a camera's recordings (RecordInfo) and their timeline
    PLAYBACK = "playback"  # play back a camera's recordings
    DOWNLOAD = "download"  # download a recording as an MP4 file
    BROADCAST = "broadcast"  # speak to a kindergarten (voice broadcast, 喊话)

    @property
    def label(self) -> str:
        """What the README's table calls it (zh-CN first, then English)."""
        return _CAPABILITY_LABELS[self]


class Reach(StrEnum):
    """How far one role reaches for one capability."""

    NONE = "none"
    ALL = "all"
    DISTRICT = "district"
    KINDERGARTEN = "kindergarten"
    SHAREABLE = "shareable"

    @property
    def label(self) -> str:
        """The README's cell text."""
        return _REACH_LABELS[self]


_CAPABILITY_LABELS: Final = {
    Capability.DEVICE_READ: "设备列表、详情、状态历史 devices, device details, status history",
    Capability.CHANNEL_READ: "通道列表 channel list",
    Capability.KINDERGARTEN_READ: "幼儿园列表 kindergarten list",
    Capability.DISTRICT_READ: "各区统计 district counts",
    Capability.DEVICE_QUERY: "设备查询 device queries",
    Capability.PROVISION: "开通配置 provisioning",
    Capability.AREA_CONFIRM: "确认区域 confirm a camera's area",
    Capability.LIVE_VIEW: "实时视频、WebRTC、截图 live view, WebRTC, snapshots",
    Capability.LIVE_CLOSE: "关闭实时流 close a live stream",
    Capability.ALARM_READ: "报警列表、详情、实时推送 alarms: list, details, live feed",
    Capability.ALARM_SNAPSHOT: "报警截图 alarm snapshot",
    Capability.ALARM_ACK: "报警确认 acknowledge an alarm",
    Capability.ALARM_RESOLVE: "报警处置完成 resolve an alarm",
    Capability.ALARM_VERIFY: "报警核实(未验证) verify an unverified alarm",
    Capability.DELIVERY_READ: "推送队列、接收端状态 deliveries, sinks",
    Capability.DELIVERY_RETRY: "推送重试 retry a delivery",
    Capability.SYSTEM_STATUS: "上级平台、监控指标 upper platforms, metrics",
    Capability.AUDIT_READ: "审计记录 audit trail",
    Capability.USER_ADMIN: "用户与令牌 users and API tokens",
    Capability.PTZ_CONTROL: "云台控制 PTZ control",
    Capability.DEVICE_CONTROL: "设备控制(重启、录像、布撤防) device control",
    Capability.RECORD_READ: "录像检索 recording search",
    Capability.PLAYBACK: "录像回放 playback",
    Capability.DOWNLOAD: "录像下载 recording download",
    Capability.BROADCAST: "语音喊话 voice broadcast",
}

_REACH_LABELS: Final = {
    Reach.NONE: "—",
    Reach.ALL: "全部 all",
    Reach.DISTRICT: "本区 own district",
    Reach.KINDERGARTEN: "本园 own kindergarten",
    Reach.SHAREABLE: "公安可见 police-shareable",
}

_ROLES: Final = (Role.CITY_ADMIN, Role.DISTRICT_DUTY, Role.POLICE, Role.KINDERGARTEN, Role.MAINTENANCE)


def _row(admin: Reach, duty: Reach, police: Reach, kindergarten: Reach, maintenance: Reach) -> dict[Role, Reach]:
    return dict(zip(_ROLES, (admin, duty, police, kindergarten, maintenance), strict=True))


_N, _A, _D, _K, _S = Reach.NONE, Reach.ALL, Reach.DISTRICT, Reach.KINDERGARTEN, Reach.SHAREABLE

#: The permission table: capability -> role -> reach. Columns: 市级管理员, 区级值班员, 公安, 园方, 运维.
#:
#: Decisions worth knowing: 公安 is read-only on alarms (acknowledging would take an
#: alarm off the district's unacknowledged list and stop its escalation, which is the
#: district duty officer's call); 区级值班员 provisions nothing (kindergarten addresses
#: go to police with every alarm, so only the city and its installers change them);
#: 运维 watches only what the police policy would share (entrance and perimeter
#: cameras), never an indoor camera; 园方 sees its own alarms and no video at all.
#: 公安 looks back at and downloads what it may watch live, but steers no camera and
#: speaks to no kindergarten: moving a camera or talking to a site is the district's job.
PERMISSIONS: Final[Mapping[Capability, Mapping[Role, Reach]]] = {
    Capability.DEVICE_READ: _row(_A, _D, _N, _N, _A),
    Capability.CHANNEL_READ: _row(_A, _D, _S, _N, _A),
    Capability.KINDERGARTEN_READ: _row(_A, _D, _A, _K, _A),
    Capability.DISTRICT_READ: _row(_A, _D, _S, _N, _A),
    Capability.DEVICE_QUERY: _row(_A, _D, _N, _N, _A),
    Capability.PROVISION: _row(_A, _N, _N, _N, _A),
    Capability.AREA_CONFIRM: _row(_A, _D, _N, _N, _N),
    Capability.LIVE_VIEW: _row(_A, _D, _S, _N, _S),
    Capability.LIVE_CLOSE: _row(_A, _D, _N, _N, _S),
    Capability.ALARM_READ: _row(_A, _D, _S, _K, _A),
    Capability.ALARM_SNAPSHOT: _row(_A, _D, _S, _N, _S),
    Capability.ALARM_ACK: _row(_A, _D, _N, _N, _N),
    Capability.ALARM_RESOLVE: _row(_A, _D, _N, _N, _N),
    Capability.ALARM_VERIFY: _row(_A, _D, _N, _N, _N),
    Capability.DELIVERY_READ: _row(_A, _N, _N, _N, _A),
    Capability.DELIVERY_RETRY: _row(_A, _N, _N, _N, _A),
    Capability.SYSTEM_STATUS: _row(_A, _N, _N, _N, _A),
    Capability.AUDIT_READ: _row(_A, _N, _N, _N, _N),
    Capability.USER_ADMIN: _row(_A, _N, _N, _N, _N),
    Capability.PTZ_CONTROL: _row(_A, _D, _N, _N, _S),
    Capability.DEVICE_CONTROL: _row(_A, _D, _N, _N, _A),
    Capability.RECORD_READ: _row(_A, _D, _S, _N, _S),
    Capability.PLAYBACK: _row(_A, _D, _S, _N, _S),
    Capability.DOWNLOAD: _row(_A, _D, _S, _N, _N),
    Capability.BROADCAST: _row(_A, _D, _N, _N, _N),
}

_POLICE: Final = SharePolicy.police()


def reach(principal: Principal, capability: Capability) -> Reach:
    """The table's cell for this principal's role (NONE for an unknown role or capability)."""
    return PERMISSIONS.get(capability, {}).get(principal.role, Reach.NONE)


def allows(principal: Principal, capability: Capability) -> bool:
    """True when the role may use the capability at all (on some object)."""
    return reach(principal, capability) is not Reach.NONE


@dataclass(frozen=True, slots=True)
class Narrowing:
    """What a list query must be restricted to (None: no restriction from scope).

    ``post_filter`` is True when the scope cannot be expressed as a district or
    kindergarten filter (police-shareable): the caller must test every row.
    """

    district_code: str | None = None
    kindergarten_id: str | None = None
    post_filter: bool = False

    def applied(self, district_code: str | None, kindergarten_id: str | None) -> tuple[str | None, str | None] | None:
        """A query's district and kindergarten filters within this scope; None when nothing can match."""
        district, district_ok = _combine(district_code, self.district_code)
        kindergarten, kindergarten_ok = _combine(kindergarten_id, self.kindergarten_id)
        return (district, kindergarten) if district_ok and kindergarten_ok else None


def _combine(asked: str | None, forced: str | None) -> tuple[str | None, bool]:
    if forced is None or asked is None or asked == forced:
        return forced or asked, True
    return None, False


def _narrowed_district(principal: Principal) -> str | None:
    """The district an ALL/SHAREABLE reach is narrowed to (never for the city's administrator)."""
    return None if principal.role is Role.CITY_ADMIN else principal.district_code


def narrowing(principal: Principal, capability: Capability) -> Narrowing | None:
    """The filter a list must apply for this principal, or None when nothing at all is visible."""
    cell = reach(principal, capability)
    if cell is Reach.NONE:
        return None
    if cell is Reach.DISTRICT:
        return Narrowing(district_code=principal.district_code) if principal.district_code else None
    if cell is Reach.KINDERGARTEN:
        return Narrowing(kindergarten_id=principal.kindergarten_id) if principal.kindergarten_id else None
    return Narrowing(district_code=_narrowed_district(principal), post_filter=cell is Reach.SHAREABLE)


def _place(principal: Principal, cell: Reach, district_code: str, kindergarten_id: str | None) -> bool:
    """The place part of a reach: district, kindergarten, or the (possibly narrowed) city."""
    if cell is Reach.NONE:
        return False
    if cell is Reach.DISTRICT:
        return principal.district_code is not None and district_code == principal.district_code
    if cell is Reach.KINDERGARTEN:
        return principal.kindergarten_id is not None and kindergarten_id == principal.kindergarten_id
    narrowed = _narrowed_district(principal)
    return narrowed is None or district_code == narrowed


def may_see_channel(principal: Principal, channel: Channel, capability: Capability = Capability.CHANNEL_READ) -> bool:
    """True when the principal may use ``capability`` on this channel (list it, watch it, …)."""
    cell = reach(principal, capability)
    if not _place(principal, cell, channel.district_code, channel.kindergarten_id):
        return False
    return cell is not Reach.SHAREABLE or _POLICE.allows_channel(channel)


def may_see_device(principal: Principal, device: Device, capability: Capability = Capability.DEVICE_READ) -> bool:
    """True when the principal may use ``capability`` on this device (no police-shareable devices exist)."""
    cell = reach(principal, capability)
    return cell is not Reach.SHAREABLE and _place(principal, cell, device.district_code, device.kindergarten_id)


def may_see_kindergarten(
    principal: Principal, kindergarten: Kindergarten, capability: Capability = Capability.KINDERGARTEN_READ
) -> bool:
    """True when the principal may use ``capability`` on this kindergarten."""
    cell = reach(principal, capability)
    return cell is not Reach.SHAREABLE and _place(principal, cell, kindergarten.district_code, kindergarten.id)


def may_see_district(
    principal: Principal, district_code: str, capability: Capability = Capability.DISTRICT_READ
) -> bool:
    """True when the principal may see this district's figures (police: counted over shareable channels)."""
    cell = reach(principal, capability)
    return cell is not Reach.KINDERGARTEN and _place(principal, cell, district_code, None)


def may_see_alarm(
    principal: Principal,
    alarm: Alarm,
    source: Channel | None = None,
    capability: Capability = Capability.ALARM_READ,
) -> bool:
    """True when the principal may use ``capability`` on this alarm.

    ``source`` is the alarm's source channel when the directory knows it: the
    police policy refuses an alarm raised by a camera police may not see.
    """
    cell = reach(principal, capability)
    if not _place(principal, cell, alarm.district_code, alarm.kindergarten_id):
        return False
    return cell is not Reach.SHAREABLE or _POLICE.allows_alarm(alarm, source=source)


def permission_table_markdown() -> str:
    """The README's permission table (Markdown), generated from :data:`PERMISSIONS`."""
    header = "| 能力 Capability | " + " | ".join(f"{role.label_zh} {role.name}" for role in _ROLES) + " |"
    rule = "|---|" + "---|" * len(_ROLES)
    rows = [
        f"| {capability.label} | " + " | ".join(PERMISSIONS[capability][role].label for role in _ROLES) + " |"
        for capability in Capability
    ]
    return "\n".join([header, rule, *rows])
