"""Sub-streams and uplink budgets over real sockets (issue 11).

Simulated cameras with a 320x180 sub-stream next to their 640x360 main; a grid cell
(``"stream": "sub"``) decodes at the sub's size over WebRTC, a single cell at main's; one
INVITE per (channel, stream) whatever the viewers; a camera without a sub-stream answers
main and is remembered; a kindergarten's uplink budget takes a main request on the
sub-stream, then refuses with 503 naming what uses the line, and shows in the API.
"""

from __future__ import annotations

import asyncio
import contextlib

import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from gateway import live as live_module
from gateway.live import stream_key
from tests.conftest import http_json, wait_for


async def _cameras(service, fleet, count: int) -> list[tuple[str, object]]:
    """``count`` camera channels the gateway has online, with their agents."""
    found = [
        (channel.device_id, agent)
        for agent in fleet.agents.values()
        for channel in agent.profile.channels
        if channel.device_id[10:13] == "131"
    ][:count]
    assert len(found) == count, "not enough cameras in the simulated kindergarten"

    def online() -> bool:
        return all((c := service.directory.channels.get(ch)) is not None and c.online for ch, _ in found)

    assert await wait_for(online, timeout=60)
    return found


async def _decode(stream, viewer: str, want: int, timeout: float = 30.0) -> list[av.VideoFrame]:
    decoder = av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(frames) < want and loop.time() < deadline:
        units = stream.fanout.pull(viewer)
        for unit in units:
            frames.extend(decoder.decode(av.Packet(unit.data)))
        if not units:
            stream.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.wakeup.wait(), 0.5)
    return frames


async def test_grid_cells_get_the_sub_stream_and_a_single_cell_main_one_invite_each(
    gateway_factory, fleet_factory, monkeypatch
):
    monkeypatch.setattr(live_module, "LINGER", 60.0)
    service = await gateway_factory(uplink_budget_mbps=0.0)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2), sub_streams=1.0)
    ((channel_id, agent),) = await _cameras(service, fleet, 1)
    api = f"http://127.0.0.1:{service.http_port}"
    live = service.live

    # A 4-cell grid asks for the sub-stream over WebRTC; a second viewer of the same cell joins it.
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got_track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    client.on("track", lambda track: got_track.done() or got_track.set_result(track))
    client.addTransceiver("video", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    try:
        status, answer = await http_json(
            f"{api}/api/channels/{channel_id}/webrtc", {"sdp": client.localDescription.sdp, "stream": "sub"}
        )
        assert status == 200, answer
        assert answer["stream"] == "sub" and answer["downgraded"] is False
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        track = await asyncio.wait_for(got_track, 30)
        frames = [await asyncio.wait_for(track.recv(), 30) for _ in range(5)]
        assert all((f.width, f.height) == (320, 180) for f in frames), [(f.width, f.height) for f in frames]

        sub, sub_viewer = await live.watch(channel_id, stream=1)
        assert sub is live.streams[stream_key(channel_id, 1)] and sub.fanout.consumer_count == 2
        first = (await _decode(sub, sub_viewer, 1))[0]
        assert (first.width, first.height) == (320, 180)
        # Spelled for the device's maker (DeviceInfo): Dahua's streamprofile, else the 2022 form.
        maker = service.directory.device(sub.device_id).manufacturer
        assert maker, "the gateway learned the manufacturer from DeviceInfo"
        line = b"a=streamprofile:1\r\n" if "dahua" in maker.lower() else b"a=streamnumber:1\r\n"
        invite = sub.session.invite
        assert invite is not None and line in invite.body, (maker, invite.body)

        # The single cell: main, twice, one more INVITE in all.
        status, opened = await http_json(f"{api}/api/channels/{channel_id}/live", {"stream": "main"})
        assert status == 200 and opened["stream"] == "main", opened
        main, main_viewer = await live.watch(channel_id)
        first = (await _decode(main, main_viewer, 1))[0]
        assert (first.width, first.height) == (640, 360)
        assert live.invites_sent == 2 and agent.stats.invites_received == 2

        status, listing = await http_json(f"{api}/api/live")
        assert status == 200
        assert sorted((s["channel_id"], s["stream"]) for s in listing["items"]) == [
            (channel_id, "main"),
            (channel_id, "sub"),
        ]
    finally:
        await client.close()


async def test_a_camera_without_a_sub_stream_answers_main_and_is_not_asked_again(gateway_factory, fleet_factory):
    service = await gateway_factory(uplink_budget_mbps=0.0)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2), sub_streams=0.0)
    ((channel_id, agent),) = await _cameras(service, fleet, 1)
    api = f"http://127.0.0.1:{service.http_port}"

    status, opened = await http_json(f"{api}/api/channels/{channel_id}/live", {"stream": "sub"})

    assert status == 200 and opened["stream"] == "main" and "子码流" in opened["note"], opened
    live = service.live
    assert channel_id in live.planner.no_sub and live.streams[channel_id].stream_number == 0
    status, again = await http_json(f"{api}/api/channels/{channel_id}/live", {"stream": "sub"})
    assert status == 200 and again["stream"] == "main"
    assert live.invites_sent == 1 and agent.stats.invites_received == 1, "asked for the sub-stream once"
    for bad in ("hd", 7, ["sub"]):
        status, body = await http_json(f"{api}/api/channels/{channel_id}/live", {"stream": bad})
        assert status == 400 and "main" in body["error"], (bad, body)


