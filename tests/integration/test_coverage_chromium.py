"""The coverage page in headless Chromium: a gateway with simulated kindergartens, three of them made
faulty on purpose (the entrance IPC unregisters, the alarm box unregisters, every device of a third
unregisters), shows each one's status and reason; the summary, the chart and the export links are there.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from simulators.city import SimKindergarten
from tests.conftest import TEST_ADMIN, add_user, http_json, wait_for
from tests.integration.test_console_chromium import _poll, chromium_page

PAGE_STATE = """(() => {
  const s = window.kgwCoverage;
  const rows = [...document.querySelectorAll('#coverage-body tr')].map((tr) => ({
    id: tr.dataset.id, status: tr.querySelector('.st').textContent,
    reasons: tr.querySelector('td.reasons').textContent,
  }));
  const city = document.querySelector('#summary-body tr.city');
  return {ready: !!(s && s.ready), chart: !!(s && s.chart), rows,
          city: city ? [...city.children].map((td) => td.textContent) : [],
          paths: document.querySelectorAll('#chart svg path').length,
          csv: document.getElementById('export-csv').getAttribute('href'),
          error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent};
})()"""


def _device(kg: SimKindergarten, kind: str, area: str | None = None) -> str:
    for device in kg.devices:
        if device.kind == kind and (area is None or device.channels[0].area == area):
            return device.id
    raise AssertionError(f"no {kind} in {kg.name}")


async def test_coverage_page_shows_status_and_reason_of_faulty_kindergartens(gateway_factory, fleet_factory):
    service = await gateway_factory(coverage_refresh=3600.0)
    await add_user(service, *TEST_ADMIN)
    fleet = await fleet_factory(service, kindergartens=4, cameras=(2, 2), ipc_mode=True)
    every = [d.id for kg in fleet.city for d in kg.devices]
    assert await wait_for(lambda: all(service.directory.devices.get(d) and service.directory.devices[d].row.online
                                      for d in every), timeout=60)  # fmt: skip
    gate_down, box_down, dark, healthy = fleet.city
    faults = {
        gate_down.id: [_device(gate_down, "ipc", "entrance")],
        box_down.id: [_device(box_down, "alarm_box")],
        dark.id: [d.id for d in dark.devices],
    }
    now = asyncio.get_running_loop().time()
    for device_id in (d for ids in faults.values() for d in ids):
        fleet.agents[device_id].stop(now, unregister=True)  # a real REGISTER Expires: 0 from the device
    stopped = [d for ids in faults.values() for d in ids]
    assert await wait_for(lambda: not any(service.directory.devices[d].row.online for d in stopped), timeout=60)

    base = f"http://127.0.0.1:{service.http_port}"
    status, _ = await http_json(f"{base}/api/coverage/summary")
    assert status == 200
    async with asyncio.timeout(100), chromium_page(f"{base}/console/assets/coverage.html") as (cdp, session, _log):
        state: dict[str, Any] = await _poll(
            cdp, session, PAGE_STATE, lambda s: s["ready"] and s["chart"] and len(s["rows"]) == 4, 60, "the table"
        )
        assert not state["error"], state["error"]
        rows = {row["id"]: row for row in state["rows"]}
        assert rows[dark.id]["status"] == "未接入" and rows[dark.id]["reasons"].startswith("设备全部离线")
        assert rows[gate_down.id]["status"] == "部分接入"
        assert rows[gate_down.id]["reasons"].startswith("大门口摄像机离线；从未演练")
        assert "1台设备离线" in rows[gate_down.id]["reasons"]
        assert rows[box_down.id]["status"] == "部分接入"
        assert rows[box_down.id]["reasons"].startswith("一键报警离线；从未演练")
        # The healthy one lacks only a drill (nobody ran one): partial for that reason alone.
        assert (rows[healthy.id]["status"], rows[healthy.id]["reasons"]) == ("部分接入", "从未演练")
        assert [row["id"] for row in state["rows"]][0] == dark.id  # worst first
        assert state["city"][:5] == ["全市", "4", "0", "3", "1"]
        assert state["paths"] >= 1 and state["csv"].startswith("/api/coverage/export.csv?")

        # Filter by reason in the page: only the kindergarten whose alarm box is offline.
        await cdp.evaluate(
            session,
            "(() => { const s = document.getElementById('f-reason'); s.value = 'alarm_offline';"
            " s.dispatchEvent(new Event('change')); })()",
        )
        state = await _poll(cdp, session, PAGE_STATE, lambda s: len(s["rows"]) == 1, 20, "the filter")
        assert state["rows"][0]["id"] == box_down.id and "reason=alarm_offline" in state["csv"]
        started = time.monotonic()
        await cdp.evaluate(session, "document.querySelector('#coverage-table th[data-sort=name]').click()")
        assert time.monotonic() - started < 10
