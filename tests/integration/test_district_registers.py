"""A simulated district registers over UDP and over TCP and is fully catalogued."""

from __future__ import annotations

import pytest

from gateway.gb28181.sip.transport import Transport
from tests.conftest import http_json, wait_for


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP])
async def test_district_registers_and_reports_catalogs(gateway_factory, fleet_factory, transport):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=6, transport=transport)
    expected_channels = sum(len(a.profile.channels) for a in fleet.agents.values())

    assert await wait_for(lambda: service.directory.online_counts()[1] == len(fleet.agents), timeout=60)
    assert await wait_for(lambda: service.directory.online_counts()[2] == expected_channels, timeout=60)
    await service.writer.flush()

    api = f"http://127.0.0.1:{service.http_port}"
    status, devices = await http_json(f"{api}/api/devices?limit=1000")
    assert status == 200
    assert devices["total"] == len(fleet.agents)
    assert all(d["online"] and len(d["id"]) == 20 for d in devices["items"])
    assert all(d["kindergarten_id"] for d in devices["items"]), "placed by the provisioned kindergarten"
    assert {d["transport"] for d in devices["items"]} == {transport.value}

    status, channels = await http_json(f"{api}/api/channels?limit=1000")
    assert channels["total"] == expected_channels
    assert all(c["online"] for c in channels["items"])
    names = {c["name"] for c in channels["items"]}
    plan_names = {ch.name for k in fleet.city for d in k.devices for ch in d.channels}
    assert names == plan_names, "Chinese names arrive intact"


async def test_gateway_bound_to_all_interfaces_advertises_a_real_address(gateway_factory, fleet_factory):
    """Listening on 0.0.0.0 must never put 0.0.0.0 into Via/Contact: devices could not answer."""
    # Off loopback a node needs its own device password; auto enrolment is explicit (issue 10, M4).
    service = await gateway_factory(
        sip_host="0.0.0.0", sip_advertise="127.0.0.1", password="district-test-secret", enrolment="auto"
    )
    assert service.sip.access is not None and service.sip.access.endpoint.local_host == "127.0.0.1"
    fleet = await fleet_factory(service, kindergartens=1)
    assert await wait_for(lambda: service.directory.online_counts()[1] == len(fleet.agents), timeout=60)
    # the DeviceInfo query (our request, our Via) was answered: the device could reach us back
    assert await wait_for(lambda: all(s.row.manufacturer for s in service.directory.devices.values()), timeout=60)
