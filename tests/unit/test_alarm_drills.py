"""Drill alarms: the window rules (pure), and the service marking, proving and never counting drills.

The service tests run on both backends (``db_url``): the ``drill`` column and the
``drill=`` list filter are the store's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.alarms.drills import (
    MAX_WINDOW,
    DrillError,
    DrillWindowClosed,
    DrillWindows,
    build_proof,
    relayed_drill,
)
from gateway.alarms.intake import AlarmNotice
from gateway.alarms.model import (
    Alarm,
    AlarmFilter,
    Delivery,
    DeliveryEvent,
    DeliveryState,
    Transition,
    TransitionAction,
)
from gateway.alarms.outbox import RetryPolicy
from gateway.alarms.payload import Enrichment
from gateway.alarms.service import AlarmService, AlarmSettings
from gateway.alarms.sinks.base import OutboundMessage
from gateway.alarms.sinks.gb import GbAlarmSink
from gateway.alarms.sinks.mqtt import topic_for
from gateway.alarms.store import open_alarm_store
from gateway.errors import DeliveryError, UnknownAlarm
from gateway.gb28181.manscdp import AlarmNotify, parse_manscdp, serialize
from tests.conftest import wait_for

KG = "12010100112160001000"
OTHER_KG = "12010100112160002000"
BOX = "12010100111340001001"
OTHER_BOX = "12010100111340002001"
LOWER = "12010000002090000001"  # a gateway (type 209) relaying upward
T0 = datetime(2026, 11, 29, 3, 34, 19, tzinfo=UTC).timestamp()


# --- the window rules (pure) ------------------------------------------------------------------------------


def classify(windows: DrillWindows, **kw: Any) -> bool:
    args: dict[str, Any] = {
        "kindergarten_id": KG,
        "sender_kindergarten_id": KG,
        "verified": True,
        "emergency": True,
        "now": T0 + 1,
    }
    args.update(kw)
    return windows.classify(**args).drill


def test_window_makes_a_verified_press_of_its_own_kindergarten_a_drill() -> None:
    windows = DrillWindows()
    assert not classify(windows)  # no window: real
    windows.open(KG, "acceptance-1", T0 + 600, T0)
    assert classify(windows)
    assert not classify(windows, verified=False)  # forged / unregistered sender: stays real (held)
    assert not classify(windows, sender_kindergarten_id=OTHER_KG)  # another kindergarten's box naming our channel
    assert not classify(windows, kindergarten_id=OTHER_KG, sender_kindergarten_id=OTHER_KG)  # another kindergarten
    assert not classify(windows, emergency=False)  # a perimeter intrusion during the drill is real


def test_window_expires_and_closes() -> None:
    windows = DrillWindows()
    windows.open(KG, "acceptance-1", T0 + 60, T0)
    assert classify(windows, now=T0 + 59.9)
    assert not classify(windows, now=T0 + 60)  # expired: real again
    assert windows.get(KG) is None  # and dropped
    windows.open(KG, "acceptance-2", T0 + 60, T0)
    assert windows.close(KG) is not None
    assert not classify(windows)


@pytest.mark.parametrize(
    ("kg", "ref", "until", "why"),
    [
        ("", "run", T0 + 60, "kindergarten"),
        (KG, "", T0 + 60, "reference"),
        (KG, "run", T0, "future"),
        (KG, "run", T0 + MAX_WINDOW + 1, "at most"),
    ],
)
def test_window_must_be_bounded_and_named(kg: str, ref: str, until: float, why: str) -> None:
    with pytest.raises(DrillError, match=why):
        DrillWindows().open(kg, ref, until, T0)


def test_only_a_verified_lower_platform_relays_a_drill() -> None:
    assert relayed_drill(sender_id=LOWER, claims_drill=True, verified=True, emergency=True)
    assert not relayed_drill(sender_id=BOX, claims_drill=True, verified=True, emergency=True)  # a device's claim
    assert not relayed_drill(sender_id=LOWER, claims_drill=True, verified=False, emergency=True)  # forged
    assert not relayed_drill(sender_id=LOWER, claims_drill=False, verified=True, emergency=True)
    assert not relayed_drill(sender_id=LOWER, claims_drill=True, verified=True, emergency=False)


def test_gb_alarm_body_marks_a_drill_both_ways() -> None:
    body = AlarmNotify(7, BOX, priority="1", method="1", alarm_time="2026-11-29T11:34:19", description="一键报警")
    drill = AlarmNotify(
        7, BOX, priority="1", method="1", alarm_time="2026-11-29T11:34:19", description="一键报警", drill=True
    )
    wire = serialize(drill).decode("gb2312")
    assert "<AlarmDescription>【演练】一键报警</AlarmDescription>" in wire and "<Drill>1</Drill>" in wire
    parsed = parse_manscdp(serialize(drill))
    assert isinstance(parsed, AlarmNotify) and parsed.drill and parsed.description == "【演练】一键报警"
    real = parse_manscdp(serialize(body))
    assert isinstance(real, AlarmNotify) and not real.drill and "Drill" not in serialize(body).decode("gb2312")
    # A platform that only keeps the description still says 演练; the mark alone is read back as a drill.
    only_mark = serialize(body).replace("一键报警".encode("gb2312"), "【演练】一键报警".encode("gb2312"))
    again = parse_manscdp(only_mark)
    assert isinstance(again, AlarmNotify) and again.drill


def test_proof_from_stored_rows_alone() -> None:
    """After a restart only the store is left: the uppers' audit lines say who answered."""
    alarm = Alarm("a1", 1, "k", BOX, BOX, KG, "120101", 1, 1, None, None, None, "", None, None, 1, T0, drill=True)
    gb = Delivery("a1", "gb", DeliveryEvent.ALARM, KG, 1, T0, attempts=3, last_error="1 of 2 upper platforms failed")
    mqtt = Delivery("a1", "mqtt", DeliveryEvent.ALARM, KG, 1, T0, DeliveryState.DELIVERED, delivered_at=T0 + 0.2)
    escalation = Delivery("a1", "mqtt", DeliveryEvent.ESCALATED, KG, 1, T0)  # not part of the proof
    trail = [
        Transition("a1", T0 + 0.1, TransitionAction.UPPER_ACKNOWLEDGED, "district-120101", "district alarm"),
        Transition("a1", T0 + 0.3, TransitionAction.UPPER_ACKNOWLEDGED, "police", "police escalated"),
    ]
    proof = build_proof(
        alarm,
        [gb, mqtt, escalation],
        trail,
        uppers=["district-120101", "police"],
        upper_levels={"district-120101": "district", "police": "police"},
    )
    assert [(t.level, t.name, t.state, t.delivered_at) for t in proof.targets] == [
        ("district", "district-120101", "delivered", T0 + 0.1),
        ("police_platform", "police", "failed", None),
        ("police_mqtt", "mqtt", "delivered", T0 + 0.2),
    ]
    assert proof.targets[1].error == "1 of 2 upper platforms failed"
    assert not proof.complete and proof.elapsed is None
    assert not build_proof(alarm, [], []).complete  # reaching nobody proves nothing
    gb.state, gb.delivered_at = DeliveryState.DELIVERED, T0 + 0.5
    done = build_proof(alarm, [gb, mqtt], trail, uppers=["district-120101", "police"], upper_levels=lambda n: "x")
    assert done.complete and done.elapsed == pytest.approx(0.5)


