"""Issue 10 (C3, M1) on the alarm service: held unverified alarms (durable across a restart,
escalating in the consoles only, released once by the device or an operator), collapsed repeats,
urgent outbox lanes, and the verify route's permission and audit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.alarms.intake import AlarmNotice
from gateway.alarms.model import Delivery, DeliveryEvent
from gateway.alarms.outbox import Outbox, RetryPolicy
from gateway.alarms.store import open_alarm_store
from gateway.audit.actions import AuditAction
from gateway.errors import InvalidTransition
from gateway.gb28181.manscdp import AlarmNotify
from gateway.httpapi.alarm_routes import add_alarm_routes
from gateway.httpapi.identity import AUDIT, PRINCIPAL_KEY
from gateway.registry.directory import Directory
from gateway.security.principal import Principal, Role
from tests.conftest import wait_for
from tests.unit.test_alarm_service import KG, T0, FakeClock, FakeSink, Starter, make

FORGER = "udp:10.9.9.9:5099"


@pytest.fixture
async def running() -> Any:
    services: list[Any] = []

    async def start(*args: Any, **kw: Any) -> Any:
        service = await make(*args, **kw)
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop()


def forged(sn: int = 1, *, reason: str = "address_mismatch", method: str = "1", at: float = T0) -> AlarmNotice:
    body = AlarmNotify(sn, "12010100111340001001", priority="1", method=method, alarm_time="2026-11-29T03:34:19")
    return AlarmNotice("12010100111340001001", body, at, True, KG, "120101", FORGER, reason)


async def test_an_unverified_alarm_is_held_escalates_locally_and_goes_out_once_when_the_device_registers(
    running: Starter,
) -> None:
    clock, sink = FakeClock(), FakeSink()
    service = await running(clock, [sink], escalate_after=60.0)
    result = await service.receive(forged())
    alarm, deliveries, trail = await service.details(result.alarm_id)
    assert not alarm.verified and alarm.unverified_reason == "address_mismatch" and deliveries == []
    assert "held" in [t.action.value for t in trail]
    clock.now = T0 + 60.0
    assert service.run_timers() == 1  # escalates (consoles) ...
    service.poke()
    assert service.outbox.depth("police") == 0 and sink.got == []  # ... but nothing leaves
    service.device_registered("12010100111340001001", "udp:10.0.0.2:5060")  # another address: no
    assert service.held_count() == 1
    service.device_registered("12010100111340001001", FORGER)
    assert await wait_for(lambda: len(sink.got) == 2, 30)
    assert [p["event"] for p in sink.payloads("alarm") + sink.payloads("escalated")] == ["alarm", "escalated"]
    assert service.held_count() == 0
    verified = await service.get_alarm(result.alarm_id)
    assert verified.verified and verified.verified_by == "device"
    service.device_registered("12010100111340001001", FORGER)  # again: nothing more
    assert await wait_for(lambda: len(service.outbox) == 0, 30)
    assert len(sink.got) == 2


async def test_held_survives_a_restart_and_an_operator_releases_it(db_url: str) -> None:
    db = db_url  # both backends
    clock, sink = FakeClock(), FakeSink()
    service = await make(clock, [sink], store=open_alarm_store(db))
    result = await service.receive(forged(reason="not_registered"))
    await service.stop()
    sink2 = FakeSink()
    restarted = await make(clock, [sink2], store=open_alarm_store(db))
    try:
        assert restarted.held_count() == 1 and sink2.got == []
        released = await restarted.verify(result.alarm_id, "李四", "called the kindergarten")
        assert released.verified_by == "李四"
        assert await wait_for(lambda: len(sink2.got) == 1, 30)
        try:
            await restarted.verify(result.alarm_id, "李四")
            raise AssertionError("verified twice")
        except InvalidTransition:
            pass
    finally:
        await restarted.stop()
    again = await make(clock, [FakeSink()], store=open_alarm_store(db))
    try:
        assert again.held_count() == 0 and len(again.outbox) == 0  # delivered once, not again
    finally:
        await again.stop()


async def test_a_resolved_held_alarm_is_never_delivered(running: Starter) -> None:
    clock, sink = FakeClock(), FakeSink()
    service = await running(clock, [sink])
    result = await service.receive(forged())
    await service.resolve(result.alarm_id, "王五", "forged")
    service.device_registered("12010100111340001001", FORGER)
    try:
        await service.verify(result.alarm_id, "王五")
        raise AssertionError("a resolved alarm was verified")
    except InvalidTransition:
        pass
    assert service.held_count() == 0 and len(service.outbox) == 0 and sink.got == []


async def test_repeats_beyond_the_budget_are_counted_and_stored_before_the_answer(running: Starter) -> None:
    clock, sink = FakeClock(), FakeSink()
    service = await running(clock, [sink])
    service.intake = type(service.intake)(lambda: f"a{clock.now}-{len(sink.got)}", rate=0.001, burst=1)
    first = await service.receive(forged(1, reason=""))
    second = await service.receive(forged(2, reason=""))
    assert second.collapsed and second.alarm_id == first.alarm_id
    stored = await service._run(service.store.get_alarm, first.alarm_id)
    assert stored is not None and stored.repeats == 1  # committed before receive returned
    assert await wait_for(lambda: len(sink.got) == 1, 30)
    acked = await service.acknowledge(first.alarm_id, "张三")
    assert acked.repeats == 1
    third = await service.receive(forged(3, reason=""))  # taken by a person: a new alarm, not hidden in it
    assert not third.collapsed and third.alarm_id != first.alarm_id


def test_an_urgent_delivery_overtakes_the_kindergartens_queued_routine_ones() -> None:
    outbox = Outbox(RetryPolicy(jitter=0.0))
    for seq in range(1, 6):
        outbox.add(Delivery(f"r{seq}", "webhook", DeliveryEvent.ALARM, KG, seq, 0.0))
    outbox.add(Delivery("press", "webhook", DeliveryEvent.ALARM, KG, 6, 0.0, urgent=True))
    outbox.add(Delivery("press2", "webhook", DeliveryEvent.ALARM, KG, 7, 0.0, urgent=True))
    order = []
    for _ in range(7):
        (taken,) = outbox.take_due("webhook", 1.0, 8)
        order.append(taken.alarm_id)
        outbox.succeeded(taken.key, 1.0)
    assert order == ["press", "press2", "r1", "r2", "r3", "r4", "r5"]


async def _client(service: Any, principal: Principal | None, audit: Any) -> TestClient[Any, Any]:
    @web.middleware
    async def login(request: web.Request, handler: Any) -> web.StreamResponse:
        if principal is not None:
            request[PRINCIPAL_KEY] = principal
        return await handler(request)  # type: ignore[no-any-return]

    app = web.Application(middlewares=[login])
    app[AUDIT] = audit
    add_alarm_routes(app, service, Directory())
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[AuditAction, str, str]] = []

    def record(self, action: AuditAction, *, actor: Any, target: str = "", outcome: str = "ok", **_: Any) -> None:
        self.records.append((action, actor.username if actor else "", outcome))


async def test_the_verify_route_decides_who_may_and_audits(running: Starter) -> None:
    clock, sink = FakeClock(), FakeSink()
    service = await running(clock, [sink])
    result = await service.receive(forged())
    audit = Audit()
    other_district = Principal("duty-b", Role.DISTRICT_DUTY, district_code="120102")
    police = Principal("police", Role.POLICE)
    duty = Principal("duty-a", Role.DISTRICT_DUTY, district_code="120101")
    # Police never verify (403: the role lacks the capability); another district's alarm answers
    # like an unknown one (404, the scope rule: a probe cannot confirm it exists).
    for principal, status in ((None, 401), (police, 403), (other_district, 404), (duty, 200), (duty, 409)):
        client = await _client(service, principal, audit)
        try:
            response = await client.post(f"/api/alarms/{result.alarm_id}/verify", json={"note": "called"})
            assert response.status == status, (principal, await response.text())
            if status == 200:
                body = await response.json()
                assert body["verified"] is True and body["verified_by"] == "duty-a"
        finally:
            await client.close()
    assert await wait_for(lambda: len(sink.got) == 1, 30)
    assert (AuditAction.ALARM_VERIFY, "duty-a", "ok") in audit.records
    assert (AuditAction.ACCESS_DENIED, "police", "denied") in audit.records  # refusals: the guard's record
    assert (AuditAction.ACCESS_DENIED, "duty-b", "denied") in audit.records
    listed = replace(await service.get_alarm(result.alarm_id))
    assert listed.verified
