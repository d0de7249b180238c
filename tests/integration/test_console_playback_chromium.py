"""录像回放 in a real browser (issue 11, "Device recordings"): a guard presses the alarm button; the
popup's 回放报警前30秒 opens the playback panel on the kindergarten's entrance camera, playing its
recording from 30 s before the alarm; the day's timeline draws the NVR's recordings (alarm files
in their own colour); a click on the bar plays from there and the recorded time shown matches;
pause holds it, 4× speeds it up; a typed range downloads as an MP4 with progress and a file link.

The simulated NVR (simulators, nvrsim) keeps a week of recordings per camera and adds alarm
files around every alarm the fleet presses; the gateway's records/playback/download API is
the COMMON11 contract.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import cv2
import numpy as np

from simulators.stamp import read_stamp
from tests.conftest import TEST_ADMIN, add_user, http_json
from tests.integration.test_console_chromium import _click, _poll, chromium_page

PB_STATE = """(() => {
  const pb = window.kgwConsole.playback;
  const panel = document.getElementById('playback');
  const v = document.querySelector('#playback video');
  const seg = (cls) => [...document.querySelectorAll('#pb-timeline .tl-seg.' + cls)].map((s) => ({
    start: Number(s.dataset.start), end: Number(s.dataset.end), color: getComputedStyle(s).backgroundColor}));
  const time = document.getElementById('pb-time');
  return {open: !!panel && !panel.hidden, camera: document.getElementById('pb-camera')?.textContent || '',
          channel: pb.channelId, session: pb.session, day: pb.day,
          state: document.getElementById('pb-state')?.dataset.state || '',
          stateText: document.getElementById('pb-state')?.textContent || '',
          time: time ? time.textContent : '', epoch: time && time.dataset.epoch ? Number(time.dataset.epoch) : null,
          error: document.getElementById('pb-error') && !document.getElementById('pb-error').hidden
                 ? document.getElementById('pb-error').textContent : '',
          summary: document.getElementById('pb-summary')?.textContent || '',
          time_segs: seg('tl-time'), alarm_segs: seg('tl-alarm'), legend: document.querySelector('.tl-legend')?.textContent || '',
          ready: v ? v.readyState : -1, width: v ? v.videoWidth : 0,
          grid_hidden: document.getElementById('grid-wrap').hidden,
          download: document.getElementById('pb-download-state')?.textContent || '',
          progress: document.getElementById('pb-progress') ? document.getElementById('pb-progress').value : null,
          file: document.getElementById('pb-file') && !document.getElementById('pb-file').hidden
                ? document.getElementById('pb-file').getAttribute('href') : ''};
})()"""


async def _page_get(cdp: Any, session: str, url: str) -> tuple[int, Any]:
    """GET ``url`` from the page (its login session: a playback belongs to whoever started it)."""
    expression = (
        f"fetch({json.dumps(url)}, {{credentials: 'same-origin'}})"
        ".then(async (r) => [r.status, await r.json().catch(() => null)])"
    )
    result = await cdp.call("Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True)
    status, body = result["result"]["value"]
    return status, body


async def _page_file_head(cdp: Any, session: str, url: str) -> tuple[int, str, bytes]:
    """GET a file from the page (a download belongs to whoever started it): status, type, first bytes."""
    expression = (
        f"fetch({json.dumps(url)}, {{credentials: 'same-origin'}}).then(async (r) => [r.status,"
        " r.headers.get('Content-Type') || '', [...new Uint8Array(await r.arrayBuffer()).slice(0, 64)]])"
    )
    result = await cdp.call("Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True)
    status, content_type, head = result["result"]["value"]
    return status, content_type, bytes(head)


VIDEO_RECT = """(() => {
  const v = document.querySelector('#playback video');
  const r = v.getBoundingClientRect();
  // object-fit: contain: the picture's own box inside the element
  const k = Math.min(r.width / v.videoWidth, r.height / v.videoHeight);
  const w = v.videoWidth * k, h = v.videoHeight * k;
  return {x: r.left + (r.width - w) / 2 + scrollX, y: r.top + (r.height - h) / 2 + scrollY, width: w, height: h,
          vw: v.videoWidth, vh: v.videoHeight,
          label: Number(document.getElementById('pb-time').dataset.epoch)};
})()"""


async def _burned_in_vs_label(cdp: Any, session: str) -> tuple[int, int]:
    """The recorded time burned into the picture on screen (the simulated NVR's block code, read
    from a screenshot) and the time label's epoch at that moment."""
    for _ in range(40):
        rect = await cdp.evaluate(session, VIDEO_RECT)
        clip = {k: rect[k] for k in ("x", "y", "width", "height")} | {"scale": 1}
        shot = await cdp.call("Page.captureScreenshot", session, format="png", clip=clip)
        image = cv2.imdecode(np.frombuffer(base64.b64decode(shot["data"]), np.uint8), cv2.IMREAD_COLOR)
        image = cv2.resize(image, (rect["vw"], rect["vh"]), interpolation=cv2.INTER_AREA)
        stamp = read_stamp(image)
        if stamp is not None:
            return stamp.epoch, rect["label"]
        await asyncio.sleep(0.1)
    raise AssertionError("no readable recorded-time stamp in the playback picture")


