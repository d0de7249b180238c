"""Upper platforms watch a kindergarten camera through the gateway's shared relay (docs/gb28181.md §16.4).

simulated kindergarten → gateway → district / municipal / police platforms, all on
loopback with real sockets. Each platform is a ``GatewayService`` with a platform ID
that the gateway registers with; once it has the gateway's catalog, the gateway is
the "device" of the channel, and the platform's own ``LiveService.watch`` INVITEs it.
The camera must see one INVITE however many uppers watch.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

import av
import pytest

from gateway import live as live_module
from gateway.app import GatewayService
from gateway.cascade.admission import admit, target_channel
from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper import UpperPlatformConfig
from gateway.config import UpperSpec
from gateway.gb28181.sdp import MediaTransport, SessionType, build_sdp, offer_for_play
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.message import SipRequest
from gateway.live import LiveError, LiveStream
from gateway.media.ps import AccessUnit, PsDemuxer, StreamType
from gateway.media.remux import PsRtpRemuxer
from gateway.media.rtp import RtpPacket
from gateway.registry.model import AreaTag, Channel
from simulators.city import build_city
from simulators.video import VideoProfile
from tests.conftest import free_sip_port, http_json, wait_for

PASSWORD = "platform-pw"
VIDEO = VideoProfile(width=320, height=180, seconds=2.0)
CITY = build_city(1, seed=2020, cameras_per_kindergarten=(3, 3))  # what the fleet below simulates
KG = CITY[0]
_CAMERAS = {c.area: c.id for d in KG.devices for c in d.channels if c.kind == "camera"}
ENTRANCE, PERIMETER, CLASSROOM = _CAMERAS["entrance"], _CAMERAS["perimeter"], _CAMERAS["classroom"]
PLATFORM_IDS = {
    "municipal": "12010000002000000001",
    "police": "12010000002000000110",
    "district": f"{KG.district_code}00002000000001",
}


def _upper(platform: GatewayService, level: str, **kw: Any) -> UpperSpec:
    district = KG.district_code if level == "district" else None
    link = UpperPlatformConfig(
        name=level,
        server_id=platform.config.id,
        host="127.0.0.1",
        port=platform.sip_port,
        password=PASSWORD,
        register_retry_min=0.2,
        register_retry_max=1.0,
        **kw,
    )
    return UpperSpec(link, SharePolicy(PolicyLevel(level), district))


def _pretend_known(platform: GatewayService, gateway: GatewayService, channel_id: str) -> None:
    """Make ``platform`` believe the gateway serves ``channel_id`` (its catalog never said so)."""
    platform.directory.upsert_channels(
        gateway.config.id, [Channel(channel_id, gateway.config.id, None, KG.district_code)]
    )


async def _cascade(
    gateway_factory: Any,
    platform_factory: Any,
    fleet_factory: Any,
    levels: tuple[str, ...],
    *,
    transport: str = "udp",
    media_ports: str = "",
    **link: Any,
) -> tuple[GatewayService, Any, dict[str, GatewayService]]:
    """Platforms, then the gateway registered with each, then the kindergarten; catalogs fetched."""
    platforms = {
        level: await platform_factory(id=PLATFORM_IDS[level], role=level, password=PASSWORD, media_transport=transport)
        for level in levels
    }
    gateway = await gateway_factory(
        upper_platforms=tuple(_upper(p, level, **link) for level, p in platforms.items()), media_ports=media_ports
    )
    fleet = await fleet_factory(gateway, kindergartens=1, cameras=(3, 3), video=VIDEO)
    assert await wait_for(lambda: {ENTRANCE, PERIMETER, CLASSROOM} <= gateway.directory.channels.keys(), 60)
    assert gateway.cascade is not None
    assert await wait_for(lambda: all(s["state"] == "registered" for s in gateway.cascade.status()), 30)
    for level, platform in platforms.items():
        assert await wait_for(lambda p=platform: p.queries.is_registered(gateway.config.id), 30)  # type: ignore[misc]
        assert await wait_for(
            lambda platform=platform: platform.queries.request_catalog(gateway.config.id) is not None, 30
        )  # type: ignore[misc]  # taken once proven (H5)
        wanted = CLASSROOM if level != "police" else ENTRANCE
        assert await wait_for(lambda p=platform, c=wanted: p.directory.device_of(c) == gateway.config.id, 30), level  # type: ignore[misc]
    return gateway, fleet, platforms


def _camera_agent(fleet: Any) -> Any:
    return next(a for a in fleet.agents.values() if ENTRANCE in {c.device_id for c in a.profile.channels})


async def _decode(
    stream: LiveStream, viewer: str, want: int, timeout: float = 30.0, decoder: Any = None, fresh: bool | None = None
) -> list[av.VideoFrame]:
    """Decode what a platform's viewer pulls; a ``fresh`` viewer must start on a key frame."""
    first = decoder is None if fresh is None else fresh
    decoder = decoder or av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(frames) < want and loop.time() < deadline:
        units = stream.fanout.pull(viewer)
        for unit in units:
            if not unit.is_video:
                continue  # cameras with a microphone send G.711 too (issue 11)
            if first:
                assert unit.keyframe, "a viewer starts on a key frame"
                first = False
            frames.extend(decoder.decode(av.Packet(unit.data)))
        if not units:
            stream.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.wakeup.wait(), 0.5)
    return frames


