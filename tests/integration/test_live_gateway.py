"""Live video through the gateway: simulated camera → INVITE → RTP/PS → relay → viewers (issue 3).

One upstream per channel however many viewers; a snapshot and a WebRTC viewer
(an aiortc client) read the same stream; the last viewer leaving ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request

import av
import cv2
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from gateway import live as live_module
from gateway.gb28181.sdp import MediaTransport
from tests.conftest import http_json, wait_for


def _camera_channel(fleet) -> tuple[str, object]:
    for agent in fleet.agents.values():
        for channel in agent.profile.channels:
            if channel.device_id[10:13] == "131":
                return channel.device_id, agent
    raise AssertionError("no camera in the simulated kindergarten")


async def _online_camera(service, fleet) -> tuple[str, object]:
    """A camera channel, once the gateway has it online (any other channel online is not enough)."""
    channel_id, agent = _camera_channel(fleet)

    def online() -> bool:
        channel = service.directory.channels.get(channel_id)
        return channel is not None and channel.online

    assert await wait_for(online, timeout=60)
    return channel_id, agent


async def _decode_from_fanout(
    stream, viewer: str, want: int, timeout: float, *, fresh: bool = True, decoder=None
) -> list[av.VideoFrame]:
    """Decode what a viewer pulls; a ``fresh`` viewer must start on a key frame."""
    decoder = decoder or av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    first = fresh
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


async def test_two_viewers_share_one_invite_and_decode(gateway_factory, fleet_factory, monkeypatch):
    monkeypatch.setattr(live_module, "LINGER", 0.2)
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id, agent = await _online_camera(service, fleet)
    live = service.live
    assert live is not None

    (stream, first), (same, second) = await asyncio.gather(live.watch(channel_id), live.watch(channel_id))
    assert stream is same and live.invites_sent == 1 and agent.stats.invites_received == 1

    frames_a = await _decode_from_fanout(stream, first, 25, 30.0)
    frames_b = await _decode_from_fanout(stream, second, 25, 30.0)
    assert len(frames_a) >= 25 and len(frames_b) >= 25
    assert frames_a[0].width == 640 and frames_a[0].height == 360

    status, listing = await http_json(f"http://127.0.0.1:{service.http_port}/api/live")
    assert status == 200 and [s["channel_id"] for s in listing["items"]] == [channel_id]
    assert listing["items"][0]["viewers"] == 2 and listing["items"][0]["rtp_received"] > 0

    live.leave(channel_id, first)
    live.leave(channel_id, second)
    assert await wait_for(lambda: channel_id not in live.streams, timeout=30), "the last viewer leaving ends it"
    assert await wait_for(lambda: not any(s.streams for n in fleet.nodes for s in [n.media] if s), timeout=30)


async def test_snapshot_and_webrtc_viewer(gateway_factory, fleet_factory):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id, agent = await _online_camera(service, fleet)
    api = f"http://127.0.0.1:{service.http_port}"

    jpeg = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"{api}/api/channels/{channel_id}/snapshot.jpg", timeout=20).read()
    )
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (360, 640) and float(image.std()) > 10.0

    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got_track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    client.on("track", lambda track: got_track.done() or got_track.set_result(track))
    client.addTransceiver("video", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    status, answer = await http_json(f"{api}/api/channels/{channel_id}/webrtc", {"sdp": client.localDescription.sdp})
    assert status == 200, answer
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    try:
        track = await asyncio.wait_for(got_track, 30)
        frames = [await asyncio.wait_for(track.recv(), 30) for _ in range(10)]
        assert all(f.width == 640 and f.height == 360 for f in frames)
        assert service.live is not None and service.live.invites_sent == 1, "snapshot and viewer shared the upstream"
        assert agent.stats.invites_received == 1
    finally:
        await client.close()


async def test_live_metrics(gateway_factory, fleet_factory):
    from tests.conftest import http_text

    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id, _ = await _online_camera(service, fleet)
    assert service.live is not None
    stream, viewer = await service.live.watch(channel_id)
    assert len(await _decode_from_fanout(stream, viewer, 5, 30.0)) >= 5
    text = await http_text(f"http://127.0.0.1:{service.http_port}/metrics")
    assert "kgw_streams_active 1.0" in text and "kgw_stream_viewers 1.0" in text
    packets = [line for line in text.splitlines() if line.startswith("kgw_rtp_packets_total ")]
    assert packets and float(packets[0].split()[1]) > 0


@pytest.mark.parametrize("mode", [MediaTransport.TCP_PASSIVE, MediaTransport.TCP_ACTIVE])
async def test_live_over_tcp(gateway_factory, fleet_factory, mode):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id, agent = await _online_camera(service, fleet)
    assert service.live is not None
    stream, viewer = await service.live.watch(channel_id, mode)
    frames = await _decode_from_fanout(stream, viewer, 25, 30.0)
    assert len(frames) >= 25 and frames[0].width == 640
    assert stream.mode is mode and agent.stats.invites_received == 1
    service.live.close(channel_id, "test done")


async def test_open_close_api_and_rtp_timeout(gateway_factory, fleet_factory):
    # The RTP timeout counts from the moment the media port opens: the camera's first packet
    # must come within it, so it leaves room for a busy machine (the test waits it out once).
    service = await gateway_factory(rtp_timeout=3.0)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id, agent = await _online_camera(service, fleet)
    api = f"http://127.0.0.1:{service.http_port}"
    live = service.live
    assert live is not None

    status, opened = await http_json(f"{api}/api/channels/{channel_id}/live", {})
    assert status == 200 and opened["transport"] == "udp" and opened["needs_transcoding"] is False
    status, _ = await http_json(f"{api}/api/channels/{channel_id}/live", method="DELETE")
    assert status == 200 and channel_id not in live.streams
    status, _ = await http_json(f"{api}/api/channels/{channel_id}/live", method="DELETE")
    assert status == 404

    # A camera that stops sending media (without a BYE): the stream ends after the RTP timeout.
    stream, viewer = await live.watch(channel_id)
    assert len(await _decode_from_fanout(stream, viewer, 3, 30.0)) >= 1
    hub = fleet.nodes[0].media
    for streamer in list(hub.streams.values()):
        streamer.close("test: camera stops sending")
    assert await wait_for(lambda: channel_id not in live.streams, timeout=30)

    status, _ = await http_json(f"{api}/api/channels/99999999999999999999/live", {})
    assert status == 404


async def test_garbage_on_the_media_port_is_dropped_and_counted(gateway_factory, fleet_factory):
    import socket

    from gateway.media.rtp import RtpPacket

    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id, _ = await _online_camera(service, fleet)
    assert service.live is not None
    stream, viewer = await service.live.watch(channel_id)
    decoder = av.CodecContext.create("h264", "r")
    assert len(await _decode_from_fanout(stream, viewer, 3, 30.0, decoder=decoder)) >= 1
    assert stream.transport is not None
    port = stream.transport.port  # type: ignore[attr-defined]
    foreign = RtpPacket(
        payload_type=96, sequence=1, timestamp=0, ssrc=123456, payload=b"\x00\x00\x01\xba" + b"\xff" * 200
    )

    def dropped() -> int:
        return sum(v for k, v in service.live.rtp_totals().items() if k.startswith("dropped_"))  # type: ignore[union-attr]

    before = dropped()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        for datagram in (b"", b"garbage", b"\x80", bytes(foreign), b"\x80\x60" + b"\x00" * 10, b"\xff" * 1400):
            attacker.sendto(datagram, ("127.0.0.1", port))
    assert await wait_for(lambda: dropped() >= before + 3, timeout=30)  # the garbage was read (and dropped)
    frames = await _decode_from_fanout(stream, viewer, 10, 30.0, fresh=False, decoder=decoder)
    assert len(frames) >= 10, "the real stream goes on"
    totals = service.live.rtp_totals()
    assert sum(v for k, v in totals.items() if k.startswith("dropped_")) >= 3
    from tests.conftest import http_text

    text = await http_text(f"http://127.0.0.1:{service.http_port}/metrics")
    assert 'kgw_rtp_dropped_total{reason="foreign_source"}' in text


async def test_h265_camera_without_transcodes_is_refused_for_webrtc_but_snapshots(gateway_factory, fleet_factory):
    """``max_transcodes = 0``: no browser view of H.265 (503, issue 11 transcodes it otherwise); snapshots work."""
    from simulators.video import VideoProfile

    service = await gateway_factory(max_transcodes=0)
    fleet = await fleet_factory(
        service, kindergartens=1, cameras=(2, 2), video=VideoProfile(width=320, height=180, seconds=2.0, codec="hevc")
    )
    channel_id, _ = await _online_camera(service, fleet)
    api = f"http://127.0.0.1:{service.http_port}"
    status, opened = await http_json(f"{api}/api/channels/{channel_id}/live", {})
    assert status == 200
    assert service.live is not None
    assert await wait_for(lambda: service.live.video_codec(channel_id) is not None, timeout=30)
    status, refused = await http_json(f"{api}/api/channels/{channel_id}/webrtc", {"sdp": "v=0\r\n"})
    assert status == 503 and "转码已关闭" in refused["error"] and "transcoding is disabled" in refused["error"]
    stream = service.live.streams.get(channel_id)
    assert stream is None or stream.fanout.consumer_count == 0, "the refused viewer's place was given back"
    jpeg = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"{api}/api/channels/{channel_id}/snapshot.jpg", timeout=20).read()
    )
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (180, 320)


async def test_media_port_range_serves_several_streams_at_once(gateway_factory, fleet_factory):
    """With ``media_ports`` set (the README's advice for firewalls) every stream gets its own port of the range.

    Under uvloop only the first stream used to work: a busy port was not skipped.
    """
    from tests.conftest import free_sip_port

    low = free_sip_port()
    service = await gateway_factory(media_ports=f"{low}-{low + 20}")
    fleet = await fleet_factory(service, kindergartens=1, cameras=(3, 3))
    cameras = next(a for a in fleet.agents.values() if a.camera_ids).camera_ids
    assert await wait_for(
        lambda: all(c in service.directory.channels and service.directory.channels[c].online for c in cameras),
        timeout=60,
    )
    assert service.live is not None
    watched = await asyncio.gather(*(service.live.watch(channel_id) for channel_id in sorted(cameras)))
    ports = {stream.transport.port for stream, _ in watched}  # type: ignore[union-attr]
    assert len(ports) == len(cameras) and all(low <= port <= low + 20 for port in ports)
    for stream, viewer in watched:
        assert len(await _decode_from_fanout(stream, viewer, 3, 30.0)) >= 1
