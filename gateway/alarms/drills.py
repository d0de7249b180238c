"""Drill alarms (验收演练), sans-I/O: drill windows, who may make an alarm a drill, and the delivery proof.

An acceptance run proves that a kindergarten's one-button alarm reaches every
level. While it runs, the gateway holds a *drill window* for that
kindergarten: an alarm is stored and delivered as a drill (``Alarm.drill``)
only when every one of these holds (:meth:`DrillWindows.classify`):

* a window is open for the alarm's kindergarten and has not expired (a window
  is bounded: at most :data:`MAX_WINDOW` seconds, so a forgotten one cannot
  silence real alarms for long);
* the alarm is verified: from the registered session at its registered address
  (a forged or unregistered sender stays an unverified *real* alarm, held as
  any other; it is never a "successful drill");
* the sender itself belongs to that kindergarten (the body's ``DeviceID`` is a
  claim: a box of another kindergarten naming a channel of the drilled one
  stays real);
* it is a one-button (emergency) alarm: a perimeter intrusion during the
  drill is not what is being drilled and stays real.

Windows are opened only by code (the acceptance flow, which checks the
operator's authority): nothing a device sends opens one. The one exception is
a lower platform (a central SIP ID, types 200-214) relaying a drill it made
itself, marked as GB/T 28181 allows (docs/gb28181.md §9.3): verified lower
platforms only, and only for one-button alarms (:func:`relayed_drill`).

:class:`DrillProof` is what the acceptance report shows: per level and
target, delivered (when) or not (why), and the end-to-end time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from gateway.alarms.model import Alarm, Delivery, DeliveryEvent, DeliveryState, Transition, TransitionAction
from gateway.errors import AlarmError

__all__ = [
    "DRILL_MARK",
    "LEVELS",
    "MAX_WINDOW",
    "DrillError",
    "DrillProof",
    "DrillTarget",
    "DrillWindow",
    "DrillWindowClosed",
    "DrillWindows",
    "build_proof",
    "relayed_drill",
    "sink_level",
]

MAX_WINDOW: Final = 3600.0  # s: the longest a drill window may stay open
DRILL_MARK: Final = "【演练】"  # AlarmDescription prefix of a drill sent upward (docs/gb28181.md §9.3)
LEVELS: Final = ("district", "municipal", "police_platform", "police_mqtt", "webhook")
_SINK_LEVELS: Final = {"mqtt": "police_mqtt", "webhook": "webhook"}
_UPPER_LEVELS: Final = {"district": "district", "municipal": "municipal", "police": "police_platform"}


class DrillError(AlarmError):
    """A drill window cannot be opened as asked, or there is none to wait on."""


class DrillWindowClosed(DrillError):
    """The window closed or expired before a drill alarm arrived."""


@dataclass(frozen=True, slots=True)
class DrillWindow:
    """One kindergarten's open drill window; ``alarm_id`` is its first drill alarm once one came."""

    kindergarten_id: str
    ref: str  # who/what opened it (the acceptance run id), for the log and the audit
    opened_at: float
    until: float
    alarm_id: str | None = None


@dataclass(frozen=True, slots=True)
class DrillDecision:
    """Whether an alarm is a drill, and why (or why not) in words for the audit trail."""

    drill: bool
    reason: str


class DrillWindows:
    """Open drill windows by kindergarten (time passed in: tests use a fake clock)."""

    def __init__(self) -> None:
        self._open: dict[str, DrillWindow] = {}

    def open(self, kindergarten_id: str, ref: str, until: float, now: float) -> DrillWindow:
        """Open (or replace) the window of ``kindergarten_id`` until ``until``; DrillError when invalid."""
        if not kindergarten_id or not kindergarten_id.strip():
            raise DrillError("a drill window needs a kindergarten")
        if not ref or not ref.strip() or len(ref) > 200:
            raise DrillError("a drill window needs a reference of 1..200 characters (the acceptance run)")
        if until <= now:
            raise DrillError("a drill window must end in the future")
        if until - now > MAX_WINDOW:
            raise DrillError(f"a drill window may last at most {MAX_WINDOW:g} s")
        window = DrillWindow(kindergarten_id, ref, now, until)
        self._open[kindergarten_id] = window
        return window

    def close(self, kindergarten_id: str) -> DrillWindow | None:
        """Close the window (alarms are real again at once); the closed window, or None."""
        return self._open.pop(kindergarten_id, None)

    def active(self, kindergarten_id: str | None, now: float) -> DrillWindow | None:
        """The open, unexpired window of the kindergarten (an expired one is dropped)."""
        if not kindergarten_id:
            return None
        window = self._open.get(kindergarten_id)
        if window is not None and now >= window.until:
            del self._open[kindergarten_id]
            return None
        return window

    def get(self, kindergarten_id: str) -> DrillWindow | None:
        """The window as it is, expired or not (waiters decide what expiry means to them)."""
        return self._open.get(kindergarten_id)

    def classify(
        self,
        *,
        kindergarten_id: str | None,
        sender_kindergarten_id: str | None,
        verified: bool,
        emergency: bool,
        now: float,
    ) -> DrillDecision:
        """Whether an alarm arriving now is a drill (module doc: every rule must hold)."""
        window = self.active(kindergarten_id, now)
        if window is None:
            return DrillDecision(False, "no drill window open")
        if not verified:
            return DrillDecision(False, "during a drill window, but not verified: treated as real")
        if sender_kindergarten_id != window.kindergarten_id:
            return DrillDecision(False, "during a drill window, but the sender belongs elsewhere: treated as real")
        if not emergency:
            return DrillDecision(False, "during a drill window, but not a one-button alarm: treated as real")
        return DrillDecision(True, f"drill window {window.ref}")

    def drilled(self, alarm: Alarm) -> DrillWindow | None:
        """Record a stored drill alarm as its window's first (the one ``wait_drill`` returns)."""
        window = self._open.get(alarm.kindergarten_id or "")
        if window is None or window.alarm_id is not None:
            return window
        window = replace(window, alarm_id=alarm.id)
        self._open[window.kindergarten_id] = window
        return window

    def __len__(self) -> int:
        return len(self._open)


