"""H2: digest was weak (stateless nonces, no nc tracking, no address binding, guessable, lockout by others).

Over real UDP sockets on 127.0.0.1 / 127.0.0.2.
"""

from __future__ import annotations

import re

from tests.integration.test_bad_input import _token, register
from tests.security.sip_attacker import DEVICE_ID, Peer, keepalive_body


async def test_sniffed_authorization_replayed_from_another_address_is_challenged(gateway_factory):
    service = await gateway_factory(nonce_ttl=300.0)
    device, attacker = await Peer.bind(service), await Peer.bind(service, "127.0.0.2")
    try:
        status, sniffed = await device.register(service, DEVICE_ID)
        assert status == 200
        replay = await attacker.request(
            _new_transaction(sniffed)
        )  # the same credentials, from elsewhere, while the nonce is fresh
        assert replay.status == 401
        assert service.sip.peer_of(DEVICE_ID).host == "127.0.0.1"  # type: ignore[union-attr]
    finally:
        device.close()
        attacker.close()


async def test_same_nc_twice_is_challenged(gateway_factory):
    service = await gateway_factory()
    device = await Peer.bind(service)
    try:
        status, sniffed = await device.register(service, DEVICE_ID)
        assert status == 200
        again = await device.request(_new_transaction(sniffed))  # same nonce, same nc, same address
        assert again.status == 401
    finally:
        device.close()


async def test_rotating_device_ids_from_one_socket_are_rate_limited(gateway_factory):
    service = await gateway_factory()
    attacker = await Peer.bind(service)
    checked = limited = 0
    try:
        for i in range(40):
            device_id = f"120101001113200{i + 1000:05d}"
            status, _ = await attacker.register(service, device_id, password=f"guess{i}")
            if status == 403:
                checked += 1  # a password was tried
            elif status == 503:
                limited += 1
        # A handful of guesses a second per source (the review: 3,000 in 4.2 s).
        assert checked <= 15, (checked, limited)
        assert limited >= 25
    finally:
        attacker.close()


async def test_bad_registers_from_another_address_do_not_lock_out_the_real_device(gateway_factory):
    service = await gateway_factory()
    device, attacker = await Peer.bind(service), await Peer.bind(service)  # same IP (its NAT), other port
    try:
        status, sniffed = await device.register(service, DEVICE_ID)
        assert status == 200
        sniffed_auth = next(line for line in sniffed.decode().split("\r\n") if line.startswith("Authorization:"))
        for i in range(5):  # wrong passwords, each on a nonce of the attacker's own
            assert (await attacker.register(service, DEVICE_ID, password=f"wrong{i}"))[0] in (403, 503)
        for i in range(5):  # the device's sniffed nonce with a guessed response: not even counted
            call_id = f"{_token()}@127.0.0.1"
            forged = sniffed_auth.split(": ", 1)[1].replace('response="', 'response="0', 1)
            data = register(service, attacker, DEVICE_ID, call_id, 10 + i, forged)
            assert (await attacker.request(data)).status in (401, 403, 503)  # 403: (ID, IP) is throttled

        # The real device refreshes from its registered address: not locked out.
        status, _ = await device.register(service, DEVICE_ID)
        assert status == 200
        assert (await device.message(service, DEVICE_ID, keepalive_body(DEVICE_ID))).status == 200
    finally:
        device.close()
        attacker.close()


def _new_transaction(data: bytes) -> bytes:
    """The same REGISTER (credentials included) as a new transaction: a new branch and CSeq.

    Sending the very same bytes again is a retransmission, which the transaction
    layer answers with its stored response; a replay attacker starts a new one.
    """
    text = data.decode()
    text = re.sub(r"branch=z9hG4bK[0-9a-f]+", f"branch=z9hG4bK{_token()}", text)
    text = re.sub(r"CSeq: \d+ REGISTER", "CSeq: 77 REGISTER", text)
    return text.encode()
