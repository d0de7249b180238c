"""H1 (part 1): registering as an existing device from another address took its INVITEs silently.

With the shared password a re-home cannot be told from a device that really
moved, so it stays possible with valid credentials, but it is never silent:
a ``DeviceRehomed`` warning, a metric and a status event the API shows.
Without valid credentials, nothing moves.
"""

from __future__ import annotations

import logging

from gateway.gb28181.sip.transport import Peer as SipPeer
from gateway.gb28181.sip.transport import Transport
from tests.conftest import http_json, wait_for
from tests.security.sip_attacker import DEVICE_ID, Peer, keepalive_body


async def test_rehome_by_authenticated_register_is_logged_counted_and_shown(gateway_factory, caplog):
    caplog.set_level(logging.WARNING, logger="kgw")
    service = await gateway_factory()
    device, attacker = await Peer.bind(service), await Peer.bind(service, "127.0.0.2")
    try:
        assert (await device.register(service, DEVICE_ID))[0] == 200
        assert (await device.message(service, DEVICE_ID, keepalive_body(DEVICE_ID))).status == 200

        wrong = await attacker.register(service, DEVICE_ID, password="not-the-password")
        assert wrong[0] == 403
        assert service.sip.peer_of(DEVICE_ID) == SipPeer(Transport.UDP, "127.0.0.1", device.port)

        assert (await attacker.register(service, DEVICE_ID))[0] == 200  # the shared password: a master key

        assert service.sip.peer_of(DEVICE_ID) == SipPeer(Transport.UDP, "127.0.0.2", attacker.port)
        assert any("re-homed" in r.getMessage() and DEVICE_ID in r.getMessage() for r in caplog.records)
        url = f"http://127.0.0.1:{service.http_port}/api/events?entity={DEVICE_ID}"

        async def shown() -> bool:
            status, page = await http_json(url)
            return status == 200 and any("rehomed" in e["reason"] for e in page["items"])

        visible = False
        for _ in range(100):
            if visible := await shown():
                break
            await wait_for(lambda: False, timeout=0.3)
        assert visible
        assert service.events.rehomed._value.get() == 1
    finally:
        device.close()
        attacker.close()
