"""A device's life on real sockets: refused, online, silent, back, unregistered, restarted.

Short timings everywhere: the gateway declares a device offline after
``keepalive_interval × keepalive_missed`` = 3 s of silence, and simulated
devices keep alive every 0.2 s. The margin (15 keepalives) is what lets a
busy machine stall the event loop for a while without a device that keeps
alive being declared offline, which is not what these tests are about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set as AbstractSet
from typing import Any

from gateway.app import GatewayService
from gateway.config import load_config
from gateway.gb28181.device_agent import AgentHost, AgentTiming, DeviceAgent, DeviceProfile, ServerInfo
from gateway.gb28181.manscdp import CatalogItem
from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.idsource import RandomIds
from gateway.gb28181.sip.router import SipRouter
from gateway.gb28181.sip.transport import Peer, Transport
from gateway.io.sip_io import SipDriver
from gbplatform.app import build_gateway
from simulators.fleet import Fleet
from tests.conftest import TEST_TOKEN_GRANT, http_json, wait_for

FAST_GATEWAY: dict[str, Any] = {"keepalive_interval": 1.0, "keepalive_missed": 3}
FAST_FLEET: dict[str, Any] = {"keepalive_interval": 0.2}


def api(service: GatewayService) -> str:
    return f"http://127.0.0.1:{service.http_port}"


def expected_channels(fleet: Fleet, *, skip: AbstractSet[str] = frozenset()) -> int:
    return sum(len(a.profile.channels) for i, a in fleet.agents.items() if i not in skip)


def node_of(fleet: Fleet, device_id: str) -> Any:
    """The kindergarten node (socket + driver) whose host carries ``device_id``."""
    return next(n for n in fleet.nodes if device_id in n.host.agents)


async def all_registered(service: GatewayService, fleet: Fleet, *, skip: AbstractSet[str] = frozenset()) -> None:
    wanted = len(fleet.agents) - len(skip)
    assert await wait_for(lambda: service.directory.online_counts()[1] == wanted, timeout=60)
    channels = expected_channels(fleet, skip=skip)
    assert await wait_for(lambda: service.directory.online_counts()[2] == channels, timeout=60)


async def test_wrong_password_is_refused_and_others_register(gateway_factory, fleet_factory):
    service = await gateway_factory(**FAST_GATEWAY)
    fleet = await fleet_factory(service, kindergartens=3, wrong_password=1, **FAST_FLEET)
    bad = [i for i, a in fleet.agents.items() if a.misbehaviour.wrong_password]
    assert len(bad) == 1
    bad_id = bad[0]
    agent = fleet.agents[bad_id]

    await all_registered(service, fleet, skip={bad_id})
    assert await wait_for(lambda: agent.stats.last_refusal is not None, timeout=30)
    assert agent.stats.last_refusal == 403, "a wrong password gets 403, not another 401"
    assert not agent.registered
    assert all(a.registered for i, a in fleet.agents.items() if i != bad_id)

    await service.writer.flush()
    state = service.directory.devices.get(bad_id)
    assert state is None or not state.row.online
    assert service.sip.access is not None and bad_id not in service.sip.access.sessions
    status, body = await http_json(f"{api(service)}/api/devices/{bad_id}")
    assert status == 404 or body["online"] is False
    status, online = await http_json(f"{api(service)}/api/devices?online=true&limit=1000")
    assert status == 200
    ids = {d["id"] for d in online["items"]}
    assert bad_id not in ids
    assert online["total"] == len(fleet.agents) - 1


async def test_silent_device_goes_offline_and_comes_back(gateway_factory, fleet_factory):
    service = await gateway_factory(**FAST_GATEWAY)
    fleet = await fleet_factory(service, kindergartens=2, **FAST_FLEET)
    await all_registered(service, fleet)
    device_id, agent = next(iter(fleet.agents.items()))
    total = len(fleet.agents)

    agent.misbehaviour.silent = True
    assert await wait_for(lambda: not service.directory.devices[device_id].row.online, timeout=30)
    assert service.directory.online_counts()[1] == total - 1
    assert service.directory.online_counts()[2] == expected_channels(fleet, skip={device_id})
    await service.writer.flush()

    status, device = await http_json(f"{api(service)}/api/devices/{device_id}")
    assert status == 200 and device["online"] is False
    status, channels = await http_json(f"{api(service)}/api/channels?device={device_id}&limit=1000")
    assert status == 200 and channels["total"] == len(agent.profile.channels)
    assert not any(c["online"] for c in channels["items"])
    status, events = await http_json(f"{api(service)}/api/events?entity={device_id}")
    assert status == 200
    latest = events["items"][0]
    assert latest["online"] is False and latest["reason"] == "keepalive_timeout"

    loop = asyncio.get_running_loop()
    agent.misbehaviour.silent = False
    agent.send_keepalive_now(loop.time())

    assert await wait_for(lambda: service.directory.devices[device_id].row.online, timeout=30)
    assert service.directory.online_counts()[1] == total
    assert service.directory.online_counts()[2] == expected_channels(fleet)
    await service.writer.flush()
    status, device = await http_json(f"{api(service)}/api/devices/{device_id}")
    assert status == 200 and device["online"] is True
    status, channels = await http_json(f"{api(service)}/api/channels?device={device_id}&online=true&limit=1000")
    assert channels["total"] == len(agent.profile.channels)
    status, events = await http_json(f"{api(service)}/api/events?entity={device_id}")
    assert events["items"][0]["online"] is True
    assert events["items"][0]["reason"] == "keepalive"


async def test_nvr_with_500_channels_is_fully_catalogued(gateway_factory):
    service = await gateway_factory(**FAST_GATEWAY)
    nvr_id = "12010100111180099900"
    items = tuple(
        CatalogItem(
            device_id=f"1201010011131{n:07d}",
            name=f"和平区测试幼儿园 · 通道{n}",
            manufacturer="kgw-sim",
            model="SIM-IPC",
            owner="Owner",
            civil_code="120101",
            address="测试路1号",
            parental=0,
            parent_id=nvr_id,
            safety_way=0,
            register_way=1,
            secrecy=0,
            status="ON",
        )
        for n in range(1, 501)
    )
    profile = DeviceProfile(device_id=nvr_id, password=service.config.password, name="500路NVR", channels=items)
    loop = asyncio.get_running_loop()
    endpoint = SipEndpoint(RandomIds(), user_agent="kgw-test-nvr")
    host = AgentHost(endpoint)
    driver = SipDriver(SipRouter(endpoint, [host], unclaimed_status=404))
    await driver.listen("127.0.0.1", 0, tcp=False)
    server = ServerInfo(
        server_id=service.config.id,
        domain=service.config.domain,
        peer=Peer(Transport.UDP, "127.0.0.1", service.sip_port),
    )
    agent = DeviceAgent(profile, server, endpoint, timing=AgentTiming(keepalive_interval=0.2))
    host.add(agent)
    try:
        host.start_all(loop.time())
        assert await wait_for(lambda: agent.registered, timeout=30)
        assert await wait_for(lambda: len(service.directory.devices[nvr_id].reported) == 500, timeout=60)
        assert service.directory.online_counts()[2] == 500
        await service.writer.flush()
        status, page = await http_json(f"{api(service)}/api/channels?device={nvr_id}&limit=1000")
        assert status == 200
        assert page["total"] == 500
        assert {c["id"] for c in page["items"]} == {i.device_id for i in items}
        status, device = await http_json(f"{api(service)}/api/devices/{nvr_id}")
        assert device["channel_count"] == 500
    finally:
        agent.stop(loop.time(), unregister=False)
        driver.close()


async def test_unregister_takes_devices_offline(gateway_factory, fleet_factory):
    service = await gateway_factory(**FAST_GATEWAY)
    fleet = await fleet_factory(service, kindergartens=2, **FAST_FLEET)
    await all_registered(service, fleet)

    await fleet.stop(unregister=True)
    assert await wait_for(lambda: service.directory.online_counts()[1] == 0, timeout=30)
    assert service.directory.online_counts()[2] == 0
    assert service.sip.access is not None and not service.sip.access.sessions
    await service.writer.flush()
    status, devices = await http_json(f"{api(service)}/api/devices?limit=1000")
    assert status == 200 and devices["total"] == len(fleet.agents)
    assert not any(d["online"] for d in devices["items"])
    status, events = await http_json(f"{api(service)}/api/events?limit=1000")
    latest: dict[str, dict[str, Any]] = {}
    for event in events["items"]:  # newest first
        latest.setdefault(event["entity_id"], event)
    for device_id in fleet.agents:
        assert latest[device_id]["online"] is False
        assert latest[device_id]["reason"] == "unregistered"


async def _start_gateway(**settings: Any) -> GatewayService:
    values: dict[str, Any] = {"http_port": 0, "flush_interval": 0.2, "api_tokens": (TEST_TOKEN_GRANT,), **FAST_GATEWAY}
    values.update(settings)
    service = build_gateway(load_config(None, **values))
    await service.start()
    return service


async def _restart(tmp_path, fleet_factory) -> tuple[GatewayService, Fleet, int]:
    """Register a fleet, stop the gateway, start a new one on the same db and SIP port."""
    db = str(tmp_path / "registry.db")
    first = await _start_gateway(db=db, sip_port=0)
    try:
        fleet = await fleet_factory(first, kindergartens=2, **FAST_FLEET)
        await all_registered(first, fleet)
        await first.writer.flush()
    finally:
        await first.stop()
    registrations = sum(a.stats.registrations for a in fleet.agents.values())
    # While no gateway listens, every device sends a keepalive that goes nowhere.
    sent = {i: a.stats.keepalives_sent for i, a in fleet.agents.items()}
    assert await wait_for(lambda: all(a.stats.keepalives_sent > sent[i] for i, a in fleet.agents.items()), 30)
    second = await _start_gateway(db=db, sip_port=first.sip_port)
    return second, fleet, registrations


async def test_restart_keeps_devices_channels_and_kindergartens(tmp_path, fleet_factory):
    service, fleet, registrations = await _restart(tmp_path, fleet_factory)
    try:
        restarted_at = asyncio.get_running_loop().time()
        status, devices = await http_json(f"{api(service)}/api/devices?limit=1000")
        assert status == 200 and devices["total"] == len(fleet.agents)
        plan = {d.id: k.id for k in fleet.city for d in k.devices}
        assert {d["id"]: d["kindergarten_id"] for d in devices["items"]} == plan
        status, channels = await http_json(f"{api(service)}/api/channels?limit=1000")
        assert channels["total"] == expected_channels(fleet)
        status, kindergartens = await http_json(f"{api(service)}/api/kindergartens")
        assert {k["id"] for k in kindergartens["items"]} == {k.id for k in fleet.city}

        access = service.sip.access
        assert access is not None
        assert await wait_for(
            lambda: all((access.liveness.last_seen(i) or 0) > restarted_at for i in fleet.agents), timeout=30
        ), "every device is heard from again"
        assert await wait_for(lambda: service.directory.online_counts()[1] == len(fleet.agents), timeout=30)
        # The restored sessions had one silence window from the restart to prove themselves. Wait
        # until every device was heard after that window and the gateway has checked its
        # deadlines (its next liveness timer lies beyond the window): a device not kept online
        # by its keepalives would be offline by then.
        liveness = access.liveness
        window_end = restarted_at + liveness.silence_limit
        assert await wait_for(
            lambda: (
                (liveness.get_timer() or 0.0) > window_end
                and all((liveness.last_seen(i) or 0.0) > window_end for i in fleet.agents)
            ),
            timeout=60,
        )
        assert service.directory.online_counts()[1] == len(fleet.agents), "still online on keepalives alone"
        assert sum(a.stats.registrations for a in fleet.agents.values()) == registrations, "no re-registration"
        await service.writer.flush()
        status, online = await http_json(f"{api(service)}/api/devices?online=true&limit=1000")
        assert online["total"] == len(fleet.agents)
        status, events = await http_json(f"{api(service)}/api/events?since={service.wall(restarted_at)}&limit=1000")
        assert status == 200 and not [e for e in events["items"] if not e["online"]], "no device went offline"
    finally:
        await service.stop()


async def test_restart_keeps_channels_online_in_memory(tmp_path, fleet_factory):
    service, fleet, _ = await _restart(tmp_path, fleet_factory)
    try:
        assert await wait_for(lambda: service.directory.online_counts()[1] == len(fleet.agents), timeout=30)
        assert await wait_for(lambda: service.directory.online_counts()[2] == expected_channels(fleet), timeout=30)
    finally:
        await service.stop()
