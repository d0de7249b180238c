"""ONVIF discovery and profile lookup against the simulated camera and against things that are not cameras.

Real sockets on 127.0.0.1: the WS-Discovery probe over UDP (unicast, and multicast on
the loopback interface when this machine routes it), the SOAP calls over HTTP with
the UsernameToken digest or HTTP Digest, and servers that answer wrongly or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.onvif.client import lookup_profiles
from gateway.onvif.discovery import discover
from gateway.onvif.errors import NotOnvifError, OnvifAuthError, OnvifProtocolError, OnvifTimeout, OnvifUnreachable
from gateway.onvif.soap import Credentials
from gateway.onvif.wsdiscovery import MULTICAST_GROUP
from tests.conftest import free_sip_port, wait_for
from tests.onvif_camera import CameraFactory
from tests.processes import Proc

RIGHT = Credentials("admin", "admin12345")


def _multicast_on_loopback() -> str | None:
    """None when a datagram to 239.255.255.250 on 127.0.0.1 comes back here; else why not."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("", 0))
        receiver.settimeout(2)
        membership = struct.pack("4s4s", socket.inet_aton(MULTICAST_GROUP), socket.inet_aton("127.0.0.1"))
        receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sender.sendto(b"kgw", (MULTICAST_GROUP, receiver.getsockname()[1]))
        receiver.recvfrom(16)
        return None
    except OSError as exc:
        return f"multicast on the loopback interface is not available here: {exc}"
    finally:
        receiver.close()
        sender.close()


async def test_unicast_probe_finds_the_camera(onvif_camera: CameraFactory) -> None:
    camera = await onvif_camera(name="园门口 Cam", model="DS-2CD2143G0-I")
    result = await discover(host="127.0.0.1", port=camera.discovery_port, timeout=10)
    (device,) = result.devices
    assert (device.address, device.xaddrs) == ("127.0.0.1", (camera.xaddr,))
    assert (device.name, device.hardware, device.endpoint) == ("园门口 Cam", "DS-2CD2143G0-I", camera.options.endpoint)
    assert result.mode == "unicast" and camera.probes_answered >= 1


async def test_multicast_probe_on_loopback(onvif_camera: CameraFactory) -> None:
    reason = _multicast_on_loopback()
    if reason is not None:
        pytest.skip(reason)
    first = await onvif_camera(multicast=True)
    second = await onvif_camera(multicast=True, discovery_port=first.discovery_port)  # one group, one port
    result = await discover(port=first.discovery_port, interface="127.0.0.1", timeout=1.5)
    assert {d.xaddrs[0] for d in result.devices} == {first.xaddr, second.xaddr}
    assert result.mode == "multicast"


async def test_a_camera_claiming_another_hosts_xaddr_is_not_offered(onvif_camera: CameraFactory) -> None:
    camera = await onvif_camera(advertise_host="10.77.0.1")
    result = await discover(host="127.0.0.1", port=camera.discovery_port, timeout=1)
    assert result.devices == ()
    assert set(result.dropped) == {"foreign_xaddr", "no_xaddr"}  # each answer: its one XAddr dropped, then the match
    assert 1 <= result.dropped["foreign_xaddr"] == result.dropped["no_xaddr"] <= camera.probes_answered


async def test_profiles_with_the_right_credentials(onvif_camera: CameraFactory) -> None:
    camera = await onvif_camera(
        rtsp_url="rtsp://127.0.0.1:18554/kg1/gate", manufacturer="HIKVISION", model="DS-2CD2143G0-I"
    )
    found = await lookup_profiles(camera.xaddr, RIGHT, timeout=20)
    assert (found.device.manufacturer, found.device.model) == ("HIKVISION", "DS-2CD2143G0-I")
    assert found.media_xaddr.endswith("/onvif/media_service")
    main, sub = found.profiles
    assert (main.profile.token, main.profile.encoding, main.profile.width, main.profile.height) == (
        "Profile_1",
        "H264",
        1920,
        1080,
    )
    assert (sub.profile.name, sub.profile.width) == ("subStream", 640)
    assert main.rtsp_uri == "rtsp://127.0.0.1:18554/kg1/gate" and not main.rewritten
    assert camera.calls[:3] == ["GetSystemDateAndTime", "GetDeviceInformation", "GetCapabilities"]


async def test_wrong_credentials_are_refused(onvif_camera: CameraFactory) -> None:
    camera = await onvif_camera()
    for credentials in (Credentials("admin", "wrong"), Credentials("intruder", "admin12345"), Credentials("", "")):
        with pytest.raises(OnvifAuthError) as caught:
            await lookup_profiles(camera.xaddr, credentials, timeout=20)
        assert caught.value.message_zh == "用户名或密码错误,摄像机拒绝访问"
    assert camera.auth_failures == 3


