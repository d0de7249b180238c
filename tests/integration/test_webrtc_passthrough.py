"""H.264 pass-through to an aiortc viewer on loopback: fanout → FanoutVideoTrack → RTP → decoded frames."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from pathlib import Path

import av
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from gateway.media.ps import AccessUnit, PsDemuxer, StreamType
from gateway.media.relay import StreamFanout
from gateway.media.webrtc import FanoutVideoTrack, WebRtcError, answer_offer
from tests.conftest import wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ps"


def _units(name: str) -> list[AccessUnit]:
    demuxer = PsDemuxer()
    return demuxer.feed((FIXTURES / name).read_bytes()) + demuxer.flush()


async def _publish_forever(
    fanout: StreamFanout, wakeup: asyncio.Event, units: list[AccessUnit], interval: float
) -> None:
    """Publish the clip in a loop (later rounds with later timestamps) until cancelled.

    A camera does not stop after one clip: however long the WebRTC connection takes to come
    up on a busy machine, the viewer still finds a key frame and frames after it.
    """
    span = (units[-1].pts or 0) - (units[0].pts or 0) + 3600  # 25 fps: 3600 ticks per frame
    shift = 0
    while True:
        for unit in units:
            pts, dts = unit.pts, unit.dts
            shifted = replace(unit, pts=None if pts is None else pts + shift, dts=None if dts is None else dts + shift)
            fanout.publish(shifted, time.monotonic())
            wakeup.set()
            await asyncio.sleep(interval)
        shift += span


class _CountingEvent(asyncio.Event):
    """An asyncio.Event that counts how often someone started waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    async def wait(self) -> bool:
        self.waits += 1
        return await super().wait()


async def _client_offer() -> tuple[RTCPeerConnection, asyncio.Future[MediaStreamTrack]]:
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    remote: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    client.on("track", lambda track: remote.done() or remote.set_result(track))
    client.addTransceiver("video", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    return client, remote


async def test_viewer_decodes_640x360_frames() -> None:
    fanout, wakeup = StreamFanout("34020000001320000001"), asyncio.Event()
    track = FanoutVideoTrack(fanout, "viewer-1", wakeup=wakeup, clock=time.monotonic)
    client, remote = await _client_offer()
    server = None
    publisher = asyncio.create_task(_publish_forever(fanout, wakeup, _units("zlm_h264_640x360_idr50.ps"), 0.02))
    try:
        server, answer = await answer_offer(client.localDescription.sdp, track)
        video = answer[answer.index("m=video") :]
        assert "H264/90000" in video and "VP8" not in video and "packetization-mode=1" in video
        assert "a=sendonly" in video
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        viewer = await asyncio.wait_for(remote, 30)
        sizes = []
        async with asyncio.timeout(60):
            while len(sizes) < 10:
                frame = await viewer.recv()
                assert isinstance(frame, av.VideoFrame)
                sizes.append((frame.width, frame.height))
        assert set(sizes) == {(640, 360)}
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        await client.close()
        if server is not None:
            await server.close()
    track.stop()
    assert fanout.consumer_count == 0


async def test_track_skips_audio_and_stamps_90khz_packets() -> None:
    fanout, wakeup = StreamFanout("ch"), _CountingEvent()
    track = FanoutVideoTrack(fanout, "v", wakeup=wakeup, clock=time.monotonic)
    all_units = _units("zlm_h264_pcma_psm_v2.ps")
    start = next(i for i, u in enumerate(all_units) if u.is_video and u.keyframe)
    units = all_units[start : start + 60]  # from the first key frame, within the queue bound
    assert any(not u.is_video for u in units)
    for unit in units:
        fanout.publish(unit, 0.0)
    video = [u for u in units if u.stream_type is StreamType.H264]
    first = await track.recv()
    assert bytes(first) == video[0].data and first.pts == video[0].pts
    assert first.time_base.numerator == 1 and first.time_base.denominator == 90000
    for unit in video[1:]:
        assert bytes(await track.recv()) == unit.data
    assert wakeup.waits == 0  # everything so far was queued
    pending = asyncio.create_task(track.recv())
    assert await wait_for(lambda: wakeup.waits == 1, 30)  # it has reached the wait for a publish...
    assert not pending.done()  # ...and waits there
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(pending, 30)
    assert fanout.consumer_count == 0
    track.stop()  # idempotent


async def test_garbage_offer_raises_webrtc_error() -> None:
    fanout = StreamFanout("ch")
    track = FanoutVideoTrack(fanout, "v", wakeup=asyncio.Event(), clock=time.monotonic)
    with pytest.raises(WebRtcError):
        await answer_offer("v=0\r\nthis is not sdp\r\n", track)
    track.stop()
