"""The camera's microphone reaches a WebRTC viewer: G.711 A-law from its PS, passed through as PCMA.

ZLMediaKit's H.264 + PCMA capture (tests/fixtures/ps/zlm_h264_pcma_psm_v2.ps) is published into
a fanout; an aiortc viewer offers video and audio, the answer carries PCMA only, and the audio
it decodes is exactly the camera's samples (a run of the fixture's A-law decoded), so nothing
was re-encoded on the way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from gateway.media.audio import alaw_decode
from gateway.media.ps import StreamType
from gateway.media.relay import StreamFanout
from gateway.media.webrtc import FanoutVideoTrack, answer_offer
from simulators.audio_sink import analyse
from simulators.video import MICROPHONE_TONE_HZ, has_microphone
from tests.conftest import http_json, wait_for
from tests.integration.test_webrtc_passthrough import _publish_forever, _units


async def test_camera_pcma_reaches_the_viewer_unchanged() -> None:
    units = _units("zlm_h264_pcma_psm_v2.ps")
    audio = b"".join(u.data for u in units if u.stream_type is StreamType.G711A)
    assert len(audio) > 8000  # the fixture has several seconds of A-law
    fanout, wakeup = StreamFanout("12010000001310000001"), asyncio.Event()
    track = FanoutVideoTrack(fanout, "viewer-a", wakeup=wakeup, clock=time.monotonic)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracks: dict[str, asyncio.Future[MediaStreamTrack]] = {
        kind: asyncio.get_running_loop().create_future() for kind in ("audio", "video")
    }
    client.on("track", lambda t: tracks[t.kind].done() or tracks[t.kind].set_result(t))
    client.addTransceiver("video", direction="recvonly")
    client.addTransceiver("audio", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    publisher = asyncio.create_task(_publish_forever(fanout, wakeup, units, 0.04))
    server = None
    try:
        server, answer = await answer_offer(client.localDescription.sdp, track)
        audio_section = answer[answer.index("m=audio") :]
        assert "PCMA/8000" in audio_section and "opus" not in audio_section.lower() and "a=sendonly" in audio_section
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        remote = await asyncio.wait_for(tracks["audio"], 30)
        received = []
        async with asyncio.timeout(30):
            while sum(len(f) for f in received) < 8000:  # one second
                frame = await remote.recv()
                received.append(frame.to_ndarray().reshape(-1).astype(np.int16))
        heard = np.concatenate(received)
        camera = alaw_decode(audio)
        assert float(np.abs(heard).mean()) > 10  # not silence
        # The first 160 samples heard are a 20 ms run of the camera's own samples.
        window = heard[160:320]  # skip a possible jitter-buffer warm-up packet
        hits = [
            i
            for i in range(0, len(camera) - 160)
            if camera[i] == window[0] and np.array_equal(camera[i : i + 160], window)
        ]
        assert hits, "the audio the viewer decoded is not the camera's A-law"
        assert track.audio is not None and track.audio.units > 0
    finally:
        publisher.cancel()
        track.stop()
        await client.close()
        if server is not None:
            await server.close()


async def test_simulated_camera_microphone_through_the_gateway(gateway_factory: Any, fleet_factory: Any) -> None:
    """A simulated camera with a microphone (even channel number): its 440 Hz tone reaches the viewer."""
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id = next(
        c.device_id
        for a in fleet.agents.values()
        for c in a.profile.channels
        if c.device_id[10:13] == "131" and has_microphone(c.device_id)
    )
    assert await wait_for(
        lambda: channel_id in service.directory.channels and service.directory.channels[channel_id].online, 60
    )
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    client.on("track", lambda t: t.kind == "audio" and not got.done() and got.set_result(t))
    client.addTransceiver("video", direction="recvonly")
    client.addTransceiver("audio", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    try:
        status, body = await http_json(
            f"http://127.0.0.1:{service.http_port}/api/channels/{channel_id}/webrtc",
            {"sdp": client.localDescription.sdp},
        )
        assert status == 200, body
        await client.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        remote = await asyncio.wait_for(got, 30)
        received = []
        async with asyncio.timeout(30):
            while sum(len(f) for f in received) < 8000:
                frame = await remote.recv()
                received.append(frame.to_ndarray().reshape(-1).astype(np.int16))
        report = analyse(np.concatenate(received))
        assert report["dominant_hz"] is not None and abs(report["dominant_hz"] - MICROPHONE_TONE_HZ) < 10, report
    finally:
        await client.close()
