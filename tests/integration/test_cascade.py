"""The cascade on loopback: simulated kindergartens → gateway → district / municipal / police platforms.

Every platform is a real ``GatewayService`` with a platform ID (type 200) on its own
ephemeral ports; the gateway registers with them over UDP with digest and answers
their Catalog queries with its policy's subset.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.app import GatewayService
from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper import UpperPlatformConfig
from gateway.config import UpperSpec
from gateway.registry.model import AreaTag, guess_area
from gbplatform.ids import platform_id
from tests.conftest import http_json, wait_for


def password_of(platform_id_: str) -> str:
    """Each platform's own password: what its lower platforms register with (never shared, issue 10 H1)."""
    return f"pw-{platform_id_}"


def upper(platform: GatewayService, level: str, district: str | None = None, **kw: Any) -> UpperSpec:
    link = UpperPlatformConfig(
        name=level if level != "district" else f"district-{district}",
        server_id=platform.config.id,
        host="127.0.0.1",
        port=platform.sip_port,
        password=password_of(platform.config.id),
        keepalive_interval=kw.pop("keepalive_interval", 5.0),
        register_retry_min=0.2,
        register_retry_max=1.0,
        **kw,
    )
    return UpperSpec(link, SharePolicy(PolicyLevel(level), district))


async def platform(platform_factory: Any, level: str, district: str | None = None, **kw: Any) -> GatewayService:
    own_id = platform_id(level, district)
    return await platform_factory(id=own_id, role=level, password=password_of(own_id), **kw)


async def channel_ids(service: GatewayService) -> set[str]:
    status, page = await http_json(f"http://127.0.0.1:{service.http_port}/api/channels?limit=1000")
    assert status == 200
    return {c["id"] for c in page["items"]}


def city_channels(gateway: GatewayService) -> dict[str, Any]:
    return dict(gateway.directory.channels)


def planned_channels(fleet: Any) -> int:
    """Channels the simulated city has: the gateway's directory is complete at this count."""
    return sum(len(d.channels) for k in fleet.city for d in k.devices)


