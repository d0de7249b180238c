"""Alarm values shared by intake, outbox, lifecycle, store, sinks and the API.

An :class:`Alarm` is one event a device reported (a button press, a tamper, an
intrusion), identified by a stable ``id`` that every sink carries so receivers
can deduplicate. A :class:`Delivery` is that alarm's journey to one sink
(``mqtt``, ``webhook``, ``gb``) for one :class:`DeliveryEvent`; a
:class:`Transition` is one line of the audit trail. Times are wall-clock
seconds since the epoch (floats with millisecond precision).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final

__all__ = [
    "AlarmFilter",
    "Alarm",
    "AlarmKind",
    "AlarmMethod",
    "AlarmState",
    "Delivery",
    "DeliveryEvent",
    "DeliveryKey",
    "DeliveryState",
    "MAX_ALARM_PAGE",
    "Transition",
    "TransitionAction",
    "describe_alarm",
]

MAX_ALARM_PAGE: Final = 1000


class AlarmMethod(IntEnum):
    """``AlarmMethod`` of a GB/T 28181 Alarm notification (docs/gb28181.md §9.1)."""

    TELEPHONE = 1  # one-button / telephone alarm: what our 一键报警 boxes send
    DEVICE = 2
    SMS = 3
    GPS = 4
    VIDEO = 5  # video analytics
    DEVICE_FAULT = 6
    OTHER = 7


class AlarmState(StrEnum):
    """Where an alarm is in its lifecycle (escalation is a flag beside it, not a state)."""

    NEW = "new"  # stored, not yet delivered to every sink
    DELIVERED = "delivered"  # every sink has it
    ACKNOWLEDGED = "acknowledged"  # a named user took it
    RESOLVED = "resolved"  # closed, with who and when


class DeliveryEvent(StrEnum):
    """What a delivery tells the sink."""

    ALARM = "alarm"  # the alarm itself (MQTT topic kgw/alarms/...)
    ESCALATED = "escalated"  # nobody acknowledged it in time (MQTT topic kgw/escalations/...)


class DeliveryState(StrEnum):
    """A delivery is pending until delivered; ``dead`` ones stay visible and are still retried."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class TransitionAction(StrEnum):
    """Audit-trail actions."""

    RECEIVED = "received"
    DUPLICATE = "duplicate"  # the same event notified again (not a new alarm)
    DELIVERED = "delivered"  # to one sink (detail names it)
    DELIVERY_FAILED = "delivery_failed"  # first failure of a delivery (later ones only count attempts)
    DEAD_LETTERED = "dead_lettered"
    ALL_DELIVERED = "all_delivered"  # state new -> delivered
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    HELD = "held"  # not verified: kept from every sink until the device or an operator verifies it
    VERIFIED = "verified"  # the device proved itself (actor "device") or an operator confirmed it
    REPEATED = "repeated"  # a rate-limited repeat collapsed into this alarm (counted in ``repeats``)
    # One upper platform answered 2xx (actor: the upper's name; detail: "<level> <event>"). The "gb"
    # sink has one delivery row for every upper; these lines make each upper's answer durable.
    UPPER_ACKNOWLEDGED = "upper_acknowledged"


@dataclass(frozen=True, slots=True)
class AlarmKind:
    """A human name for a (method, type) pair and a coarse category for metrics."""

    category: str  # emergency | device | analytics | fault | other
    name: str  # machine name, e.g. "emergency_button", "perimeter_intrusion"
    name_zh: str  # what the console shows


_DEVICE_TYPES: Final = {
    None: AlarmKind("emergency", "alarm_input", "报警输入(一键报警)"),
    1: AlarmKind("device", "video_loss", "视频丢失"),
    2: AlarmKind("device", "tamper", "设备防拆"),
    3: AlarmKind("device", "storage_full", "存储设备磁盘满"),
    4: AlarmKind("device", "over_temperature", "设备高温"),
    5: AlarmKind("device", "under_temperature", "设备低温"),
}
_VIDEO_TYPES: Final = {
    1: AlarmKind("analytics", "manual_video", "人工视频报警"),
    2: AlarmKind("analytics", "motion", "运动目标检测"),
    3: AlarmKind("analytics", "left_object", "遗留物检测"),
    4: AlarmKind("analytics", "object_removed", "物体移除检测"),
    5: AlarmKind("analytics", "tripwire", "绊线检测"),
    6: AlarmKind("analytics", "perimeter_intrusion", "入侵检测(周界)"),
    7: AlarmKind("analytics", "retrograde", "逆行检测"),
    8: AlarmKind("analytics", "loitering", "徘徊检测"),
    9: AlarmKind("analytics", "flow_counting", "流量统计"),
    10: AlarmKind("analytics", "density", "密度检测"),
    11: AlarmKind("analytics", "video_abnormal", "视频异常检测"),
    12: AlarmKind("analytics", "fast_movement", "快速移动"),
    13: AlarmKind("analytics", "occlusion", "图像遮挡"),
}
_FAULT_TYPES: Final = {
    1: AlarmKind("fault", "disk_fault", "存储设备磁盘故障"),
    2: AlarmKind("fault", "fan_fault", "存储设备风扇故障"),
}
_METHOD_KINDS: Final = {
    AlarmMethod.TELEPHONE: AlarmKind("emergency", "one_button", "一键报警(电话报警)"),
    AlarmMethod.SMS: AlarmKind("other", "sms", "短信报警"),
    AlarmMethod.GPS: AlarmKind("other", "gps", "GPS报警"),
    AlarmMethod.OTHER: AlarmKind("other", "other", "其他报警"),
}


