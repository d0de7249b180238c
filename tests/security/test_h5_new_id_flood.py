"""H5: new-ID floods (no cap on new devices, a query backlog that starved real NVRs, 20x reflection)."""

from __future__ import annotations

import asyncio

from gateway.gb28181.sip.message import SipRequest, SipResponse, parse_message
from tests.integration.test_bad_input import _token, register
from tests.security.sip_attacker import DEVICE_ID, Peer, keepalive_body


def _flood_id(i: int) -> str:
    return f"120101001113201{i:05d}"


async def test_new_device_ids_are_rate_limited_per_source(gateway_factory):
    service = await gateway_factory()
    attacker = await Peer.bind(service)
    statuses: list[int] = []
    try:
        for i in range(260):
            statuses.append((await attacker.register(service, _flood_id(i)))[0])
        assert statuses.count(503) >= 40, statuses  # the review: 24,000 new devices in 40 s, no cap
        assert statuses.count(200) <= 220
        refused = await attacker.request(register(service, attacker, _flood_id(999), f"{_token()}@x", 1))
        assert refused.status == 503 and int(refused.headers.get("Retry-After") or "0") >= 1
    finally:
        attacker.close()


async def test_a_real_device_query_is_sent_at_once_during_a_flood(gateway_factory):
    service = await gateway_factory()
    device, attacker = await Peer.bind(service), await Peer.bind(service, "127.0.0.2")
    try:
        assert (await device.register(service, DEVICE_ID))[0] == 200
        assert (await device.message(service, DEVICE_ID, keepalive_body(DEVICE_ID))).status == 200
        for i in range(150):  # new IDs that never answer their queries
            assert (await attacker.register(service, _flood_id(i)))[0] == 200
        loop = asyncio.get_running_loop()
        asked = loop.time()
        assert service.sip.access.query_device_status(DEVICE_ID, asked) is not None
        while b"<CmdType>DeviceStatus<" not in (await device.next_request(timeout=60)).body:
            pass
        # Before: ~300 queued queries, 64 at a time with 10 s timeouts, went first.
        assert loop.time() - asked < 5.0
    finally:
        device.close()
        attacker.close()


async def test_one_register_from_a_spoofed_address_yields_one_small_packet(gateway_factory):
    """Reflection: whoever REGISTERs (with or without replayed credentials) gets one 401, no bigger."""
    service = await gateway_factory()
    device, victim = await Peer.bind(service), await Peer.bind(service, "127.0.0.2")
    try:
        status, sniffed = await device.register(service, DEVICE_ID)
        assert status == 200
        fresh = register(service, victim, "12010100111320000777", f"{_token()}@x", 1)
        replayed = sniffed.replace(b"branch=z9hG4bK", b"branch=z9hG4bKr", 1)
        for data in (fresh, replayed):
            before = len(victim.packets)
            answer = await victim.request(data)
            assert answer.status == 401
            marker = await victim.options(service)  # everything caused by the REGISTER came before this
            assert marker.status == 200
            got = victim.packets[before:]
            assert len(got) == 2, [parse_message(p) for p in got]  # the 401 and the marker's answer
            assert len(got[0]) <= 1.2 * len(data), (len(got[0]), len(data))
    finally:
        device.close()
        victim.close()


async def test_a_new_device_that_never_answers_gets_one_query_at_a_time(gateway_factory):
    service = await gateway_factory()
    peer = await Peer.bind(service)
    try:
        assert (await peer.register(service, "12010100111320000888"))[0] == 200
        marker = await peer.options(service)
        assert marker.status == 200
        queries = [p for p in peer.packets if isinstance(parse_message(p), SipRequest)]
        answers = [p for p in peer.packets if isinstance(parse_message(p), SipResponse)]
        assert len(queries) == 1, queries  # DeviceInfo; the Catalog waits for it (before: both at once)
        assert len(answers) == 3  # 401, 200, the marker's 200
    finally:
        peer.close()
