"""A simulated device's alarms: ``Notify/Alarm`` per kind, and device-style retries (docs/gb28181.md §9), sans-I/O.

:meth:`DeviceAlarms.press` raises an alarm and sends it at once; like a real
device it resends the very same body (same SN, same AlarmTime, so the platform
recognises the repeat) after a time-out or a 5xx until some attempt gets a
2xx or the retries are used up. A 401/404/481 means the platform lost our
registration (a crash): the device registers again at once, then resends.
The platform's ``Response/Alarm`` MESSAGE (docs/gb28181.md §9.2) is recorded on the
:class:`AlarmRecord`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.gb28181.lower import RegState
from gateway.gb28181.manscdp import (
    AlarmNotify,
    CatalogItem,
    ManscdpMessage,
    ResultResponse,
    Root,
    UnknownCommand,
    format_gb_time,
    serialize,
)

__all__ = [
    "ALARM_INPUT_TYPE_CODES",
    "ALARM_KINDS",
    "CAMERA_TYPE_CODES",
    "MAX_ALARM_RECORDS",
    "AlarmAttempt",
    "AlarmKind",
    "AlarmRecord",
    "DeviceAlarms",
    "is_alarm_input",
    "is_alarm_response",
    "is_camera",
]

CAMERA_TYPE_CODES = frozenset({"131", "132"})  # camera, IPC (GB/T 28181 Annex D type codes)
ALARM_INPUT_TYPE_CODES = frozenset({"134"})  # alarm input: one-key button, perimeter detector
MAX_ALARM_RECORDS = 10_000


def is_camera(item: CatalogItem) -> bool:
    """Whether a catalog channel is a camera (type code 131 or 132 in its ID)."""
    return item.device_id[10:13] in CAMERA_TYPE_CODES


def is_alarm_input(item: CatalogItem) -> bool:
    """Whether a catalog channel is an alarm input (type code 134 in its ID)."""
    return item.device_id[10:13] in ALARM_INPUT_TYPE_CODES


def is_alarm_response(message: ManscdpMessage) -> bool:
    """The platform's ``Response/Alarm`` acknowledgement (docs/gb28181.md §9.2), with or without a Result."""
    if isinstance(message, ResultResponse):
        return message.cmd_type.strip().lower() == "alarm"
    return isinstance(message, UnknownCommand) and message.root is Root.RESPONSE and message.cmd_type.lower() == "alarm"


@dataclass(frozen=True, slots=True)
class AlarmKind:
    """How one kind of alarm is coded in ``Notify/Alarm`` (docs/gb28181.md §9.1) and which channel raises it.

    ``source`` names the channels that fit as default source: "alarm" (134 inputs),
    "camera" (131/132) or "device" (the device itself, e.g. its disk).
    """

    name: str
    method: str
    priority: str
    description: str
    source: str
    alarm_type: str | None = None
    event_type: str | None = None


ALARM_KINDS: dict[str, AlarmKind] = {
    k.name: k
    for k in (
        AlarmKind("button", method="1", priority="1", description="一键报警按钮按下", source="alarm"),
        AlarmKind(
            "perimeter",
            method="5",
            priority="2",
            description="周界入侵",
            source="alarm",
            alarm_type="6",
            event_type="1",
        ),
        AlarmKind("video_loss", method="2", priority="3", description="视频丢失", source="camera", alarm_type="1"),
        AlarmKind("tamper", method="2", priority="3", description="设备防拆报警", source="camera", alarm_type="2"),
        AlarmKind(
            "disk_fault", method="6", priority="4", description="存储设备磁盘故障", source="device", alarm_type="1"
        ),
    )
}
"""The alarms a simulated device can raise, by name."""