# --- the service ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self, name: str) -> None:
        self.name = name
        self.max_inflight = 8
        self.fail = ""
        self.got: list[OutboundMessage] = []

    @property
    def up(self) -> bool | None:
        return not self.fail

    async def start(self) -> None:
        return None

    async def deliver(self, message: OutboundMessage) -> None:
        if self.fail:
            raise DeliveryError(self.fail)
        self.got.append(message)

    async def close(self) -> None:
        return None


class Uppers:
    """Upper platforms answering the gb sink: ``down`` ones answer 408 (no answer)."""

    levels = {"district-120101": "district", "municipal": "municipal", "police": "police"}

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.got: list[tuple[str, OutboundMessage]] = []

    def targets(self, alarm: Any) -> list[str]:
        return list(self.levels)

    async def send(self, name: str, message: OutboundMessage) -> int:
        if name in self.down:
            return 408
        self.got.append((name, message))
        return 200


def notice(
    sn: int = 1,
    *,
    kg: str = KG,
    device: str = BOX,
    sender_kg: str | None = KG,
    method: str = "1",
    alarm_type: str | None = None,
    untrusted: str = "",
    at: float = T0,
    drill_mark: bool = False,
) -> AlarmNotice:
    body = AlarmNotify(
        sn,
        device,
        priority="1",
        method=method,
        alarm_time="2026-11-29T11:34:19",
        description="一键报警",
        alarm_type=alarm_type,
        drill=drill_mark,
    )
    return AlarmNotice(
        device,
        body,
        at,
        True,
        kg,
        "120101",
        peer="udp:127.0.0.1:5060",
        untrusted_reason=untrusted,
        sender_kindergarten_id=sender_kg,
    )


