"""Playback through the gateway over real sockets: the API, the simulated NVR, the recorded time burned in (issue 11).

Every picture the simulated NVR plays back carries the recorded second as a block code
(:mod:`simulators.stamp`); the tests decode what the gateway's playback fanout
delivers and read that code back, so "the seek landed at start + 20" is checked on
the picture, not on a counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from gateway.gb28181.device_records import Cut, DeviceRecords, RecordOptions
from gateway.media.relay import RelayError
from gateway.playback import Playback
from gateway.security.principal import Principal, Role
from simulators.stamp import read_stamp
from simulators.video import VideoProfile
from tests.conftest import TEST_TOKEN_GRANT, http_json, wait_for
from tests.scope_principals import call, grants

FPS = 25
OTHERS = {
    "admin2": Principal("另一位管理员", Role.CITY_ADMIN),
    "elsewhere": Principal("别区值班员", Role.DISTRICT_DUTY, district_code="120199"),
}


class Viewer:
    """A consumer of a playback's fanout that decodes every unit and reads the stamp of every picture."""

    def __init__(self, pb: Playback, name: str = "test-viewer") -> None:
        self.pb = pb
        self.name = name
        self.codec: Any = av.CodecContext.create("h264", "r")
        self.seen: list[tuple[float, float | None]] = []  # (arrival, recorded epoch s of the picture)
        pb.fanout.attach(name, asyncio.get_running_loop().time())
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                units = self.pb.fanout.pull(self.name)
            except RelayError:
                return  # the playback ended: its viewers are detached
            for unit in units:
                for frame in self.codec.decode(av.Packet(unit.data)):
                    stamp = read_stamp(frame.to_ndarray(format="gray"))
                    self.seen.append((loop.time(), stamp.time(FPS) if stamp is not None else None))
            if not units:
                self.pb.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.pb.wakeup.wait(), 0.2)

    def times(self, since: float = 0.0) -> list[float]:
        return [t for at, t in self.seen if at >= since and t is not None]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def camera(service, fleet, options: RecordOptions | None = None) -> str:
    """An online camera channel (its device's recordings answering with ``options``)."""
    for agent in fleet.agents.values():
        for channel in agent.profile.channels:
            if channel.device_id[10:13] == "131":
                if options is not None:
                    next(f for f in agent.features if isinstance(f, DeviceRecords)).options = options
                channel_id = channel.device_id

                def up(channel_id: str = channel_id) -> bool:
                    known = service.directory.channels.get(channel_id)
                    return known is not None and known.online

                assert await wait_for(up, timeout=60)
                return channel_id
    raise AssertionError("no camera")


