"""Alarm intake (sans-I/O): a parsed Alarm notification becomes an :class:`Alarm`, a repeat, or a collapse.

Devices repeat themselves: a retransmitted MESSAGE, a device that did not get
the Response MESSAGE and notifies the same event again. Only such
retransmissions of the *same session* are merged: the same sender, from the
same transport address, with the same SN, CmdType method and type, within
``window`` seconds, into an alarm that is not resolved. Nothing an attacker can
predict (a source ID, an AlarmTime) makes a real press a "repeat": a forged
alarm from elsewhere has another address, and a new press after a resolve is a
new alarm.

Trust: an alarm from the registered session at its registered address is
verified; any other (``untrusted_reason``, or a sender whose registration
lapsed) is kept as *unverified*, which the service holds from every sink.

Rate limit: each (sender, kindergarten, lane, trust) group may open ``burst``
alarms and then ``rate`` per second (:class:`gateway.ratelimit.TokenBuckets`); beyond that a
notification is collapsed into the group's open, unacknowledged alarm (its
``repeats`` count) instead of becoming another alarm and another delivery. The
one-button (emergency) lane has its own buckets, so a flood of other kinds can
never collapse a press. When the group has no open alarm a new one is made all
the same: nothing is ever dropped.

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

from gateway.alarms.model import Alarm, AlarmState, describe_alarm
from gateway.errors import ManscdpError
from gateway.gb28181.ids import is_gb_id
from gateway.gb28181.manscdp import AlarmNotify, format_gb_time, parse_gb_time
from gateway.ratelimit import TokenBuckets

__all__ = ["AlarmIntake", "AlarmNotice", "IntakeResult", "is_emergency"]

MAX_DESCRIPTION: Final = 512  # characters kept of AlarmDescription
MAX_CLOCK_SKEW: Final = 86_400.0  # s: a device clock further off than a day is "absurd"
_MERGEABLE: Final = frozenset({AlarmState.NEW, AlarmState.DELIVERED, AlarmState.ACKNOWLEDGED})
_COLLAPSIBLE: Final = frozenset({AlarmState.NEW, AlarmState.DELIVERED})  # nobody took it yet

StateOf = Callable[[str], AlarmState | None]  # an alarm's current state, None when unknown


@dataclass(frozen=True, slots=True)
class AlarmNotice:
    """An Alarm notification as the service hands it over, with what the registry knows."""

    device_id: str  # the SIP sender (From user)
    body: AlarmNotify
    received_at: float  # gateway wall clock, s
    sender_registered: bool
    kindergarten_id: str | None
    district_code: str  # the sender's district (civil code), "" when unknown
    peer: str = ""  # the transport address it came from ("udp:host:port")
    untrusted_reason: str = ""  # "" = the registered session at its registered address
    sender_kindergarten_id: str | None = None  # the sender's own kindergarten (drills: gateway.alarms.drills)

    @property
    def unverified_reason(self) -> str:
        """Why the alarm cannot be believed as it stands ("" when it can)."""
        if self.untrusted_reason:
            return self.untrusted_reason
        return "" if self.sender_registered else "not_registered"


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """A new alarm, the id of the alarm this notice retransmits, or the one it was collapsed into."""

    alarm: Alarm | None
    duplicate_of: str | None
    collapsed_into: str | None = None


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
        rate: float = 1.0,
        burst: float = 10.0,
        next_seq: Callable[[], int] | None = None,
        node: str = "gateway",
    ) -> None:
        """``local_offset(t)`` is the gateway's UTC offset in s at ``t`` (GB times are local);
        ``rate``/``burst`` bound the new alarms per group (module doc). ``next_seq`` hands out
        seqs unique across the nodes sharing the database (default: counting from ``first_seq``);
        ``node`` is stamped on every new alarm."""
        self._new_id = new_id
        self.window = window
        self.max_remembered = max_remembered
        self._next_seq = first_seq
        self._seq_source = next_seq
        self.node = node
        self._local_offset = local_offset or (lambda _t: 0.0)
        self._recent: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> (alarm id, received_at)
        self._buckets = TokenBuckets(rate, burst, max_keys=max_remembered)
        self._latest: OrderedDict[tuple[str, ...], str] = OrderedDict()  # group -> its newest alarm id

    def remember(self, alarm: Alarm) -> None:
        """Restore a stored alarm into the dedupe window and its rate-limit group (startup)."""
        self._recent[alarm.dedupe_key] = (alarm.id, alarm.received_at)
        self._recent.move_to_end(alarm.dedupe_key)
        self._latest[_group(alarm)] = alarm.id
        self._latest.move_to_end(_group(alarm))
        self._next_seq = max(self._next_seq, alarm.seq + 1)
        self._trim()

    def remember_seq(self, highest: int) -> None:
        """Continue numbering after ``highest`` (the store's max seq at startup)."""
        self._next_seq = max(self._next_seq, highest + 1)

    def forget(self, dedupe_key: str) -> None:
        """Drop a key whose alarm could not be stored, so the device's retry is a new alarm."""
        self._recent.pop(dedupe_key, None)

    def accept(
        self,
        notice: AlarmNotice,
        state_of: StateOf = lambda _id: AlarmState.NEW,
        *,
        collapse: bool = True,
        drill: bool | Callable[[AlarmNotice], bool] = False,
    ) -> IntakeResult:
        """A new :class:`Alarm` (with its seq assigned), the id it retransmits, or the id it collapses into.

        ``state_of`` tells the current state of a remembered alarm (None: unknown,
        which counts as closed; the default believes every one open): nothing is
        merged into a resolved alarm. ``collapse=False`` makes a notification over the
        rate limit a new alarm all the same (the group's alarm closed meanwhile).
        ``drill`` (or a function deciding it for a notice that is a new alarm) marks it
        a drill (:mod:`gateway.alarms.drills`); drills and real alarms never share a group.
        """
        body = notice.body
        # Only a retransmission of the same session is the same alarm (module doc).
        key = "|".join(
            (notice.device_id, notice.peer, str(body.sn), body.method or "", body.alarm_type or "", body.device_id)
        )
        seen = self._recent.get(key)
        if seen is not None and notice.received_at - seen[1] <= self.window and state_of(seen[0]) in _MERGEABLE:
            return IntakeResult(None, seen[0])
        reason = notice.unverified_reason
        is_drill = drill(notice) if callable(drill) else drill
        group = (
            notice.device_id,
            notice.kindergarten_id or "",
            _lane(body.method, body.alarm_type),
            "trusted" if not reason else "untrusted",
            _drill_part(is_drill),
        )
        if not self._buckets.take(group, notice.received_at) and collapse:
            latest = self._latest.get(group)
            if latest is not None and state_of(latest) in _COLLAPSIBLE:
                return IntakeResult(None, None, collapsed_into=latest)
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
        alarm = Alarm(
            id=self._new_id(),
            seq=self._next_seq if self._seq_source is None else self._seq_source(),
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
            peer=notice.peer,
            verified=not reason,
            unverified_reason=reason,
            node=self.node,
            drill=is_drill,
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
        while len(self._latest) > self.max_remembered:
            self._latest.popitem(last=False)

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


def is_emergency(method: str | None, alarm_type: str | None) -> bool:
    """A one-button (emergency) alarm, from the notification's raw codes."""
    return _lane(method, alarm_type) == "emergency"


def _lane(method: str | None, alarm_type: str | None) -> str:
    """ "emergency" for one-button presses (their own buckets and outbox lane), else "routine"."""
    try:
        kind = describe_alarm(
            int(method) if method and method.strip().isdigit() else None,
            int(alarm_type) if alarm_type and alarm_type.strip().isdigit() else None,
        )
    except ValueError:
        return "routine"
    return "emergency" if kind.category == "emergency" else "routine"


def _group(alarm: Alarm) -> tuple[str, ...]:
    """The rate-limit group of a stored alarm (as :meth:`AlarmIntake.accept` forms it)."""
    method = None if alarm.method is None else str(int(alarm.method))
    alarm_type = None if alarm.alarm_type is None else str(alarm.alarm_type)
    trust = "trusted" if alarm.verified else "untrusted"
    return (alarm.device_id, alarm.kindergarten_id or "", _lane(method, alarm_type), trust, _drill_part(alarm.drill))


def _drill_part(drill: bool) -> str:
    return "drill" if drill else "real"


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