async def test_a_camera_whose_clock_is_off_by_an_hour(onvif_camera: CameraFactory) -> None:
    camera = await onvif_camera(clock_offset=3600.0, max_skew=5.0)
    found = await lookup_profiles(camera.xaddr, RIGHT, timeout=20)
    assert abs(found.clock_offset - 3600.0) < 3 and len(found.profiles) == 2


async def test_a_camera_that_wants_http_digest(onvif_camera: CameraFactory) -> None:
    camera = await onvif_camera(http_digest=True)
    assert len((await lookup_profiles(camera.xaddr, RIGHT, timeout=20)).profiles) == 2
    with pytest.raises(OnvifAuthError):
        await lookup_profiles(camera.xaddr, Credentials("admin", "nope"), timeout=20)


async def test_addresses_the_camera_names_elsewhere_stay_on_its_host(onvif_camera: CameraFactory) -> None:
    """A NAT'd (or lying) camera names its media service and streams on another host: the credentials
    go only to the host the operator gave, and the RTSP URI is moved there (flagged)."""
    camera = await onvif_camera(media_host="10.77.0.2", stream_host="10.77.0.3")
    found = await lookup_profiles(camera.xaddr, RIGHT, timeout=20)
    assert found.media_xaddr == f"http://127.0.0.1:{camera.http_port}/onvif/media_service"
    (main, _) = found.profiles
    assert (main.rtsp_uri, main.claimed_uri, main.rewritten) == (
        "rtsp://127.0.0.1:8554/cam1",
        "rtsp://10.77.0.3:8554/cam1",
        True,
    )


@contextlib.asynccontextmanager
async def _http(handler: web.RequestHandler) -> AsyncIterator[str]:  # type: ignore[name-defined]
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/onvif/device_service"
    finally:
        await runner.cleanup()


async def _html(request: web.Request) -> web.Response:
    return web.Response(text="<html><body><h1>Router login</h1></body></html>", content_type="text/html")


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("http://10.77.0.9/onvif/device_service")


async def _huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/soap+xml"})
    await response.prepare(request)
    chunk = b"<a>" + b" " * 65536
    for _ in range(40):  # 2.6 MB, no Content-Length
        await response.write(chunk)
    return response


async def test_a_web_server_that_is_not_onvif_gives_the_clear_error() -> None:
    for handler in (_html, _redirect):
        async with _http(handler) as xaddr:
            with pytest.raises(NotOnvifError) as caught:
                await lookup_profiles(xaddr, RIGHT, timeout=20)
            assert caught.value.message_zh == "该地址不是 ONVIF 设备(没有 ONVIF 设备服务应答)"


async def test_an_oversized_reply_is_cut_off() -> None:
    async with _http(_huge) as xaddr:
        with pytest.raises(OnvifProtocolError):
            await lookup_profiles(xaddr, RIGHT, timeout=20)


async def test_nothing_listening_and_silence() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(OnvifUnreachable):
        await lookup_profiles(f"http://127.0.0.1:{port}/onvif/device_service", RIGHT, timeout=20)
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    try:
        xaddr = f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}/onvif/device_service"
        with pytest.raises(OnvifTimeout):
            await lookup_profiles(xaddr, RIGHT, timeout=0.5)
    finally:
        silent.close()


async def test_kgw_simulate_runs_onvif_cameras(tmp_path: Path, procs: list[Proc]) -> None:
    """``kgw simulate --onvif URL``: the camera answers probes and lookups from another process."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    sip = free_sip_port()
    args = ["simulate", "--gateway", f"127.0.0.1:{sip}", "--kindergartens", "1", "--cameras", "2"]
    args += ["--onvif", "rtsp://127.0.0.1:18554/sim/1", "--onvif-discovery-port", str(port)]
    args += ["--onvif-credentials", "installer:s3cret-pw"]
    sim = Proc("simulate", args, tmp_path)
    procs.append(sim)
    assert await wait_for(lambda: "simulated ONVIF camera:" in sim.output(), timeout=60), sim.output()[-2000:]
    result = await discover(host="127.0.0.1", port=port, timeout=10)
    (device,) = result.devices
    found = await lookup_profiles(device.xaddrs[0], Credentials("installer", "s3cret-pw"), timeout=20)
    assert [p.rtsp_uri for p in found.profiles] == ["rtsp://127.0.0.1:18554/sim/1"] * 2
    assert await sim.stop(signal.SIGTERM) == 0