async def test_playback_decodes_seeks_pauses_scales_and_ends_at_end_of_file(gateway_factory, fleet_factory):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id = await camera(service, fleet)
    api = f"http://127.0.0.1:{service.http_port}"
    loop = asyncio.get_running_loop()
    start = int(time.time()) - 3600
    status, body = await http_json(f"{api}/api/channels/{channel_id}/playback", {"start": start, "end": start + 40})
    assert status == 200, body
    assert body["state"] == "playing" and body["scale"] == 1.0 and body["start"] == start
    pb = service.playback.playbacks[body["id"]]
    viewer = Viewer(pb)
    try:
        # The first picture shows the start of the window.
        assert await wait_for(lambda: len(viewer.times()) >= 10, timeout=30)
        assert viewer.times()[0] == start

        # Seek: the pictures after it show start + 20 onwards; position says so too.
        status, body = await http_json(f"{api}/api/playback/{pb.id}/control", {"action": "seek", "position": 20})
        assert status == 200, body
        sought = loop.time()
        assert await wait_for(lambda: any(t >= start + 20 for t in viewer.times(sought)), timeout=30)
        landed = [t for t in viewer.times(sought) if t >= start + 10]
        assert landed[0] == start + 20, landed[:5]
        assert await wait_for(lambda: pb.position >= 20.0, timeout=10)
        assert pb.position < 25

        # Scale 2: recorded time runs about twice as fast as the wall clock, and position follows.
        status, body = await http_json(f"{api}/api/playback/{pb.id}/control", {"action": "scale", "scale": 2})
        assert status == 200 and body["scale"] == 2.0
        scaled, pos0 = loop.time(), pb.position
        assert await wait_for(lambda: loop.time() - scaled > 1.5, timeout=10)
        pos1, elapsed = pb.position, loop.time() - scaled
        assert 1.3 < (pos1 - pos0) / elapsed < 2.8, (pos0, pos1, elapsed)

        # Pause: the position holds and no pictures come; play resumes.
        status, body = await http_json(f"{api}/api/playback/{pb.id}/control", {"action": "pause"})
        assert status == 200 and body["state"] == "paused"
        await asyncio.sleep(0.3)  # frames in flight when the PAUSE was answered
        held, count = pb.position, len(viewer.seen)
        await asyncio.sleep(0.7)  # an absence of pictures, checked by count below
        assert pb.position == held and len(viewer.seen) == count
        status, body = await http_json(f"{api}/api/playback/{pb.id}/control", {"action": "play"})
        assert status == 200 and body["state"] == "playing"
        assert await wait_for(lambda: pb.position > held, timeout=10)

        # Bad controls are refused without touching the device.
        for bad in ({"action": "scale", "scale": 16}, {"action": "jump"}, {"action": "seek", "position": -1}):
            status, _ = await http_json(f"{api}/api/playback/{pb.id}/control", bad)
            assert status == 400, bad

        # The device's MediaStatus 121 at the end of the window ends the session; we hang up.
        assert await wait_for(lambda: not pb.active, timeout=40)
        status, body = await http_json(f"{api}/api/playback/{pb.id}")
        assert status == 200 and body["state"] == "ended" and body["end_reason"] == "end_of_file", body
        assert max(viewer.times()) >= start + 38
        assert await wait_for(lambda: not fleet.nodes[0].playback.streams, timeout=30)

        # MANSRTSP to a session that ended: 409, nothing sent.
        status, body = await http_json(f"{api}/api/playback/{pb.id}/control", {"action": "pause"})
        assert status == 409 and "ended" in body["error"]
    finally:
        await viewer.close()


async def test_device_bye_mid_stream_and_delete(gateway_factory, fleet_factory):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id = await camera(service, fleet, RecordOptions(cut=Cut.BYE, cut_at=0.5))
    api = f"http://127.0.0.1:{service.http_port}"
    start = int(time.time()) - 7200
    status, body = await http_json(f"{api}/api/channels/{channel_id}/playback", {"start": start, "end": start + 6})
    assert status == 200, body
    pb = service.playback.playbacks[body["id"]]
    assert await wait_for(lambda: not pb.active, timeout=30)
    assert pb.end_reason == "device_bye" and 2.0 <= pb.position < 5.0, (pb.end_reason, pb.position)

    # A second one, deleted by the API: BYE, and the device's stream ends.
    status, body = await http_json(f"{api}/api/channels/{channel_id}/playback", {"start": start, "end": start + 600})
    assert status == 200
    status, body = await http_json(f"{api}/api/playback/{body['id']}", method="DELETE")
    assert status == 200 and body["state"] == "ended"
    assert await wait_for(lambda: not fleet.nodes[0].playback.streams, timeout=30)

    # Nobody watches or asks: closed after the idle timeout.
    service.playback.idle_timeout = 1.0
    status, body = await http_json(f"{api}/api/channels/{channel_id}/playback", {"start": start, "end": start + 600})
    assert status == 200
    idle = service.playback.playbacks[body["id"]]
    assert await wait_for(lambda: not idle.active, timeout=30)
    assert idle.end_reason == "idle"
    assert await wait_for(lambda: not fleet.nodes[0].playback.streams, timeout=30)


async def test_a_stalled_playback_ends_on_rtp_timeout(gateway_factory, fleet_factory):
    service = await gateway_factory(rtp_timeout=1.5)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id = await camera(service, fleet, RecordOptions(cut=Cut.STALL, cut_at=0.2))
    api = f"http://127.0.0.1:{service.http_port}"
    start = int(time.time()) - 7200
    status, body = await http_json(f"{api}/api/channels/{channel_id}/playback", {"start": start, "end": start + 10})
    assert status == 200, body
    pb = service.playback.playbacks[body["id"]]
    assert await wait_for(lambda: not pb.active, timeout=30)
    assert pb.end_reason == "rtp_timeout", pb.end_reason


