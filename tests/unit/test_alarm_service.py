"""AlarmService on a fake clock: store-before-answer, dedupe, escalation, ack, dead letters, restart.

Every test runs on both backends (``db_url``: SQLite, then PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.alarms.intake import AlarmNotice
from gateway.alarms.model import Alarm, AlarmState, DeliveryEvent, DeliveryState
from gateway.alarms.outbox import RetryPolicy
from gateway.alarms.payload import Enrichment
from gateway.alarms.service import AlarmService, AlarmSettings
from gateway.alarms.sinks.base import OutboundMessage
from gateway.alarms.store import AlarmStore, open_alarm_store
from gateway.errors import DeliveryError, InvalidTransition, StoreError
from gateway.gb28181.manscdp import AlarmNotify
from tests.conftest import wait_for

KG = "12010100112160001000"
T0 = datetime(2026, 11, 29, 3, 34, 19, tzinfo=UTC).timestamp()


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeSink:
    """Records what it is given; ``mode`` ok | fail (transient) | reject (permanent)."""

    def __init__(self, name: str = "police") -> None:
        self.name = name
        self.max_inflight = 8
        self.mode = "ok"
        self.got: list[OutboundMessage] = []
        self.attempts = 0

    @property
    def up(self) -> bool | None:
        return self.mode == "ok"

    async def start(self) -> None:
        return None

    async def deliver(self, message: OutboundMessage) -> None:
        self.attempts += 1
        if self.mode == "fail":
            raise DeliveryError("broker unreachable")
        if self.mode == "reject":
            raise DeliveryError("http 400", permanent=True)
        self.got.append(message)

    async def close(self) -> None:
        return None

    def payloads(self, event: str = "alarm") -> list[dict[str, Any]]:
        return [p for p in (json.loads(m.body) for m in self.got) if p["event"] == event]


def notice(
    sn: int = 1,
    when: str = "2026-11-29T03:34:19",
    *,
    kg: str = KG,
    device: str = "12010100111340001001",
    at: float | None = None,
) -> AlarmNotice:
    body = AlarmNotify(sn, device, priority="1", method="1", alarm_time=when, description="一键报警")
    return AlarmNotice(device, body, at if at is not None else T0, True, kg, "120101")


async def make(
    clock: FakeClock, sinks: list[FakeSink], *, store: AlarmStore | None = None, escalate_after: float = 60.0
) -> AlarmService:
    service = AlarmService(
        store or open_alarm_store(":memory:"),
        sinks,
        AlarmSettings(escalate_after=escalate_after, retry=RetryPolicy(base=1.0, cap=4.0, jitter=0.0, dead_after=3)),
        enrich=lambda alarm: Enrichment(gateway_id="12010000002090000001"),
        clock=clock,
    )
    await service.start()
    return service


@pytest.fixture
async def running(db_url: str) -> Any:
    services: list[AlarmService] = []

    async def start(*args: Any, **kw: Any) -> AlarmService:
        kw.setdefault("store", open_alarm_store(db_url))
        service = await make(*args, **kw)
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop()


Starter = Callable[..., Any]


async def test_receive_stores_then_delivers_and_marks_delivered(running: Starter) -> None:
    clock, sink = FakeClock(), FakeSink()
    service = await running(clock, [sink])
    result = await service.receive(notice())
    assert not result.duplicate
    stored = await service._run(service.store.get_alarm, result.alarm_id)
    assert stored is not None  # committed before receive returned
    assert await wait_for(lambda: len(sink.got) == 1, 30)
    assert await wait_for(lambda: service.lifecycle.get(result.alarm_id).state is AlarmState.DELIVERED, 30)
    payload = sink.payloads()[0]
    assert payload["alarm_id"] == result.alarm_id and payload["schema"] == 1


async def test_repeat_is_recognised_and_not_delivered_twice(running: Starter) -> None:
    clock, sink = FakeClock(), FakeSink()
    service = await running(clock, [sink])
    # the same SN again: the device's retransmission (a new SN would be a new press, issue 10 C4)
    first, second = await asyncio.gather(service.receive(notice(sn=1)), service.receive(notice(sn=1, at=T0 + 1)))
    assert (first.duplicate, second.duplicate) == (False, True) and second.alarm_id == first.alarm_id
    assert await wait_for(lambda: len(sink.got) == 1, 30)
    # Both notices were handled (gather returned); once the outbox is empty nothing else can go out.
    assert await wait_for(lambda: len(service.outbox) == 0, 30)
    assert len(sink.got) == 1
    _, _, trail = await service.details(first.alarm_id)
    assert [t.action.value for t in trail].count("duplicate") == 1


async def test_escalation_fires_at_the_deadline_on_the_fake_clock(running: Starter) -> None:
    clock, sink = FakeClock(), FakeSink()
    service = await running(clock, [sink], escalate_after=60.0)
    result = await service.receive(notice())
    assert await wait_for(lambda: len(sink.got) == 1, 30)
    clock.now = T0 + 59.9
    assert service.run_timers() == 0
    clock.now = T0 + 60.0
    assert service.run_timers() == 1
    assert service.run_timers() == 0  # once
    service.poke()
    assert await wait_for(lambda: len(sink.payloads("escalated")) == 1, 30)
    escalated = sink.payloads("escalated")[0]
    assert escalated["alarm_id"] == result.alarm_id and escalated["escalation"]["level"] == "municipal"
    alarm, deliveries, trail = await service.details(result.alarm_id)
    assert alarm.escalated_at == T0 + 60.0
    assert {(d.event, d.state) for d in deliveries} == {
        (DeliveryEvent.ALARM, DeliveryState.DELIVERED),
        (DeliveryEvent.ESCALATED, DeliveryState.DELIVERED),
    }
    assert "escalated" in [t.action.value for t in trail]
    # acknowledging an escalated alarm still works
    acked = await service.acknowledge(result.alarm_id, "张三")
    assert acked.state is AlarmState.ACKNOWLEDGED and acked.escalated_at == T0 + 60.0


async def test_acknowledged_in_time_does_not_escalate(running: Starter) -> None:
    clock, sink = FakeClock(), FakeSink()
    service = await running(clock, [sink], escalate_after=60.0)
    result = await service.receive(notice())
    clock.now = T0 + 30
    acked = await service.acknowledge(result.alarm_id, "张三", "已到场")
    assert (acked.acknowledged_by, acked.acknowledged_at) == ("张三", T0 + 30)
    clock.now = T0 + 3600
    assert service.run_timers() == 0
    with pytest.raises(InvalidTransition):
        await service.acknowledge(result.alarm_id, "李四")
    resolved = await service.resolve(result.alarm_id, "李四", "误报")
    assert resolved.state is AlarmState.RESOLVED
    stored = await service._run(service.store.get_alarm, result.alarm_id)
    assert stored is not None and stored.state is AlarmState.RESOLVED and stored.resolved_by == "李四"


async def test_transient_failures_back_off_on_the_clock_and_dead_letter_but_keep_trying(running: Starter) -> None:
    clock, sink = FakeClock(), FakeSink()
    sink.mode = "fail"
    service = await running(clock, [sink], escalate_after=0)
    result = await service.receive(notice())
    key = (result.alarm_id, "police", "alarm")
    outbox = service.outbox
    assert await wait_for(lambda: sink.attempts == 1, 30)
    for failed, step in enumerate((1.0, 2.0, 4.0), start=1):  # base 1 s, doubling, no jitter
        # The failure is recorded and the retry scheduled exactly `step` s later on the fake clock;
        # until that clock moves, the sink cannot be called again.
        assert await wait_for(
            lambda s=step: outbox.in_flight("police") == 0 and outbox.get_timer("police") == clock.now + s,  # type: ignore[misc]
            30,
        )
        assert sink.attempts == failed
        clock.now += step
        service.poke()
        assert await wait_for(lambda n=failed: sink.attempts == n + 1, 30)  # type: ignore[misc]
    assert await wait_for(lambda: outbox.in_flight("police") == 0, 30)
    delivery = service.outbox.get(key)
    assert delivery is not None and delivery.state is DeliveryState.DEAD and delivery.attempts == 4
    assert service.outbox.dead_count("police") == 1
    sink.mode = "ok"
    clock.now += 4.0
    service.poke()
    assert await wait_for(lambda: len(sink.got) == 1, 30)
    assert service.outbox.depth("police") == 0
    _, deliveries, trail = await service.details(result.alarm_id)
    assert deliveries[0].state is DeliveryState.DELIVERED and deliveries[0].attempts == 5
    actions = [t.action.value for t in trail]
    assert actions.count("delivery_failed") == 1 and "dead_lettered" in actions and "delivered" in actions


async def test_a_rejected_alarm_does_not_hold_back_the_next_one(running: Starter) -> None:
    clock, sink = FakeClock(), FakeSink()
    sink.mode = "reject"
    service = await running(clock, [sink], escalate_after=0)
    first = await service.receive(notice(sn=1, when="2026-11-29T03:34:19"))
    assert await wait_for(lambda: sink.attempts == 1, 30)
    sink.mode = "ok"
    second = await service.receive(notice(sn=2, when="2026-11-29T03:34:25"))
    assert await wait_for(lambda: [p["alarm_id"] for p in sink.payloads()] == [second.alarm_id], 30)
    page = await service.list_deliveries("dead", None, 0, 10)
    assert [d.alarm_id for d in page.items] == [first.alarm_id]
    await service.retry_delivery((first.alarm_id, "police", "alarm"))
    assert await wait_for(lambda: len(sink.got) == 2, 30)


async def test_store_failure_raises_and_the_retry_is_a_new_alarm(running: Starter, db_url: str) -> None:
    class FailingOnce:
        def __init__(self, inner: AlarmStore) -> None:
            self.inner, self.fail = inner, 3

        def save_intake(self, *args: Any) -> None:
            if self.fail:
                self.fail -= 1
                raise StoreError("disk full")
            self.inner.save_intake(*args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    clock, sink = FakeClock(), FakeSink()
    service = await running(clock, [sink], store=FailingOnce(open_alarm_store(db_url)))  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        await service.receive(notice())
    assert sink.got == [] and service.writer.failures == 3
    result = await service.receive(notice(sn=2))  # the device sends it again
    assert not result.duplicate
    assert await wait_for(lambda: len(sink.got) == 1, 30)


async def test_restart_restores_the_outbox_and_the_dedupe_window(db_url: str) -> None:
    db = db_url
    clock, sink = FakeClock(), FakeSink()
    sink.mode = "fail"
    service = await make(clock, [sink], store=open_alarm_store(db))
    first = await service.receive(notice(sn=1, when="2026-11-29T03:34:19"))
    second = await service.receive(notice(sn=2, when="2026-11-29T03:34:25", at=T0 + 6))
    first_seq = (await service.get_alarm(first.alarm_id)).seq
    assert await wait_for(lambda: sink.attempts >= 1, 30)  # the second waits behind the first (same kindergarten)
    assert service.outbox.depth("police") == 2
    await service.stop()

    sink2 = FakeSink()
    restarted = await make(clock, [sink2], store=open_alarm_store(db))
    try:
        clock.now += 10.0  # past both deliveries' next attempt
        restarted.poke()
        assert await wait_for(lambda: len(sink2.got) == 2, 30)
        assert [p["alarm_id"] for p in sink2.payloads()] == [first.alarm_id, second.alarm_id]
        again = await restarted.receive(notice(sn=1, when="2026-11-29T03:34:19", at=T0 + 10))
        assert again.duplicate and again.alarm_id == first.alarm_id  # the dedupe window survived
        fresh = await restarted.receive(notice(sn=4, when="2026-11-29T03:35:00", at=T0 + 41))
        assert not fresh.duplicate
        alarm: Alarm = await restarted.get_alarm(fresh.alarm_id)
        # Numbered from a new block (seqs are reserved in blocks, unique across nodes): above both.
        assert alarm.seq > (await restarted.get_alarm(second.alarm_id)).seq > first_seq
    finally:
        await restarted.stop()
