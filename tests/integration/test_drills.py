"""Drill alarms end to end: simulated boxes → gateway → real Mosquitto and district / municipal / police platforms.

One kindergarten's drill window is open: its button press reaches every level marked as a
drill (``kgw/drills/...`` on the broker, never ``kgw/alarms/...``; 演练 on each platform, which
neither escalates nor counts it) and the gateway proves each delivery. A press in another
kindergarten at the same time is a real alarm everywhere. With the municipal platform down,
the proof names it as not delivered, with the error.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiomqtt

from gateway.alarms.model import AlarmFilter
from gateway.app import GatewayService
from simulators.mosquitto import MosquittoBroker
from tests.conftest import http_json, wait_for
from tests.integration.test_alarms_webhook import SECRET, WebhookReceiver, receiver  # noqa: F401 (fixture)
from tests.integration.test_cascade import platform, upper

DISTRICT = "120116"  # three of the seeded city's first 20 kindergartens are there


class Topics:
    """Everything the broker carries under ``kgw/#``: (topic, payload) in arrival order."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []

    def of(self, alarm_id: str) -> list[str]:
        return [topic for topic, payload in self.got if payload.get("alarm_id") == alarm_id]


async def _listen(broker: MosquittoBroker, topics: Topics, ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-drills-all") as client:
        await client.subscribe("kgw/#", qos=1)
        ready.set()
        async for message in client.messages:
            topics.got.append((str(message.topic), json.loads(bytes(message.payload))))  # type: ignore[arg-type]


def _holds_alarm_input(p: GatewayService, kg_id: str) -> bool:
    return any(c.kindergarten_id == kg_id and c.id[10:13] == "134" for c in p.directory.channels.values())


async def test_drill_reaches_every_level_marked_and_a_real_alarm_stays_real(
    mosquitto: MosquittoBroker,
    gateway_factory: Any,
    platform_factory: Any,
    fleet_factory: Any,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    webhook_url = await receiver.start()
    district = await platform(platform_factory, "district", DISTRICT)
    municipal = await platform(platform_factory, "municipal")
    police = await platform(platform_factory, "police")
    gateway = await gateway_factory(
        mqtt=mosquitto.url,
        webhook_url=webhook_url,
        webhook_secret=SECRET,
        webhook_timeout=10.0,
        upper_platforms=(
            upper(district, "district", DISTRICT),
            upper(municipal, "municipal", keepalive_interval=1.0),
            upper(police, "police"),
        ),
    )
    fleet = await fleet_factory(gateway, kindergartens=20, cameras=(2, 2), only_districts=(DISTRICT,))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    assert await wait_for(lambda: all(s["state"] == "registered" for s in gateway.cascade.status()), 30)
    drilled, other = fleet.city[0], fleet.city[1]
    platforms = (district, municipal, police)
    for p in platforms:
        assert await wait_for(lambda p=p: p.queries.is_registered(gateway.config.id), 30)  # type: ignore[misc]
        assert await wait_for(lambda p=p: p.queries.request_catalog(gateway.config.id) is not None, 30)  # type: ignore[misc]
    for p in platforms:  # a platform places an alarm by its source channel: it must know it first
        for kg in (drilled, other):
            assert await wait_for(lambda p=p, kg=kg: _holds_alarm_input(p, kg.id), 60)  # type: ignore[misc]
    topics, ready = Topics(), asyncio.Event()
    listener = asyncio.ensure_future(_listen(mosquitto, topics, ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        service = gateway.alarms
        service.open_drill(drilled.id, "acceptance-test", time.time() + 300)
        fleet.press(drilled.id, "button")
        drill = await service.wait_drill(drilled.id, 60)
        fleet.press(other.id, "button")  # during the window, another kindergarten: real
        proof = await service.wait_drill_proof(drill.id, 60)
        assert proof.complete, proof
        assert {t.level: t.state for t in proof.targets} == {
            "district": "delivered",
            "municipal": "delivered",
            "police_platform": "delivered",
            "police_mqtt": "delivered",
            "webhook": "delivered",
        }
        assert proof.elapsed is not None and 0 <= proof.elapsed < 60
        real = await _real_alarm(gateway, other.id)
        assert await wait_for(lambda: bool(topics.of(drill.id)) and bool(topics.of(real)), 60)
        assert topics.of(drill.id) == [f"kgw/drills/{DISTRICT}/{drilled.id}"]  # and never on kgw/alarms/...
        assert topics.of(real) == [f"kgw/alarms/{DISTRICT}/{other.id}"]
        payloads = {p["alarm_id"]: p for _, p in topics.got}
        assert payloads[drill.id]["drill"] is True and payloads[real]["drill"] is False
        assert await wait_for(lambda: {p["alarm_id"] for p in receiver.received} >= {drill.id, real}, 60)
        hooks = {p["alarm_id"]: p for p in receiver.received}  # signed (the receiver checks it)
        assert hooks[drill.id]["drill"] is True and hooks[real]["drill"] is False
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    # Each platform got the drill as a drill (【演练】 + Info/Drill from a verified lower platform), and
    # the real alarm as real: drills never count as received alarms, and never escalate.
    for p in platforms:
        assert await wait_for(lambda p=p: p.alarms.counters["drills"] == 1 and p.alarms.counters["received"] == 1, 60)  # type: ignore[misc]
        drills = await p.alarms.list_alarms(AlarmFilter(drill=True))
        assert [a.kindergarten_id for a in drills.items] == [drilled.id]
        assert drills.items[0].description.startswith("【演练】")
        assert not p.alarms.lifecycle._needs_escalation(drills.items[0])
        status, listed = await http_json(f"http://127.0.0.1:{p.http_port}/api/alarms?drill=false")
        assert status == 200 and [a["kindergarten_id"] for a in listed["items"]] == [other.id]
    # The proof over HTTP, from the store (durable: one audit line per upper's 2xx).
    status, body = await http_json(f"http://127.0.0.1:{gateway.http_port}/api/alarms/{drill.id}/deliveries")
    assert status == 200 and body["drill"] is True and body["complete"] is True, body
    assert sorted(t["level"] for t in body["targets"]) == [
        "district",
        "municipal",
        "police_mqtt",
        "police_platform",
        "webhook",
    ]

    # The municipal platform goes away: the next drill's proof says so, with the error.
    await municipal.stop()
    assert await wait_for(lambda: any(s["state"] != "registered" for s in gateway.cascade.status()), 60)
    gateway.alarms.open_drill(drilled.id, "acceptance-test-2", time.time() + 300)
    fleet.press(drilled.id, "button")
    second = await gateway.alarms.wait_drill(drilled.id, 60)
    assert second.id != drill.id
    assert await wait_for(
        lambda: (
            {t.name: t.state for t in gateway.alarms.drill_proof(second.id).targets}.get("district-" + DISTRICT)
            == "delivered"
        ),
        60,
    )
    partial = await gateway.alarms.wait_drill_proof(second.id, 2)
    assert not partial.complete and partial.elapsed is None
    (down,) = partial.level("municipal")
    assert down.state == "failed" and down.delivered_at is None and down.error, down
    status, body = await http_json(f"http://127.0.0.1:{gateway.http_port}/api/alarms/{second.id}/deliveries")
    assert status == 200 and body["complete"] is False
    assert {t["level"]: t["state"] for t in body["targets"]}["municipal"] in ("failed", "pending")


async def _real_alarm(gateway: GatewayService, kg_id: str) -> str:
    found: list[str] = []

    async def probe() -> bool:
        page = await gateway.alarms.list_alarms(AlarmFilter(kindergarten_id=kg_id, drill=False))
        found[:] = [a.id for a in page.items]
        return bool(found)

    deadline = time.monotonic() + 60
    while not await probe():
        assert time.monotonic() < deadline, "the real alarm never arrived"
        await asyncio.sleep(0.05)
    return found[0]
