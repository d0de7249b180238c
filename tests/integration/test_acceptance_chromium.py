"""The 接入验收 console page in headless Chromium: an operator logs in, picks a kindergarten, runs its
acceptance, confirms each camera's area on its snapshot, sees 请按下一键报警, the guard presses, and
the page shows 验收通过 with a link to the report, which the browser opens and prints as a PDF.

The city is tests/integration/test_acceptance_gateway.py's (district, municipal and police
platforms, Mosquitto); the browser is driven like tests/integration/test_console_chromium.py's.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from simulators.mosquitto import MosquittoBroker
from tests.conftest import TEST_ADMIN, add_user
from tests.integration.test_acceptance_gateway import acceptance_city, plan_areas
from tests.integration.test_console_chromium import Cdp, chromium_page

PAGE_STATE = """(() => {
  const q = (s) => document.querySelector(s);
  return {
    options: [...document.querySelectorAll('#kindergarten option')].map((o) => o.value),
    running: !q('#run').hidden, state: q('#run-state').textContent,
    checks: [...document.querySelectorAll('#checks .check')].map((c) => [c.dataset.name, c.className]),
    shots: [...document.querySelectorAll('#shots .shot')].map((s) => ({
      id: s.dataset.channel, img: !!s.querySelector('img') && s.querySelector('img').naturalWidth > 0})),
    areasShown: !q('#areas').hidden, press: !q('#press').hidden,
    report: q('#report-link').hidden ? null : q('#report-link').href,
    error: q('#error').hidden ? '' : q('#error').textContent,
  };
})()"""


async def _until(cdp: Cdp, session: str, predicate: Any, what: str, timeout: float = 60.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    state: dict[str, Any] = {}
    while loop.time() < deadline:
        state = await cdp.evaluate(session, PAGE_STATE) or {}
        assert not state.get("error"), state["error"]
        if predicate(state):
            return state
        await asyncio.sleep(0.2)
    raise AssertionError(f"the page never showed {what}: {state}")


async def test_an_operator_runs_an_acceptance_in_the_console_and_gets_the_report(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any, mosquitto: MosquittoBroker
) -> None:
    service, fleet, _ = await acceptance_city(gateway_factory, platform_factory, fleet_factory, mosquitto)
    await add_user(service, *TEST_ADMIN)
    kg = fleet.city[0]
    base = f"http://127.0.0.1:{service.http_port}"
    async with asyncio.timeout(150), chromium_page(f"{base}/console/assets/acceptance.html") as (cdp, session, _):
        await _until(cdp, session, lambda s: kg.id in s["options"], "the kindergarten list")
        await cdp.evaluate(
            session,
            f"(() => {{ const s = document.getElementById('kindergarten'); s.value = {json.dumps(kg.id)};"
            " s.dispatchEvent(new Event('change')); document.getElementById('start').click(); })()",
        )
        cameras = plan_areas(kg)
        state = await _until(
            cdp,
            session,
            lambda s: s["areasShown"] and len(s["shots"]) == len(cameras) and all(x["img"] for x in s["shots"]),
            "every camera's snapshot with an area choice",
        )
        assert [c for c in state["checks"] if c[0] == "pictures"][0][1] == "check passed"
        for channel_id, area in cameras.items():
            await cdp.evaluate(
                session,
                f"(() => {{ const s = document.querySelector('.shot[data-channel=\"{channel_id}\"] select');"
                f" s.value = {json.dumps(area)}; s.dispatchEvent(new Event('change')); }})()",
            )
        await cdp.evaluate(session, "document.getElementById('confirm').click()")
        await _until(cdp, session, lambda s: s["press"], "请按下一键报警")
        assert await cdp.evaluate(session, "document.getElementById('press').textContent.includes('请按下一键报警')")
        fleet.press(kg.id, "button")
        state = await _until(cdp, session, lambda s: s["report"] is not None, "the result and the report link", 90)
        assert state["state"] == "验收通过", state
        assert all(c[1] == "check passed" for c in state["checks"]), state["checks"]
        await cdp.call("Page.navigate", session, url=state["report"])
        report: dict[str, Any] = {}
        for _ in range(100):
            report = (
                await cdp.evaluate(
                    session,
                    "({verdict: document.getElementById('verdict')?.textContent || '',"
                    " images: [...document.images].filter((i) => i.complete && i.naturalWidth > 0).length,"
                    " text: document.body ? document.body.innerText : ''})",
                )
                or {}
            )
            if report.get("verdict"):
                break
            await asyncio.sleep(0.1)
        assert report["verdict"] == "验收通过" and report["images"] == len(cameras), report
        assert "一键报警演练" in report["text"] and TEST_ADMIN[0] in report["text"]
        pdf = await cdp.call("Page.printToPDF", session, printBackground=True)
        assert base64.b64decode(pdf["data"])[:5] == b"%PDF-"  # printable
