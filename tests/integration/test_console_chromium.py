"""The web console in a real browser (issue 3 item 6): headless Chromium opens
``/live/{channel_id}``, the page plays the camera over WebRTC, and a screenshot
of the <video> element is not blank.

Chromium is Debian's ``/usr/bin/chromium`` (scripts/setup.sh installs it),
driven over the Chrome DevTools Protocol with aiohttp's websocket client; the
machine's network is closed, hence the flags that stop its background traffic.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest

from tests.conftest import http_json, http_text, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--window-size=1280,800", "--remote-debugging-port=0",
]  # fmt: skip

VIDEO_STATE = """(() => {
  const v = document.querySelector('video');
  const e = document.getElementById('error');
  const r = v ? v.getBoundingClientRect() : null;
  return {
    readyState: v ? v.readyState : -1, videoWidth: v ? v.videoWidth : 0, videoHeight: v ? v.videoHeight : 0,
    error: e && !e.hidden ? e.textContent : '', status: document.getElementById('status')?.textContent || '',
    channels: document.querySelectorAll('#channels li').length,
    listText: document.getElementById('channels')?.textContent || '',
    rect: r ? {x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height} : null,
  };
})()"""


def _camera_channel(fleet: Any) -> str:
    for agent in fleet.agents.values():
        for channel in agent.profile.channels:
            if channel.device_id[10:13] == "131":
                return str(channel.device_id)
    raise AssertionError("no camera in the simulated kindergarten")


class Cdp:
    """A minimal Chrome DevTools Protocol client: one browser websocket, flat sessions."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            future = self.pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                if "error" in data:
                    future.set_exception(RuntimeError(f"CDP error: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
        for future in self.pending.values():
            future.done() or future.set_exception(ConnectionError("DevTools websocket closed"))

    async def call(self, method: str, session: str | None = None, timeout: float = 10.0, **params: Any) -> Any:
        msg_id = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = future
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, timeout)

    async def evaluate(self, session: str, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


async def _devtools_ws_url(profile: Path, proc: asyncio.subprocess.Process, timeout: float) -> str:
    """Chromium writes '<port>\\n<browser ws path>' to DevToolsActivePort once it listens."""
    port_file = profile / "DevToolsActivePort"
    ok = await wait_for(lambda: port_file.exists() and len(port_file.read_text().splitlines()) >= 2
                        or proc.returncode is not None, timeout=timeout)  # fmt: skip
    assert ok and proc.returncode is None, f"chromium did not start (exit {proc.returncode})"
    port, path = port_file.read_text().splitlines()[:2]
    return f"ws://127.0.0.1:{port}{path}"


@contextlib.asynccontextmanager
async def chromium_page(url: str) -> AsyncIterator[tuple[Cdp, str, Path]]:
    """Headless Chromium with one page at ``url``: yields (DevTools client, session id, log path)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (installs Debian's chromium)")
    with tempfile.TemporaryDirectory(prefix="kgw-chromium-") as tmp:
        profile = Path(tmp) / "profile"
        log_path = Path(tmp) / "chromium.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank",
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        try:
            ws_url = await _devtools_ws_url(profile, proc, timeout=10)
            async with aiohttp.ClientSession() as http:
                cdp = Cdp(await http.ws_connect(ws_url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2)))
                try:
                    target = (await cdp.call("Target.createTarget", url="about:blank"))["targetId"]
                    session = (await cdp.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
                    await cdp.call("Page.enable", session)
                    await cdp.call("Page.navigate", session, url=url)
                    yield cdp, session, log_path
                finally:
                    await cdp.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)


async def test_console_plays_camera_in_chromium(gateway_factory, fleet_factory):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    assert await wait_for(lambda: service.online_counts()[2] > 0, timeout=15)
    channel_id = _camera_channel(fleet)
    base = f"http://127.0.0.1:{service.http_port}"
    for path in ("/", "/console", f"/live/{channel_id}"):
        assert "摄像机列表" in await http_text(base + path)
    assert "RTCPeerConnection" in await http_text(base + "/console/assets/console.js")
    async with asyncio.timeout(25), chromium_page(f"{base}/live/{channel_id}") as (cdp, session, log_path):
        await _play_and_check(cdp, session, log_path)


async def _play_and_check(cdp: Cdp, session: str, log_path: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    state: dict[str, Any] = {}
    while loop.time() < deadline:
        state = await cdp.evaluate(session, VIDEO_STATE) or {}
        if state.get("readyState", -1) >= 2 and state.get("videoWidth") == 640:
            break
        assert not state.get("error"), f"the page shows an error: {state['error']}"
        await asyncio.sleep(0.2)
    else:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise AssertionError(f"video never played: {state}\nchromium log tail:\n{tail}")
    assert state["videoHeight"] == 360
    # The page listed the kindergarten's channels too, with their online state.
    state = await cdp.evaluate(session, VIDEO_STATE)
    assert state["channels"] > 0 and "在线" in state["listText"], state

    # A screenshot of the video element (retry briefly: the first composited frame may lag).
    rect = state["rect"]
    clip = {"x": rect["x"], "y": rect["y"], "width": rect["width"], "height": rect["height"], "scale": 1}
    std = 0.0
    for _ in range(20):
        shot = await cdp.call("Page.captureScreenshot", session, format="png", clip=clip)
        image = cv2.imdecode(np.frombuffer(base64.b64decode(shot["data"]), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] >= 100 and image.shape[1] >= 100, clip
        std = float(image.std())
        if std > 10.0:
            break
        await asyncio.sleep(0.2)
    assert std > 10.0, f"the video element looks blank (std-dev {std:.1f})"


ALARM_STATE = """(() => ({
  link: document.getElementById('alarm-link')?.textContent || '',
  items: [...document.querySelectorAll('#alarms li')].map((li) => ({id: li.dataset.id, cls: li.className,
                                                                    text: li.textContent})),
  error: document.getElementById('alarm-error')?.hidden === false ? document.getElementById('alarm-error').textContent : '',
}))()"""


async def _until(cdp: Cdp, session: str, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state: dict[str, Any] = {}
    while loop.time() < deadline:
        state = await cdp.evaluate(session, ALARM_STATE) or {}
        if predicate(state):
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"the alarm panel never got there: {state}")


async def test_console_shows_an_alarm_live_and_the_operator_acknowledges_it(gateway_factory, fleet_factory):
    """The guard presses; the district console (zh-CN) shows it at once over the WebSocket; the
    named operator acknowledges it with one click and the gateway records who."""
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), timeout=15)
    kg = fleet.city[0]
    base = f"http://127.0.0.1:{service.http_port}"
    async with asyncio.timeout(30), chromium_page(f"{base}/") as (cdp, session, _log):
        await _until(cdp, session, lambda s: s.get("link") == "报警已连接")
        await cdp.evaluate(session, "document.getElementById('operator').value = '张警官'")
        fleet.press(kg.id, "button")
        state = await _until(cdp, session, lambda s: any(kg.name in i["text"] for i in s.get("items", [])))
        item = next(i for i in state["items"] if kg.name in i["text"])
        assert "一键报警" in item["text"] and ("state-new" in item["cls"] or "state-delivered" in item["cls"])
        await cdp.evaluate(session, f"document.querySelector('#alarms li[data-id=\"{item['id']}\"] button.ack').click()")
        state = await _until(cdp, session, lambda s: any("已确认" in i["text"] and "张警官" in i["text"]
                                                          for i in s.get("items", [])))
        assert not state["error"]
    status, alarm = await http_json(f"{base}/api/alarms/{item['id']}")
    assert status == 200 and alarm["state"] == "acknowledged" and alarm["acknowledged_by"] == "张警官"
