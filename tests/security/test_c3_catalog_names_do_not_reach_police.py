"""C3 (catalog half): a device's names never decide what the police see.

The attack: an NVR (the real one, or anyone registered with the shared password)
renames its 午睡室 camera ``…·大门口`` in its catalog. Before the fix the gateway
tagged it entrance from the name and the police platform received and could play
the nap-room feed. Now only an area an operator confirmed shares a camera.

Real sockets on loopback: a police platform (a ``kgw platform`` node), the gateway
registered with it, a simulated kindergarten registered with the gateway.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

import pytest

from gateway.app import GatewayService
from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper import UpperPlatformConfig
from gateway.config import UpperSpec
from gateway.live import LiveError
from gateway.registry.model import Channel
from simulators.city import build_city
from tests.conftest import http_json, wait_for

PASSWORD = "platform-pw"
POLICE_ID = "12010000002000000110"
CITY = build_city(1, seed=2020, cameras_per_kindergarten=(4, 4))  # what the fleet below simulates
KG = CITY[0]
NVR = next(d for d in KG.devices if d.kind == "nvr")
_CAMERAS = {c.area: c.id for c in NVR.channels}
ENTRANCE, NAP_ROOM = _CAMERAS["entrance"], _CAMERAS["dormitory"]


def _police_upper(police: GatewayService) -> UpperSpec:
    link = UpperPlatformConfig(
        name="police",
        server_id=police.config.id,
        host="127.0.0.1",
        port=police.sip_port,
        password=PASSWORD,
        register_retry_min=0.2,
        register_retry_max=1.0,
    )
    return UpperSpec(link, SharePolicy(PolicyLevel.POLICE))


def _catalogs(node: GatewayService) -> float:
    return node.metrics.get_sample_value("kgw_catalogs_total", {"result": "complete"}) or 0.0


async def _police_catalog(police: GatewayService, gateway: GatewayService) -> None:
    """Have the police platform fetch the gateway's whole catalog, and wait until it has applied it."""
    done = _catalogs(police)
    assert await wait_for(
        lambda: police.queries.request_catalog(gateway.config.id) is not None, 30
    )  # taken once proven (H5)
    assert await wait_for(lambda: _catalogs(police) > done, 30)


