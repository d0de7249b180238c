"""H1 (catalog part): a device registered with the shared password lists another kindergarten's channel.

Before the fix the full-catalog path never asked who owned a channel (only the
platform's NOTIFY path did): the entrance camera moved to the attacker's device,
and with it live views, alarm snapshots and police calls. Now a catalog describes
only its sender's own channels; another device's channel is a conflict event
(logged, counted, listed by ``GET /api/conflicts``) and stays with its owner.

Real sockets on loopback: the gateway, a simulated kindergarten, and an attacker
NVR with a new ID that registers with the city-wide password.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from simulators import fleet as fleet_module
from simulators.city import SimDevice, SimKindergarten, build_city
from simulators.video import VideoProfile
from tests.conftest import http_json, wait_for

VIDEO = VideoProfile(width=320, height=180, seconds=2.0)
CITY = build_city(1, seed=2020, cameras_per_kindergarten=(3, 3))  # what the victim fleet simulates
KG = CITY[0]
NVR = next(d for d in KG.devices if d.kind == "nvr")
ENTRANCE = next(c for c in NVR.channels if c.area == "entrance")
ATTACKER_ID = f"{KG.district_code}0011118099990" + "0"  # a new NVR ID nobody provisioned
ATTACKER_OWN = f"{KG.district_code}0011131099990" + "1"  # a camera of its own


def _attacker_city() -> list[SimKindergarten]:
    own = replace(ENTRANCE, id=ATTACKER_OWN, name="某幼儿园·大门口")
    stolen = replace(ENTRANCE, name="某幼儿园·大门口2")  # the victim's entrance camera, by ID
    nvr = SimDevice(ATTACKER_ID, "nvr", "NVR", 118, NVR.manufacturer, NVR.model, NVR.firmware, (own, stolen))
    return [replace(KG, id=f"{KG.district_code}0011216099990" + "0", name="某幼儿园", devices=(nvr,))]


async def test_a_catalog_listing_another_kindergartens_camera_does_not_move_it(
    gateway_factory: Any, fleet_factory: Any, monkeypatch: Any
) -> None:
    gateway = await gateway_factory()
    api = f"http://127.0.0.1:{gateway.http_port}"
    victim = await fleet_factory(gateway, kindergartens=1, cameras=(3, 3), video=VIDEO)
    assert await wait_for(lambda: ENTRANCE.id in gateway.directory.channels, 60)
    assert gateway.directory.channels[ENTRANCE.id].device_id == NVR.id

    monkeypatch.setattr(fleet_module, "build_city", lambda *args, **kwargs: _attacker_city())
    attacker = await fleet_factory(gateway, provision=False, kindergartens=1, video=VIDEO)
    # Its catalog arrived once its own camera is there.
    assert await wait_for(lambda: ATTACKER_OWN in gateway.directory.channels, 60)

    channel = gateway.directory.channels[ENTRANCE.id]
    assert channel.device_id == NVR.id, "the entrance camera moved to the attacker's device"
    assert channel.kindergarten_id == KG.id and channel.name == ENTRANCE.name
    assert gateway.directory.device_of(ENTRANCE.id) == NVR.id

    # The conflict is an event operators see, and a metric.
    status, conflicts = await http_json(f"{api}/api/conflicts")
    assert status == 200 and conflicts["total"] >= 1
    event = conflicts["items"][0]
    assert (event["channel_id"], event["owner_id"], event["claimant_id"]) == (ENTRANCE.id, NVR.id, ATTACKER_ID)
    assert (gateway.metrics.get_sample_value("kgw_catalog_conflicts_total") or 0) >= 1
    status, page = await http_json(f"{api}/api/devices/{ATTACKER_ID}/channels")
    assert [item["id"] for item in page["items"]] == [ATTACKER_OWN]

    # The owner's next catalog changes nothing; a live view still goes to the owner.
    assert (await http_json(f"{api}/api/devices/{NVR.id}/query/Catalog", {}, method="POST"))[0] == 202
    assert gateway.live is not None
    stream, _viewer = await gateway.live.watch(ENTRANCE.id)
    assert victim.agents[NVR.id].stats.invites_received == 1
    assert attacker.agents[ATTACKER_ID].stats.invites_received == 0
    assert gateway.directory.channels[ENTRANCE.id].device_id == NVR.id
    assert stream is gateway.live.streams[ENTRANCE.id]
