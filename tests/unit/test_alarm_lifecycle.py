"""Alarm lifecycle: transitions, named users, escalation timing on a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.alarms.lifecycle import Lifecycle, acknowledge, mark_delivered, resolve
from gateway.alarms.model import Alarm, AlarmState, TransitionAction
from gateway.errors import InvalidTransition, UnknownAlarm


def alarm(n: int = 1, at: float = 1000.0, **kw: object) -> Alarm:
    base = Alarm(
        id=f"a{n}",
        seq=n,
        dedupe_key=f"k{n}",
        device_id="12010100111340001001",
        source_id="12010100111340001001",
        kindergarten_id="12010100112160001000",
        district_code="120101",
        priority=1,
        method=1,
        alarm_type=None,
        event_type=None,
        alarm_time=None,
        description="",
        longitude=None,
        latitude=None,
        sn=n,
        received_at=at,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_acknowledge_records_who_and_when() -> None:
    changed, transition = acknowledge(alarm(), " 张三 ", 1010.0, "on my way")
    assert (changed.state, changed.acknowledged_by, changed.acknowledged_at) == (
        AlarmState.ACKNOWLEDGED,
        "张三",
        1010.0,
    )
    assert (transition.action, transition.actor, transition.detail, transition.at) == (
        TransitionAction.ACKNOWLEDGED,
        "张三",
        "on my way",
        1010.0,
    )


@pytest.mark.parametrize("user", ["", "   ", "x" * 65, "a\nb"])
def test_a_named_user_is_required(user: str) -> None:
    with pytest.raises(InvalidTransition):
        acknowledge(alarm(), user, 1.0)
    with pytest.raises(InvalidTransition):
        resolve(alarm(), user, 1.0)


def test_acknowledge_twice_or_after_resolve_is_refused() -> None:
    acked, _ = acknowledge(alarm(), "张三", 1.0)
    with pytest.raises(InvalidTransition):
        acknowledge(acked, "李四", 2.0)
    resolved, _ = resolve(acked, "李四", 3.0)
    assert (resolved.acknowledged_by, resolved.resolved_by) == ("张三", "李四")
    with pytest.raises(InvalidTransition):
        resolve(resolved, "李四", 4.0)


def test_resolving_an_unacknowledged_alarm_acknowledges_it_too() -> None:
    resolved, transition = resolve(alarm(), "王五", 5.0, "false alarm")
    assert resolved.state is AlarmState.RESOLVED
    assert (resolved.acknowledged_by, resolved.acknowledged_at) == ("王五", 5.0)
    assert transition.detail == "false alarm"


def test_mark_delivered_only_from_new() -> None:
    step = mark_delivered(alarm(), 2.0)
    assert step is not None and step[0].state is AlarmState.DELIVERED
    assert step[1].action is TransitionAction.ALL_DELIVERED
    acked, _ = acknowledge(alarm(), "张三", 1.0)
    assert mark_delivered(acked, 2.0) is None  # acknowledged before every sink had it: state stays


def test_escalation_fires_once_at_the_deadline() -> None:
    life = Lifecycle(escalate_after=180.0)
    life.track(alarm(1, at=1000.0))
    life.track(alarm(2, at=1100.0))
    assert life.get_timer() == 1180.0
    assert life.escalate_due(1179.999) == []
    due = life.escalate_due(1180.0)
    assert [(a.id, a.escalated_at) for a, _ in due] == [("a1", 1180.0)]
    assert due[0][1].action is TransitionAction.ESCALATED and "municipal" in due[0][1].detail
    assert life.get_timer() == 1280.0
    assert [a.id for a, _ in life.escalate_due(5000.0)] == ["a2"]
    assert life.escalate_due(9000.0) == [] and life.get_timer() is None
    assert life.get("a1").escalated_at == 1180.0


def test_acknowledged_in_time_never_escalates() -> None:
    life = Lifecycle(escalate_after=180.0)
    life.track(alarm(1, at=1000.0))
    acked, _ = acknowledge(life.get("a1"), "张三", 1100.0)
    life.update(acked)
    assert life.get_timer() is None
    assert life.escalate_due(2000.0) == []


def test_delivered_but_unacknowledged_still_escalates() -> None:
    life = Lifecycle(escalate_after=60.0)
    life.track(alarm(1, at=0.0))
    step = mark_delivered(life.get("a1"), 0.01)
    assert step is not None
    life.update(step[0])
    assert [a.id for a, _ in life.escalate_due(60.0)] == ["a1"]


def test_resolved_alarms_leave_the_open_set() -> None:
    life = Lifecycle(escalate_after=60.0)
    life.track(alarm(1))
    resolved, _ = resolve(life.get("a1"), "张三", 1001.0)
    life.update(resolved)
    assert "a1" not in life and len(life) == 0
    with pytest.raises(UnknownAlarm):
        life.get("a1")
    life.track(resolved)  # restoring a resolved alarm does nothing
    assert len(life) == 0


def test_restored_alarm_past_its_deadline_escalates_at_once_and_escalated_ones_do_not_again() -> None:
    life = Lifecycle(escalate_after=60.0)
    life.track(alarm(1, at=0.0))
    life.track(alarm(2, at=0.0, escalated_at=60.0))
    assert [a.id for a, _ in life.escalate_due(10_000.0)] == ["a1"]


@pytest.mark.parametrize("after", [None, 0.0, -5.0])
def test_escalation_can_be_turned_off(after: float | None) -> None:
    life = Lifecycle(escalate_after=after)
    life.track(alarm(1, at=0.0))
    assert life.get_timer() is None and life.escalate_due(1e9) == []


def test_open_alarms_are_listed_oldest_first() -> None:
    life = Lifecycle(escalate_after=None)
    for n in (3, 1, 2):
        life.track(alarm(n))
    assert [a.id for a in life.open_alarms()] == ["a1", "a2", "a3"]
