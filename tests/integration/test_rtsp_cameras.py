"""RTSP cameras (issue 13) against a real RTSP server (GStreamer's, simulators/rtsp_server.py).

Configuration through the API (audited, password never returned), the virtual device and
channel in the directory, first frame through ``LiveService.watch``, a snapshot, and the
connection's state: online, server gone → offline → back → online, wrong credentials →
认证失败 without hammering, a codec that is not H.264 → 不支持的编码.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from gateway import live as live_module
from gateway.app import GatewayService
from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper import UpperPlatformConfig
from gateway.cli import main as cli_main
from gateway.config import UpperSpec
from gateway.media.ps import StreamType
from gateway.registry.model import AreaTag, EntityKind, Kindergarten
from gateway.rtsp.model import CameraState, InvalidRtspCamera, RtspCameraConfig, is_virtual_id, virtual_device_id
from gateway.rtsp.puller import PullerTiming
from gateway.rtsp.units import nal_types
from gateway.security.principal import Role
from tests.conftest import TEST_TOKEN, GatewayFactory, add_user, http_json, wait_for
from tests.rtsp_server import RtspServerFactory

PASSWORD = "platform-pw"
MUNICIPAL = "12010000002000000001"
KG = Kindergarten("12010100112160012300", "和平区第一幼儿园", "120101", "和平路 1 号")
FAST = PullerTiming(backoff_base=0.2, backoff_cap=1.0, refused_retry=3600.0, open_timeout=5.0, read_timeout=3.0)


async def _gateway(gateway_factory: GatewayFactory, **overrides: Any) -> GatewayService:
    service = await gateway_factory(**overrides)
    await service.provisioning.add_kindergartens([KG])
    service.rtsp.timing = FAST
    return service


def _state(service: GatewayService, channel_id: str) -> CameraState:
    return service.rtsp.camera(channel_id)[1].state


async def test_add_by_api_shows_the_channel_online_and_never_returns_the_password(
    gateway_factory: GatewayFactory, rtsp_server_factory: RtspServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = rtsp_server_factory(user="admin", password="s3cret-pw")
    service = await _gateway(gateway_factory)
    base = f"http://127.0.0.1:{service.http_port}"
    body = {
        "kindergarten_id": KG.id,
        "name": "大门口",
        "area": "entrance",
        "url": server.url_with("admin", "s3cret-pw"),  # credentials in the URL are taken out of it
    }
    status, camera = await http_json(f"{base}/api/rtsp-cameras", body)
    assert status == 201, camera
    channel_id = camera["channel_id"]
    assert is_virtual_id(channel_id) and camera["device_id"] == virtual_device_id(KG.id)
    assert camera["url"] == server.url and camera["username"] == "admin" and camera["has_password"] is True
    assert "password" not in camera
    assert await wait_for(lambda: _state(service, channel_id) is CameraState.ONLINE, 30)
    # The directory (console tree, catalogs upward) has the channel up under the virtual device.
    channel = service.directory.channels[channel_id]
    assert service.directory.is_up(channel) and channel.kindergarten_id == KG.id and channel.type_code == 131
    # The test token is a 市级管理员's: its area counts as confirmed.
    assert channel.confirmed_area is AreaTag.ENTRANCE
    assert service.directory.entrance_camera(KG.id) == channel_id  # alarms' live link and snapshot use it
    status, listed = await http_json(f"{base}/api/rtsp-cameras")
    assert status == 200 and [c["state_label"] for c in listed["items"]] == ["在线"]
    assert "s3cret-pw" not in str(listed)
    status, channels = await http_json(f"{base}/api/channels?kindergarten={KG.id}")
    assert status == 200 and [c["id"] for c in channels["items"]] == [channel_id]
    assert "s3cret-pw" not in caplog.text
    # Edit and remove.
    status, edited = await http_json(f"{base}/api/rtsp-cameras/{channel_id}", {"name": "大门口 2"}, "PATCH")
    assert status == 200 and edited["name"] == "大门口 2"
    status, _ = await http_json(f"{base}/api/rtsp-cameras/{channel_id}", method="DELETE")
    assert status == 200 and channel_id not in service.directory.channels
    await service.audit.flush()
    status, audit = await http_json(f"{base}/api/audit?action=provisioning")
    ops = [r["detail"].get("op") for r in audit["items"]]
    assert {"rtsp camera add", "rtsp camera edit", "rtsp camera remove"} <= set(ops), audit
    assert "s3cret-pw" not in str(audit)


async def test_bad_configurations_are_refused(gateway_factory: GatewayFactory) -> None:
    service = await _gateway(gateway_factory)
    base = f"http://127.0.0.1:{service.http_port}/api/rtsp-cameras"
    good = {"kindergarten_id": KG.id, "name": "大门口", "area": "entrance", "url": "rtsp://127.0.0.1:1/x"}
    for bad in (
        {**good, "url": "http://127.0.0.1/x"},
        {**good, "area": "rooftop"},
        {**good, "name": ""},
        {**good, "kindergarten_id": "12010100112160099900"},  # not provisioned
        {**good, "kindergarten_id": "1201"},
    ):
        status, answer = await http_json(base, bad)
        assert status in (400, 404), (bad, status, answer)
    assert service.rtsp.cameras() == []


async def test_cameras_survive_a_restart_on_both_backends(
    gateway_factory: GatewayFactory, db_url: str, tmp_path: Any
) -> None:
    db = db_url if db_url.startswith("postgresql") else str(tmp_path / "kgw.db")
    service = await _gateway(gateway_factory, db=db)
    camera = await service.rtsp.add(
        RtspCameraConfig(KG.id, "周界东", "perimeter", "rtsp://127.0.0.1:9/none", "u", "p@ss"), "tester"
    )
    await service.stop()
    again = await _gateway(gateway_factory, db=db)
    (loaded, status), *_ = again.rtsp.cameras()
    assert loaded == camera and loaded.password == "p@ss"
    assert camera.channel_id in again.directory.channels
    assert status.state in (CameraState.CONNECTING, CameraState.OFFLINE)
    # Not confirmed: the service was not asked to (an operator without AREA_CONFIRM).
    assert again.directory.channels[camera.channel_id].confirmed_area is None


async def test_first_frame_and_snapshot_through_the_live_service(
    gateway_factory: GatewayFactory, rtsp_server: Any
) -> None:
    service = await _gateway(gateway_factory)
    camera = await service.rtsp.add(RtspCameraConfig(KG.id, "大门口", "entrance", rtsp_server.url), "tester")
    assert await wait_for(lambda: _state(service, camera.channel_id) is CameraState.ONLINE, 30)
    stream, viewer = await service.live.watch(camera.channel_id)
    assert stream.session is None and service.live.video_codec(stream.key) is not None
    units: list[Any] = []
    assert await wait_for(lambda: bool(units.extend(stream.fanout.pull(viewer))) or any(u.keyframe for u in units), 10)
    first = units[0]
    # The GOP cache starts a viewer on a key frame that carries its parameter sets (SPS 7, PPS 8, IDR 5).
    assert first.keyframe and {7, 8, 5} <= set(nal_types(first.data, StreamType.H264))
    second, other = await service.live.watch(camera.channel_id)
    assert second is stream  # one upstream however many viewers
    service.live.leave(camera.channel_id, viewer)
    service.live.leave(camera.channel_id, other)
    jpeg = await service.live.snapshot(camera.channel_id)
    with av.open(__import__("io").BytesIO(jpeg)) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (320, 240)


async def test_server_gone_and_back(gateway_factory: GatewayFactory, rtsp_server: Any) -> None:
    service = await _gateway(gateway_factory)
    camera = await service.rtsp.add(RtspCameraConfig(KG.id, "大门口", "entrance", rtsp_server.url), "tester")
    channel_id = camera.channel_id
    assert await wait_for(lambda: _state(service, channel_id) is CameraState.ONLINE, 30)
    stream, viewer = await service.live.watch(channel_id)
    rtsp_server.stop()
    assert await wait_for(lambda: _state(service, channel_id) is CameraState.OFFLINE, 30)
    assert not service.directory.is_up(service.directory.channels[channel_id])
    assert service.live.streams.get(channel_id) is not stream  # its viewers saw the end
    rtsp_server.start()
    assert await wait_for(lambda: _state(service, channel_id) is CameraState.ONLINE, 30)
    assert service.directory.is_up(service.directory.channels[channel_id])
    await service.writer.flush()
    events = await service.store.call(lambda s: s.list_status_events(channel_id, None, 100))
    history = [e.online for e in reversed(events) if e.kind is EntityKind.CHANNEL]  # oldest first
    assert history == [True, False, True], history
    service.live.leave(channel_id, viewer)


async def test_wrong_credentials_are_not_hammered(
    gateway_factory: GatewayFactory, rtsp_server_factory: RtspServerFactory
) -> None:
    server = rtsp_server_factory(user="admin", password="right")
    service = await _gateway(gateway_factory)
    camera = await service.rtsp.add(RtspCameraConfig(KG.id, "大门口", "entrance", server.url, "admin", "wrong"), "t")
    assert await wait_for(lambda: _state(service, camera.channel_id) is CameraState.AUTH_FAILED, 30)
    _, status = service.rtsp.camera(camera.channel_id)
    assert status.label == "认证失败" and "wrong" not in status.detail
    # The next try waits refused_retry (an hour here), whatever the backoff cap (1 s) says.
    first = service.rtsp.camera(camera.channel_id)[1].attempts
    stream_error = None
    try:
        await service.live.watch(camera.channel_id)
    except Exception as exc:  # noqa: BLE001 - the error type is asserted below
        stream_error = exc
    assert stream_error is not None and "认证失败" in str(stream_error)
    assert not await wait_for(lambda: service.rtsp.camera(camera.channel_id)[1].attempts > first, 3)
    # The operator fixes the password: it connects at once.
    await service.rtsp.update(camera.channel_id, "t", password="right")
    assert await wait_for(lambda: _state(service, camera.channel_id) is CameraState.ONLINE, 30)


@pytest.mark.parametrize("codec", ["h265", "mjpeg"])
async def test_a_codec_other_than_h264_gets_a_clear_state(
    gateway_factory: GatewayFactory, rtsp_server_factory: RtspServerFactory, codec: str
) -> None:
    server = rtsp_server_factory(codec=codec)
    service = await _gateway(gateway_factory)
    camera = await service.rtsp.add(RtspCameraConfig(KG.id, "大门口", "entrance", server.url), "t")
    assert await wait_for(lambda: _state(service, camera.channel_id) is CameraState.UNSUPPORTED_CODEC, 30)
    label = service.rtsp.camera(camera.channel_id)[1].label
    assert label == f"不支持的编码 ({'hevc' if codec == 'h265' else 'mjpeg'})"


async def test_an_upper_platform_watches_the_rtsp_channel_as_ps_over_rtp_without_reencoding(
    gateway_factory: GatewayFactory,
    platform_factory: GatewayFactory,
    rtsp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Tee the PS the platform receives (the payloads of the gateway's RTP) into a file for ffprobe.
    ps = bytearray()

    def tee(receiver: Any, demuxer: Any, fanout: Any, data: bytes, source: Any, now: float) -> bool:
        receiver.receive(data, source, now)
        published = False
        while (payload := receiver.next_payload()) is not None:
            ps.extend(payload)
            for unit in demuxer.feed(payload):
                fanout.publish(unit, now)
                published = True
        return published

    monkeypatch.setattr(live_module, "feed_rtp", tee)
    platform = await platform_factory(id=MUNICIPAL, role="municipal", password=PASSWORD)
    link = UpperPlatformConfig(
        name="municipal",
        server_id=platform.config.id,
        host="127.0.0.1",
        port=platform.sip_port,
        password=PASSWORD,
        register_retry_min=0.2,
        register_retry_max=1.0,
    )
    service = await _gateway(
        gateway_factory, upper_platforms=(UpperSpec(link, SharePolicy(PolicyLevel.MUNICIPAL, None)),)
    )
    camera = await service.rtsp.add(RtspCameraConfig(KG.id, "大门口", "entrance", rtsp_server.url), "tester")
    channel_id = camera.channel_id
    assert await wait_for(lambda: _state(service, channel_id) is CameraState.ONLINE, 30)
    assert service.cascade is not None
    assert await wait_for(lambda: all(s["state"] == "registered" for s in service.cascade.status()), 30)  # type: ignore[union-attr]
    assert await wait_for(lambda: platform.queries.is_registered(service.config.id), 30)
    assert await wait_for(lambda: platform.queries.request_catalog(service.config.id) is not None, 30)
    # The catalog upward carries the virtual channel (the platform learnt it from the gateway).
    assert await wait_for(lambda: platform.directory.device_of(channel_id) == service.config.id, 30)

    stream, viewer = await platform.live.watch(channel_id)
    units: list[Any] = []
    assert await wait_for(lambda: bool(units.extend(stream.fanout.pull(viewer))) or len(units) >= 30, 30)
    assert platform.live.video_codec(stream.key) is StreamType.H264
    # No re-encoding: the SPS the platform got is byte for byte the camera's.
    ours, own_viewer = await service.live.watch(channel_id)  # starts on the GOP cache's key frame
    sps_upper = _sps(units)
    assert sps_upper is not None and sps_upper == _sps(ours.fanout.pull(own_viewer))
    service.live.leave(channel_id, own_viewer)
    platform.live.leave(channel_id, viewer)
    path = tmp_path / "upper.ps"
    path.write_bytes(bytes(ps))
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    streams = json.loads(probe.stdout)["streams"]
    assert [(s["codec_name"], s["width"], s["height"]) for s in streams] == [("h264", 320, 240)]


def _sps(units: list[Any]) -> bytes | None:
    """The first SPS NAL unit (type 7) in a list of H.264 access units."""
    for unit in units:
        for nal in unit.data.split(b"\x00\x00\x01"):
            if nal and nal[0] & 0x1F == 7:
                return nal.rstrip(b"\x00")
    return None


async def test_the_area_counts_as_confirmed_only_from_someone_who_may_confirm(gateway_factory: GatewayFactory) -> None:
    """A 运维 adds cameras but may not confirm areas: police see its camera only after a confirmation."""
    service = await _gateway(gateway_factory)
    await add_user(service, "yunwei", "yunwei-password-2026", Role.MAINTENANCE)
    base = f"http://127.0.0.1:{service.http_port}"
    body = {"kindergarten_id": KG.id, "name": "大门口", "area": "entrance", "url": "rtsp://127.0.0.1:9/a"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # unsafe: an IP host
        async with http.post(f"{base}/api/login", json={"username": "yunwei", "password": "yunwei-password-2026"}) as r:
            assert r.status == 200, await r.text()
        async with http.post(f"{base}/api/rtsp-cameras", json=body, headers={"Origin": base}) as r:
            assert r.status == 201, await r.text()
            by_maintenance = (await r.json())["channel_id"]
    status, answer = await http_json(f"{base}/api/rtsp-cameras", {**body, "name": "周界"})  # the 市级 token
    assert status == 201, answer
    by_admin = answer["channel_id"]
    police = SharePolicy.police()
    channels = service.directory.channels
    assert channels[by_maintenance].confirmed_area is None and not police.allows_channel(channels[by_maintenance])
    assert channels[by_admin].confirmed_area is AreaTag.ENTRANCE and police.allows_channel(channels[by_admin])


async def test_console_snapshot_and_webrtc_passthrough_of_an_rtsp_camera(
    gateway_factory: GatewayFactory, rtsp_server: Any
) -> None:
    service = await _gateway(gateway_factory)
    camera = await service.rtsp.add(RtspCameraConfig(KG.id, "大门口", "entrance", rtsp_server.url), "tester")
    assert await wait_for(lambda: _state(service, camera.channel_id) is CameraState.ONLINE, 30)
    api = f"http://127.0.0.1:{service.http_port}/api/channels/{camera.channel_id}"
    jpeg = await asyncio.to_thread(lambda: urllib.request.urlopen(f"{api}/snapshot.jpg", timeout=20).read())
    assert jpeg.startswith(b"\xff\xd8")
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got_track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    client.on("track", lambda track: got_track.done() or got_track.set_result(track))
    client.addTransceiver("video", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    status, answer = await http_json(f"{api}/webrtc", {"sdp": client.localDescription.sdp})
    assert status == 200, answer
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    try:
        track = await asyncio.wait_for(got_track, 30)
        frames = [await asyncio.wait_for(track.recv(), 30) for _ in range(10)]
        assert all((f.width, f.height) == (320, 240) for f in frames)  # type: ignore[union-attr]
        assert service.live.invites_sent == 0 and len(service.live.streams) == 1  # one upstream, the puller's
    finally:
        await client.close()


async def test_kgw_rtsp_cli_adds_lists_and_removes_through_the_api(
    gateway_factory: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    service = await _gateway(gateway_factory)
    api = f"http://127.0.0.1:{service.http_port}"
    monkeypatch.setenv("KGW_API_TOKEN", TEST_TOKEN)
    secret = tmp_path / "pw"
    secret.write_text("cli-secret\n")
    add = ["rtsp", "--api", api, "add", "--kindergarten", KG.id, "--name", "侧门", "--area", "entrance"]
    add += ["--url", "rtsp://127.0.0.1:9/side", "--user", "admin", "--password-file", str(secret)]
    assert await asyncio.to_thread(cli_main, add) == 0
    (camera, _), *_ = service.rtsp.cameras()
    assert camera.password == "cli-secret" and camera.username == "admin"
    assert await asyncio.to_thread(cli_main, ["rtsp", "--api", api, "list"]) == 0
    assert await asyncio.to_thread(cli_main, ["rtsp", "--api", api, "remove", camera.channel_id]) == 0
    assert await asyncio.to_thread(cli_main, ["rtsp", "--api", api, "remove", camera.channel_id]) == 1
    out = capsys.readouterr()
    assert camera.channel_id in out.out and "侧门" in out.out and "cli-secret" not in out.out + out.err
    assert service.rtsp.cameras() == []


async def test_a_gateway_process_pulls_only_the_cameras_of_its_districts(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """Several processes on one database (gateway/cluster.py): one connection per camera in the city."""
    db = str(tmp_path / "kgw.db")
    ours = await _gateway(gateway_factory, db=db, districts="120101")
    camera = await ours.rtsp.add(RtspCameraConfig(KG.id, "大门口", "entrance", "rtsp://127.0.0.1:9/x"), "t")
    other = await _gateway(gateway_factory, db=db, districts="120102", node="north")
    assert other.rtsp.cameras() == [] and camera.channel_id not in other.directory.channels
    with pytest.raises(InvalidRtspCamera, match="another gateway process"):
        await other.rtsp.add(RtspCameraConfig(KG.id, "侧门", "entrance", "rtsp://127.0.0.1:9/y"), "t")
    assert [c.channel_id for c, _ in ours.rtsp.cameras()] == [camera.channel_id]