def relayed_drill(*, sender_id: str, claims_drill: bool, verified: bool, emergency: bool) -> bool:
    """Whether a lower platform's alarm marked as a drill is taken as one (never a front-end device's claim)."""
    return claims_drill and verified and emergency and _is_central(sender_id)


def _is_central(device_id: str) -> bool:
    code = device_id[10:13]
    return len(device_id) == 20 and device_id.isdigit() and 200 <= int(code) <= 214


# --- the proof -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DrillTarget:
    """One destination of a drill: ``level`` is district | municipal | police_platform | police_mqtt | webhook."""

    level: str
    name: str  # the sink ("mqtt", "webhook") or the upper platform's name
    state: str  # delivered | pending | failed (failed: the last attempt failed; it is still retried)
    delivered_at: float | None
    error: str


@dataclass(frozen=True, slots=True)
class DrillProof:
    """Where an alarm got to: one :class:`DrillTarget` per sink or upper platform."""

    alarm_id: str
    received_at: float
    targets: tuple[DrillTarget, ...]
    drill: bool = True

    @property
    def complete(self) -> bool:
        """Every target has it (and there is at least one: reaching nobody proves nothing)."""
        return bool(self.targets) and all(t.state == "delivered" for t in self.targets)

    @property
    def elapsed(self) -> float | None:
        """End to end: the last target's delivery minus the receipt, once complete."""
        if not self.complete:
            return None
        return max(t.delivered_at or self.received_at for t in self.targets) - self.received_at

    def level(self, level: str) -> tuple[DrillTarget, ...]:
        """The targets of one level."""
        return tuple(t for t in self.targets if t.level == level)


def sink_level(sink: str) -> str:
    """The level a (non-GB) sink serves: the MQTT broker is the police integration."""
    return _SINK_LEVELS.get(sink, sink)


def upper_level(policy_level: str) -> str:
    """The proof's level of an upper platform's policy level (district, municipal, police)."""
    return _UPPER_LEVELS.get(policy_level, policy_level)


def build_proof(
    alarm: Alarm,
    deliveries: Iterable[Delivery],
    transitions: Iterable[Transition],
    *,
    uppers: Sequence[str] = (),
    upper_levels: Mapping[str, str] | Callable[[str], str] = lambda name: name,
    upper_errors: Mapping[str, str] | None = None,
    gb_sink: str = "gb",
) -> DrillProof:
    """The proof of an alarm's ``alarm`` event from its delivery rows and audit trail.

    ``uppers`` are the upper platforms the "gb" sink sends it to; each one's delivery
    is its ``upper_acknowledged`` transition (durable), or the gb row itself once it is
    delivered (every upper answered). ``upper_errors`` are the uppers' last errors as
    the sink knows them; without one, the gb row's last error stands for all.
    """
    level_of = upper_levels if callable(upper_levels) else (lambda name: upper_levels.get(name, name))
    acks: dict[str, float] = {}
    for t in transitions:
        if t.action is TransitionAction.UPPER_ACKNOWLEDGED and t.detail.endswith(DeliveryEvent.ALARM.value):
            acks.setdefault(t.actor, t.at)
    targets: list[DrillTarget] = []
    for d in sorted(deliveries, key=lambda d: d.sink):
        if d.event is not DeliveryEvent.ALARM:
            continue
        if d.sink != gb_sink:
            targets.append(_target(sink_level(d.sink), d.sink, d, d.delivered_at))
            continue
        for upper in uppers:
            at = acks.get(upper)
            if at is None and d.state is DeliveryState.DELIVERED:
                at = d.delivered_at
            error = (upper_errors or {}).get(upper, "") or ("" if at is not None else d.last_error)
            targets.append(_target(upper_level(level_of(upper)), upper, d, at, error))
    order = {level: i for i, level in enumerate(LEVELS)}
    targets.sort(key=lambda t: (order.get(t.level, len(order)), t.name))
    return DrillProof(alarm.id, alarm.received_at, tuple(targets), alarm.drill)


def _target(level: str, name: str, d: Delivery, at: float | None, error: str | None = None) -> DrillTarget:
    if at is not None:
        return DrillTarget(level, name, "delivered", at, "")
    error = d.last_error if error is None else error
    failed = d.state is DeliveryState.DEAD or bool(error)
    return DrillTarget(level, name, "failed" if failed else "pending", None, error)
