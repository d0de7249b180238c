"""L5: any device's catalog could create kindergarten (216) nodes.

A platform (``kgw platform``) learns kindergartens from its lower platforms'
trees. Before the fix it learned them from *any* registered device: an NVR
registered with the shared password that put a 216 node in its catalog created
a kindergarten (shown in consoles, sent up to the next platform). Now only
configured kindergartens exist: provisioned by an operator, or taught by a lower
platform or gateway (a central device) within its own administrative area. The
refused node is counted and logged; its channels are placed by their device.

Real sockets on loopback: a municipal platform and a simulated kindergarten whose
NVR registers with it directly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.gb28181.device_agent import DeviceProfile
from gateway.gb28181.manscdp import CatalogItem
from simulators import fleet as fleet_module
from simulators.city import SimDevice, SimKindergarten, build_city
from tests.conftest import http_json, wait_for

MUNICIPAL_ID = "12010000002000000001"
CITY = build_city(1, seed=2020, cameras_per_kindergarten=(3, 3))
KG = CITY[0]
NVR = next(d for d in KG.devices if d.kind == "nvr")
FAKE_KG = f"{KG.district_code}0011216099990" + "0"  # nobody configured this kindergarten
_device_profile = fleet_module.device_profile


def _forged_tree(device: SimDevice, kindergarten: SimKindergarten, password: str, **options: Any) -> DeviceProfile:
    """The NVR's catalog, with a 216 node its cameras hang under."""
    profile = _device_profile(device, kindergarten, password, **options)
    if device.id != NVR.id:
        return profile
    node = CatalogItem(device_id=FAKE_KG, name="伪造幼儿园", civil_code=KG.district_code)
    cameras = tuple(replace(item, parent_id=FAKE_KG) for item in profile.channels)
    return replace(profile, channels=(node, *cameras))


async def test_a_devices_catalog_does_not_create_a_kindergarten(
    platform_factory: Any, fleet_factory: Any, monkeypatch: Any
) -> None:
    platform = await platform_factory(id=MUNICIPAL_ID, role="municipal", password="platform-pw")
    monkeypatch.setattr(fleet_module, "device_profile", _forged_tree)
    await fleet_factory(platform, kindergartens=1, cameras=(3, 3))  # the real kindergarten is provisioned
    cameras = [c.id for c in NVR.channels]
    assert await wait_for(lambda: all(c in platform.directory.channels for c in cameras), 60)

    assert FAKE_KG not in platform.directory.kindergartens, "an NVR's catalog created a kindergarten"
    assert set(platform.directory.kindergartens) == {KG.id}
    # Its channels are placed by their device's (provisioned) kindergarten instead.
    assert all(platform.directory.channels[c].kindergarten_id == KG.id for c in cameras)
    status, page = await http_json(f"http://127.0.0.1:{platform.http_port}/api/kindergartens")
    assert status == 200 and [item["id"] for item in page["items"]] == [KG.id]
    # Counted and visible.
    status, conflicts = await http_json(f"http://127.0.0.1:{platform.http_port}/api/conflicts")
    assert status == 200 and conflicts["unknown_kindergartens"] >= 1
    assert (platform.metrics.get_sample_value("kgw_catalog_unknown_kindergartens_total") or 0) >= 1
