"""L4: the nonce exposed the gateway's monotonic clock (its first 12 hex digits were the issue time)."""

from __future__ import annotations

import asyncio
import time

from gateway.gb28181.sip.auth import parse_auth_params
from tests.integration.test_bad_input import _token, register
from tests.security.sip_attacker import DEVICE_ID, Peer


async def test_nonce_reveals_no_clock(gateway_factory):
    service = await gateway_factory()
    peer = await Peer.bind(service)
    try:
        nonces = []
        for _ in range(3):
            challenge = await peer.request(register(service, peer, DEVICE_ID, f"{_token()}@x", 1))
            assert challenge.status == 401
            nonces.append(parse_auth_params(challenge.headers.get("WWW-Authenticate") or "")[1]["nonce"])
        loop_now = asyncio.get_running_loop().time()
        for nonce in nonces:
            for clock in (loop_now, time.monotonic(), time.time()):
                for width in (8, 12, 16):
                    leading = int(nonce[:width], 16)
                    assert abs(leading - clock) > 3600, (nonce, clock)
        assert len(set(nonces)) == 3
        assert len({n[:6] for n in nonces}) > 1  # no shared, slowly moving prefix
    finally:
        peer.close()