async def test_star_each_upper_gets_exactly_its_policy_subset(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    heping, hexi = "120101", "120103"
    d1 = await platform(platform_factory, "district", heping)
    d2 = await platform(platform_factory, "district", hexi)
    municipal = await platform(platform_factory, "municipal")
    police = await platform(platform_factory, "police")
    gateway = await gateway_factory(
        upper_platforms=(
            upper(d1, "district", heping),
            upper(d2, "district", hexi),
            upper(municipal, "municipal"),
            upper(police, "police"),
        )
    )
    fleet = await fleet_factory(gateway, kindergartens=40, cameras=(4, 6))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    assert await wait_for(lambda: len(gateway.directory.channels) >= planned_channels(fleet), 60)
    # the uppers saw the gateway register and queried its catalog; ask again now that it is complete
    assert await wait_for(lambda: all(s["state"] == "registered" for s in gateway.cascade.status()), 30)
    for p in (d1, d2, municipal, police):
        assert await wait_for(lambda p=p: p.queries.is_registered(gateway.config.id), 30)  # type: ignore[misc]
        assert await wait_for(lambda p=p: p.queries.request_catalog(gateway.config.id) is not None, 30)  # type: ignore[misc]  # taken once proven (H5)
    everything = city_channels(gateway)
    expect = {
        d1: {i for i, c in everything.items() if c.district_code == heping},
        d2: {i for i, c in everything.items() if c.district_code == hexi},
        municipal: set(everything),
        police: {i for i, c in everything.items() if SharePolicy.police().allows_channel(c)},
    }
    assert expect[d1] and expect[d2] and expect[police]
    for p, wanted in expect.items():
        assert await wait_for(lambda p=p, wanted=wanted: len(p.directory.channels) == len(wanted), 60), (
            p.config.id,
            len(p.directory.channels),
            len(wanted),
        )  # type: ignore[misc]
        assert set(p.directory.channels) == wanted
        await p.writer.flush()
        assert await channel_ids(p) == wanted  # the registry has them too
    # police: never an indoor camera, over the whole simulated city
    for channel in police.directory.channels.values():
        assert channel.type_code == 134 or (AreaTag(guess_area(channel.name)).is_public), channel
    # the platforms learned the kindergartens from the tree, with names
    kg = fleet.city[0]
    assert municipal.directory.kindergartens[kg.id].name == kg.name
    status, uppers = await http_json(f"http://127.0.0.1:{gateway.http_port}/api/upper-platforms")
    assert {u["name"]: u["state"] for u in uppers["items"]} == {
        f"district-{heping}": "registered",
        f"district-{hexi}": "registered",
        "municipal": "registered",
        "police": "registered",
    }


async def test_three_level_chain_municipal_sees_exactly_the_district(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    """devices → gateway → district platform → municipal platform."""
    municipal = await platform(platform_factory, "municipal")
    fleet_probe_district = "120101"
    district = await platform(
        gateway_factory, "district", fleet_probe_district, upper_platforms=(upper(municipal, "municipal"),)
    )
    gateway = await gateway_factory(upper_platforms=(upper(district, "district", fleet_probe_district),))
    fleet = await fleet_factory(gateway, kindergartens=60, cameras=(3, 4))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    assert await wait_for(lambda: len(gateway.directory.channels) >= planned_channels(fleet), 60)
    wanted = {i for i, c in gateway.directory.channels.items() if c.district_code == fleet_probe_district}
    assert wanted, "the simulated city should have kindergartens in 和平区"
    # Each query needs its target registered with the asking platform (else ask() returns None).
    assert await wait_for(lambda: district.queries.is_registered(gateway.config.id), 30)
    assert await wait_for(
        lambda: district.queries.request_catalog(gateway.config.id) is not None, 30
    )  # taken once proven (H5)
    assert await wait_for(lambda: set(district.directory.channels) == wanted, 60)
    assert await wait_for(lambda: municipal.queries.is_registered(district.config.id), 30)
    assert await wait_for(
        lambda: municipal.queries.request_catalog(district.config.id) is not None, 30
    )  # taken once proven (H5)
    assert await wait_for(lambda: set(municipal.directory.channels) == wanted, 60), (
        len(municipal.directory.channels),
        len(wanted),
    )


async def test_upper_restart_gets_the_gateway_back_without_help(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any, tmp_path: Any
) -> None:
    db = str(tmp_path / "municipal.db")
    municipal = await platform(platform_factory, "municipal", db=db)
    port = municipal.sip_port
    gateway = await gateway_factory(upper_platforms=(upper(municipal, "municipal", keepalive_interval=1.0),))
    fleet = await fleet_factory(gateway, kindergartens=2, cameras=(2, 2))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    assert await wait_for(
        lambda: (
            gateway.config.id in municipal.directory.devices
            and municipal.directory.devices[gateway.config.id].row.online
        ),
        30,
    )
    await municipal.stop()
    assert await wait_for(lambda: gateway.cascade.status()[0]["state"] != "registered", 30)
    restarted = await platform(platform_factory, "municipal", db=":memory:", sip_port=port)  # forgot everything
    assert await wait_for(lambda: gateway.cascade.status()[0]["state"] == "registered", 60)
    assert await wait_for(lambda: restarted.queries.is_registered(gateway.config.id), 30)
    # An explicit query is taken once the registered gateway has answered the platform's paced initial
    # queries (H5: an unproven registration gets only those); under load that can take a moment.
    assert await wait_for(lambda: restarted.queries.request_catalog(gateway.config.id) is not None, 30)
    assert await wait_for(lambda: len(restarted.directory.channels) == len(gateway.directory.channels) > 0, 60)


async def test_an_alarm_reaches_district_municipal_and_police_once_each(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    fleet_district = "120101"
    d1 = await platform(platform_factory, "district", fleet_district)
    other = await platform(platform_factory, "district", "120103")
    municipal = await platform(platform_factory, "municipal")
    police = await platform(platform_factory, "police")
    gateway = await gateway_factory(
        upper_platforms=(
            upper(d1, "district", fleet_district),
            upper(other, "district", "120103"),
            upper(municipal, "municipal"),
            upper(police, "police"),
        )
    )
    fleet = await fleet_factory(gateway, kindergartens=30, cameras=(2, 3))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    assert await wait_for(lambda: all(s["state"] == "registered" for s in gateway.cascade.status()), 30)
    kg = next(k for k in fleet.city if k.district_code == fleet_district)
    for p in (d1, municipal, police):
        assert await wait_for(lambda p=p: p.queries.is_registered(gateway.config.id), 30)  # type: ignore[misc]
        assert await wait_for(lambda p=p: p.queries.request_catalog(gateway.config.id) is not None, 30)  # type: ignore[misc]  # taken once proven (H5)
    # Each platform holds this kindergarten's alarm input (type 134) before the press: a platform places
    # an alarm by its source channel, and an alarm now overtakes catalog traffic (alarms first, issue 12).
    assert await wait_for(
        lambda: all(
            any(c.kindergarten_id == kg.id and c.id[10:13] == "134" for c in p.directory.channels.values())
            for p in (d1, municipal, police)
        ),
        60,
    )
    fleet.press(kg.id, "button")
    fleet.press(kg.id, "tamper")  # a device fault: not for the police
    for p in (d1, municipal):
        assert await wait_for(lambda p=p: p.alarms is not None and p.alarms.counters["received"] == 2, 60)  # type: ignore[misc]
    assert await wait_for(lambda: police.alarms is not None and police.alarms.counters["received"] == 1, 60)
    # Done: the gateway's GB/T 28181 sink has no delivery left (each counts as delivered only once
    # every platform it targets answered 2xx, after storing it). Nothing more can be sent now.
    assert gateway.alarms is not None
    assert await wait_for(lambda: gateway.alarms.outbox.depth("gb") == 0, 60)
    assert other.alarms is not None and other.alarms.counters["received"] == 0  # another district
    assert [p.alarms.counters["received"] for p in (d1, municipal, police)] == [2, 2, 1]  # once each
    status, listed = await http_json(f"http://127.0.0.1:{police.http_port}/api/alarms")
    alarm = listed["items"][0]
    assert alarm["kind"] == "one_button" and alarm["kindergarten_id"] == kg.id
    assert alarm["kindergarten_name"] == kg.name
    assert alarm["live_channel_id"] in police.directory.channels  # 查看现场 on the police console: the entrance camera
    assert gateway.alarms is not None and gateway.alarms.outbox.depth("gb") == 0


async def test_subscribed_platform_follows_changes_without_asking(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    """The municipal platform subscribes to the gateway's catalog when it registers; channels that
    come later arrive by NOTIFY, and a device going away turns its channels OFF up there."""
    municipal = await platform(platform_factory, "municipal")
    gateway = await gateway_factory(upper_platforms=(upper(municipal, "municipal"),))
    assert await wait_for(lambda: gateway.cascade.status()[0]["subscriptions"] == 1, 30)
    fleet = await fleet_factory(gateway, kindergartens=3, cameras=(2, 3))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    assert await wait_for(
        lambda: (
            len(gateway.directory.channels) >= planned_channels(fleet)
            and set(municipal.directory.channels) == set(gateway.directory.channels)
        ),
        60,
    )
    kg = fleet.city[0]
    assert all(municipal.directory.channels[c.id].kindergarten_id == kg.id for d in kg.devices for c in d.channels)
    nvr = next(d for d in kg.devices if d.kind == "nvr")
    agent = fleet.agents[nvr.id]
    agent.stop(asyncio.get_running_loop().time(), unregister=True)
    cameras = [c.id for c in nvr.channels]
    assert await wait_for(lambda: all(not municipal.directory.channels[i].online for i in cameras), 30)
    assert all(
        municipal.directory.channels[c].online
        for c in municipal.directory.channels
        if c not in cameras and gateway.directory.channels[c].online
    )


async def test_an_upper_over_tcp_registers_and_comes_back_after_a_restart(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    """transport = "TCP": the gateway opens the connection, registers over it, and after the upper
    restarts (the connection drops) connects again and registers again by itself."""
    municipal = await platform(platform_factory, "municipal")
    port = municipal.sip_port
    gateway = await gateway_factory(
        upper_platforms=(upper(municipal, "municipal", transport="TCP", keepalive_interval=1.0),)
    )
    assert await wait_for(lambda: gateway.cascade.status()[0]["state"] == "registered", 30)
    assert municipal.directory.devices[gateway.config.id].row.transport == "TCP"
    fleet = await fleet_factory(gateway, kindergartens=2, cameras=(2, 2))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    assert await wait_for(
        lambda: (
            len(gateway.directory.channels) >= planned_channels(fleet)
            and set(municipal.directory.channels) == set(gateway.directory.channels)
        ),
        60,
    )
    await municipal.stop()
    assert await wait_for(lambda: gateway.cascade.status()[0]["state"] != "registered", 30)
    restarted = await platform(platform_factory, "municipal", sip_port=port)
    assert await wait_for(lambda: gateway.cascade.status()[0]["state"] == "registered", 60)
    assert await wait_for(lambda: set(restarted.directory.channels) == set(gateway.directory.channels), 60)