async def test_the_uplink_budget_takes_main_on_the_sub_stream_then_refuses_naming_the_users(
    gateway_factory, fleet_factory, monkeypatch
):
    monkeypatch.setattr(live_module, "LINGER", 60.0)
    # 5 Mbit/s: one main (4) and one sub (0.768) fit; estimates only, so the test does not race the meter.
    service = await gateway_factory(uplink_budget_mbps=5.0, uplink_measure_after=0.0)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(4, 4), sub_streams=1.0)
    (a, _), (b, _), (c, _) = await _cameras(service, fleet, 3)
    api = f"http://127.0.0.1:{service.http_port}"
    kindergarten = service.directory.channels[a].kindergarten_id
    assert kindergarten is not None

    status, first = await http_json(f"{api}/api/channels/{a}/live", {"stream": "main"})
    assert status == 200 and first["stream"] == "main" and first["downgraded"] is False, first
    status, second = await http_json(f"{api}/api/channels/{b}/live", {})
    assert status == 200 and second["stream"] == "sub" and second["downgraded"] is True, second
    assert "上行带宽" in second["note"] and "uplink budget" in second["note"]

    status, refused = await http_json(f"{api}/api/channels/{c}/live", {"stream": "auto"})
    assert status == 503, refused
    assert a in refused["error"] and b in refused["error"] and "上行带宽不足" in refused["error"]
    assert "uplink budget" in refused["error"] and "4.0 Mbit/s" in refused["error"]
    assert refused["uplink"]["used_kbps"] == 4768 and refused["uplink"]["budget_kbps"] == 5000
    assert {s["channel_id"] for s in refused["uplink"]["sessions"]} == {a, b}
    assert service.live.invites_sent == 2

    status, usage = await http_json(f"{api}/api/kindergartens/{kindergarten}/uplink")
    assert status == 200 and usage["used_kbps"] == 4768 and usage["free_kbps"] == 232, usage
    assert sorted(s["kbps"] for s in usage["sessions"]) == [768, 4000]
    status, listing = await http_json(f"{api}/api/kindergartens")
    row = next(k for k in listing["items"] if k["id"] == kindergarten)
    assert row["uplink"] == {"budget_kbps": 5000, "used_kbps": 4768, "sessions": 2}

    status, closed = await http_json(f"{api}/api/channels/{a}/live", method="DELETE")
    assert status == 200, closed
    status, usage = await http_json(f"{api}/api/kindergartens/{kindergarten}/uplink")
    assert usage["used_kbps"] == 768, "a closed stream gives its share back"
    status, now_main = await http_json(f"{api}/api/channels/{c}/live", {"stream": "main"})
    assert status == 200 and now_main["stream"] == "main", now_main
