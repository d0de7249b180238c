"""H.265 cameras in browsers through the shared transcode (issue 11), over real sockets.

A simulated H.265 camera → INVITE → RTP/PS → the gateway's transcode → WebRTC to an aiortc
viewer that decodes H.264; two viewers share one transcode; past ``max_transcodes`` a
viewer gets 503; headless Chromium plays an H.265 camera in the console.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request

import cv2
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from simulators.hevc import DEMO_HEVC_SHARE, is_hevc_camera
from simulators.video import VideoProfile
from tests.conftest import TEST_ADMIN, add_user, http_json, http_text, wait_for
from tests.integration.test_console_chromium import _play_and_check, chromium_page

HEVC_CAMERAS = VideoProfile(width=640, height=360, seconds=2.0, codec="h264")  # hevc_share=1 makes them H.265


def _cameras(fleet) -> list[str]:
    return [c.device_id for a in fleet.agents.values() for c in a.profile.channels if c.device_id[10:13] == "131"]


async def _online_cameras(service, fleet, count: int) -> list[str]:
    cameras = _cameras(fleet)[:count]
    assert len(cameras) == count

    def online() -> bool:
        return all((c := service.directory.channels.get(cid)) is not None and c.online for cid in cameras)

    assert await wait_for(online, timeout=60)
    return cameras


async def _hevc_fleet(service, fleet_factory, cameras: int = 2, sub_streams: float = 0.0):
    return await fleet_factory(
        service,
        kindergartens=1,
        cameras=(cameras, cameras),
        video=HEVC_CAMERAS,
        hevc_share=1.0,
        sub_streams=sub_streams,
    )


class Viewer:
    """An aiortc browser stand-in: offers recvonly video, posts the offer, decodes what comes."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self.pc.on("track", lambda t: self.track.done() or self.track.set_result(t))
        self.pc.addTransceiver("video", direction="recvonly")

    async def offer(self, api: str, channel_id: str) -> tuple[int, dict]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, answer = await http_json(
            f"{api}/api/channels/{channel_id}/webrtc", {"sdp": self.pc.localDescription.sdp}
        )
        if status == 200:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        return status, answer

    async def frames(self, count: int) -> list:
        track = await asyncio.wait_for(self.track, 30)
        return [await asyncio.wait_for(track.recv(), 30) for _ in range(count)]

    async def close(self) -> None:
        await self.pc.close()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_h265_camera_plays_over_webrtc_and_two_viewers_share_one_transcode(gateway_factory, fleet_factory):
    service = await gateway_factory()
    fleet = await _hevc_fleet(service, fleet_factory)
    (channel_id,) = await _online_cameras(service, fleet, 1)
    api = f"http://127.0.0.1:{service.http_port}"
    first, second = Viewer(), Viewer()
    try:
        status, answer = await first.offer(api, channel_id)
        assert status == 200, answer
        assert answer["stream"] == "main" and answer["transcoded"] is True, answer
        assert service.live.video_codec(channel_id).name == "H265", "the camera really streams H.265"
        frames = await first.frames(10)
        assert {(f.width, f.height) for f in frames} == {(640, 360)}
        picture = frames[-1].to_ndarray(format="bgr24")
        assert float(picture.std()) > 10.0, "a decoded test card, not a blank"

        # Main, and one INVITE asking for a sub-stream (to transcode less), which this camera answered
        # with main: remembered, so no later viewer asks again.
        assert service.live.invites_sent == 2 and not service.live.planner.has_sub(channel_id)
        status, answer = await second.offer(api, channel_id)
        assert status == 200, answer
        assert len(await second.frames(10)) == 10
        metrics = await http_text(f"{api}/metrics")
        assert _metric(metrics, "kgw_transcodes_active") == 1.0, "one transcode for both viewers"
        assert _metric(metrics, "kgw_transcode_viewers") == 2.0
        assert _metric(metrics, "kgw_transcode_frames_out_total") >= 10
        assert _metric(metrics, "kgw_transcode_started_total") == 1.0
        assert service.live.invites_sent == 2, "and no INVITE for the second viewer"
        status, listing = await http_json(f"{api}/api/transcodes")
        assert status == 200 and listing["max"] == 4
        (item,) = listing["items"]
        assert item["channel_id"] == channel_id and item["viewers"] == 2
        assert (item["width"], item["height"]) == (640, 360) and item["frames_out"] >= 10
        assert item["lag_s"] < 1.0 and item["dropped_frames"] == 0, item
        service.transcodes.linger = 0.2
    finally:
        await first.close()
        await second.close()
    # The last viewer gone: the transcode lingers, then stops and gives the camera's stream back.
    assert await wait_for(lambda: not service.transcodes.transcodes, timeout=60)
    stream = service.live.streams.get(channel_id)
    assert stream is None or stream.fanout.consumer_count == 0, "the transcode left the camera's stream"