@dataclass(slots=True)
class AlarmRecord:
    """One pressed alarm as the device sees it: what it sent and what the platform answered.

    ``body`` is kept so that every retry resends exactly the same bytes (same SN,
    same AlarmTime): the platform must recognise the repeat, not count a new alarm.
    ``attempts`` counts rounds (first send + retries); ``messages`` counts MESSAGE
    transactions on the wire (twice the rounds with ``Misbehaviour.alarm_duplicate``).
    """

    device_id: str
    source_id: str
    sn: int
    kind: str
    pressed_at: float
    wall: datetime
    alarm_time: str
    body: bytes
    attempts: int = 0
    messages: int = 0
    timeouts: int = 0
    answered_at: float | None = None  # first 2xx to any attempt
    status: int | None = None  # last final status (None: only timeouts so far)
    response_at: float | None = None  # the platform's Response/Alarm MESSAGE arrived
    gave_up: bool = False  # stopped trying unanswered: retries used up, or a final 3xx/4xx/6xx

    @property
    def answered(self) -> bool:
        """True once some attempt got a 2xx."""
        return self.answered_at is not None


@dataclass(frozen=True, slots=True)
class AlarmAttempt:
    """The key an alarm MESSAGE is sent with: which alarm, which round (late answers of old rounds are told apart)."""

    sn: int
    attempt: int


class AlarmLink(Protocol):
    """What the alarms need from the device's lower-side client."""

    @property
    def state(self) -> RegState:
        """The registration state (a stopped device sends nothing)."""
        ...

    def send_message(self, body: bytes, now: float, key: object) -> str:
        """Send a MESSAGE whose answer comes back with ``key``."""
        ...

    def set_timer(self, key: Hashable, at: float) -> None:
        """Arm a timer that comes back to :meth:`DeviceAlarms.on_timer`."""
        ...

    def register_again(self, now: float, delay: float, reason: str) -> None:
        """The platform forgot us: register again after ``delay``."""
        ...


class AlarmStats(Protocol):
    """The alarm counters of the device's statistics."""

    alarms_sent: int
    alarm_attempts: int
    alarm_messages: int
    alarms_answered: int
    alarm_responses: int