Env = tuple[AlarmService, Clock, Sink, Sink, Uppers]


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[Env]:
    clock, mqtt, webhook, uppers = Clock(), Sink("mqtt"), Sink("webhook"), Uppers()
    gb = GbAlarmSink(uppers.targets, uppers.send, level_of=Uppers.levels.__getitem__)
    service = AlarmService(
        open_alarm_store(db_url),
        [mqtt, webhook, gb],
        AlarmSettings(escalate_after=60.0, retry=RetryPolicy(base=1.0, cap=4.0, jitter=0.0, dead_after=3)),
        enrich=lambda alarm: Enrichment(gateway_id="12010000002090000001"),
        clock=clock,
    )
    await service.start()
    yield service, clock, mqtt, webhook, uppers
    await service.stop()


async def test_drill_is_marked_delivered_everywhere_and_proven(env: Env) -> None:
    service, clock, mqtt, webhook, uppers = env
    service.open_drill(KG, "acceptance-1", T0 + 600)
    waiting = asyncio.ensure_future(service.wait_drill(KG, 30))
    result = await service.receive(notice())
    alarm = await asyncio.wait_for(waiting, 30)
    assert alarm.id == result.alarm_id and alarm.drill
    proof = await service.wait_drill_proof(alarm.id, 30)
    assert proof.complete, proof
    assert [(t.level, t.name) for t in proof.targets] == [
        ("district", "district-120101"),
        ("municipal", "municipal"),
        ("police_platform", "police"),
        ("police_mqtt", "mqtt"),
        ("webhook", "webhook"),
    ]
    assert proof.elapsed is not None and proof.elapsed >= 0
    assert json.loads(mqtt.got[0].body)["drill"] is True and json.loads(webhook.got[0].body)["drill"] is True
    assert topic_for(mqtt.got[0]) == f"kgw/drills/120101/{KG}"
    assert all(m.alarm.drill for _, m in uppers.got)
    # Durable: the store has the drill and one audit line per upper's answer.
    assert await wait_for(lambda: not service.writer.has_progress, 30)
    stored = await service.delivery_proof(alarm.id)
    assert stored.complete and {t.name for t in stored.targets} == {t.name for t in proof.targets}
    _, _, trail = await service.details(alarm.id)
    acks = [t for t in trail if t.action is TransitionAction.UPPER_ACKNOWLEDGED]
    assert sorted((t.actor, t.detail) for t in acks) == [
        ("district-120101", "district alarm"),
        ("municipal", "municipal alarm"),
        ("police", "police alarm"),
    ]
    # Never escalated, never counted as a real alarm.
    clock.now += 3600
    assert service.run_timers() == 0
    assert service.counters["received"] == 0 and service.counters["drills"] == 1
    assert not service._real_open_alarms()
    drills = await service.list_alarms(AlarmFilter(drill=True))
    real = await service.list_alarms(AlarmFilter(drill=False))
    assert [a.id for a in drills.items] == [alarm.id] and real.total == 0
    stored_alarm = await service._run(service.store.get_alarm, alarm.id)
    assert stored_alarm is not None and stored_alarm.drill


async def test_real_alarms_during_a_window_stay_real(env: Env) -> None:
    service, clock, mqtt, _, _ = env
    service.open_drill(KG, "acceptance-1", T0 + 600)
    # Another kindergarten's press, a box of another kindergarten naming ours, a forged sender,
    # a perimeter intrusion of the drilled kindergarten: all real.
    other = await service.receive(notice(1, kg=OTHER_KG, device=OTHER_BOX, sender_kg=OTHER_KG))
    claimed = await service.receive(notice(2, device=OTHER_BOX, sender_kg=OTHER_KG))
    forged = await service.receive(notice(3, untrusted="address_mismatch"))
    perimeter = await service.receive(notice(4, method="5", alarm_type="6"))
    for result in (other, claimed, forged, perimeter):
        alarm = await service.get_alarm(result.alarm_id)
        assert not alarm.drill, result
    assert service.counters["received"] == 4 and service.counters["drills"] == 0
    with pytest.raises(TimeoutError):
        await service.wait_drill(KG, 0.2)  # none of them is the drill
    forged_alarm = await service.get_alarm(forged.alarm_id)
    assert not forged_alarm.verified  # held like any unverified alarm, not a "successful drill"
    _, _, trail = await service.details(claimed.alarm_id)
    assert "sender belongs elsewhere" in trail[0].detail
    assert await wait_for(lambda: len(mqtt.got) == 3, 30)  # the forged one is held
    assert all(topic_for(m).startswith("kgw/alarms/") and not json.loads(m.body)["drill"] for m in mqtt.got)


