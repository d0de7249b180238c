"""The coverage page of a simulated city with faults (``kgw simulate --fault``), in headless Chromium: each
faulty kindergarten shows the status and the reason its fault gives, and a fault coverage cannot see (a
black picture, an alarm box that never sends: the acceptance's picture check and drill find those) shows
what a healthy kindergarten shows.

Nothing is arranged by hand: the simulator's devices report what their faults make them report (an NVR
channel OFF in its catalog, a kindergarten installed without an entrance camera), over real sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any

from simulators.faults import parse_faults
from simulators.video import VideoProfile
from tests.conftest import TEST_ADMIN, add_user, http_json, wait_for
from tests.integration.test_console_chromium import _poll, chromium_page
from tests.integration.test_coverage_chromium import PAGE_STATE

FAULTS = [
    "0:camera-offline:1",  # the main gate's camera is dead
    "1:no-entrance",  # installed without an entrance camera
    "2:camera-offline",  # every camera dead, the NVR and the alarm box up
    "3:black-picture",  # streams, but black: coverage cannot see it
    "3:silent-alarm",  # registered, never sends: coverage cannot see it either
]  # kindergarten 4 is whole


async def test_coverage_page_shows_each_simulated_fault_with_its_status_and_reason(gateway_factory, fleet_factory):
    service = await gateway_factory(coverage_refresh=3600.0)
    await add_user(service, *TEST_ADMIN)
    fleet = await fleet_factory(
        service,
        kindergartens=5,
        cameras=(3, 3),
        video=VideoProfile(width=320, height=180, seconds=1.0, bitrate=300_000),
        faults=parse_faults(FAULTS),
    )
    channels = service.directory.channels
    dead = [c for f in fleet.faults.values() for c in f.offline]
    everything = [c.id for kg in fleet.city for d in kg.devices for c in d.channels]
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    assert await wait_for(lambda: all(c in channels for c in everything), 60)
    assert await wait_for(lambda: not any(channels[c].online for c in dead), 30)
    gate_down, no_gate, all_down, looks_fine, whole = fleet.city

    base = f"http://127.0.0.1:{service.http_port}"
    status, _ = await http_json(f"{base}/api/coverage/summary")
    assert status == 200
    async with asyncio.timeout(100), chromium_page(f"{base}/console/assets/coverage.html") as (cdp, session, _log):
        state: dict[str, Any] = await _poll(
            cdp, session, PAGE_STATE, lambda s: s["ready"] and len(s["rows"]) == 5, 60, "the table"
        )
        assert not state["error"], state["error"]
        rows = {row["id"]: (row["status"], row["reasons"]) for row in state["rows"]}
        assert rows[gate_down.id] == ("部分接入", "大门口摄像机离线；从未演练；1路通道离线")
        assert rows[no_gate.id] == ("部分接入", "无大门口摄像机；从未演练")
        assert rows[all_down.id] == ("部分接入", "大门口摄像机离线；周界摄像机离线（1/1）；从未演练；3路通道离线")
        assert rows[looks_fine.id] == rows[whole.id] == ("部分接入", "从未演练")  # nobody ran a drill yet
        assert state["rows"][0]["id"] == all_down.id  # worst first: the most reasons
        assert state["city"][:5] == ["全市", "5", "0", "5", "0"]

        # The page's reason filter finds the kindergarten without an entrance camera, and only it.
        await cdp.evaluate(
            session,
            "(() => { const s = document.getElementById('f-reason'); s.value = 'no_entrance';"
            " s.dispatchEvent(new Event('change')); })()",
        )
        state = await _poll(cdp, session, PAGE_STATE, lambda s: len(s["rows"]) == 1, 20, "the filter")
        assert state["rows"][0]["id"] == no_gate.id