class DeviceAlarms:
    """The alarms one device raised, by SN (oldest dropped beyond ``max_records``), and their retries."""

    def __init__(
        self,
        device_id: str,
        channels: Sequence[CatalogItem],
        link: AlarmLink,
        stats: AlarmStats,
        *,
        retries: int,
        retry_delay: float,
        duplicate: Callable[[], bool],
        next_sn: Callable[[], int],
        max_records: int = MAX_ALARM_RECORDS,
        silent: Callable[[], bool] = lambda: False,
    ) -> None:
        self.device_id = device_id
        self.channels = tuple(channels)
        self.records: dict[int, AlarmRecord] = {}
        self._link = link
        self._stats = stats
        self._retries = retries
        self._retry_delay = retry_delay
        self._duplicate = duplicate
        self._silent = silent  # a broken box: presses are kept and counted, nothing is sent
        self._next_sn = next_sn
        self._max_records = max_records
        self._resend_at: dict[int, float] = {}  # SN -> when to resend

    def owns(self, target_id: str) -> bool:
        """Whether ``target_id`` is this device or one of its channels."""
        return target_id == self.device_id or any(c.device_id == target_id for c in self.channels)

    def press(
        self, now: float, wall: datetime, *, kind: str, source_id: str | None, description: str | None
    ) -> AlarmRecord:
        """Build, keep and send one ``Notify/Alarm`` (see :meth:`DeviceAgent.press_alarm`)."""
        spec = ALARM_KINDS.get(kind)
        if spec is None:
            raise ValueError(f"unknown alarm kind {kind!r}; known: {', '.join(ALARM_KINDS)}")
        if source_id is None:
            source_id = self._default_source(spec)
        elif not self.owns(source_id):
            raise ValueError(f"{source_id} is neither device {self.device_id} nor one of its channels")
        channel = next((c for c in self.channels if c.device_id == source_id), None)
        notify = AlarmNotify(
            sn=self._next_sn(),
            device_id=source_id,
            priority=spec.priority,
            method=spec.method,
            alarm_time=format_gb_time(wall),
            description=description if description is not None else spec.description,
            longitude=channel.longitude if channel is not None else None,
            latitude=channel.latitude if channel is not None else None,
            alarm_type=spec.alarm_type,
            event_type=spec.event_type,
        )
        record = AlarmRecord(
            device_id=self.device_id,
            source_id=source_id,
            sn=notify.sn,
            kind=kind,
            pressed_at=now,
            wall=wall,
            alarm_time=notify.alarm_time or "",
            body=serialize(notify),
        )
        self._keep(record)
        self._stats.alarms_sent += 1
        if not self._silent():
            self._send(record, now)
        return record

    def on_timer(self, key: Hashable, now: float) -> bool:
        """A resend is due; False when ``key`` is not an alarm timer."""
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == "alarm" and isinstance(key[1], int)):
            return False
        self._resend_at.pop(key[1], None)
        record = self.records.get(key[1])
        if record is not None and not record.answered:
            self._send(record, now)
        return True

    def on_answer(self, key: AlarmAttempt, status: int, now: float) -> None:
        """A final answer to one alarm MESSAGE."""
        record = self.records.get(key.sn)
        if record is None:
            return
        record.status = status
        if 200 <= status < 300:
            if record.answered_at is None:
                record.answered_at = now
                self._stats.alarms_answered += 1
            record.gave_up = False
            self._resend_at.pop(key.sn, None)
        elif 500 <= status < 600:
            self._maybe_retry(record, key.attempt, now)
        elif status in (401, 404, 481) and not record.answered:
            # The platform does not know us (it lost our registration, e.g. after a crash):
            # register again at once, then send the alarm again, as devices do.
            self._link.register_again(now, 0.0, f"alarm answered {status}")
            self._maybe_retry(record, key.attempt, now)
        elif not record.answered:
            record.gave_up = True  # 3xx/4xx/6xx: resending the same body cannot help

    def on_timeout(self, key: AlarmAttempt, now: float) -> None:
        """One alarm MESSAGE got no answer (Timer F)."""
        record = self.records.get(key.sn)
        if record is not None:
            record.timeouts += 1
            self._maybe_retry(record, key.attempt, now)

    def on_response(self, sn: int, now: float) -> None:
        """The platform's ``Response/Alarm`` MESSAGE for ``sn`` arrived (docs/gb28181.md §9.2)."""
        record = self.records.get(sn)
        if record is not None and record.response_at is None:
            record.response_at = now
            self._stats.alarm_responses += 1

    def cancel_retries(self) -> None:
        """Forget every scheduled resend (the device stopped; its client dropped the timers)."""
        self._resend_at.clear()

    def _default_source(self, spec: AlarmKind) -> str:
        fits = {"alarm": is_alarm_input, "camera": is_camera}.get(spec.source)
        if fits is not None:
            for channel in self.channels:
                if fits(channel):
                    return channel.device_id
        return self.device_id

    def _keep(self, record: AlarmRecord) -> None:
        self.records[record.sn] = record
        while len(self.records) > self._max_records:
            oldest = next(iter(self.records))
            del self.records[oldest]
            self._resend_at.pop(oldest, None)

    def _send(self, record: AlarmRecord, now: float) -> None:
        """One round: the same body as a new transaction (twice when duplicating on purpose)."""
        if self._link.state is RegState.STOPPED:
            return
        record.attempts += 1
        self._stats.alarm_attempts += 1
        for _ in range(2 if self._duplicate() else 1):
            record.messages += 1
            self._stats.alarm_messages += 1
            self._link.send_message(record.body, now, AlarmAttempt(record.sn, record.attempts))

    def _maybe_retry(self, record: AlarmRecord, attempt: int, now: float) -> None:
        """Schedule one resend after a failed round; late failures of older rounds change nothing."""
        if record.answered or attempt != record.attempts or record.sn in self._resend_at:
            return
        if record.attempts > self._retries:
            record.gave_up = True
            return
        at = now + self._retry_delay
        self._resend_at[record.sn] = at
        self._link.set_timer(("alarm", record.sn), at)