async def _picture_agrees(cdp: Any, session: str, lo: int, hi: int, timeout: float = 20.0) -> int:
    """Wait until the picture shows a recorded second in ``[lo, hi]`` and the time label agrees with
    it (±3 s); returns that second. A new session or a seek takes a key frame or two to show."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    burned = label = 0
    while loop.time() < deadline:
        burned, label = await _burned_in_vs_label(cdp, session)
        if lo <= burned <= hi and abs(burned - label) <= 3:
            return burned
        await asyncio.sleep(0.2)
    raise AssertionError(f"the picture shows {burned}, the label {label}; expected {lo}..{hi}")


async def _entrance(service: Any, kg_id: str) -> str:
    """The kindergarten's confirmed entrance camera, online (what an alarm's replay opens)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        camera = service.directory.entrance_camera(kg_id)
        if camera and service.directory.channels[camera].online:
            return str(camera)
        await asyncio.sleep(0.1)
    raise AssertionError("the kindergarten's entrance camera never came online")


async def test_alarm_replay_opens_the_timeline_30s_before(gateway_factory, fleet_factory):
    """回放报警前30秒 (popup): the panel opens on the entrance camera, the day's recordings are drawn
    (the alarm file red, the continuous ones blue, a legend) and playback is asked from 30 s
    before the alarm's time (the request the console sends)."""
    service = await gateway_factory()
    await add_user(service, *TEST_ADMIN)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    kg = fleet.city[0]
    entrance = await _entrance(service, kg.id)
    index = fleet.nodes[0].recordings  # the simulated site's recordings (nvrsim)
    assert index is not None
    base = f"http://127.0.0.1:{service.http_port}"
    async with asyncio.timeout(120), chromium_page(f"{base}/") as (cdp, session, _log):
        await cdp.call("Network.enable", session)
        await _poll(
            cdp,
            session,
            "document.getElementById('alarm-link').textContent",
            lambda t: t == "报警已连接",
            what="alarm link",
        )
        fleet.press(kg.id, "button")  # the site's cameras get an alarm file around it
        popup = await _poll(
            cdp,
            session,
            "document.querySelector('#alarm-popup:not([hidden]) li')?.dataset.id || ''",
            bool,
            what="the alarm popup",
        )
        _, alarm = await http_json(f"{base}/api/alarms/{popup}")
        assert alarm["live_channel_id"] == entrance, alarm
        start = int(alarm["received_ts"]) - 30
        # The list entry has the button too.
        assert await cdp.evaluate(session, f"!!document.querySelector('#alarms li[data-id=\"{popup}\"] button.replay')")
        seen = len(cdp.events)
        await cdp.evaluate(session, _click("#alarm-popup button.replay"))
        state = await _poll(
            cdp, session, PB_STATE, lambda s: s["open"] and s["time_segs"] and s["alarm_segs"], what="the timeline"
        )
        assert state["channel"] == entrance and state["grid_hidden"], state
        assert "大门口" in state["camera"] or kg.name in state["camera"], state["camera"]
        assert not await cdp.evaluate(session, "!!document.querySelector('#alarm-popup:not([hidden])')")
        # Drawn as the NVR lists them: the alarm's own file (30 s before it on) in another colour.
        expected = index.query(entrance, state["day"], int(time.time()), int(time.time()))
        drawn = len(state["time_segs"]) + len(state["alarm_segs"])
        assert abs(drawn - len(expected)) <= 1, (state, expected)  # a new file may have begun since
        assert any(a["start"] <= start + 1 and a["end"] > start for a in state["alarm_segs"]), (
            state["alarm_segs"],
            start,
        )
        assert state["alarm_segs"][0]["color"] != state["time_segs"][0]["color"], state
        assert "报警录像" in state["legend"] and "定时录像" in state["legend"], state["legend"]
        assert f"报警 {len(state['alarm_segs'])} 段" in state["summary"], state["summary"]
        # Playback is asked from 30 s before the alarm.
        posts = []
        for _ in range(100):
            posts = [
                e["params"]["request"]
                for e in cdp.events[seen:]
                if e["method"] == "Network.requestWillBeSent"
                and e["params"]["request"]["url"].endswith(f"/api/channels/{entrance}/playback")
            ]
            if posts:
                break
            await asyncio.sleep(0.1)
        assert len(posts) == 1 and posts[0]["method"] == "POST", posts
        body = json.loads(posts[0]["postData"])
        assert body["start"] == start and body["end"] > start, (body, start)
        # 返回实时: the grid is back.
        await cdp.evaluate(session, _click("#pb-close"))
        await _poll(cdp, session, PB_STATE, lambda s: not s["open"] and not s["grid_hidden"], what="back to live")


