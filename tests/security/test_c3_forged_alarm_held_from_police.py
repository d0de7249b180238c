"""C3 (the alarm half): an alarm from an address the device never registered from is kept and shown
at once as 未验证, but reaches nothing police-facing until the device proves itself by an
authenticated REGISTER from that address, or an operator confirms it; then exactly once.

Real sockets: a gateway with a real Mosquitto police sink, a bare SIP user agent on its own
UDP port. The condition that exists before the SIP core binds sessions to addresses: a device
we know whose registration lapsed (``registered=False``). The "another address of a registered
device" condition is handed to the gateway's alarm receiver as the access event the SIP core
produces for it (``untrusted_reason="address_mismatch"``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiomqtt

from gateway.app import GatewayService
from gateway.gb28181.access_events import AlarmNotified
from gateway.gb28181.manscdp import AlarmNotify
from gateway.gb28181.requests import build_message
from gateway.gb28181.sip.transport import Peer, Transport
from simulators.fleet import alarm_device_of
from simulators.mosquitto import MosquittoBroker
from tests.conftest import http_json, wait_for
from tests.security.alarm_ua import AlarmUa

BOX = "12010000001340000077"  # an alarm input device (type 134) of district 120100


class PoliceTopic:
    """Everything published under kgw/alarms/# and kgw/escalations/#, as the police see it."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.messages: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> PoliceTopic:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier=f"police-{uuid.uuid4().hex[:8]}") as c:
            await c.subscribe("kgw/alarms/#", qos=1)
            await c.subscribe("kgw/escalations/#", qos=1)
            self._ready.set()
            async for message in c.messages:
                self.messages.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]

    def ids(self) -> list[str]:
        return [m["alarm_id"] for m in self.messages if not m["alarm_id"].startswith("marker-")]

    async def settled(self) -> None:
        """Wait until everything published before now has reached us (a marker after it)."""
        marker = f"marker-{uuid.uuid4().hex}"
        async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier=f"t-{marker[:20]}") as client:
            await client.publish("kgw/alarms/test/marker", json.dumps({"alarm_id": marker}).encode(), qos=1)
        assert await wait_for(lambda: any(m["alarm_id"] == marker for m in self.messages), 30)


async def _alarm(service: GatewayService, alarm_id: str) -> dict[str, Any]:
    status, body = await http_json(f"http://127.0.0.1:{service.http_port}/api/alarms/{alarm_id}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def _only_alarm(service: GatewayService) -> dict[str, Any]:
    status, listed = await http_json(f"http://127.0.0.1:{service.http_port}/api/alarms")
    assert status == 200 and listed["total"] == 1, listed
    return listed["items"][0]  # type: ignore[no-any-return]


async def test_forged_alarm_from_an_unregistered_address_is_held_until_the_device_registers_from_it(
    mosquitto: MosquittoBroker, gateway_factory: Any
) -> None:
    service = await gateway_factory(mqtt=mosquitto.url)
    config = service.config
    owner = await AlarmUa(service.sip_port, gateway_id=config.id, realm=config.domain).open()
    sender = await AlarmUa(service.sip_port, gateway_id=config.id, realm=config.domain).open()
    try:
        # The box exists (it registered once) but its registration is gone.
        assert await owner.register(BOX, config.password) == 200
        assert await owner.register(BOX, config.password, expires=0) == 200
        async with PoliceTopic(mosquitto) as police:
            status = await sender.alarm(BOX, sn=4711)
            assert status is not None  # stored, then answered
            alarm = await _only_alarm(service)  # visible at once
            # Whatever the outbox does with it is done when it is empty: then nothing may have reached the police.
            assert await wait_for(lambda: service.alarms.outbox.depth("mqtt") == 0, 30)
            await police.settled()
            assert police.ids() == [], "a forged alarm reached the police topic"
            assert alarm.get("verified") is False, alarm
            assert alarm["unverified_reason"] == "not_registered"
            details = await _alarm(service, alarm["id"])
            assert details["deliveries"] == []  # nothing on its way to any police-facing sink
            assert any(t["action"] == "held" for t in details["transitions"]), details["transitions"]
            await police.settled()
            assert police.ids() == []
            metrics = await asyncio.to_thread(
                lambda: (
                    __import__("urllib.request").request.urlopen(f"http://127.0.0.1:{service.http_port}/metrics").read()
                )
            )
            assert b'kgw_alarms_unverified_total{reason="not_registered"} 1.0' in metrics

            # The device proves itself: an authenticated REGISTER from the address the alarm came from.
            assert await sender.register(BOX, config.password) == 200
            assert await wait_for(lambda: alarm["id"] in police.ids(), 30), police.messages
            verified = await _alarm(service, alarm["id"])
            assert verified["verified"] is True and verified["verified_by"] == "device"
            assert await wait_for(lambda: service.alarms.outbox.depth("mqtt") == 0, 30)
            await police.settled()
            assert police.ids() == [alarm["id"]]  # exactly once
    finally:
        owner.close()
        sender.close()


async def test_alarm_from_another_address_of_a_registered_box_is_held_until_an_operator_confirms(
    mosquitto: MosquittoBroker, gateway_factory: Any, fleet_factory: Any
) -> None:
    service = await gateway_factory(mqtt=mosquitto.url)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    box = alarm_device_of(fleet.city[0], "button")
    loop = asyncio.get_running_loop()
    body = AlarmNotify(
        sn=99,
        device_id=box.channels[0].id,
        priority="1",
        method="1",
        alarm_time=time.strftime("%Y-%m-%dT%H:%M:%S"),
        description="forged",
    )
    request = build_message(
        from_id=box.id,
        from_domain=box.id[:10],
        from_tag="f1",
        to_id=service.config.id,
        request_uri=f"sip:{service.config.id}@{service.config.domain}",
        to_domain=service.config.domain,
        call_id="forged-1",
        cseq=1,
        body=b"",
    )
    event = AlarmNotified(
        box.id,
        body,
        Peer(Transport.UDP, "127.0.0.1", 9),  # not where the box registered from
        "no-such-transaction",
        request,
        "GB2312",
        True,
        loop.time(),
        untrusted_reason="address_mismatch",
    )
    async with PoliceTopic(mosquitto) as police:
        service.events.alarms.receive(event)
        assert await wait_for(lambda: service.alarms.counters["received"] == 1, 30)
        alarm = await _only_alarm(service)
        assert await wait_for(lambda: service.alarms.outbox.depth("mqtt") == 0, 30)
        await police.settled()
        assert police.ids() == [], "a forged alarm reached the police topic"
        assert alarm.get("verified") is False, alarm
        assert alarm["unverified_reason"] == "address_mismatch"
        assert (await _alarm(service, alarm["id"]))["deliveries"] == []
        await police.settled()
        assert police.ids() == []

        confirmed = await service.alarms.verify(alarm["id"], "值班员甲")
        assert confirmed.verified and confirmed.verified_by == "值班员甲"
        assert await wait_for(lambda: alarm["id"] in police.ids(), 30), police.messages
        assert await wait_for(lambda: service.alarms.outbox.depth("mqtt") == 0, 30)
        await police.settled()
        assert police.ids() == [alarm["id"]]