def describe_alarm(method: int | None, alarm_type: int | None) -> AlarmKind:
    """The kind of alarm a (method, type) pair means (docs/gb28181.md §9.1 tables).

    A method-2 alarm without a type is an alarm input firing: how one-button
    boxes and perimeter detectors report (type 134 devices). Unknown pairs get
    a generic kind of their method's category rather than an error.
    """
    if method == AlarmMethod.DEVICE:
        return _DEVICE_TYPES.get(alarm_type, AlarmKind("device", f"device_{alarm_type}", "设备报警"))
    if method == AlarmMethod.VIDEO:
        return _VIDEO_TYPES.get(alarm_type or 0, AlarmKind("analytics", f"video_{alarm_type}", "视频报警"))
    if method == AlarmMethod.DEVICE_FAULT:
        return _FAULT_TYPES.get(alarm_type or 0, AlarmKind("fault", f"fault_{alarm_type}", "设备故障报警"))
    if method is not None and method in _METHOD_KINDS:
        return _METHOD_KINDS[AlarmMethod(method)]
    return AlarmKind("other", "unknown", "未知报警")


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm event as stored. ``problems`` lists what was wrong with the notification.

    ``device_id`` is the SIP device that sent it (From), ``source_id`` the
    ``DeviceID`` of the body (the alarm input or camera channel). ``alarm_time``
    is the device's own time as text when it was sane (the gateway's receipt
    time ``received_at`` is what ordering and latency use).
    """

    id: str
    seq: int  # insertion order, global; per-kindergarten order follows it
    dedupe_key: str
    device_id: str
    source_id: str
    kindergarten_id: str | None
    district_code: str
    priority: int | None
    method: int | None
    alarm_type: int | None
    event_type: int | None
    alarm_time: str | None
    description: str
    longitude: float | None
    latitude: float | None
    sn: int
    received_at: float
    state: AlarmState = AlarmState.NEW
    escalated_at: float | None = None
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    resolved_by: str | None = None
    resolved_at: float | None = None
    sender_registered: bool = True
    problems: tuple[str, ...] = ()
    peer: str = ""  # the transport address it came from, e.g. "udp:10.1.2.3:5060"
    verified: bool = True  # False: not from the registered session's address, held from every sink
    unverified_reason: str = ""  # why not verified when received ("address_mismatch", "not_registered")
    verified_by: str | None = None  # "device" (it registered from ``peer``) or the confirming user
    verified_at: float | None = None
    repeats: int = 0  # rate-limited notifications of the same kind collapsed into this alarm
    last_repeat_at: float | None = None
    node: str = "gateway"  # the gateway node that received it: it alone delivers it (several nodes, one database)
    drill: bool = False  # an acceptance drill (验收演练): delivered marked as a drill, never counted as real

    @property
    def kind(self) -> AlarmKind:
        """What kind of alarm this is."""
        return describe_alarm(self.method, self.alarm_type)

    @property
    def order_key(self) -> str:
        """Deliveries with the same order key reach a sink in ``seq`` order (per kindergarten)."""
        return self.kindergarten_id or f"device:{self.device_id}"

    @property
    def urgent(self) -> bool:
        """One-button (emergency) alarms overtake a kindergarten's queued other alarms."""
        return self.kind.category == "emergency"


DeliveryKey = tuple[str, str, str]  # (alarm id, sink name, event)


@dataclass(slots=True)
class Delivery:
    """One alarm event on its way to one sink (mutable: the outbox updates it)."""

    alarm_id: str
    sink: str
    event: DeliveryEvent
    order_key: str
    seq: int  # the alarm's seq (escalations sort after alarms of the same seq by event)
    created_at: float
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""
    delivered_at: float | None = None
    urgent: bool = False  # an emergency alarm's: goes before the queue's other alarms (outbox lanes)

    @property
    def key(self) -> DeliveryKey:
        """Identity of the delivery."""
        return (self.alarm_id, self.sink, self.event.value)


@dataclass(frozen=True, slots=True)
class Transition:
    """One audit line: what happened to an alarm, who did it, when."""

    alarm_id: str
    at: float
    action: TransitionAction
    actor: str = "system"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AlarmFilter:
    """What ``list_alarms`` selects; every field optional. Newest first."""

    district_code: str | None = None
    kindergarten_id: str | None = None
    state: AlarmState | None = None
    since: float | None = None  # received_at >= since
    until: float | None = None  # received_at < until
    escalated: bool | None = None
    drill: bool | None = None  # True: drills only; False: real alarms only; None: both
    offset: int = 0
    limit: int = 100
