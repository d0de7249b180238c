"""轮巡 (patrol) in a real browser (issue 11, "Watching many kindergartens"): the staff member ticks
kindergartens in the tree and a dwell time; the grid cycles through their cameras page by page.
Each switch shows pictures at once because the next page was pre-opened off screen: the test
reads, for every switch, that each cell swapped in already had decoded frames (readyState ≥ 2,
the camera's picture) at the moment of the switch. A new alarm pops up and holds the patrol on
its page; closing the popup lets it go on.

The server's per-user WebRTC cap stays at its default (4): with pre-opening, a page is 2 cells.
Patrol pages follow the grid's stream rule (grid.js ``cellStream()``): in a layout of 4 or more
cells they ask for the sub-stream, the pre-opened page too; the second test raises the cap so a
page holds 4 cells and reads that every cell, shown or pre-opened, plays the 320x180 sub-stream.
"""

from __future__ import annotations

import asyncio

from simulators.fleet import FleetOptions
from simulators.substreams import has_sub_stream
from tests.conftest import TEST_ADMIN, add_user, http_json
from tests.integration.test_console_chromium import _click, _poll, chromium_page

PATROL_STATE = """(() => {
  const p = window.kgwConsole.patrol;
  const cells = window.kgwConsole.cells.slice(0, window.kgwConsole.layout()).map((c) => ({
    channel: c.channelId, state: c.el.dataset.state, ready: c.video.readyState, width: c.video.videoWidth,
    inGrid: c.el.parentElement && c.el.parentElement.id === 'grid', asked: c.stream,
    stream: c.el.dataset.stream || ''}));
  const standby = p.standby.map((c) => ({
    channel: c.channelId, asked: c.stream, stream: c.el.dataset.stream || '', ready: c.video.readyState,
    width: c.video.videoWidth}));
  return {running: p.running, standbyCells: standby, page: p.page, pages: p.pages, pageSize: p.pageSize, pauses: [...p.pauses],
          switches: p.switches, channels: p.channels.map((c) => c.id), cells,
          bar: document.getElementById('patrol-bar').hidden ? '' : document.getElementById('patrol-bar').textContent,
          popup: !!document.querySelector('#alarm-popup:not([hidden])'),
          standby: p.standby.map((c) => c.channelId)};
})()"""


