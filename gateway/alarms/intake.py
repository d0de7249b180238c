"""Alarm intake (sans-I/O): a parsed Alarm notification becomes an :class:`Alarm`, or a repeat.

Devices repeat themselves: a retransmitted MESSAGE, a device that did not get
the Response MESSAGE and notifies the same event again with a new SN, a retry
after the gateway restarted, the same alarm relayed by two platforms. The same
event must be one alarm, so each alarm gets a *dedupe key* built from what
identifies the event at its source — the source's 20-digit ID, method, type and
the device's own alarm time (or, when that time is unusable, the sender and its
SN) — and a repeat of a key seen within ``window`` seconds is answered
"received" without becoming a new alarm.

Every field is judged here, not in the parser: a broken priority or an absurd
clock does not make the alarm any less real, so the alarm is kept and the
problems are recorded with it (``Alarm.problems``) for the audit and the API.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from gateway.alarms.model import Alarm
from gateway.errors import ManscdpError
from gateway.gb28181.ids import is_gb_id
from gateway.gb28181.manscdp import AlarmNotify, format_gb_time, parse_gb_time

__all__ = ["AlarmIntake", "AlarmNotice", "IntakeResult"]

MAX_DESCRIPTION: Final = 512  # characters kept of AlarmDescription
MAX_CLOCK_SKEW: Final = 86_400.0  # s: a device clock further off than a day is "absurd"


@dataclass(frozen=True, slots=True)
class AlarmNotice:
    """An Alarm notification as the service hands it over, with what the registry knows."""

    device_id: str  # the SIP sender (From user)
    body: AlarmNotify
    received_at: float  # gateway wall clock, s
    sender_registered: bool
    kindergarten_id: str | None
    district_code: str  # the sender's district (civil code), "" when unknown


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """A new alarm, or the id of the alarm this notice repeats."""

    alarm: Alarm | None
    duplicate_of: str | None


class AlarmIntake:
    """Turns notices into alarms; remembers recent dedupe keys (bounded)."""

    def __init__(
        self,
        new_id: Callable[[], str],
        *,
        window: float = 600.0,
        max_remembered: int = 100_000,
        first_seq: int = 1,
        local_offset: Callable[[float], float] | None = None,
    ) -> None:
        """``local_offset(t)`` is the gateway's UTC offset in s at ``t`` (GB times are local)."""
        self._new_id = new_id
        self.window = window
        self.max_remembered = max_remembered
        self._next_seq = first_seq
        self._local_offset = local_offset or (lambda _t: 0.0)
        self._recent: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> (alarm id, received_at)

    def remember(self, alarm: Alarm) -> None:
        """Restore a stored alarm into the dedupe window (startup)."""
        self._recent[alarm.dedupe_key] = (alarm.id, alarm.received_at)
        self._recent.move_to_end(alarm.dedupe_key)
        self._next_seq = max(self._next_seq, alarm.seq + 1)
        self._trim()

    def remember_seq(self, highest: int) -> None:
        """Continue numbering after ``highest`` (the store's max seq at startup)."""
        self._next_seq = max(self._next_seq, highest + 1)

    def forget(self, dedupe_key: str) -> None:
        """Drop a key whose alarm could not be stored, so the device's retry is a new alarm."""
        self._recent.pop(dedupe_key, None)

    def accept(self, notice: AlarmNotice) -> IntakeResult:
        """A new :class:`Alarm` (with its seq assigned), or the id it duplicates."""
        body = notice.body
        problems: list[str] = []
        source_id = body.device_id
        if not source_id:
            problems.append("DeviceID missing: the sender stands in")
            source_id = notice.device_id
        elif not is_gb_id(source_id):
            problems.append(f"DeviceID {source_id[:40]!r} is not a 20-digit code")
        priority = _coded(body.priority, "AlarmPriority", range(1, 5), problems)
        method = _coded(body.method, "AlarmMethod", range(1, 8), problems)
        alarm_type = _coded(body.alarm_type, "AlarmType", range(0, 1000), problems, required=False)
        event_type = _coded(body.event_type, "EventType", range(0, 1000), problems, required=False)
        alarm_time = self._judge_time(body.alarm_time, notice.received_at, problems)
        if not notice.sender_registered:
            problems.append("sender not registered")
        # A 20-digit source ID is unique in the whole system, so the same event relayed by
        # two paths (straight from the gateway and through a district platform) is one
        # alarm; an SN only means something for its sender.
        identity = alarm_time or f"{notice.device_id}:sn:{body.sn}"
        origin = source_id if is_gb_id(source_id) else f"{notice.device_id}|{source_id}"
        key = f"{origin}|{body.method}|{body.alarm_type}|{identity}"
        seen = self._recent.get(key)
        if seen is not None and notice.received_at - seen[1] <= self.window:
            return IntakeResult(None, seen[0])
        alarm = Alarm(
            id=self._new_id(),
            seq=self._next_seq,
            dedupe_key=key,
            device_id=notice.device_id,
            source_id=source_id,
            kindergarten_id=notice.kindergarten_id,
            district_code=notice.district_code or (notice.device_id[:6] if is_gb_id(notice.device_id) else ""),
            priority=priority,
            method=method,
            alarm_type=alarm_type,
            event_type=event_type,
            alarm_time=alarm_time,
            description=(body.description or "")[:MAX_DESCRIPTION],
            longitude=_coordinate(body.longitude, 180.0, "Longitude", problems),
            latitude=_coordinate(body.latitude, 90.0, "Latitude", problems),
            sn=body.sn,
            received_at=round(notice.received_at, 3),
            sender_registered=notice.sender_registered,
            problems=tuple(problems),
        )
        self._next_seq += 1
        self.remember(alarm)
        return IntakeResult(alarm, None)

    def prune(self, now: float) -> int:
        """Forget keys older than the window; returns how many."""
        dropped = 0
        while self._recent:
            key, (_, at) = next(iter(self._recent.items()))
            if now - at <= self.window:
                break
            del self._recent[key]
            dropped += 1
        return dropped

    def _trim(self) -> None:
        while len(self._recent) > self.max_remembered:
            self._recent.popitem(last=False)

    def _judge_time(self, text: str | None, received_at: float, problems: list[str]) -> str | None:
        """The device's alarm time normalised to ``YYYY-MM-DDTHH:MM:SS`` local, or None if unusable."""
        if text is None:
            problems.append("AlarmTime missing")
            return None
        try:
            when = parse_gb_time(text)
        except ManscdpError:
            problems.append(f"AlarmTime {text[:40]!r} unreadable")
            return None
        local_now = datetime(1970, 1, 1) + timedelta(seconds=received_at + self._local_offset(received_at))
        if when.tzinfo is not None:  # a zoned time: compare in UTC
            skew = when.timestamp() - received_at
        else:
            skew = (when - local_now).total_seconds()
        if abs(skew) > MAX_CLOCK_SKEW:
            problems.append(f"AlarmTime {text[:40]!r} is {skew / 86400:+.0f} days off the gateway clock")
            return None
        if when.tzinfo is not None:
            when = datetime(1970, 1, 1) + timedelta(seconds=when.timestamp() + self._local_offset(received_at))
        return format_gb_time(when)


def _coded(text: str | None, name: str, allowed: range, problems: list[str], *, required: bool = True) -> int | None:
    if text is None:
        if required:
            problems.append(f"{name} missing")
        return None
    value = text.strip()
    if not value.isdigit() or int(value) not in allowed:
        problems.append(f"{name} {text[:20]!r} invalid")
        return None
    return int(value)


def _coordinate(value: float | None, limit: float, name: str, problems: list[str]) -> float | None:
    if value is None or value == 0.0:  # devices send 0 for "no position"
        return None
    if not -limit <= value <= limit:
        problems.append(f"{name} {value!r} out of range")
        return None
    return value
