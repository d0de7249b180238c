"""Upper platforms steer a kindergarten camera through the gateway (docs/gb28181.md §16.5), on real sockets.

district platform ─┐
                   ├─ gateway ─ simulated kindergarten (ball camera at the entrance)
police platform ───┘

The district platform's own HTTP API (``POST /api/channels/{id}/ptz``, the console's
route) sends DeviceControl to the gateway, its "device"; the gateway relays it to
the camera. The police platform is refused 403 for PTZ (no ``allow_ptz``) and for
a camera its policy does not share; TeleBoot from above is always refused.
"""

from __future__ import annotations

from typing import Any

from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper import UpperPlatformConfig
from gateway.command_broker import CommandFailed
from gateway.config import UpperSpec
from gateway.gb28181.device_ptz import PtzCameras
from gateway.gb28181.manscdp import ResultResponse
from gateway.gb28181.manscdp.control import (
    CMD_DEVICE_CONTROL,
    GuardControl,
    IFrame,
    PtzControl,
    TeleBoot,
    control_body,
    ptz_command,
)
from simulators.city import build_city
from simulators.video import VideoProfile
from tests.conftest import http_json, wait_for

PASSWORD = "platform-pw"
CITY = build_city(1, seed=2020, cameras_per_kindergarten=(3, 3))
KG = CITY[0]
_CAMERAS = {c.area: c.id for d in KG.devices for c in d.channels if c.kind == "camera"}
ENTRANCE, CLASSROOM = _CAMERAS["entrance"], _CAMERAS["classroom"]
PLATFORM_IDS = {"police": "12010000002000000110", "district": f"{KG.district_code}00002000000001"}


async def test_district_steers_through_the_gateway_police_is_refused(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    platforms = {
        level: await platform_factory(id=PLATFORM_IDS[level], role=level, password=PASSWORD)
        for level in ("district", "police")
    }
    uppers = tuple(
        UpperSpec(
            UpperPlatformConfig(
                name=level,
                server_id=p.config.id,
                host="127.0.0.1",
                port=p.sip_port,
                password=PASSWORD,
                register_retry_min=0.2,
                register_retry_max=1.0,
            ),
            SharePolicy(PolicyLevel(level), KG.district_code if level == "district" else None),
        )
        for level, p in platforms.items()
    )
    gateway = await gateway_factory(upper_platforms=uppers)
    fleet = await fleet_factory(gateway, kindergartens=1, cameras=(3, 3), video=VideoProfile(width=160, height=90))
    assert await wait_for(lambda: {ENTRANCE, CLASSROOM} <= gateway.directory.channels.keys(), 60)
    gateway_id = gateway.config.id
    for platform in platforms.values():
        assert await wait_for(lambda p=platform: p.queries.is_registered(gateway_id), 30)  # type: ignore[misc]
        assert await wait_for(lambda platform=platform: platform.queries.request_catalog(gateway_id) is not None, 30)  # type: ignore[misc]  # taken once proven (H5)
        assert await wait_for(lambda p=platform: p.directory.device_of(ENTRANCE) == gateway_id, 30)  # type: ignore[misc]
    district, police = platforms["district"], platforms["police"]
    assert await wait_for(lambda: getattr(district.directory.channels.get(ENTRANCE), "ptz_type", None) == 1, 30)
    camera = next(a for a in fleet.agents.values() if ENTRANCE in {c.device_id for c in a.profile.channels})
    feature = next(f for f in camera.features if isinstance(f, PtzCameras))

    # The district platform's console route: the move reaches the camera, then the stop.
    base = f"http://127.0.0.1:{district.http_port}"
    status, body = await http_json(f"{base}/api/channels/{ENTRANCE}/ptz", {"action": "up_right", "speed": 200})
    assert (status, body["device_id"], body["confirmed"]) == (200, gateway_id, True)
    assert await wait_for(lambda: feature.moving(ENTRANCE), 20), "the relayed move reached the camera"
    assert (await http_json(f"{base}/api/channels/{ENTRANCE}/ptz", {"action": "stop"}))[0] == 200
    assert await wait_for(lambda: not feature.moving(ENTRANCE), 20)
    assert gateway.cascade is not None and gateway.cascade.control.relayed == 2
    # A command with a Result: relayed, and the device's answer comes back up with the upper's SN.
    status, body = await http_json(
        f"{base}/api/devices/{gateway_id}/control", {"command": "guard_set", "channel_id": ENTRANCE}
    )
    assert (status, body["result"]) == (200, "OK") and feature.state[ENTRANCE] == "armed"
    feature.result = "ERROR"
    status, _ = await http_json(
        f"{base}/api/devices/{gateway_id}/control", {"command": "iframe", "channel_id": CLASSROOM}
    )
    assert status == 502, "the device's ERROR is relayed upward"
    feature.result = "OK"

    # Refusals at the SIP level (403), before anything reaches the camera.
    received = feature.received_total

    async def ask(platform: Any, channel: str, command: Any) -> Any:
        return await platform.commands.request(gateway_id, CMD_DEVICE_CONTROL, control_body(channel, command), 10.0)

    refused = await ask(police, ENTRANCE, PtzControl(ptz_command("left", 100)))
    assert refused == CommandFailed("status_403"), "police may not steer without allow_ptz"
    assert await ask(police, CLASSROOM, IFrame()) == CommandFailed("status_403"), "not shared with the police"
    assert await ask(district, ENTRANCE, TeleBoot()) == CommandFailed("status_403"), "no reboot from above"
    assert await ask(district, "12010000001310009999", GuardControl(True)) == CommandFailed("status_403")
    assert feature.received_total == received
    # What the police may do: a key frame of a camera it shares.
    answer = await ask(police, ENTRANCE, IFrame())
    assert isinstance(answer, ResultResponse) and answer.ok
    assert feature.received_total == received + 1
    assert gateway.cascade.control.refused == 4
    # The police platform's own PTZ route tells its user that the gateway refused: 502 naming the 403.
    status, body = await http_json(
        f"http://127.0.0.1:{police.http_port}/api/channels/{ENTRANCE}/ptz", {"action": "left", "speed": 100}
    )
    assert status == 502 and "status_403" in body["error"], body
    assert not police.control.moving(ENTRANCE), "a refused move arms no automatic stop"
    assert feature.received_total == received + 1 and gateway.cascade.control.refused == 5
