"""The RTSP page of the console in headless Chromium: an operator adds a camera by URL and sees it 在线."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.registry.model import Kindergarten
from tests.conftest import TEST_ADMIN, add_user, http_text
from tests.integration.test_console_chromium import _poll, chromium_page

KG = Kindergarten("12010100112160012300", "和平区第一幼儿园", "120101")

ROWS = """[...document.querySelectorAll('#rtsp-list tr')].map((tr) => ({
  channel: tr.dataset.channel, text: tr.textContent, state: tr.querySelector('.rtsp-state')?.textContent || ''}))"""


def _fill(values: dict[str, str]) -> str:
    sets = "".join(f"document.getElementById({json.dumps(k)}).value = {json.dumps(v)};" for k, v in values.items())
    return f"(() => {{ {sets} document.getElementById('rtsp-add').click(); return true; }})()"


async def test_operator_adds_an_rtsp_camera_on_the_console_page(gateway_factory: Any, rtsp_server_factory: Any) -> None:
    server = rtsp_server_factory(user="admin", password="cam-pw-1")
    service = await gateway_factory()
    await service.provisioning.add_kindergartens([KG])
    await add_user(service, *TEST_ADMIN)
    base = f"http://127.0.0.1:{service.http_port}"
    assert 'href="/console/assets/rtsp.html"' in await http_text(base + "/")
    async with asyncio.timeout(120), chromium_page(f"{base}/console/assets/rtsp.html") as (cdp, session, _):
        await _poll(cdp, session, "document.getElementById('rtsp-kindergarten').options.length", lambda n: n == 1)
        form = {"rtsp-name": "大门口", "rtsp-area": "entrance", "rtsp-url": server.url}
        await cdp.evaluate(session, _fill({**form, "rtsp-user": "admin", "rtsp-password": "cam-pw-1"}))
        rows = await _poll(
            cdp, session, ROWS, lambda r: bool(r) and r[0]["state"] == "在线", 60, "the camera shown 在线"
        )
        assert "大门口" in rows[0]["text"] and "和平区第一幼儿园" in rows[0]["text"]
        assert "cam-pw-1" not in await cdp.evaluate(session, "document.body.innerHTML")
        # A wrong password: the page says 认证失败.
        await cdp.evaluate(session, _fill({**form, "rtsp-name": "侧门", "rtsp-user": "admin", "rtsp-password": "bad"}))
        await _poll(cdp, session, ROWS, lambda r: any(x["state"] == "认证失败" for x in r), 60, "认证失败 shown")
