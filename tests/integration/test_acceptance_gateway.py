"""Acceptance (验收) through a real gateway: simulated kindergartens (with faults), real district, municipal
and police platforms, a real Mosquitto as the police alarm integration, every step over the HTTP API.

One city serves every path at once (runs of different kindergartens go on in parallel): a passing
run, a camera offline, a black picture, an alarm box that never sends (the drill check fails after
its wait), then an upper platform whose alarm intake is down (the drill fails naming it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from simulators.faults import parse_faults
from simulators.fleet import Fleet
from simulators.mosquitto import MosquittoBroker
from simulators.upper_down import install
from simulators.video import VideoProfile
from tests.conftest import http_json, http_text, wait_for
from tests.integration.test_cascade import platform, upper
from tests.integration.test_faults_gateway import camera_ids, registered

HEXI = "120103"
SMALL = VideoProfile(width=320, height=180, seconds=1.0, bitrate=300_000)


async def acceptance_city(
    gateway_factory: Any,
    platform_factory: Any,
    fleet_factory: Any,
    mosquitto: MosquittoBroker,
    faults: tuple[str, ...] = (),
    **gateway: Any,
) -> tuple[Any, Fleet, dict[str, Any]]:
    """河西区's first kindergartens behind a gateway with its district, municipal and police uppers and MQTT."""
    uppers = {
        "district": await platform(platform_factory, "district", HEXI),
        "municipal": await platform(platform_factory, "municipal"),
        "police": await platform(platform_factory, "police"),
    }
    service = await gateway_factory(
        upper_platforms=(
            upper(uppers["district"], "district", HEXI),
            upper(uppers["municipal"], "municipal"),
            upper(uppers["police"], "police"),
        ),
        mqtt=mosquitto.url,
        alarm_retry_cap=1.0,
        **gateway,
    )
    fleet = await fleet_factory(
        service,
        kindergartens=60,  # the seeded city's first 60: four of them in 河西区
        only_districts=(HEXI,),
        cameras=(3, 3),
        video=SMALL,
        sub_streams=0.0,
        confirm_areas=False,  # the operator confirms them in the run
        faults=parse_faults(list(faults)),
    )
    await registered(fleet, service)
    assert await wait_for(lambda: all(s["state"] == "registered" for s in service.cascade.status()), 60)
    return service, fleet, uppers


async def start_run(service: Any, kindergarten_id: str) -> str:
    status, run = await http_json(
        f"http://127.0.0.1:{service.http_port}/api/acceptance", {"kindergarten_id": kindergarten_id}
    )
    assert status == 201, run
    return str(run["id"])


async def run_until(service: Any, run_id: str, states: set[str], timeout: float = 60.0) -> dict[str, Any]:
    """Poll the run's progress until its state is one of ``states``."""
    url = f"http://127.0.0.1:{service.http_port}/api/acceptance/{run_id}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, run = await http_json(url)
        assert status == 200, run
        if run["state"] in states:
            return dict(run)
        assert loop.time() < deadline, run
        await asyncio.sleep(0.2)


async def confirm(service: Any, run_id: str, areas: dict[str, str]) -> dict[str, Any]:
    url = f"http://127.0.0.1:{service.http_port}/api/acceptance/{run_id}/areas"
    status, run = await http_json(url, {"areas": areas})
    assert status == 200, run
    return dict(run)


def check(run: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in run["checks"] if c["name"] == name)


def plan_areas(kg: Any) -> dict[str, str]:
    """What an installer would confirm: the plan's areas (大门口 entrance, 周界 perimeter, indoor...)."""
    return {c.id: c.area for d in kg.devices for c in d.channels if c.kind == "camera"}