async def test_the_sub_stream_is_transcoded_when_the_camera_has_one(gateway_factory, fleet_factory):
    service = await gateway_factory()
    fleet = await _hevc_fleet(service, fleet_factory, sub_streams=1.0)
    (channel_id,) = await _online_cameras(service, fleet, 1)
    api = f"http://127.0.0.1:{service.http_port}"
    viewer, second = Viewer(), Viewer()
    try:
        status, answer = await viewer.offer(api, channel_id)  # the single cell asks for main
        assert status == 200, answer
        assert answer["stream"] == "sub" and answer["transcoded"] is True and "子码流" in answer["note"], answer
        frames = await viewer.frames(5)
        assert {(f.width, f.height) for f in frames} == {(320, 180)}
        (transcode,) = service.transcodes.transcodes.values()
        assert transcode.stream == "sub" and transcode.source.key == f"{channel_id}/1"
        sub = service.live.streams[f"{channel_id}/1"]
        assert sub.fanout.consumer_count == 1, "only the transcode reads the sub-stream"
        main = service.live.streams.get(channel_id)
        assert main is None or main.fanout.consumer_count == 0, "the main stream was let go"
        # The camera is known to send H.265 now: the next viewer opens its sub-stream directly.
        service.live.close(channel_id, "test: main gone")
        invites = service.live.invites_sent
        status, answer = await second.offer(api, channel_id)
        assert status == 200 and answer["stream"] == "sub" and answer["transcoded"] is True, answer
        assert len(await second.frames(3)) == 3
        assert service.live.invites_sent == invites and channel_id not in service.live.streams, "no main INVITE"
        assert len(service.transcodes.transcodes) == 1
    finally:
        await viewer.close()
        await second.close()


async def test_past_the_limit_a_viewer_gets_503_and_snapshots_still_work(gateway_factory, fleet_factory):
    service = await gateway_factory(max_transcodes=1)
    fleet = await _hevc_fleet(service, fleet_factory)
    camera_a, camera_b = await _online_cameras(service, fleet, 2)
    api = f"http://127.0.0.1:{service.http_port}"
    watching, refused = Viewer(), Viewer()
    try:
        status, answer = await watching.offer(api, camera_a)
        assert status == 200, answer
        status, answer = await refused.offer(api, camera_b)
        assert status == 503, answer
        assert "转码路数已满" in answer["error"] and "transcodes are in use" in answer["error"]
        metrics = await http_text(f"{api}/metrics")
        assert _metric(metrics, "kgw_transcodes_active") == 1.0 and _metric(metrics, "kgw_transcode_refused_total") == 1
        stream_b = service.live.streams.get(camera_b)
        assert stream_b is None or stream_b.fanout.consumer_count == 0, "the refused viewer's place was given back"
        # Snapshots never need a transcode (they decode H.265 themselves).
        jpeg = await asyncio.to_thread(
            lambda: urllib.request.urlopen(
                urllib.request.Request(f"{api}/api/channels/{camera_b}/snapshot.jpg"), timeout=20
            ).read()
        )
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[:2] == (360, 640)
    finally:
        await watching.close()
        await refused.close()


async def test_h265_camera_plays_in_the_console_in_chromium(gateway_factory, fleet_factory):
    service = await gateway_factory()
    await add_user(service, *TEST_ADMIN)
    fleet = await _hevc_fleet(service, fleet_factory)
    (channel_id,) = await _online_cameras(service, fleet, 1)
    base = f"http://127.0.0.1:{service.http_port}"
    async with asyncio.timeout(100), chromium_page(f"{base}/live/{channel_id}") as (cdp, session, log_path):
        await _play_and_check(cdp, session, log_path)  # 640x360 playing, the picture not blank
        assert not cdp.page_errors(), cdp.page_errors()
        assert service.live.video_codec(channel_id).name == "H265"
        metrics = await http_text(f"{base}/metrics")
        assert _metric(metrics, "kgw_transcodes_active") == 1.0
        assert _metric(metrics, "kgw_transcode_frames_out_total") > 0


def test_the_demo_city_has_h265_cameras() -> None:
    """``kgw demo`` streams H.265 from a stable share of its cameras (and H.264 from the rest)."""
    from simulators.city import build_city

    city = build_city(20, seed=2020)
    cameras = [c.id for k in city for d in k.devices for c in d.channels if c.kind == "camera"]
    hevc = [c for c in cameras if is_hevc_camera(c, DEMO_HEVC_SHARE)]
    assert 0.05 < len(hevc) / len(cameras) < 0.25, (len(hevc), len(cameras))