async def _raw_invite(gateway: GatewayService, from_id: str, channel_id: str, sdp: bytes) -> int:
    """Send one INVITE as the upper ``from_id`` from a bare UDP socket; the final status."""
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[int] = asyncio.Queue()

    class Upper(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            answers.put_nowait(int(data.split(b" ", 2)[1]))

    transport, _ = await loop.create_datagram_endpoint(Upper, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    uri = f"sip:{channel_id}@127.0.0.1:{gateway.sip_port}"
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{port}raw"),
            ("From", f"<sip:{from_id}@{from_id[:10]}>;tag=raw{port}"),
            ("To", f"<{uri}>"),
            ("Call-ID", f"raw-{port}@127.0.0.1"),
            ("CSeq", "1 INVITE"),
            ("Max-Forwards", "70"),
            ("Contact", f"<sip:{from_id}@127.0.0.1:{port}>"),
            ("Subject", f"{channel_id}:0,{from_id}:0"),
            ("Content-Type", "APPLICATION/SDP"),
        ]
    )
    transport.sendto(
        bytes(SipRequest(headers=headers, body=sdp, method="INVITE", uri=uri)), ("127.0.0.1", gateway.sip_port)
    )
    try:
        while (status := await asyncio.wait_for(answers.get(), 30)) < 200:
            pass
        return status
    finally:
        transport.close()


def _viewers(gateway: GatewayService, channel_id: str) -> int:
    assert gateway.live is not None
    stream = gateway.live.streams.get(channel_id)
    return stream.fanout.consumer_count if stream is not None else 0


