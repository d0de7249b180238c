"""Simulator faults against a real gateway on loopback: each failure path as the gateway (and its uppers) see it.

A real :class:`GatewayService` (and, for upper-down, a real municipal platform) on ephemeral
ports; the simulated kindergartens register over UDP, stream over RTP and press alarms through
the simulator's HTTP control endpoint, as ``kgw simulate --fault`` runs them.
"""

from __future__ import annotations

import asyncio
import io
import signal
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gateway.registry.model import AreaTag, guess_area
from simulators.faults import parse_faults
from simulators.fleet import Fleet, FleetOptions
from simulators.upper_down import UpperDown, install
from simulators.video import VideoProfile
from tests.conftest import free_ports, http_json, wait_for
from tests.integration.test_cascade import platform, upper
from tests.processes import Proc

SMALL = VideoProfile(width=320, height=180, seconds=1.0, bitrate=300_000)


async def snapshot(gateway: Any, channel_id: str) -> tuple[int, bytes]:
    """GET the channel's snapshot.jpg (the gateway opens a short live session for it)."""
    import urllib.error
    import urllib.request

    from tests.conftest import AUTH_HEADERS

    url = f"http://127.0.0.1:{gateway.http_port}/api/channels/{channel_id}/snapshot.jpg"

    def call() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH_HEADERS), timeout=30) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    return await asyncio.to_thread(call)


def brightest(jpeg: bytes) -> int:
    """The brightest pixel's luma of a JPEG."""
    return int(np.asarray(Image.open(io.BytesIO(jpeg)).convert("L")).max())


def camera_ids(kg: Any) -> list[str]:
    return [c.id for d in kg.devices for c in d.channels if c.kind == "camera"]