async def test_patrol_cycles_pre_opened_pages_and_holds_for_an_alarm(gateway_factory, fleet_factory):
    service = await gateway_factory()
    assert service.config.webrtc_per_user == 4  # the default: pages of 2 with the next one pre-opened
    await add_user(service, *TEST_ADMIN)
    fleet = await fleet_factory(service, kindergartens=2, cameras=(2, 2))
    kgs = fleet.city[:2]
    base = f"http://127.0.0.1:{service.http_port}"
    cameras: list[str] = []

    async def all_online() -> bool:
        cameras.clear()
        for kg in kgs:
            _, page = await http_json(f"{base}/api/channels?kindergarten={kg.id}&online=true")
            cameras.extend(sorted(c["id"] for c in page["items"] if c["id"][10:13] == "131"))
        return len(cameras) == 4

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not await all_online():
        assert loop.time() < deadline, f"cameras never online: {cameras}"
        await asyncio.sleep(0.2)

    async with asyncio.timeout(150), chromium_page(f"{base}/") as (cdp, session, log_path):
        await cdp.evaluate(session, _click('#layouts button[data-layout="4"]'))
        # 轮巡 → 所选幼儿园: the tree's kindergartens get ticks.
        await cdp.evaluate(session, _click("#patrol-open"))
        await _poll(
            cdp,
            session,
            "!!document.getElementById('patrol-setup') && !document.getElementById('patrol-setup').hidden",
            bool,
            what="the patrol setup",
        )
        size = await _poll(
            cdp,
            session,
            "document.getElementById('patrol-size').textContent",
            lambda t: "每页" in (t or ""),
            what="page size note",
        )
        assert "每页 2 路" in size and "上限 4 路" in size, size
        await cdp.evaluate(session, _click('input[name="patrol-kind"][value="kgs"]'))
        for kg in kgs:
            district = f'#tree li[data-key="district:{kg.district_code}"]'
            await _poll(cdp, session, f"!!document.querySelector('{district}')", bool, what="district row")
            if not await cdp.evaluate(session, f"!!document.querySelector('#tree li[data-key=\"kg:{kg.id}\"]')"):
                await cdp.evaluate(session, _click(f"{district} > .row"))
            pick = f'#tree li[data-key="kg:{kg.id}"] > .row input.pick'
            await _poll(cdp, session, f"!!document.querySelector('{pick}')", bool, what="kindergarten tick")
            await cdp.evaluate(session, _click(pick))
        picked = await cdp.evaluate(session, "document.getElementById('patrol-picked').textContent")
        assert "已选 2 所" in picked, picked
        await cdp.evaluate(session, "document.getElementById('patrol-dwell').value = '3'")
        await cdp.evaluate(session, _click("#patrol-start"))

        state = await _poll(cdp, session, PATROL_STATE, lambda s: s["running"], what="patrol running")
        assert state["pages"] == 2 and state["pageSize"] == 2, state
        assert state["channels"] == cameras, (state["channels"], cameras)  # ticked order, cameras only
        assert "第 1/2 页" in state["bar"], state["bar"]
        # The setup closes and the ticks go.
        assert await cdp.evaluate(session, "document.querySelectorAll('#tree input.pick').length") == 0

        # Two switches (page 2, then page 1 again), each swapping in cells that already had pictures.
        try:
            state = await _poll(
                cdp, session, PATROL_STATE, lambda s: len(s["switches"]) >= 2, timeout=60, what="two page switches"
            )
        except AssertionError:
            raise AssertionError(f"chromium log tail:\n{log_path.read_text(errors='replace')[-2000:]}") from None
        first, second = state["switches"][:2]
        assert first["page"] == 1 and second["page"] == 0, state["switches"]
        assert first["ready"] == [True, True] and second["ready"] == [True, True], state["switches"]
        # Between switches at most 2 pages' sessions exist: the old page's ended (cap 4 holds).
        assert all(c["inGrid"] for c in state["cells"]), state["cells"]

        # Just after a switch: the grid shows the new page's cameras, playing, no waiting.
        state = await _poll(
            cdp,
            session,
            PATROL_STATE,
            lambda s: len(s["switches"]) >= 3 and s["page"] == s["switches"][-1]["page"],
            timeout=30,
            what="a third switch",
        )
        page = state["page"]
        shown = [c["channel"] for c in state["cells"][:2]]
        assert shown == cameras[page * 2 : page * 2 + 2], (shown, page, cameras)
        assert state["switches"][-1]["ready"] == [True, True], state["switches"]

        # A 4-cell layout: the patrol's cells ask for the sub-stream like the grid's (320 wide where the
        # simulated camera has one, its 640 main otherwise).
        def width(channel: str) -> int:
            return 320 if has_sub_stream(channel, FleetOptions().sub_streams) else 640

        assert all(c["asked"] == "sub" for c in state["cells"][:2]), state["cells"]
        assert all(c["ready"] >= 2 and c["width"] == width(c["channel"]) for c in state["cells"][:2]), state["cells"]
        assert f"第 {page + 1}/2 页" in state["bar"], state["bar"]

        # An alarm pops up: the patrol holds its page while the popup is open.
        await _poll(
            cdp,
            session,
            "document.getElementById('alarm-link').textContent",
            lambda t: t == "报警已连接",
            what="alarm link",
        )
        fleet.press(kgs[0].id, "button")
        state = await _poll(cdp, session, PATROL_STATE, lambda s: s["popup"] and "alarm" in s["pauses"], what="held")
        assert "暂停（报警弹窗中）" in state["bar"], state["bar"]
        held_page, held_switches = state["page"], len(state["switches"])
        # Absence of a switch: watched for more than two dwell times (the next page is ready, no grace needed).
        watch_until = asyncio.get_running_loop().time() + 7
        while asyncio.get_running_loop().time() < watch_until:
            state = await cdp.evaluate(session, PATROL_STATE)
            assert state["page"] == held_page and len(state["switches"]) == held_switches, state
            assert state["pauses"] == ["alarm"], state
            await asyncio.sleep(0.5)
        # Closing the popup (关闭) lets it go on.
        await cdp.evaluate(session, _click("#alarm-popup .popup-close"))
        state = await _poll(
            cdp, session, PATROL_STATE, lambda s: len(s["switches"]) > held_switches, timeout=30, what="patrol resumed"
        )
        assert not state["popup"] and state["pauses"] == [], state
        assert state["switches"][-1]["ready"] == [True, True], state["switches"]

        # 停止: the bar goes, the grid keeps the last page, no pre-opened cells remain.
        await cdp.evaluate(session, _click("#patrol-stop"))
        state = await _poll(cdp, session, PATROL_STATE, lambda s: not s["running"], what="stopped")
        assert state["bar"] == "" and state["standby"] == [], state

        # 全部大门口摄像机: every entrance camera (area from the confirmation or the name), one page here.
        _, listed = await http_json(f"{base}/api/channels?area=entrance&online=true")
        entrances = [
            c["id"]
            for c in sorted(listed["items"], key=lambda c: (c["kindergarten_id"] or "", c["id"]))
            if c["id"][10:13] in ("131", "132")
        ]
        assert 1 <= len(entrances) <= 2, listed
        await cdp.evaluate(session, _click("#patrol-open"))
        await cdp.evaluate(session, _click('input[name="patrol-kind"][value="entrance"]'))
        await cdp.evaluate(session, _click("#patrol-start"))
        state = await _poll(cdp, session, PATROL_STATE, lambda s: s["running"], what="entrance patrol")
        assert state["channels"] == entrances and state["pages"] == 1, (state, entrances)
        assert "全部大门口摄像机" in state["bar"] and "第 1/1 页" in state["bar"] and "仅一页" in state["bar"], state[
            "bar"
        ]
        await cdp.evaluate(session, _click("#patrol-stop"))