async def watch_playback(api: str, playback_id: str, frames: int = 5) -> tuple[dict[str, Any], list[Any]]:
    """Open a playback over WebRTC as a browser does: the offer's answer (status 200) and ``frames`` decoded frames."""
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    client.on("track", lambda track: got.done() or got.set_result(track))
    client.addTransceiver("video", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    try:
        status, answer = await http_json(
            f"{api}/api/playback/{playback_id}/webrtc", {"sdp": client.localDescription.sdp}
        )
        assert status == 200, answer
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        track = await asyncio.wait_for(got, 30)
        return answer, [await asyncio.wait_for(track.recv(), 30) for _ in range(frames)]
    finally:
        await client.close()


async def test_playback_over_webrtc_and_ownership(gateway_factory, fleet_factory):
    service = await gateway_factory(api_tokens=(TEST_TOKEN_GRANT, *grants(OTHERS)))
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id = await camera(service, fleet)
    api = f"http://127.0.0.1:{service.http_port}"
    start = int(time.time()) - 1800
    status, body = await http_json(f"{api}/api/channels/{channel_id}/playback", {"start": start, "end": start + 120})
    assert status == 200, body
    playback_id = body["id"]
    _, frames = await watch_playback(api, playback_id)
    stamps = [read_stamp(f.to_ndarray(format="gray")) for f in frames]
    assert all(s is not None and start <= s.epoch <= start + 60 for s in stamps), stamps
    # Another administrator does not reach this playback; a kindergarten elsewhere not the channel either.
    for method, path in (("GET", ""), ("POST", "/control"), ("DELETE", "")):
        status, _ = await call(
            f"{api}/api/playback/{playback_id}{path}", "admin2", {"action": "pause"} if path else None, method
        )
        assert status == 404, (method, path)
    for path in (
        f"/api/channels/{channel_id}/records?start={start}&end={start + 60}",
        f"/api/channels/{channel_id}/playback",
    ):
        status, _ = await call(
            api + path, "elsewhere", {"start": start, "end": start + 9} if "playback" in path else None
        )
        assert status == 404, path
    assert service.playback.playbacks[playback_id].active
    # Unknown playbacks and channels: 404.
    status, _ = await http_json(f"{api}/api/playback/0000000000000000")
    assert status == 404
    status, _ = await http_json(f"{api}/api/channels/34020000001319999999/playback", {"start": start, "end": start + 9})
    assert status == 404
    status, _ = await http_json(f"{api}/api/channels/{channel_id}/playback", {"start": start, "end": start - 9})
    assert status == 400
    status, _ = await http_json(f"{api}/api/playback/{playback_id}", method="DELETE")
    assert status == 200


async def test_an_h265_recording_plays_in_the_browser_through_a_transcode(gateway_factory, fleet_factory):
    """An NVR recording in H.265: the playback's WebRTC answer transcodes it (one transcode for this playback),
    the browser decodes H.264 showing the recorded time, and the transcode ends with the playback."""
    service = await gateway_factory()
    fleet = await fleet_factory(
        service, kindergartens=1, cameras=(2, 2), video=VideoProfile(width=640, height=360, codec="hevc")
    )
    channel_id = await camera(service, fleet)
    api = f"http://127.0.0.1:{service.http_port}"
    start = int(time.time()) - 1800
    status, body = await http_json(f"{api}/api/channels/{channel_id}/playback", {"start": start, "end": start + 120})
    assert status == 200, body
    playback_id = body["id"]
    answer, frames = await watch_playback(api, playback_id)
    assert answer["transcoded"] is True, answer
    assert [t["stream"] for t in service.transcodes.describe()] == [f"playback {playback_id}"]
    assert all((f.width, f.height) == (640, 360) for f in frames)
    stamps = [read_stamp(f.to_ndarray(format="gray")) for f in frames]
    assert all(s is not None and start <= s.epoch <= start + 60 for s in stamps), stamps
    status, _ = await http_json(f"{api}/api/playback/{playback_id}", method="DELETE")
    assert status == 200
    assert await wait_for(lambda: not service.transcodes.transcodes, timeout=30), "the playback's transcode ended"