async def registered(fleet: Any, gateway: Any, *, devices: int | None = None) -> None:
    wanted = len(fleet.agents) if devices is None else devices
    assert await wait_for(lambda: fleet.summary()["registered"] == wanted, 60), fleet.summary()
    channels = sum(len(d.channels) for k in fleet.city for d in k.devices)
    assert await wait_for(lambda: len(gateway.directory.channels) >= channels * wanted // len(fleet.agents), 60)


async def test_camera_offline_black_picture_and_no_entrance_as_the_gateway_sees_them(
    gateway_factory: Any, fleet_factory: Any
) -> None:
    gateway = await gateway_factory()
    fleet = await fleet_factory(
        gateway,
        kindergartens=3,
        cameras=(3, 3),
        video=SMALL,
        sub_streams=0.0,
        control_port=0,
        faults=parse_faults(["0:camera-offline:1", "1:black-picture:2", "2:no-entrance"]),
    )
    await registered(fleet, gateway)
    offline_kg, black_kg, no_entrance_kg = fleet.city
    channels = gateway.directory.channels
    # camera-offline: the NVR is up and reports its main-gate camera OFF; the others are on.
    dead, *alive = camera_ids(offline_kg)
    assert await wait_for(lambda: dead in channels and not channels[dead].online, 30)
    assert all(channels[c].online for c in alive)
    assert gateway.directory.devices[offline_kg.devices[0].id].row.online
    status, _ = await snapshot(gateway, dead)
    assert status >= 400, "a dead camera gives no picture"  # the NVR refuses its INVITE (480)
    # black-picture: camera 2 streams valid video, all black; camera 1 of the same NVR shows its test card.
    normal, black, _ = camera_ids(black_kg)
    status, jpeg = await snapshot(gateway, black)
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    assert brightest(jpeg) < 32, brightest(jpeg)
    status, jpeg = await snapshot(gateway, normal)
    assert status == 200 and brightest(jpeg) > 200
    # no-entrance: the gateway's catalog of that kindergarten has no entrance camera, confirmed or by name.
    api = f"http://127.0.0.1:{gateway.http_port}/api/channels?limit=100&kindergarten="
    status, page = await http_json(api + no_entrance_kg.id)
    cameras = [c for c in page["items"] if c["type_code"] == 131]
    assert status == 200 and len(cameras) == 3
    assert all(c["confirmed_area"] != "entrance" and guess_area(c["name"]) is not AreaTag.ENTRANCE for c in cameras)
    assert gateway.directory.entrance_camera(no_entrance_kg.id) is None
    assert gateway.directory.entrance_camera(black_kg.id) == normal  # a kindergarten without the fault has one
    # the control endpoint says which kindergartens fail on purpose
    status, faults = await http_json(f"http://127.0.0.1:{fleet.control_port}/faults", headers={})
    assert status == 200
    assert [(f["index"], f["faults"]) for f in faults["items"]] == [
        (0, ["camera-offline"]),
        (1, ["black-picture"]),
        (2, ["no-entrance"]),
    ]
    assert faults["items"][0]["offline_channels"] == [dead] and faults["items"][1]["black_channels"] == [black]


async def test_an_offline_ipc_never_registers(gateway_factory: Any, fleet_factory: Any) -> None:
    gateway = await gateway_factory()
    fleet = await fleet_factory(
        gateway, kindergartens=1, cameras=(3, 3), ipc_mode=True, faults=parse_faults(["0:camera-offline:2"])
    )
    ipcs = [d.id for d in fleet.city[0].devices if d.kind == "ipc"]
    dead = ipcs[1]
    await registered(fleet, gateway, devices=len(fleet.agents) - 1)
    assert all(gateway.directory.devices[i].row.online for i in ipcs if i != dead)
    assert dead not in gateway.directory.devices or not gateway.directory.devices[dead].row.online
    assert fleet.agents[dead].stats.registrations == 0 and fleet.agents[dead].stats.keepalives_sent == 0


async def test_a_silent_alarm_box_is_pressed_but_no_alarm_reaches_the_gateway(
    gateway_factory: Any, fleet_factory: Any
) -> None:
    gateway = await gateway_factory()
    fleet = await fleet_factory(
        gateway, kindergartens=2, cameras=(2, 2), control_port=0, faults=parse_faults(["0:silent-alarm"])
    )
    await registered(fleet, gateway)
    control = f"http://127.0.0.1:{fleet.control_port}/press"
    status, silent = await http_json(control, {"kindergarten": 0, "kind": "button"}, headers={})
    box_id = next(d.id for d in fleet.city[0].devices if d.kind == "alarm_box")
    assert status == 200 and silent["device_id"] == box_id  # "pressed", says the box
    status, loud = await http_json(control, {"kindergarten": 1, "kind": "button"}, headers={})
    assert status == 200
    alarms = f"http://127.0.0.1:{gateway.http_port}/api/alarms"

    async def devices_alarming() -> set[str]:
        status, page = await http_json(alarms)
        assert status == 200
        return {a["device_id"] for a in page["items"]}

    deadline = asyncio.get_running_loop().time() + 30
    while loud["device_id"] not in await devices_alarming():  # the working box's alarm arrived…
        assert asyncio.get_running_loop().time() < deadline, "the working alarm box's press never arrived"
        await asyncio.sleep(0.1)
    assert silent["device_id"] not in await devices_alarming()  # …the silent one's, pressed first, never does
    box = fleet.agents[silent["device_id"]]
    assert box.registered and box.stats.alarms_sent == 1 and box.stats.alarm_messages == 0
    status, listed = await http_json(f"http://127.0.0.1:{fleet.control_port}/alarms", headers={})
    assert {a["device_id"]: a["answered"] for a in listed["items"]} == {
        silent["device_id"]: False,
        loud["device_id"]: True,
    }


async def test_an_upper_that_is_down_leaves_the_alarm_delivery_pending_until_it_is_back(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    """The demo's way: the platform's switch on the simulator's control endpoint (PUT /uppers/municipal)."""
    municipal = await platform(platform_factory, "municipal")
    gateway = await gateway_factory(upper_platforms=(upper(municipal, "municipal"),), alarm_retry_cap=1.0)
    switch = install(municipal, down=True)
    fleet = Fleet(
        FleetOptions(
            gateway_port=gateway.sip_port,
            gateway_id=gateway.config.id,
            password=gateway.config.password,
            kindergartens=1,
            cameras=(2, 2),
            control_port=0,
            api=f"http://127.0.0.1:{gateway.http_port}",
        ),
        uppers={"municipal": switch},  # as the demo hands its platforms' switches to its simulator
    )
    await fleet.start()
    try:
        await upper_down_and_back(gateway, municipal, fleet, switch)
    finally:
        await fleet.stop(unregister=False)


async def upper_down_and_back(gateway: Any, municipal: Any, fleet: Fleet, switch: UpperDown) -> None:
    await registered(fleet, gateway)
    assert await wait_for(lambda: all(s["state"] == "registered" for s in gateway.cascade.status()), 30)
    control = f"http://127.0.0.1:{fleet.control_port}"
    status, uppers = await http_json(f"{control}/uppers", headers={})
    assert status == 200 and uppers == {"municipal": {"down": True, "refused": 0}}
    status, pressed = await http_json(f"{control}/press", {"kind": "button"}, headers={})
    assert status == 200
    api = f"http://127.0.0.1:{gateway.http_port}/api/alarms"

    async def gb_delivery() -> dict[str, Any] | None:
        status, page = await http_json(api)
        if status != 200 or not page["items"]:
            return None
        status, detail = await http_json(f"{api}/{page['items'][0]['id']}")
        return next((d for d in detail["deliveries"] if d["sink"] == "gb"), None)

    deadline = asyncio.get_running_loop().time() + 30
    while True:  # refused at least twice: the gateway keeps the delivery and retries
        delivery = await gb_delivery()
        if delivery is not None and delivery["attempts"] >= 2 and switch.refused >= 2:
            break
        assert asyncio.get_running_loop().time() < deadline, delivery
        await asyncio.sleep(0.1)
    assert delivery["state"] == "pending" and "503" in (delivery["last_error"] or ""), delivery
    status, theirs = await http_json(f"http://127.0.0.1:{municipal.http_port}/api/alarms")
    assert status == 200 and theirs["total"] == 0
    assert gateway.cascade.status()[0]["state"] == "registered"  # only its alarm intake is down
    # back up: the next retry is delivered and the platform has the alarm
    status, switched = await http_json(f"{control}/uppers/municipal", {"down": False}, method="PUT", headers={})
    assert status == 200 and switched["down"] is False
    deadline = asyncio.get_running_loop().time() + 30
    while (delivery := await gb_delivery()) is None or delivery["state"] != "delivered":
        assert asyncio.get_running_loop().time() < deadline, delivery
        await asyncio.sleep(0.1)
    status, theirs = await http_json(f"http://127.0.0.1:{municipal.http_port}/api/alarms")
    assert theirs["total"] == 1 and theirs["items"][0]["source_id"] == pressed["source_id"]
    status, _ = await http_json(f"{control}/uppers/nowhere", {"down": True}, method="PUT", headers={})
    assert status == 404
    status, _ = await http_json(f"{control}/uppers/municipal", {"down": "yes"}, method="PUT", headers={})
    assert status == 400


@pytest.mark.timeout(120)
async def test_kgw_platform_fault_upper_down_is_switched_over_its_control_endpoint(tmp_path: Any, procs: Any) -> None:
    base = free_ports(3)
    sip, http, control = base, base + 1, base + 2
    proc = Proc(
        "platform",
        [
            "platform",
            "--level",
            "municipal",
            "--sip-port",
            str(sip),
            "--http-port",
            str(http),
            "--db",
            str(tmp_path / "municipal.db"),
            "--fault",
            "upper-down",
            "--fault-control-port",
            str(control),
        ],
        tmp_path,
    )
    procs.append(proc)
    url = f"http://127.0.0.1:{control}/uppers"

    async def switch_state() -> Any:
        try:
            return await http_json(url, headers={})
        except OSError:
            return None

    deadline = asyncio.get_running_loop().time() + 60
    while (answer := await switch_state()) is None:
        assert proc.popen.poll() is None, proc.output()[-3000:]
        assert asyncio.get_running_loop().time() < deadline, proc.output()[-3000:]
        await asyncio.sleep(0.2)
    assert answer == (200, {"platform": {"down": True, "refused": 0}})
    assert await http_json(f"{url}/platform", {"down": False}, method="PUT", headers={}) == (
        200,
        {"down": False, "refused": 0},
    )
    assert (await switch_state())[1]["platform"]["down"] is False
    assert "upper-down fault switch" in proc.output()
    assert await proc.stop(signal.SIGINT) == 0, proc.output()[-3000:]
    assert "Traceback" not in proc.output()
