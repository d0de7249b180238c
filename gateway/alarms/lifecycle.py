"""Alarm lifecycle (sans-I/O): new → delivered → acknowledged → resolved, and escalation.

The transition functions return the changed alarm plus its audit line and
refuse steps the state does not allow. :class:`Lifecycle` keeps the open
(unresolved) alarms and their escalation deadlines: an alarm nobody
acknowledged within ``escalate_after`` seconds of its receipt escalates to the
municipal level once (never a drill). Time is passed in, so tests drive it with a fake clock.
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import Final

from gateway.alarms.model import Alarm, AlarmState, Transition, TransitionAction
from gateway.errors import InvalidTransition, UnknownAlarm

__all__ = ["Lifecycle", "acknowledge", "mark_delivered", "resolve", "valid_actor"]

MAX_ACTOR: Final = 64
MAX_NOTE: Final = 500
_UNACKNOWLEDGED: Final = frozenset({AlarmState.NEW, AlarmState.DELIVERED})


def valid_actor(actor: str) -> str:
    """A named user is required to acknowledge or resolve; trimmed and bounded."""
    name = (actor or "").strip()
    if not name:
        raise InvalidTransition("a user name is required")
    if len(name) > MAX_ACTOR or any(ord(c) < 32 for c in name):
        raise InvalidTransition(f"user name must be 1..{MAX_ACTOR} printable characters")
    return name


def acknowledge(alarm: Alarm, actor: str, now: float, note: str = "") -> tuple[Alarm, Transition]:
    """A named user takes the alarm (from new or delivered)."""
    user = valid_actor(actor)
    if alarm.state not in _UNACKNOWLEDGED:
        raise InvalidTransition(f"alarm {alarm.id} is {alarm.state.value}, cannot acknowledge")
    changed = replace(alarm, state=AlarmState.ACKNOWLEDGED, acknowledged_by=user, acknowledged_at=now)
    return changed, Transition(alarm.id, now, TransitionAction.ACKNOWLEDGED, user, note[:MAX_NOTE])


def resolve(alarm: Alarm, actor: str, now: float, note: str = "") -> tuple[Alarm, Transition]:
    """Close the alarm; allowed from any state but resolved (an unacknowledged one is acknowledged too)."""
    user = valid_actor(actor)
    if alarm.state is AlarmState.RESOLVED:
        raise InvalidTransition(f"alarm {alarm.id} is already resolved")
    changed = replace(
        alarm,
        state=AlarmState.RESOLVED,
        resolved_by=user,
        resolved_at=now,
        acknowledged_by=alarm.acknowledged_by or user,
        acknowledged_at=alarm.acknowledged_at or now,
    )
    return changed, Transition(alarm.id, now, TransitionAction.RESOLVED, user, note[:MAX_NOTE])


def mark_delivered(alarm: Alarm, now: float) -> tuple[Alarm, Transition] | None:
    """new → delivered once every sink has the alarm; None when the state is already past it."""
    if alarm.state is not AlarmState.NEW:
        return None
    return replace(alarm, state=AlarmState.DELIVERED), Transition(alarm.id, now, TransitionAction.ALL_DELIVERED)


class Lifecycle:
    """Open alarms by id, and the escalation deadlines of the unacknowledged ones."""

    def __init__(self, escalate_after: float | None) -> None:
        self.escalate_after = escalate_after if escalate_after and escalate_after > 0 else None
        self._open: dict[str, Alarm] = {}
        self._deadlines: list[tuple[float, int, str]] = []

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, alarm_id: object) -> bool:
        return alarm_id in self._open

    def open_alarms(self) -> list[Alarm]:
        """Unresolved alarms, oldest first."""
        return sorted(self._open.values(), key=lambda a: a.seq)

    def get(self, alarm_id: str) -> Alarm:
        """An open alarm; UnknownAlarm when it is not open (resolved or never seen)."""
        try:
            return self._open[alarm_id]
        except KeyError:
            raise UnknownAlarm(alarm_id) from None

    def track(self, alarm: Alarm) -> None:
        """Start following a new or restored alarm (resolved ones are ignored)."""
        self.update(alarm)
        if self._needs_escalation(alarm):
            assert self.escalate_after is not None
            heapq.heappush(self._deadlines, (alarm.received_at + self.escalate_after, alarm.seq, alarm.id))

    def update(self, alarm: Alarm) -> None:
        """Record a changed alarm; a resolved one is dropped."""
        if alarm.state is AlarmState.RESOLVED:
            self._open.pop(alarm.id, None)
        else:
            self._open[alarm.id] = alarm

    def get_timer(self) -> float | None:
        """When the next escalation is due (stale entries are dropped lazily)."""
        while self._deadlines:
            _, _, alarm_id = self._deadlines[0]
            alarm = self._open.get(alarm_id)
            if alarm is not None and self._needs_escalation(alarm):
                return self._deadlines[0][0]
            heapq.heappop(self._deadlines)
        return None

    def escalate_due(self, now: float) -> list[tuple[Alarm, Transition]]:
        """Escalate every alarm whose deadline passed unacknowledged; each escalates once."""
        escalated: list[tuple[Alarm, Transition]] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, alarm_id = heapq.heappop(self._deadlines)
            alarm = self._open.get(alarm_id)
            if alarm is None or not self._needs_escalation(alarm):
                continue
            changed = replace(alarm, escalated_at=now)
            self._open[alarm_id] = changed
            detail = f"not acknowledged within {self.escalate_after:g} s: escalated to the municipal level"
            escalated.append((changed, Transition(alarm_id, now, TransitionAction.ESCALATED, "system", detail)))
        return escalated

    def _needs_escalation(self, alarm: Alarm) -> bool:
        return (
            self.escalate_after is not None
            and alarm.escalated_at is None
            and alarm.state in _UNACKNOWLEDGED
            and not alarm.drill  # a drill is never escalated: nobody is to be dispatched
        )