async def test_a_device_claiming_a_drill_stays_real_and_a_lower_platform_is_believed(env: Env) -> None:
    service, _, _, _, _ = env
    device_claim = await service.receive(notice(1, drill_mark=True))  # no window: the box's own word is nothing
    assert not (await service.get_alarm(device_claim.alarm_id)).drill
    relayed = await service.receive(notice(2, device=LOWER, sender_kg=None, drill_mark=True))
    assert (await service.get_alarm(relayed.alarm_id)).drill
    forged_relay = await service.receive(notice(3, device=LOWER, sender_kg=None, drill_mark=True, untrusted="x"))
    assert not (await service.get_alarm(forged_relay.alarm_id)).drill


async def test_window_expiry_and_close(env: Env) -> None:
    service, clock, _, _, _ = env
    with pytest.raises(DrillError):
        await service.wait_drill(KG, 1)  # no window
    service.open_drill(KG, "acceptance-1", T0 + 60)
    clock.now = T0 + 61
    with pytest.raises(DrillWindowClosed):
        await service.wait_drill(KG, 1)
    late = await service.receive(notice(1, at=T0 + 61))
    assert not (await service.get_alarm(late.alarm_id)).drill  # expired: real
    clock.now = T0 + 100
    service.open_drill(KG, "acceptance-2", T0 + 200)
    waiting = asyncio.ensure_future(service.wait_drill(KG, 30))
    await asyncio.sleep(0)
    service.close_drill(KG)
    with pytest.raises(DrillWindowClosed):
        await waiting
    with pytest.raises(DrillError):
        service.open_drill(KG, "acceptance-3", T0 + 100 + MAX_WINDOW + 1)


async def test_proof_with_an_upper_down_says_which_and_why(env: Env) -> None:
    service, _, mqtt, _, uppers = env
    uppers.down.add("municipal")
    mqtt.fail = "broker unreachable"
    service.open_drill(KG, "acceptance-1", T0 + 600)
    result = await service.receive(notice())
    proof = await service.wait_drill_proof(result.alarm_id, 0.5)
    assert await wait_for(
        lambda: (
            {t.name: t.state for t in service.drill_proof(result.alarm_id).targets}
            == {
                "district-120101": "delivered",
                "municipal": "failed",
                "police": "delivered",
                "mqtt": "failed",
                "webhook": "delivered",
            }
        ),
        30,
    )
    proof = service.drill_proof(result.alarm_id)
    assert not proof.complete and proof.elapsed is None
    by_name = {t.name: t for t in proof.targets}
    assert by_name["municipal"].error == "sip 408" and by_name["municipal"].delivered_at is None
    assert by_name["mqtt"].error == "broker unreachable"
    assert by_name["district-120101"].delivered_at is not None
    with pytest.raises(UnknownAlarm):
        service.drill_proof("no-such-alarm")


async def test_metrics_count_drills_apart(env: Env) -> None:
    service, _, _, _, _ = env
    service.open_drill(KG, "acceptance-1", T0 + 600)
    await service.receive(notice(1))
    await service.receive(notice(2, kg=OTHER_KG, device=OTHER_BOX, sender_kg=OTHER_KG))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in service.collect() for s in m.samples}
    received = {k: v for k, v in samples.items() if k[0] == "kgw_alarms_received_total"}
    assert list(received.values()) == [1.0]  # the real press only
    assert samples[("kgw_alarm_drills_total", ())] == 1.0
    open_alarms = sum(v for k, v in samples.items() if k[0] == "kgw_alarms_open")
    assert open_alarms == 1.0  # the drill is not an open alarm
