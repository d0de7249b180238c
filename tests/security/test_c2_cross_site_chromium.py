"""C2 in a real browser: a page from another origin tried to acknowledge and resolve a real
one-button alarm with the logged-in operator's cookie (so it would never escalate).

Headless Chromium logs in to the gateway's console; a second little aiohttp server on another
port serves the attacker's page, which the same browser then opens: it POSTs ack/resolve to the
gateway as a form, as a "simple" text/plain fetch with credentials, and as a JSON fetch, and
opens the alarm WebSocket. The alarm stays unacknowledged and the WebSocket never says hello;
back on the console, the operator acknowledges it with one click, recorded under their login.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from gateway.security.principal import Role
from tests.conftest import add_user, http_json, wait_for
from tests.integration.test_console_chromium import ALARM_STATE, chromium_page

ATTACK_PAGE = """<!doctype html><html><body>
<form id="f" method="POST" target="sink" enctype="text/plain"><input name='{"note":"' value='x"}'></form>
<iframe name="sink"></iframe>
<script>
const gw = GATEWAY, id = ALARM;
const body = JSON.stringify({user: "攻击者", note: "x"});  // what the API once took as "who"
window.results = [];
async function attack() {
  for (const action of ["ack", "resolve"]) {
    const url = `${gw}/api/alarms/${id}/${action}`;
    try {
      await fetch(url, {method: "POST", mode: "no-cors", credentials: "include",
                        headers: {"Content-Type": "text/plain"}, body});
      window.results.push(action + " text/plain sent");
    } catch (e) { window.results.push(action + " text/plain " + e); }
    try {
      const r = await fetch(url, {method: "POST", credentials: "include",
                                  headers: {"Content-Type": "application/json"}, body});
      window.results.push(action + " json " + r.status);
    } catch (e) { window.results.push(action + " json blocked"); }
  }
  const form = document.getElementById("f");
  form.action = `${gw}/api/alarms/${id}/ack`;
  form.submit();
  await new Promise((resolve) => {
    const ws = new WebSocket(gw.replace("http", "ws") + "/api/alarms/ws");
    ws.onmessage = (m) => { window.results.push("ws message " + m.data); };
    ws.onclose = ws.onerror = () => resolve();
    setTimeout(resolve, 5000);
  });
  await new Promise((resolve) => setTimeout(resolve, 500));  // the form's POST went out
  document.title = "done";
}
attack();
</script></body></html>"""


async def test_a_foreign_page_cannot_acknowledge_with_the_operators_cookie(gateway_factory, fleet_factory):
    service = await gateway_factory()
    await add_user(service, "duty", "duty-password-1", Role.CITY_ADMIN)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), timeout=60)
    base = f"http://127.0.0.1:{service.http_port}"
    kg = fleet.city[0]

    attacker = web.Application()
    page: dict[str, str] = {}

    async def serve_page(request: web.Request) -> web.Response:
        return web.Response(text=page["html"], content_type="text/html")

    attacker.router.add_get("/", serve_page)
    runner = web.AppRunner(attacker)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    evil = f"http://127.0.0.1:{runner.addresses[0][1]}/"  # same host, another port: another origin
    try:
        async with (
            asyncio.timeout(120),
            chromium_page(f"{base}/", login=("duty", "duty-password-1")) as (cdp, session, _log),
        ):
            fleet.press(kg.id, "button")
            state = await _alarm_listed(cdp, session, kg.name)
            alarm_id = next(i["id"] for i in state["items"] if kg.name in i["text"])
            page["html"] = ATTACK_PAGE.replace("GATEWAY", json.dumps(base)).replace("ALARM", json.dumps(alarm_id))

            await cdp.call("Page.navigate", session, url=evil)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while await cdp.evaluate(session, "document.title") != "done":
                assert loop.time() < deadline, "the attack page never finished"
                await asyncio.sleep(0.2)
            results = await cdp.evaluate(session, "window.results")
            status, alarm = await http_json(f"{base}/api/alarms/{alarm_id}")
            assert status == 200 and alarm["state"] in ("new", "delivered"), (alarm, results)
            assert alarm["acknowledged_by"] is None and alarm["resolved_by"] is None, (alarm, results)
            assert not any(r.startswith("ws message") for r in results), results

            # The console itself (same origin) acknowledges with one click, as the logged-in user.
            cdp.events.clear()  # the attack page's CORS errors are expected; the console must have none
            await cdp.call("Page.navigate", session, url=f"{base}/")
            await _alarm_listed(cdp, session, kg.name)
            await cdp.evaluate(
                session, f"document.querySelector('#alarms li[data-id=\"{alarm_id}\"] button.ack').click()"
            )
            assert await wait_for_ack(base, alarm_id)
    finally:
        await runner.cleanup()
    status, alarm = await http_json(f"{base}/api/alarms/{alarm_id}")
    assert alarm["state"] == "acknowledged" and alarm["acknowledged_by"] == "duty", alarm


async def _alarm_listed(cdp, session, name: str) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        state = await cdp.evaluate(session, ALARM_STATE) or {}
        if any(name in i["text"] for i in state.get("items", [])):
            return state
        assert loop.time() < deadline, f"the alarm never showed: {state}"
        await asyncio.sleep(0.1)


async def wait_for_ack(base: str, alarm_id: str) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        _, alarm = await http_json(f"{base}/api/alarms/{alarm_id}")
        if alarm["state"] == "acknowledged":
            return True
        await asyncio.sleep(0.1)
    return False