async def test_playback_from_an_alarm_and_the_timeline(gateway_factory, fleet_factory):
    service = await gateway_factory()
    await add_user(service, *TEST_ADMIN)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    kg = fleet.city[0]
    base = f"http://127.0.0.1:{service.http_port}"
    status, limits = await http_json(f"{base}/api/console/limits")
    assert status == 200 and limits["webrtc_per_user"] == 4, limits
    assert {"record_read", "playback", "download"} <= set(limits["capabilities"]), limits

    async with asyncio.timeout(150), chromium_page(f"{base}/") as (cdp, session, log_path):
        await _poll(
            cdp,
            session,
            "document.getElementById('alarm-link').textContent",
            lambda t: t == "报警已连接",
            what="alarm link",
        )
        fleet.press(kg.id, "button")
        popup = await _poll(
            cdp,
            session,
            "document.querySelector('#alarm-popup:not([hidden]) li')?.dataset.id || ''",
            bool,
            what="the alarm popup",
        )
        _, alarm = await http_json(f"{base}/api/alarms/{popup}")
        entrance = alarm["live_channel_id"]
        assert entrance, alarm
        start = int(alarm["received_ts"]) - 30
        # 回放报警前30秒 in the popup: the panel opens on the entrance camera from 30 s before.
        await cdp.evaluate(session, _click("#alarm-popup button.replay"))
        try:
            state = await _poll(
                cdp,
                session,
                PB_STATE,
                lambda s: s["state"] == "playing" and s["ready"] >= 2 and s["epoch"] is not None,
                timeout=45,
                what="playback from the alarm",
            )
        except AssertionError:
            raise AssertionError(f"chromium log tail:\n{log_path.read_text(errors='replace')[-2000:]}") from None
        assert state["open"] and state["grid_hidden"] and state["channel"] == entrance, state
        assert state["session"]["start"] == start, (state["session"], start)
        assert start <= state["epoch"] <= start + 15, (state["epoch"], start)
        assert state["width"] > 0, state
        assert not await cdp.evaluate(session, "!!document.querySelector('#alarm-popup:not([hidden])')")
        _, server = await _page_get(cdp, session, f"/api/playback/{state['session']['id']}")
        assert server["channel_id"] == entrance and server["start"] == start, server

        # The timeline: the NVR's files of the day, the alarm's own in red, with a legend.
        state = await _poll(cdp, session, PB_STATE, lambda s: s["time_segs"] and s["alarm_segs"], what="segments")
        assert any(a["start"] <= start < a["end"] for a in state["alarm_segs"]), (state["alarm_segs"], start)
        assert state["alarm_segs"][0]["color"] != state["time_segs"][0]["color"], state
        assert "报警录像" in state["legend"] and "定时录像" in state["legend"], state["legend"]

        today = state["day"]
        # The day before (date picker), then a click on its timeline: a new session from the clicked second.
        yesterday = await cdp.evaluate(
            session,
            f"(() => {{ const d = new Date(({state['day']} - 43200) * 1000);"
            " return d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-'"
            " + String(d.getDate()).padStart(2, '0'); })()",
        )
        await cdp.evaluate(
            session,
            "(() => { const d = document.getElementById('pb-date');"
            f" d.value = {json.dumps(yesterday)}; d.dispatchEvent(new Event('change')); }})()",
        )
        state = await _poll(
            cdp,
            session,
            PB_STATE,
            lambda s: s["day"] < today and any(t["end"] - t["start"] >= 600 for t in s["time_segs"]),
            what="yesterday's recordings",
        )
        day = state["day"]
        target = max((t for t in state["time_segs"] if t["start"] >= day), key=lambda t: t["end"] - t["start"])
        rect = await cdp.evaluate(
            session,
            "(() => { const r = document.querySelector('#pb-timeline .tl-bar')"
            ".getBoundingClientRect(); return {x: r.left, y: r.top, w: r.width, h: r.height}; })()",
        )
        want = (target["start"] + target["end"]) // 2
        x = rect["x"] + (want - day) / 86400 * rect["w"]
        y = rect["y"] + rect["h"] / 2
        for kind in ("mousePressed", "mouseReleased"):
            await cdp.call("Input.dispatchMouseEvent", session, type=kind, x=x, y=y, button="left", clickCount=1)
        clicked = await _poll(
            cdp,
            session,
            "window.kgwConsole.playback.session",
            lambda s: bool(s) and bool(s.get("id")) and s["start"] < day + 86400,
            what="the clicked session",
        )
        # The bar is ~1 px per 100 s: the session starts at the second under the pointer.
        assert abs(clicked["start"] - want) <= 300 and target["start"] <= clicked["start"] < target["end"], (
            clicked,
            target,
        )
        state = await _poll(
            cdp,
            session,
            PB_STATE,
            lambda s: s["state"] == "playing" and s["ready"] >= 2 and s["epoch"] >= clicked["start"],
            timeout=45,
            what="playing from the click",
        )
        assert clicked["start"] <= state["epoch"] <= clicked["start"] + 15, (state, clicked)
        # The label says what the picture shows: the NVR burns the recorded time into every frame.
        await _picture_agrees(cdp, session, clicked["start"], clicked["start"] + 20)
        cursor = await cdp.evaluate(session, "window.kgwConsole.playback.session.start")
        assert cursor == clicked["start"]

        # Pause holds the recorded time; 4× moves it faster than the wall clock.
        await cdp.evaluate(session, _click("#pb-pause"))
        state = await _poll(cdp, session, PB_STATE, lambda s: s["state"] == "paused", what="paused")
        held = state["epoch"]
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.5
        while loop.time() < until:
            state = await cdp.evaluate(session, PB_STATE)
            assert state["state"] == "paused" and abs(state["epoch"] - held) <= 1, (state, held)
            await asyncio.sleep(0.3)
        await cdp.evaluate(
            session,
            "(() => { const s = document.getElementById('pb-speed'); s.value = '4';"
            " s.dispatchEvent(new Event('change')); })()",
        )
        await cdp.evaluate(session, _click("#pb-play"))
        state = await _poll(
            cdp,
            session,
            PB_STATE,
            lambda s: s["state"] == "playing" and s["session"].get("scale") == 4,
            what="playing at 4x",
        )
        t0, e0 = loop.time(), state["epoch"]
        state = await _poll(cdp, session, PB_STATE, lambda s: s["epoch"] - e0 >= 8, timeout=30, what="4x pace")
        assert state["epoch"] - e0 > 1.5 * (loop.time() - t0), (state["epoch"] - e0, loop.time() - t0)

        # Back to 1×, then a click later on the bar: a seek within the running session.
        await cdp.evaluate(
            session,
            "(() => { const s = document.getElementById('pb-speed'); s.value = '1'; s.dispatchEvent(new Event('change')); })()",
        )
        await _poll(cdp, session, PB_STATE, lambda s: s["session"].get("scale") == 1, what="back to 1x")
        sid = state["session"]["id"]
        x = rect["x"] + (target["end"] - 150 - day) / 86400 * rect["w"]
        for kind in ("mousePressed", "mouseReleased"):
            await cdp.call("Input.dispatchMouseEvent", session, type=kind, x=x, y=y, button="left", clickCount=1)
        seek = await _poll(
            cdp,
            session,
            "window.kgwConsole.playback.lastSeek",
            lambda t: t and t > state["epoch"] + 60,
            what="the seek",
        )
        state = await _poll(
            cdp,
            session,
            PB_STATE,
            lambda s: s["state"] == "playing" and seek <= s["epoch"] <= seek + 10,
            timeout=30,
            what="playing from the seek",
        )
        assert state["session"]["id"] == sid, "a seek within the session keeps it"
        await _picture_agrees(cdp, session, seek, seek + 30)

        # Download a typed 10-s range: progress, then the file link (an MP4).
        lo = state["epoch"] - 20
        hhmmss = await cdp.evaluate(
            session, f"[{lo}, {lo + 10}].map((t) => new Date(t * 1000).toTimeString().slice(0, 8))"
        )
        await cdp.evaluate(
            session,
            "(() => { const a = document.getElementById('pb-range-from'), b = document.getElementById('pb-range-to');"
            f" a.value = {json.dumps(hhmmss[0])}; b.value = {json.dumps(hhmmss[1])};"
            " a.dispatchEvent(new Event('change')); b.dispatchEvent(new Event('change')); })()",
        )
        assert await cdp.evaluate(session, "window.kgwConsole.playback.range") == [lo, lo + 10]
        await cdp.evaluate(session, _click("#pb-download-start"))
        state = await _poll(
            cdp, session, PB_STATE, lambda s: bool(s["file"]) or bool(s["error"]), timeout=60, what="the download"
        )
        assert not state["error"] and "下载完成" in state["download"] and state["progress"] == 1, state
        status, content_type, head = await _page_file_head(cdp, session, state["file"])
        assert status == 200 and b"ftyp" in head, (status, content_type, head)

        # 返回实时: the session ends on the gateway too.
        sid = state["session"]["id"]
        await cdp.evaluate(session, _click("#pb-close"))
        await _poll(cdp, session, PB_STATE, lambda s: not s["open"] and not s["grid_hidden"], what="back to live")
        for _ in range(100):
            status, body = await _page_get(cdp, session, f"/api/playback/{sid}")
            if status == 404 or body.get("state") in ("ended", "failed"):
                break
            await asyncio.sleep(0.2)
        assert status == 404 or body["state"] in ("ended", "failed"), (status, body)