@pytest.mark.slow
async def test_acceptance_passes_and_fails_each_way_it_can(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any, mosquitto: MosquittoBroker
) -> None:
    service, fleet, uppers = await acceptance_city(
        gateway_factory,
        platform_factory,
        fleet_factory,
        mosquitto,
        ("1:camera-offline:2", "2:black-picture:1", "3:silent-alarm"),
        acceptance_drill_wait=4.0,
        acceptance_proof_wait=4.0,
    )
    good, offline, black, silent = fleet.city[:4]
    runs = {kg.id: await start_run(service, kg.id) for kg in (good, offline, black, silent)}
    status, busy = await http_json(f"http://127.0.0.1:{service.http_port}/api/acceptance", {"kindergarten_id": good.id})
    assert status == 409, busy  # one run per kindergarten at a time
    at_areas = {kg: await run_until(service, run, {"confirm_areas"}) for kg, run in runs.items()}

    ok = at_areas[good.id]
    assert check(ok, "channels")["state"] == "passed" and check(ok, "pictures")["state"] == "passed"
    assert all(c["snapshot_url"] for c in ok["cameras"]) and len(ok["cameras"]) == 3
    dead = camera_ids(offline)[1]
    channels = check(at_areas[offline.id], "channels")
    assert channels["state"] == "failed" and dead in channels["fix"] and "通道离线" in channels["fix"]
    pictures = check(at_areas[offline.id], "pictures")
    assert pictures["state"] == "failed" and "摄像机离线" in pictures["fix"]
    dark = camera_ids(black)[0]
    pictures = check(at_areas[black.id], "pictures")
    assert pictures["state"] == "failed" and pictures["fix"].startswith("画面全黑：") and dark in pictures["fix"]
    assert [i["subject"] for i in pictures["items"] if not i["ok"]] == [dark]
    jpeg_url = next(c["snapshot_url"] for c in at_areas[black.id]["cameras"] if c["id"] == dark)
    assert jpeg_url  # the black picture is kept as evidence

    for kg in (good, offline, black, silent):
        run = await confirm(service, runs[kg.id], plan_areas(kg))
        assert run["state"] == "drill" and check(run, "areas")["state"] == "passed"
        assert check(run, "drill")["summary"] == "请按下一键报警"
    # confirmed through the provisioning path: police see the entrance camera now, never the indoor one
    entrance = camera_ids(good)[0]
    assert service.directory.channels[entrance].confirmed_area.value == "entrance"
    for kg in (good, offline, black, silent):
        fleet.press(kg.id, "button")  # the silent box sends nothing

    done = {kg: await run_until(service, run, {"passed", "failed"}) for kg, run in runs.items()}
    passed = done[good.id]
    assert passed["state"] == "passed", passed
    drill = check(passed, "drill")
    levels = {i["level"] for i in drill["items"]}
    assert levels == {"district", "municipal", "police_platform", "police_mqtt"}, drill
    assert all(i["ok"] and i["elapsed"] is not None and i["elapsed"] < 30 for i in drill["items"]), drill
    assert passed["drill_alarm_id"]
    assert done[offline.id]["state"] == "failed" and check(done[offline.id], "drill")["state"] == "passed"
    assert done[black.id]["state"] == "failed" and check(done[black.id], "drill")["state"] == "passed"
    no_press = check(done[silent.id], "drill")
    assert no_press["state"] == "failed" and "4 秒内没有收到一键报警" in no_press["summary"]

    # the report: printable HTML with the verdict, who, the snapshots, and the fixes of a failed check
    api = f"http://127.0.0.1:{service.http_port}/api/acceptance"
    page = await http_text(f"{api}/{runs[good.id]}/report")
    assert '<div class="verdict passed" id="verdict">验收通过</div>' in page
    assert page.count("data:image/jpeg;base64,") == 3 and "@media print" in page
    assert f"<td>验收人</td><td>{passed['started_by']}</td>" in page
    page = await http_text(f"{api}/{runs[black.id]}/report")
    assert "验收未通过" in page and "需整改：</b>画面全黑" in page
    status, listed = await http_json(f"{api}?kindergarten={good.id}")
    assert status == 200 and [r["id"] for r in listed["items"]] == [runs[good.id]]
    assert listed["latest"]["state"] == "passed" and listed["drill_passed_at"] and not listed["needs_reacceptance"]
    # the drill reached the police's MQTT as a drill and was stored as one
    status, alarm = await http_json(f"http://127.0.0.1:{service.http_port}/api/alarms/{passed['drill_alarm_id']}")
    assert status == 200 and alarm.get("drill") is True, alarm

    # an upper whose alarm intake is down: the drill fails naming it; a new run is possible any time
    switch = install(uppers["municipal"], down=True)
    again = await start_run(service, good.id)
    await run_until(service, again, {"confirm_areas"})
    await confirm(service, again, {})
    fleet.press(good.id, "button")
    failed = await run_until(service, again, {"passed", "failed"})
    assert switch.refused >= 1
    drill = check(failed, "drill")
    assert failed["state"] == "failed" and "市级平台" in drill["fix"] and "municipal" in drill["fix"], drill
    assert [i["level"] for i in drill["items"] if not i["ok"]] == ["municipal"]
    switch.down = False
