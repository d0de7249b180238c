"""M2: WebRTC offers are capped per user and in total, time out when they never connect, and bind
ICE only on the configured interface, with no mDNS socket.

The review made 1,000 offers (138 MiB, 2,000 ICE sockets), saw ICE bind public interfaces
although everything was configured for 127.0.0.1, and a ``.local`` candidate open
0.0.0.0:5353. Until authentication lands the caller is keyed by its source address.
The gateway's sockets are told apart from the test's own aiortc clients by inode: the
clients gather first, then every UDP socket that appears is the gateway's.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection

from gateway.security.accounts import ApiToken, secret_digest
from gateway.security.principal import Role
from tests.conftest import TEST_TOKEN_GRANT, wait_for

MDNS_CANDIDATE = "a=candidate:1 1 udp 2113937151 3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f.local 54321 typ host\r\n"


def _camera(fleet) -> str:
    for agent in fleet.agents.values():
        for channel in agent.profile.channels:
            if channel.device_id[10:13] == "131":
                return channel.device_id
    raise AssertionError("no camera in the simulated kindergarten")


def _udp_sockets() -> dict[int, tuple[str, int]]:
    """This process's UDP sockets: inode -> (local address, port), from /proc/net/udp{,6}."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(int(m.group(1)))
    found = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                inode = int(parts[9])
                if inode in inodes:
                    hexaddr, hexport = parts[1].split(":")
                    if len(hexaddr) == 8:
                        addr = ".".join(str(b) for b in bytes.fromhex(hexaddr)[::-1])
                    else:
                        addr = "::" if int(hexaddr, 16) == 0 else hexaddr
                    found[inode] = (addr, int(hexport, 16))
    return found


async def _offer() -> tuple[RTCPeerConnection, str]:
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver("video", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    sdp = client.localDescription.sdp
    # a browser hides its host address behind an mDNS name
    sdp = re.sub(r"(a=mid:[^\r\n]*\r\n)", r"\1" + MDNS_CANDIDATE.replace("\\", "\\\\"), sdp, count=1)
    return client, sdp


# Three staff members, each with their own API token (the caps count per authenticated user).
USERS = {name: f"kgw_m2_{name}_" + secrets.token_urlsafe(16) for name in ("zhang", "wang", "li")}
GRANTS = tuple(ApiToken(name, secret_digest(secret), Role.CITY_ADMIN) for name, secret in USERS.items())


async def _post(api: str, channel_id: str, sdp: str, user: str) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {USERS[user]}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{api}/api/channels/{channel_id}/webrtc", json={"sdp": sdp}, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_webrtc_offers_are_capped_time_out_and_bind_only_the_media_host(gateway_factory, fleet_factory):
    service = await gateway_factory(
        webrtc_per_user=2, webrtc_total=3, webrtc_ice_timeout=3.0, api_tokens=(TEST_TOKEN_GRANT, *GRANTS)
    )
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id = _camera(fleet)
    assert await wait_for(lambda: (c := service.directory.channels.get(channel_id)) is not None and c.online, 60)
    api = f"http://127.0.0.1:{service.http_port}"

    offers = [await _offer() for _ in range(5)]  # the clients' own sockets exist from here on
    before = set(_udp_sockets())
    try:
        results = []
        for user, (_client, sdp) in zip(("zhang", "zhang", "zhang", "wang", "li"), offers, strict=True):
            results.append(await _post(api, channel_id, sdp, user))
        assert ".local" in offers[0][1]
        statuses = [status for status, _ in results]
        assert statuses == [200, 200, 429, 200, 503], results
        assert "error" in results[2][1] and "error" in results[4][1]
        await asyncio.sleep(0.5)  # an mDNS lookup would have bound its socket by now
        gateway_sockets = {i: a for i, a in _udp_sockets().items() if i not in before}
        assert gateway_sockets, "the answers gathered host candidates"
        wrong = {a for a in gateway_sockets.values() if a[0] != "127.0.0.1" or a[1] == 5353}
        assert not wrong, f"ICE/mDNS sockets outside the configured 127.0.0.1: {sorted(wrong)}"

        # Nobody applied the answers: after the ICE timeout the sessions and their sockets are gone.
        assert await wait_for(lambda: not service.webrtc.slots, 30), "unconnected sessions closed"
        assert await wait_for(lambda: not (set(_udp_sockets()) - before), 30), "their sockets freed"
        assert service.webrtc.timed_out == 3
        status, _ = await _post(api, channel_id, offers[2][1], "zhang")
        assert status == 200, "slots came back"
    finally:
        for client, _ in offers:
            await client.close()
