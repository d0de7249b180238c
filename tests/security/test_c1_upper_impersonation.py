"""C1: nobody can watch a camera by claiming to be an upper platform.

Real sockets on loopback: a simulated kindergarten registers with the gateway,
the gateway registers with an in-process municipal and police platform
(``kgw platform`` nodes). An attacker sends INVITEs whose From is an upper's
SIP ID from its own socket: they must be refused (403), counted, and open no
stream; 32 of them must not use up the police's live-view quota; and even the
real police may only have media sent to its own (configured) networks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.app import GatewayService
from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper import UpperPlatformConfig
from gateway.config import UpperSpec
from gateway.gb28181.sdp import build_sdp, offer_for_play
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.message import SipRequest
from gateway.live import LiveError
from simulators.city import build_city
from simulators.video import VideoProfile
from tests.conftest import wait_for

VIDEO = VideoProfile(width=320, height=180, seconds=2.0)
CITY = build_city(1, seed=2020, cameras_per_kindergarten=(4, 4))
KG = CITY[0]
_CAMERAS = {c.area: c.id for d in KG.devices for c in d.channels if c.kind == "camera"}
ENTRANCE, NAP_ROOM = _CAMERAS["entrance"], _CAMERAS["dormitory"]  # 大门口, 午睡室
MUNICIPAL_ID, POLICE_ID = "12010000002000000001", "12010000002000000110"
PASSWORDS = {"municipal": "municipal-secret-1", "police": "police-secret-2"}


def _upper(platform: GatewayService, level: str, **kw: Any) -> UpperSpec:
    link = UpperPlatformConfig(
        name=level,
        server_id=platform.config.id,
        host="127.0.0.1",
        port=platform.sip_port,
        password=PASSWORDS[level],
        register_retry_min=0.2,
        register_retry_max=1.0,
        **kw,
    )
    return UpperSpec(link, SharePolicy(PolicyLevel(level)))


async def _system(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any, **police_link: Any
) -> tuple[GatewayService, GatewayService, GatewayService]:
    municipal = await platform_factory(id=MUNICIPAL_ID, role="municipal", password=PASSWORDS["municipal"])
    police = await platform_factory(id=POLICE_ID, role="police", password=PASSWORDS["police"])
    gateway = await gateway_factory(
        upper_platforms=(_upper(municipal, "municipal"), _upper(police, "police", **police_link))
    )
    await fleet_factory(gateway, kindergartens=1, cameras=(4, 4), video=VIDEO)
    assert await wait_for(lambda: {ENTRANCE, NAP_ROOM} <= gateway.directory.channels.keys(), 60)
    assert gateway.cascade is not None
    assert await wait_for(lambda: all(s["state"] == "registered" for s in gateway.cascade.status()), 30)
    for platform in (municipal, police):
        assert await wait_for(lambda p=platform: p.queries.is_registered(gateway.config.id), 30)  # type: ignore[misc]
        assert await wait_for(
            lambda platform=platform: platform.queries.request_catalog(gateway.config.id) is not None, 30
        )  # type: ignore[misc]  # taken once proven (H5)
    assert await wait_for(lambda: police.directory.device_of(ENTRANCE) == gateway.config.id, 30)
    return gateway, municipal, police


class _Attacker(asyncio.DatagramProtocol):
    """A bare UDP socket that sends INVITEs as someone else and collects final answers."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[int] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        status = int(data.split(b" ", 2)[1])
        if status >= 200:
            self.answers.put_nowait(status)


class _Sink(asyncio.DatagramProtocol):
    """Where the attacker's SDP asks the gateway to send the video."""

    def __init__(self) -> None:
        self.packets = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets += 1


async def _forged_invite(gateway: GatewayService, from_id: str, channel_id: str, media_port: int, n: int) -> int:
    """One INVITE claiming to be ``from_id``, from a fresh socket; the final status."""
    loop = asyncio.get_running_loop()
    transport, attacker = await loop.create_datagram_endpoint(_Attacker, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    uri = f"sip:{channel_id}@127.0.0.1:{gateway.sip_port}"
    offer = offer_for_play(origin_user=from_id, media_host="127.0.0.1", media_port=media_port, ssrc=f"01000{n:05d}")
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKforged{port}x{n}"),
            ("From", f"<sip:{from_id}@{from_id[:10]}>;tag=forged{n}"),
            ("To", f"<{uri}>"),
            ("Call-ID", f"forged-{n}-{port}@127.0.0.1"),
            ("CSeq", "1 INVITE"),
            ("Max-Forwards", "70"),
            ("Contact", f"<sip:{from_id}@127.0.0.1:{port}>"),
            ("Subject", f"{channel_id}:0,{from_id}:0"),
            ("Content-Type", "APPLICATION/SDP"),
        ]
    )
    request = SipRequest(headers=headers, body=build_sdp(offer), method="INVITE", uri=uri)
    transport.sendto(bytes(request), ("127.0.0.1", gateway.sip_port))
    try:
        return await asyncio.wait_for(attacker.answers.get(), 40)
    finally:
        transport.close()


def _forged_count(gateway: GatewayService, name: str) -> int:
    assert gateway.cascade is not None
    return int(next(s for s in gateway.cascade.status() if s["name"] == name)["forged_requests"])


async def test_invite_claiming_the_municipal_platform_from_another_address_is_refused(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    gateway, _municipal, _police = await _system(gateway_factory, platform_factory, fleet_factory)
    assert gateway.cascade is not None
    loop = asyncio.get_running_loop()
    media, sink = await loop.create_datagram_endpoint(_Sink, local_addr=("127.0.0.1", 0))
    try:
        status = await _forged_invite(gateway, MUNICIPAL_ID, NAP_ROOM, media.get_extra_info("sockname")[1], 1)
        assert status == 403, f"forged municipal INVITE for the 午睡室 camera got {status}"
        assert gateway.cascade.relay.status() == [] and NAP_ROOM not in gateway.live.streams
        assert gateway.live.invites_sent == 0, "the camera was never asked for video"
        assert sink.packets == 0
        assert _forged_count(gateway, "municipal") == 1
    finally:
        media.close()


async def test_forged_police_invites_do_not_use_up_the_police_quota(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    gateway, _municipal, police = await _system(gateway_factory, platform_factory, fleet_factory)
    assert gateway.cascade is not None and police.live is not None
    quota = gateway.cascade.relay.max_calls_per_upper
    assert quota == 32
    statuses = await asyncio.gather(*(_forged_invite(gateway, POLICE_ID, ENTRANCE, 9, n) for n in range(quota)))
    assert set(statuses) == {403}, statuses
    assert _forged_count(gateway, "police") == quota

    stream, viewer = await police.live.watch(ENTRANCE)  # the real police live view
    try:
        assert await wait_for(lambda: bool(stream.fanout.pull(viewer)), 30), "the real police gets video"
    finally:
        police.live.leave(ENTRANCE, viewer)


async def test_real_police_cannot_send_media_outside_its_networks(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    # The police's media servers are 10.20.0.0/16: an offer naming 127.0.0.1 (here: the
    # police node's own media address) must not make the gateway stream there.
    gateway, _municipal, police = await _system(
        gateway_factory, platform_factory, fleet_factory, media_networks=("10.20.0.0/16",)
    )
    assert gateway.cascade is not None and police.live is not None
    with pytest.raises(LiveError):
        await police.live.watch(ENTRANCE)
    assert gateway.cascade.relay.status() == []
    assert gateway.cascade.relay.counters["media_refused"] == 1
