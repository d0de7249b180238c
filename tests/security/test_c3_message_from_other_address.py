"""C3: MESSAGEs were believed from any source (issue 10).

Over real UDP sockets: the device registers from one socket; an attacker
claims to be it from another port of the same host or from another host
(127.0.0.2). Nothing the attacker sends moves the session, keeps the device
online or changes its catalog; an alarm it forges is kept, but as untrusted.
"""

from __future__ import annotations

import asyncio

from gateway.gb28181.sip.transport import Peer as SipPeer
from gateway.gb28181.sip.transport import Transport
from tests.conftest import http_json, wait_for
from tests.security.sip_attacker import DEVICE_ID, Peer, alarm_body, catalog_body, keepalive_body

CHANNEL_ID = "12010100111310000199"


async def test_keepalive_from_another_port_does_not_move_the_session(gateway_factory):
    service = await gateway_factory()
    device, attacker = await Peer.bind(service), await Peer.bind(service)  # same host, other ports
    try:
        assert (await device.register(service, DEVICE_ID))[0] == 200
        assert (await device.message(service, DEVICE_ID, keepalive_body(DEVICE_ID))).status == 200

        forged = await attacker.message(service, DEVICE_ID, keepalive_body(DEVICE_ID, 2))

        assert forged.status == 404  # refused: not the registered address (the device would re-register)
        assert service.sip.peer_of(DEVICE_ID) == SipPeer(Transport.UDP, "127.0.0.1", device.port)
        # The next query goes to the real device, not to the attacker.
        assert service.sip.access.query_device_status(DEVICE_ID, asyncio.get_running_loop().time()) is not None
        while b"<CmdType>DeviceStatus<" not in (query := await device.next_request()).body:
            pass  # the initial DeviceInfo/Catalog queries come first
        assert query.method == "MESSAGE"
        assert not any(b"DeviceStatus" in p for p in attacker.packets)
        metrics = service.events.refusal_reasons.labels(reason="address_mismatch")._value.get()
        assert metrics >= 1
    finally:
        device.close()
        attacker.close()


async def test_forged_keepalives_do_not_keep_a_dead_device_online(gateway_factory):
    service = await gateway_factory(keepalive_interval=1.0, keepalive_missed=2)
    device, attacker = await Peer.bind(service), await Peer.bind(service)
    try:
        assert (await device.register(service, DEVICE_ID))[0] == 200
        assert (await device.message(service, DEVICE_ID, keepalive_body(DEVICE_ID))).status == 200
        liveness = service.sip.access.liveness
        assert liveness.is_online(DEVICE_ID)
        device.close()  # the device dies; the attacker keeps "it" alive

        async def forge() -> None:
            sn = 100
            while True:
                sn += 1
                await attacker.message(service, DEVICE_ID, keepalive_body(DEVICE_ID, sn))
                await asyncio.sleep(0.2)

        forging = asyncio.create_task(forge())
        try:
            assert await wait_for(lambda: not liveness.is_online(DEVICE_ID), timeout=60)
        finally:
            forging.cancel()
    finally:
        attacker.close()


async def test_forged_catalog_from_another_host_is_refused_and_changes_nothing(gateway_factory):
    service = await gateway_factory()
    device, attacker = await Peer.bind(service), await Peer.bind(service, "127.0.0.2")
    try:
        assert (await device.register(service, DEVICE_ID))[0] == 200
        assert (await device.message(service, DEVICE_ID, keepalive_body(DEVICE_ID))).status == 200

        forged = await attacker.message(service, DEVICE_ID, catalog_body(DEVICE_ID, CHANNEL_ID, "午睡室·大门口"))

        assert forged.status == 404
        assert (await attacker.options(service)).status == 200  # the forged catalog was handled before this
        assert CHANNEL_ID not in service.directory.channels
    finally:
        device.close()
        attacker.close()


async def test_forged_alarm_from_another_host_reaches_the_pipeline_as_untrusted(gateway_factory):
    service = await gateway_factory()
    device, attacker = await Peer.bind(service), await Peer.bind(service, "127.0.0.2")
    try:
        assert (await device.register(service, DEVICE_ID))[0] == 200

        answered = await attacker.message(service, DEVICE_ID, alarm_body(DEVICE_ID))

        assert answered.status == 404  # stored first, then told to register (no Response/Alarm to anyone)
        status, page = await http_json(f"http://127.0.0.1:{service.http_port}/api/alarms")
        assert status == 200
        alarms = [a for a in page["items"] if a["device_id"] == DEVICE_ID]
        assert len(alarms) == 1, page
        assert alarms[0]["sender_registered"] is False
        untrusted = service.events.untrusted_alarms.labels(reason="address_mismatch")._value.get()
        assert untrusted == 1
    finally:
        device.close()
        attacker.close()