async def test_a_nap_room_camera_renamed_to_the_gate_never_reaches_police(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    police = await platform_factory(id=POLICE_ID, role="police", password=PASSWORD)
    gateway = await gateway_factory(upper_platforms=(_police_upper(police),))
    api = f"http://127.0.0.1:{gateway.http_port}"
    # The operator provisioned the kindergarten; nobody has confirmed any camera's area yet.
    row = {"id": KG.id, "name": KG.name, "district_code": KG.district_code, "address": KG.address}
    assert (await http_json(f"{api}/api/kindergartens", [row]))[0] == 201
    fleet = await fleet_factory(gateway, provision=False, kindergartens=1, cameras=(4, 4))
    assert await wait_for(lambda: {ENTRANCE, NAP_ROOM} <= gateway.directory.channels.keys(), 60)
    assert await wait_for(lambda: police.queries.is_registered(gateway.config.id), 30)

    # The NVR's own catalog now calls the nap-room camera the gate.
    agent = fleet.agents[NVR.id]
    forged = f"{KG.name}·大门口"
    agent.profile = replace(
        agent.profile,
        channels=tuple(replace(i, name=forged) if i.device_id == NAP_ROOM else i for i in agent.profile.channels),
    )
    status, _ = await http_json(f"{api}/api/devices/{NVR.id}/query/Catalog", {}, method="POST")
    assert status == 202
    assert await wait_for(lambda: gateway.directory.channels[NAP_ROOM].name == forged, 30)

    await _police_catalog(police, gateway)
    assert NAP_ROOM not in police.directory.channels, "the police platform received the 午睡室 camera"
    assert ENTRANCE not in police.directory.channels, "a name alone shares no camera"

    # Even asked for by ID (as if the police guessed it), the gateway refuses to play it.
    police.directory.upsert_channels(gateway.config.id, [Channel(NAP_ROOM, gateway.config.id, None, KG.district_code)])
    assert police.live is not None
    with pytest.raises(LiveError, match="Forbidden"):
        await police.live.watch(NAP_ROOM)

    # The console shows the suggestion apart from the (missing) confirmation.
    status, page = await http_json(f"{api}/api/channels?device={NVR.id}")
    listed = {item["id"]: item for item in page["items"]}
    assert listed[NAP_ROOM]["area_suggested"] == "entrance" and listed[NAP_ROOM]["confirmed_area"] is None

    # An operator confirms the real entrance camera: the police get it at once (catalog NOTIFY).
    status, body = await http_json(f"{api}/api/channels/{ENTRANCE}/area", {"area": "entrance"}, method="PUT")
    assert status == 200 and body["confirmed_area"] == "entrance", body
    assert await wait_for(lambda: ENTRANCE in police.directory.channels, 30)
    # Confirming the nap room for what it is keeps it private whatever the device calls it.
    status, body = await http_json(f"{api}/api/channels/{NAP_ROOM}/area", {"area": "dormitory"}, method="PUT")
    assert status == 200 and body["confirmed_area"] == "dormitory" and body["area_suggested"] == "entrance"
    await _police_catalog(police, gateway)
    assert ENTRANCE in police.directory.channels and NAP_ROOM not in police.directory.channels


async def test_a_confirmed_entrance_renamed_indoor_is_withdrawn_and_flagged(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    """The installer confirmed the cameras (as the demo does); the device later renames the gate camera
    a classroom: the confirmation stays, flagged for review, and the police lose the camera meanwhile."""
    police = await platform_factory(id=POLICE_ID, role="police", password=PASSWORD)
    gateway = await gateway_factory(upper_platforms=(_police_upper(police),))
    api = f"http://127.0.0.1:{gateway.http_port}"
    fleet = await fleet_factory(gateway, kindergartens=1, cameras=(4, 4))  # provisioned with confirmed areas
    assert await wait_for(lambda: {ENTRANCE, NAP_ROOM} <= gateway.directory.channels.keys(), 60)
    assert await wait_for(lambda: police.queries.is_registered(gateway.config.id), 30)
    await _police_catalog(police, gateway)
    assert ENTRANCE in police.directory.channels and NAP_ROOM not in police.directory.channels

    agent = fleet.agents[NVR.id]
    renamed = f"{KG.name}·小一班教室"
    agent.profile = replace(
        agent.profile,
        channels=tuple(replace(i, name=renamed) if i.device_id == ENTRANCE else i for i in agent.profile.channels),
    )
    assert (await http_json(f"{api}/api/devices/{NVR.id}/query/Catalog", {}, method="POST"))[0] == 202
    assert await wait_for(lambda: gateway.directory.channels[ENTRANCE].name == renamed, 30)
    channel = gateway.directory.channels[ENTRANCE]
    assert channel.confirmed_area is not None and channel.confirmed_area.value == "entrance" and channel.area_review
    await _police_catalog(police, gateway)
    assert ENTRANCE not in police.directory.channels


async def test_the_area_api_refuses_what_is_not_a_confirmation(gateway_factory: Any, fleet_factory: Any) -> None:
    gateway = await gateway_factory()
    api = f"http://127.0.0.1:{gateway.http_port}"
    await fleet_factory(gateway, kindergartens=1, cameras=(4, 4))
    assert await wait_for(lambda: ENTRANCE in gateway.directory.channels, 60)
    url = f"{api}/api/channels/{ENTRANCE}/area"
    assert (await http_json(url, {"area": "garden"}, method="PUT"))[0] == 400
    assert (await http_json(url, {"zone": "entrance"}, method="PUT"))[0] == 400
    assert (await http_json(f"{api}/api/channels/{KG.id[:10]}1310009999/area", {"area": "entrance"}, "PUT"))[0] == 404

    def text_plain() -> int:  # a cross-site form post cannot confirm a camera for police
        request = urllib.request.Request(url, b'{"area": "entrance"}', {"Content-Type": "text/plain"}, method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert await asyncio.to_thread(text_plain) == 415
    # Withdrawing the installer's confirmation: the camera is private again.
    status, body = await http_json(url, {"area": None}, method="PUT")
    assert status == 200 and body["confirmed_area"] is None and body["confirmed_by"] == ""
    assert gateway.directory.entrance_camera(KG.id) is None