async def test_two_uppers_share_the_camera_and_policy_is_enforced(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(live_module, "LINGER", 0.3)
    low = free_sip_port()  # the camera's stream and both uppers' senders share the gateway's media port range
    gateway, fleet, platforms = await _cascade(
        gateway_factory,
        platform_factory,
        fleet_factory,
        ("district", "municipal", "police"),
        media_ports=f"{low}-{low + 20}",
        # The raw INVITEs below speak for the municipal platform from other loopback sockets: allowed
        # only because loopback is one of the uppers' extra signalling networks here (issue 10, C1).
        signal_networks=("127.0.0.1/32",),
    )
    district, municipal, police = platforms["district"], platforms["municipal"], platforms["police"]
    agent = _camera_agent(fleet)
    assert gateway.cascade is not None and gateway.live is not None and district.live and municipal.live
    relay = gateway.cascade.relay

    # Two uppers and a browser of the gateway's own console, all at once.
    (d_stream, d_viewer), (m_stream, m_viewer), _ = await asyncio.gather(
        district.live.watch(ENTRANCE), municipal.live.watch(ENTRANCE), gateway.live.watch(ENTRANCE)
    )
    d_decoder, m_decoder = av.CodecContext.create("h264", "r"), av.CodecContext.create("h264", "r")
    d_frames, m_frames = await asyncio.gather(
        _decode(d_stream, d_viewer, 10, decoder=d_decoder, fresh=True),
        _decode(m_stream, m_viewer, 10, decoder=m_decoder, fresh=True),
    )
    assert len(d_frames) >= 10 and len(m_frames) >= 10
    assert (d_frames[0].width, d_frames[0].height) == (m_frames[0].width, m_frames[0].height) == (320, 180)
    assert agent.stats.invites_received == 1 and gateway.live.invites_sent == 1, "one INVITE to the camera"
    assert _viewers(gateway, ENTRANCE) == 3
    assert {(row["upper"], row["streaming"]) for row in relay.status()} == {("district", True), ("municipal", True)}
    media_ports = {gateway.live.streams[ENTRANCE].transport.port}  # type: ignore[union-attr]
    media_ports |= {call.sender.port for call in relay._calls.values() if call.sender is not None}
    assert len(media_ports) == 3 and all(low <= port <= low + 20 for port in media_ports)
    status, uppers = await http_json(f"http://127.0.0.1:{gateway.http_port}/api/upper-platforms")
    assert {u["name"]: [c["channel_id"] for c in u["live_calls"]] for u in uppers["items"]} == {
        "district": [ENTRANCE],
        "municipal": [ENTRANCE],
        "police": [],
    }

    # A slow upper must not stall the other: while the district's sender reports a full buffer
    # (a shut TCP window) the relay stops pulling for it and the fan-out skips to a later key frame.
    d_call = next(c for c in relay._calls.values() if c.upper == "district")
    sender, fanout = d_call.sender, gateway.live.streams[ENTRANCE].fanout
    assert sender is not None and d_call.viewer is not None
    fanout.max_queue_units = 10  # overflow within half a second at 25 fps
    sender._buffered = lambda: 1 << 30  # type: ignore[method-assign]
    assert len(await _decode(m_stream, m_viewer, 25, decoder=m_decoder)) >= 25
    assert fanout.consumer_stats(d_call.viewer).skips >= 1
    del sender._buffered  # the window opens again
    sender._resumed()
    assert len(await _decode(d_stream, d_viewer, 10, decoder=d_decoder)) >= 10

    # The police may not see a classroom: 403, and the camera hears nothing of it.
    _pretend_known(police, gateway, CLASSROOM)  # as if it guessed the ID
    assert police.live is not None
    with pytest.raises(LiveError, match="Forbidden"):
        await police.live.watch(CLASSROOM)
    # A channel the gateway does not have: 404.
    unknown = KG.id[:10] + "1310009999"
    _pretend_known(municipal, gateway, unknown)
    with pytest.raises(LiveError, match="Not Found"):
        await municipal.live.watch(unknown)
    # The call limit per upper: 486 (the second channel would need a second camera INVITE).
    relay.max_calls_per_upper = 1
    with pytest.raises(LiveError, match="Busy Here"):
        await municipal.live.watch(PERIMETER)
    relay.max_calls_per_upper = 32
    # No talk is relayed (recordings are: test_cascade_records.py), and the offer must carry y= (§15.4).
    offer = offer_for_play(origin_user=PERIMETER, media_host="127.0.0.1", media_port=9, ssrc="1100000009")
    talk = replace(offer, session_type=SessionType.TALK)
    assert await _raw_invite(gateway, municipal.config.id, PERIMETER, build_sdp(talk)) == 488
    assert await _raw_invite(gateway, municipal.config.id, PERIMETER, build_sdp(replace(offer, ssrc=None))) == 488
    assert agent.stats.invites_received == 1 and gateway.live.invites_sent == 1
    assert relay.counters["forbidden"] == relay.counters["not_found"] == relay.counters["busy"] == 1
    assert relay.counters["accepted"] == 2 and relay.counters["bad_offer"] == 2
    sample = gateway.metrics.get_sample_value
    assert sample("kgw_upper_calls_total", {"platform": "police", "result": "forbidden"}) == 1

    # BYE from one upper releases its viewer only; the other keeps streaming.
    district.live.leave(ENTRANCE, d_viewer)
    district.live.close(ENTRANCE, "test: district stops watching")
    assert await wait_for(lambda: _viewers(gateway, ENTRANCE) == 2, 30)
    assert len(await _decode(m_stream, m_viewer, 5, decoder=m_decoder)) >= 5
    # The camera hangs up (BYE from the device): the gateway's stream ends and the upper gets a BYE.
    node = next(n for n in fleet.nodes if n.media is not None and n.media.streams)
    call_id = next(k for k, streamer in node.media.streams.items() if streamer.channel_id == ENTRANCE)
    agent.calls.hang_up(call_id, asyncio.get_running_loop().time())
    assert await wait_for(lambda: ENTRANCE not in gateway.live.streams, 30)
    assert await wait_for(lambda: ENTRANCE not in municipal.live.streams, 30), "the upper got a BYE"
    assert await wait_for(lambda: not relay.status(), 30)


async def test_upper_gone_without_bye_releases_the_viewer(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(live_module, "LINGER", 0.3)
    gateway, fleet, platforms = await _cascade(
        gateway_factory, platform_factory, fleet_factory, ("municipal",), keepalive_interval=1.0, keepalive_missed=3
    )
    municipal = platforms["municipal"]
    assert municipal.live is not None and gateway.live is not None and municipal.sip.driver is not None
    stream, viewer = await municipal.live.watch(ENTRANCE)
    assert len(await _decode(stream, viewer, 3)) >= 3 and _viewers(gateway, ENTRANCE) == 1
    municipal.sip.driver.close()  # the platform vanishes: no BYE, no keepalive answers
    await municipal.stop()
    assert await wait_for(lambda: ENTRANCE not in gateway.live.streams, 60), (
        "offline upper → viewer left → linger → BYE"
    )
    assert gateway.cascade is not None and gateway.cascade.status()[0]["state"] != "registered"
    assert await wait_for(lambda: not any(n.media.streams for n in fleet.nodes if n.media), 30)


@pytest.mark.parametrize("mode", [MediaTransport.TCP_PASSIVE, MediaTransport.TCP_ACTIVE])
async def test_tcp_transports_and_a_lost_connection(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any, monkeypatch: Any, mode: MediaTransport
) -> None:
    monkeypatch.setattr(live_module, "LINGER", 0.3)
    transport = mode.value.lower()
    gateway, fleet, platforms = await _cascade(
        gateway_factory, platform_factory, fleet_factory, ("municipal",), transport=transport
    )
    municipal = platforms["municipal"]
    assert municipal.live is not None and gateway.cascade is not None
    stream, viewer = await municipal.live.watch(ENTRANCE)
    assert stream.mode is mode
    frames = await _decode(stream, viewer, 10)
    assert len(frames) >= 10 and (frames[0].width, frames[0].height) == (320, 180)
    assert gateway.cascade.relay.status()[0]["transport"] == mode.value
    assert _camera_agent(fleet).stats.invites_received == 1
    # The upper's media connection breaks: the gateway hangs up (BYE) and leaves the stream.
    assert stream.transport is not None
    stream.transport.close()
    assert await wait_for(lambda: _viewers(gateway, ENTRANCE) == 0, 30)
    assert await wait_for(lambda: ENTRANCE not in municipal.live.streams, 30), "the gateway sent BYE"


# --- the sans-I/O parts -------------------------------------------------------------------------------


def _invite(uri_user: str, subject: str | None) -> SipRequest:
    headers = Headers([("Subject", subject)] if subject is not None else [])
    return SipRequest(headers=headers, body=b"", method="INVITE", uri=f"sip:{uri_user}@127.0.0.1:5060")


def test_target_channel_uri_then_subject() -> None:
    gw = "12010000002000000099"
    assert target_channel(_invite(ENTRANCE, None), gw) == ENTRANCE
    assert target_channel(_invite(gw, f"{PERIMETER}:0200000001,{gw}:0"), gw) == PERIMETER
    assert target_channel(_invite("abc", "nonsense"), gw) is None


def test_admission_order() -> None:
    indoor = Channel(CLASSROOM, "d", KG.id, KG.district_code, name="中一班教室", area=AreaTag.CLASSROOM, type_code=131)
    police, municipal = SharePolicy.police(), SharePolicy.municipal()
    assert admit(indoor, municipal, registered=False, active_calls=0, max_calls=1) == 403
    assert admit(None, municipal, registered=True, active_calls=0, max_calls=1) == 404
    assert admit(indoor, police, registered=True, active_calls=0, max_calls=1) == 403
    assert admit(indoor, municipal, registered=True, active_calls=1, max_calls=1) == 486
    assert admit(indoor, municipal, registered=True, active_calls=0, max_calls=1) is None


def test_remuxer_starts_on_a_key_frame_and_round_trips() -> None:
    def unit(pts: int, key: bool) -> AccessUnit:
        # first_mb_in_slice = 0 (0x88): each unit is a new picture for the demuxer's AU split
        nal = b"\x00\x00\x00\x01" + (b"\x65" if key else b"\x41") + b"\x88" + pts.to_bytes(4, "big") + b"\x11" * 3000
        return AccessUnit(StreamType.H264, 0xE0, pts, pts, nal, key)

    units = [unit(3600 * i, i % 5 == 1) for i in range(11)]
    remuxer = PsRtpRemuxer(200000001, initial_sequence=65530, initial_timestamp=7)
    packets = [RtpPacket.parse(p) for u in units for p in remuxer.remux(u)]
    assert remuxer.dropped == 1 and remuxer.units == 10  # the delta before the first key frame
    assert {p.ssrc for p in packets} == {200000001} and packets[0].timestamp == 3600 + 7
    assert packets[0].sequence == 65530 and packets[-1].sequence == (65530 + len(packets) - 1) % 65536
    with_psm = sorted({p.timestamp - 7 for p in packets if b"\x00\x00\x01\xbc" in p.payload})
    assert with_psm == [3600, 6 * 3600], "PSM on every key frame"
    demuxer = PsDemuxer()
    out = [u for p in packets for u in demuxer.feed(p.payload)] + demuxer.flush()
    assert [u.data for u in out] == [u.data for u in units[1:]] and out[0].keyframe


async def test_tcp_listener_takes_only_the_upper_and_times_out() -> None:
    from gateway.io.rtp_io import MediaConnectError
    from gateway.io.rtp_send_io import TcpRtpSender

    lost: list[str] = []
    sender = await TcpRtpSender.listen("127.0.0.1", allowed_host="127.0.0.2", on_closed=lost.append)
    _, writer = await asyncio.open_connection("127.0.0.1", sender.port)  # not the upper's address
    assert await wait_for(lambda: sender.refused_connections == 1, 30)
    with pytest.raises(MediaConnectError):  # the refused connection does not count: still waiting
        await sender.start(0.3)
    assert sender.refused_connections == 1 and not sender.connected and not lost
    writer.close()
    sender.close()

    sender = await TcpRtpSender.listen("127.0.0.1", allowed_host="127.0.0.1", on_closed=lost.append)
    reader, writer = await asyncio.open_connection("127.0.0.1", sender.port)
    await sender.start(30.0)
    sender.send([b"\x80\x60" + bytes(10), b"\x80\xe0" + bytes(20)])
    assert await reader.readexactly(2 + 12 + 2 + 22) == b"\x00\x0c\x80\x60" + bytes(10) + b"\x00\x16\x80\xe0" + bytes(
        20
    )
    writer.close()  # the upper goes away: reported once
    assert await wait_for(lambda: lost == ["peer_closed"], 30)
    assert sender.closed and not sender.writable