async def _online_cameras(base: str, kindergarten: str, count: int) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        _, page = await http_json(f"{base}/api/channels?kindergarten={kindergarten}&online=true")
        cameras = sorted(c["id"] for c in page["items"] if c["id"][10:13] in ("131", "132"))
        if len(cameras) == count:
            return cameras
        assert loop.time() < deadline, f"cameras never online: {cameras}"
        await asyncio.sleep(0.2)


async def test_patrol_pages_of_four_play_sub_streams(gateway_factory, fleet_factory):
    # Cap 8: a page of 4 cells with the next page pre-opened. 5 cameras: pages of 4 and 1.
    service = await gateway_factory(webrtc_per_user=8)
    await add_user(service, *TEST_ADMIN)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(5, 5), sub_streams=1.0)
    kg = fleet.city[0]
    base = f"http://127.0.0.1:{service.http_port}"
    cameras = await _online_cameras(base, kg.id, 5)

    async with asyncio.timeout(120), chromium_page(f"{base}/") as (cdp, session, log_path):
        await cdp.evaluate(session, _click('#layouts button[data-layout="4"]'))
        await cdp.evaluate(session, f"window.kgwConsole.startPatrol({{kind: 'kgs', ids: ['{kg.id}']}}, 600, 'sub')")

        def page_plays_sub(s: dict) -> bool:
            assert not any(c["state"] == "failed" for c in s["cells"]), s["cells"]
            grid = s["cells"][:4]
            standby = s["standbyCells"]
            return (
                len(standby) == 1
                and all(c["ready"] >= 2 and c["width"] == 320 and c["stream"] == "sub" for c in grid)
                and all(c["ready"] >= 2 and c["width"] == 320 and c["stream"] == "sub" for c in standby)
            )

        try:
            state = await _poll(cdp, session, PATROL_STATE, page_plays_sub, timeout=60, what="4 sub-stream cells")
        except AssertionError:
            raise AssertionError(f"chromium log tail:\n{log_path.read_text(errors='replace')[-2000:]}") from None
        assert state["pageSize"] == 4 and state["pages"] == 2, state
        assert [c["channel"] for c in state["cells"][:4]] == cameras[:4], state["cells"]
        assert all(c["asked"] == "sub" for c in state["cells"][:4]), state["cells"]
        assert state["standbyCells"][0]["channel"] == cameras[4] and state["standbyCells"][0]["asked"] == "sub"
        # The gateway opened the sub-stream upstream for each: one INVITE per (channel, stream).
        _, live = await http_json(f"{base}/api/live")
        streams = {(row["channel_id"], row["stream"]) for row in live["items"]}
        assert streams == {(camera, "sub") for camera in cameras}, live
