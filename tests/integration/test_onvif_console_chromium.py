"""ONVIF 发现 on the console's RTSP page in headless Chromium: search → read profiles → use one → the camera is 在线."""

from __future__ import annotations

import asyncio
import json

from gateway.registry.model import Kindergarten
from gateway.rtsp.puller import PullerTiming
from tests.conftest import TEST_ADMIN, GatewayFactory, add_user
from tests.integration.test_console_chromium import _poll, chromium_page
from tests.onvif_camera import CameraFactory
from tests.rtsp_server import RtspServerFactory

KG = Kindergarten("12010100112160012300", "和平区第一幼儿园", "120101")
PASSWORD = "onvif-pw-7"
ROWS = """[...document.querySelectorAll('#rtsp-list tr')].map((tr) => ({
  text: tr.textContent, state: tr.querySelector('.rtsp-state')?.textContent || ''}))"""


def _set(values: dict[str, str], click: str) -> str:
    sets = "".join(f"document.getElementById({json.dumps(k)}).value = {json.dumps(v)};" for k, v in values.items())
    return f"(() => {{ {sets} document.getElementById({json.dumps(click)}).click(); return true; }})()"


async def test_operator_adds_a_discovered_onvif_camera(
    gateway_factory: GatewayFactory, onvif_camera: CameraFactory, rtsp_server_factory: RtspServerFactory
) -> None:
    server = rtsp_server_factory(user="admin", password=PASSWORD)
    camera = await onvif_camera(rtsp_url=server.url, password=PASSWORD, name="园门口", model="DS-2CD2143G0-I")
    service = await gateway_factory()
    await service.provisioning.add_kindergartens([KG])
    service.rtsp.timing = PullerTiming(
        backoff_base=0.2, backoff_cap=1.0, refused_retry=3600.0, open_timeout=5.0, read_timeout=3.0
    )
    await add_user(service, *TEST_ADMIN)
    base = f"http://127.0.0.1:{service.http_port}"
    async with asyncio.timeout(120), chromium_page(f"{base}/console/assets/rtsp.html") as (cdp, session, _):
        await _poll(cdp, session, "document.getElementById('rtsp-kindergarten').options.length", lambda n: n == 1)
        await cdp.evaluate(
            session, _set({"onvif-host": "127.0.0.1", "onvif-port": str(camera.discovery_port)}, "onvif-discover")
        )
        devices = await _poll(
            cdp,
            session,
            "[...document.querySelectorAll('#onvif-devices tbody tr')].map((tr) => tr.textContent)",
            lambda rows: len(rows) == 1,
            30,
            "the camera listed",
        )
        assert "园门口" in devices[0] and "DS-2CD2143G0-I" in devices[0]
        await cdp.evaluate(session, "document.querySelector('#onvif-devices .onvif-pick').click()")
        assert await cdp.evaluate(session, "document.getElementById('onvif-xaddr').value") == camera.xaddr
        await cdp.evaluate(session, _set({"onvif-user": "admin", "onvif-password": "wrong"}, "onvif-read"))
        await _poll(
            cdp,
            session,
            "document.getElementById('onvif-status').textContent",
            lambda t: "用户名或密码错误" in t,
            30,
            "the refusal",
        )
        await cdp.evaluate(session, _set({"onvif-password": PASSWORD}, "onvif-read"))
        await _poll(
            cdp,
            session,
            "document.querySelectorAll('#onvif-profiles tbody tr').length",
            lambda n: n == 2,
            30,
            "2 profiles",
        )
        await cdp.evaluate(session, "document.querySelector('#onvif-profiles .onvif-use').click()")
        assert await cdp.evaluate(session, "document.getElementById('rtsp-url').value") == server.url
        await cdp.evaluate(session, _set({"rtsp-name": "大门口", "rtsp-area": "entrance"}, "rtsp-add"))
        rows = await _poll(
            cdp, session, ROWS, lambda r: bool(r) and r[0]["state"] == "在线", 60, "the camera shown 在线"
        )
        assert "大门口" in rows[0]["text"]
        assert PASSWORD not in await cdp.evaluate(session, "document.body.innerHTML")
