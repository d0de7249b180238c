"""The console in headless Chromium shows a drill as 演练: no siren, no popup, not 待确认; a real press still alarms."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.conftest import add_user, wait_for
from tests.integration.test_console_chromium import _until, chromium_page

# Count the sirens: alarms.js makes a new AudioContext for each beep.
COUNT_BEEPS = """(() => {
  window.kgwBeeps = 0;
  const Real = window.AudioContext || window.webkitAudioContext;
  window.AudioContext = function (...args) { window.kgwBeeps += 1; return new Real(...args); };
  return true;
})()"""
POPUP = """(() => {
  const p = document.getElementById('alarm-popup');
  return {shown: !!p && !p.hidden, ids: p ? [...p.querySelectorAll('li')].map((li) => li.dataset.id) : [],
          beeps: window.kgwBeeps, count: document.getElementById('alarm-count').textContent};
})()"""


async def test_console_shows_a_drill_quietly_and_a_real_alarm_loudly(gateway_factory: Any, fleet_factory: Any) -> None:
    service = await gateway_factory()
    await add_user(service, "李值班", "li-zhiban-password")
    fleet = await fleet_factory(service, kindergartens=2, cameras=(2, 2))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), timeout=60)
    drilled, other = fleet.city[0], fleet.city[1]
    base = f"http://127.0.0.1:{service.http_port}"
    async with (
        asyncio.timeout(100),
        chromium_page(f"{base}/", login=("李值班", "li-zhiban-password")) as (cdp, session, _log),
    ):
        await _until(cdp, session, lambda s: s.get("link") == "报警已连接")
        assert await cdp.evaluate(session, COUNT_BEEPS)
        service.alarms.open_drill(drilled.id, "console-test", time.time() + 300)
        fleet.press(drilled.id, "button")
        drill = await service.alarms.wait_drill(drilled.id, 30)
        state = await _until(cdp, session, lambda s: any(i["id"] == drill.id for i in s.get("items", [])))
        item = next(i for i in state["items"] if i["id"] == drill.id)
        assert "drill" in item["cls"].split() and item["text"].startswith("演练"), item
        popup = await cdp.evaluate(session, POPUP)
        assert popup == {"shown": False, "ids": [], "beeps": 0, "count": ""}, popup
        # A real press (another kindergarten, during the window) pops up and sounds.
        fleet.press(other.id, "button")
        state = await _until(cdp, session, lambda s: any(other.name in i["text"] for i in s.get("items", [])))
        real = next(i for i in state["items"] if other.name in i["text"])
        assert "drill" not in real["cls"].split() and "演练" not in real["text"]
        popup = await cdp.evaluate(session, POPUP)
        assert popup["shown"] and popup["ids"] == [real["id"]] and popup["beeps"] == 1, popup
        assert popup["count"] == "（1 条待确认）", popup  # the drill is not waiting for anyone
