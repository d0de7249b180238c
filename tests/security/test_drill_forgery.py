"""Drills cannot be forged: over real SIP, neither a box's own 【演练】 mark nor a forged press during
a drill window makes a "successful drill", and neither silences a real alarm.

Real sockets: a gateway with a real Mosquitto (everything under ``kgw/#`` watched), the simulated
kindergarten's registered boxes, and a bare SIP user agent on its own UDP port speaking as the box.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiomqtt
import pytest

from gateway.alarms.model import AlarmFilter
from simulators.fleet import alarm_device_of
from simulators.mosquitto import MosquittoBroker
from tests.conftest import wait_for
from tests.security.alarm_ua import AlarmUa


async def test_a_device_cannot_claim_or_forge_a_drill(
    mosquitto: MosquittoBroker, gateway_factory: Any, fleet_factory: Any
) -> None:
    service = await gateway_factory(mqtt=mosquitto.url)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    kg = fleet.city[0]
    box = alarm_device_of(kg, "button")
    seen: list[tuple[str, dict[str, Any]]] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"t-{uuid.uuid4().hex[:8]}") as client:
            await client.subscribe("kgw/#", qos=1)
            ready.set()
            async for message in client.messages:
                seen.append((str(message.topic), json.loads(bytes(message.payload))))  # type: ignore[arg-type]

    listener = asyncio.ensure_future(listen())
    forger = await AlarmUa(service.sip_port, gateway_id=service.config.id, realm=service.config.domain).open()
    try:
        await asyncio.wait_for(ready.wait(), 30)
        # 1. No window, the box's ID with the 【演练】 mark, from another address: stored unverified (held),
        # not a drill (a verified box's own mark is refused too: tests/unit/test_alarm_drills.py).
        assert await forger.alarm(box.id, sn=901, source_id=box.channels[0].id, description="【演练】按钮") is not None
        # 2. A window is open: a forged press as the box from another address is not the drill.
        service.alarms.open_drill(kg.id, "acceptance-forgery", time.time() + 300)
        assert await forger.alarm(box.id, sn=902, source_id=box.channels[0].id) is not None
        assert await wait_for(lambda: service.alarms.counters["unverified"] == 2, 30)
        forged = await service.alarms.list_alarms(AlarmFilter(kindergarten_id=kg.id))
        assert forged.total == 2 and not any(a.drill or a.verified for a in forged.items), forged
        with pytest.raises(TimeoutError):  # a forged press is not the drill
            await service.alarms.wait_drill(kg.id, 0.5)
        # 3. The box itself presses: that is the drill, on kgw/drills/... only.
        fleet.press(kg.id, "button")
        drill = await service.alarms.wait_drill(kg.id, 30)
        assert drill.drill and drill.verified and drill.sn != 902
        assert await wait_for(lambda: any(p.get("alarm_id") == drill.id for _, p in seen), 30)
        assert [t for t, p in seen if p.get("alarm_id") == drill.id] == [f"kgw/drills/{kg.district_code}/{kg.id}"]
        # The forged ones reached no topic at all (held until verified).
        assert not [t for t, p in seen if p.get("alarm_id") in {a.id for a in forged.items}]
        assert service.alarms.counters["drills"] == 1
    finally:
        forger.close()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
