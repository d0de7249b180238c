"""CascadeService with three upper platforms on an in-memory SIP network.

The gateway's node routes ``[cascade.host, cascade.relay, tail]`` and drains
the service after every flush (the composition root's ``on_activity``); the
uppers (municipal, police, the Heping district) are :class:`Upper` fakes that
register us, answer MESSAGEs and NOTIFYs, and send SUBSCRIBEs and INVITEs.
The directory is a real one with a small city (tests/unit/service_fakes.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from gateway.alarms.model import Alarm, AlarmMethod, DeliveryEvent
from gateway.alarms.sinks.base import OutboundMessage
from gateway.cascade import service as service_module
from gateway.cascade.service import CascadeService
from gateway.gb28181.manscdp import (
    AlarmNotify,
    CatalogQuery,
    CatalogResponse,
    DeviceStatusQuery,
    decode_message,
    serialize,
)
from gateway.gb28181.play import PlayStarted
from gateway.gb28181.sip.transport import Peer
from gateway.registry.directory import ChannelChange
from gateway.registry.model import AreaTag, Channel
from tests.conftest import wait_for
from tests.unit.service_city import (
    ALARM_BUTTON,
    ALL_CHANNELS,
    BACK_GATE,
    CLASSROOM,
    ENTRANCE,
    HEPING,
    HEXI,
    HEXI_GATE,
    KG1_CHANNELS,
    NAP_ROOM,
    NVR_1,
    PERIMETER,
    UPPERS,
    add_upper,
    channel_id,
    city_channel,
    city_directory,
    upper_request,
    upper_spec,
)
from tests.unit.service_fakes import FakeLive, FakeSip, Upper, gateway_endpoint
from tests.unit.sip_memnet import GW_ID, WALL_OFFSET, MemNet, Tail

POLICE_SEES = {ENTRANCE: "ON", PERIMETER: "ON", BACK_GATE: "OFF", ALARM_BUTTON: "ON", HEXI_GATE: "OFF"}


class NoTcp:
    """``TcpConnector`` for UDP-only uppers: never used."""

    def has_connection(self, host: str, port: int) -> bool:
        raise AssertionError("no upper is on TCP")

    async def open_tcp(self, host: str, port: int) -> Peer:
        raise AssertionError("no upper is on TCP")


@dataclass
class Rig:
    net: MemNet
    service: CascadeService
    live: FakeLive
    uppers: dict[str, Upper]
    tail: Tail

    @property
    def now(self) -> float:
        return self.net.loop.time()


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig() -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []

    async def make(*, refused: tuple[str, ...] = ()) -> Rig:
        """Every upper of UPPERS; those in ``refused`` answer our REGISTER 403, the others accept it."""
        net = MemNet()
        gw = gateway_endpoint()
        live = FakeLive()
        specs = [upper_spec(name) for name in UPPERS]
        service = CascadeService(specs, FakeSip(gw), city_directory(), live, wall_offset=WALL_OFFSET)
        tail = Tail(gw)
        net.add("gw", gw, [service.host, service.relay, tail], on_activity=service.drain)
        uppers = {name: add_upper(net, name, register_status=403 if name in refused else 200) for name in UPPERS}
        rig = Rig(net, service, live, uppers, tail)
        rigs.append(rig)
        service.start(rig.now, NoTcp())
        states = {name: "retry_wait" if name in refused else "registered" for name in UPPERS}
        assert await wait_for(lambda: {link.name: link.state.value for link in service.links} == states, 5)
        return rig

    yield make
    for rig in rigs:
        rig.service.relay.close()
        rig.service.host.stop_all(rig.now, unregister=False)
        await rig.net.settle()
        rig.net.close()


def an_alarm(source: str, method: int, alarm_type: int | None = None, district: str = HEPING) -> Alarm:
    return Alarm(
        id="a1",
        seq=1,
        dedupe_key="k",
        device_id=NVR_1,
        source_id=source,
        kindergarten_id=None,
        district_code=district,
        priority=1,
        method=method,
        alarm_type=alarm_type,
        event_type=None,
        alarm_time="2024-05-20T10:00:00",
        description="",
        longitude=None,
        latitude=None,
        sn=1,
        received_at=0.0,
    )


# --- what each upper may see ----------------------------------------------------------------------


async def test_each_upper_sees_exactly_its_policys_channels_online_meaning_up(make_rig: RigFactory) -> None:
    rig = await make_rig()
    seen = {
        link.name: {i.device_id: i.status for i in link.catalog_items() if i.device_id in ALL_CHANNELS}
        for link in rig.service.links
    }

    assert seen["police"] == POLICE_SEES  # never a classroom or the nap room
    assert seen["heping"] == {cid: seen["municipal"][cid] for cid in KG1_CHANNELS}
    assert seen["municipal"] == {**POLICE_SEES, CLASSROOM: "ON", NAP_ROOM: "ON"}
    # BACK_GATE: its NVR reported it off; HEXI_GATE: reported on, but its NVR is offline


async def test_the_police_catalog_over_the_wire_names_no_indoor_camera(make_rig: RigFactory) -> None:
    rig = await make_rig()
    police = rig.uppers["police"]
    query = upper_request(police, "MESSAGE", serialize(CatalogQuery(sn=7, device_id=GW_ID)), call_id="cat-1@police")

    assert (await police.request(query, "catalog", rig.now)).status == 200

    def responses() -> list[CatalogResponse]:
        bodies = [decode_message(r.body)[0] for r in police.of_method("MESSAGE")]
        return [b for b in bodies if isinstance(b, CatalogResponse) and b.sn == 7]

    assert await wait_for(
        lambda: bool(responses()) and sum(len(r.items) for r in responses()) == responses()[0].sum_num
    )
    items = [item for r in responses() for item in r.items]
    assert {i.device_id: i.status for i in items if i.device_id in ALL_CHANNELS} == POLICE_SEES
    assert not any(word in (i.name or "") for i in items for word in ("教室", "午睡", "班"))


async def test_channel_status_is_none_outside_the_policy(make_rig: RigFactory) -> None:
    rig = await make_rig()
    status = rig.service.channel_status
    police, heping = rig.service.policies["police"], rig.service.policies["heping"]

    assert [status(police, c) for c in (CLASSROOM, NAP_ROOM, channel_id(131, 1, 99))] == [None, None, None]
    assert [status(police, c) for c in (ENTRANCE, ALARM_BUTTON, BACK_GATE, HEXI_GATE)] == [True, True, False, False]
    assert (status(heping, CLASSROOM), status(heping, HEXI_GATE)) == (True, None)
    # and that is what the police's link answers to DeviceStatus
    answer = rig.service.host.link("police").answer_device_status(DeviceStatusQuery(sn=3, device_id=CLASSROOM))
    assert (answer.result, answer.online) == ("ERROR", None)


async def test_alarm_targets_follow_the_policies(make_rig: RigFactory) -> None:
    rig = await make_rig()
    targets = rig.service.alarm_targets

    assert targets(an_alarm(ALARM_BUTTON, AlarmMethod.TELEPHONE)) == ["municipal", "police", "heping"]
    assert targets(an_alarm(ENTRANCE, AlarmMethod.VIDEO, 2)) == ["municipal", "police", "heping"]
    assert targets(an_alarm(CLASSROOM, AlarmMethod.VIDEO, 2)) == ["municipal", "heping"], "motion in a classroom"
    assert targets(an_alarm(ENTRANCE, AlarmMethod.DEVICE, 2)) == ["municipal", "heping"], "tamper: not for police"
    assert targets(an_alarm(HEXI_GATE, AlarmMethod.VIDEO, 6, district=HEXI)) == ["municipal", "police"]


# --- catalog changes --------------------------------------------------------------------------------


async def subscribe(rig: Rig, name: str) -> None:
    upper = rig.uppers[name]
    body = serialize(CatalogQuery(sn=55, device_id=GW_ID))
    request = upper_request(
        upper, "SUBSCRIBE", body, call_id=f"sub@{name}", extra=[("Event", "Catalog;id=5"), ("Expires", "3600")]
    )
    assert (await upper.request(request, "subscribe", rig.now)).status == 200
    assert await wait_for(lambda: rig.service.host.link(name).subscriptions == 1, 2)


def notified(upper: Upper) -> list[tuple[str, str | None]]:
    """(channel, event) of every catalog NOTIFY item the upper got."""
    bodies = [decode_message(r.body)[0] for r in upper.of_method("NOTIFY")]
    return [(i.device_id, i.event) for b in bodies if isinstance(b, CatalogResponse) for i in b.items]


def publish(rig: Rig, *channels: Channel) -> None:
    """Write channel rows of NVR_1 into the directory and publish the change as the gateway does."""
    directory = rig.service.directory
    before = directory.upsert_channels(NVR_1, channels)
    after = {c.id: directory.view(directory.channels[c.id]) for c in channels}  # with its confirmed area
    directory.publish(ChannelChange(before, after, rig.now))


async def test_a_directory_change_becomes_a_catalog_notify_to_a_subscribed_upper_only(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await subscribe(rig, "municipal")
    side_gate = channel_id(131, 1, 7)

    publish(rig, city_channel(side_gate, "侧门", AreaTag.ENTRANCE))  # every policy may see it

    assert await wait_for(lambda: (side_gate, "ADD") in notified(rig.uppers["municipal"]), 5)
    await rig.net.settle()
    # Only the camera: its kindergarten and district nodes are already in the upper's catalog (they used to be
    # ADDed again with every change).
    assert notified(rig.uppers["municipal"]) == [(side_gate, "ADD")]
    assert rig.uppers["police"].of_method("NOTIFY") == [] and rig.uppers["heping"].of_method("NOTIFY") == []


async def test_removing_one_camera_deletes_only_that_camera_from_a_subscribed_upper(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await subscribe(rig, "municipal")
    directory = rig.service.directory

    before = directory.remove_channels(NVR_1, [PERIMETER])  # as gbplatform.lower_catalogs applies a DEL
    directory.publish(ChannelChange(before, {}, rig.now))

    assert await wait_for(lambda: (PERIMETER, "DEL") in notified(rig.uppers["municipal"]), 5)
    await rig.net.settle()
    assert notified(rig.uppers["municipal"]) == [(PERIMETER, "DEL")], "ENTRANCE and the others still hang there"


async def test_a_subscribed_police_platform_hears_nothing_of_a_classroom_going_off(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await subscribe(rig, "municipal")
    await subscribe(rig, "police")

    publish(rig, city_channel(CLASSROOM, "小一班教室", AreaTag.CLASSROOM, online=False))

    assert await wait_for(lambda: notified(rig.uppers["municipal"]) == [(CLASSROOM, "OFF")], 5)
    await rig.net.settle()
    assert rig.uppers["police"].of_method("NOTIFY") == []


# --- status and metrics ---------------------------------------------------------------------------------


async def test_status_reports_wall_clock_times_and_each_links_live_calls(make_rig: RigFactory) -> None:
    rig = await make_rig(refused=("heping",))
    call = rig.uppers["municipal"].call(ENTRANCE, rig.now)
    assert isinstance(await asyncio.wait_for(call.answered, 5), PlayStarted)

    rows = {row["name"]: row for row in rig.service.status()}

    municipal = rows["municipal"]
    registered_at = rig.service.host.link("municipal").registered_at
    assert registered_at is not None and municipal["registered_at"] == registered_at + WALL_OFFSET
    assert municipal["state"] == "registered" and (municipal["level"], municipal["district"]) == ("municipal", None)
    assert [(c["upper"], c["channel_id"]) for c in municipal["live_calls"]] == [("municipal", ENTRANCE)]
    assert rows["police"]["live_calls"] == []
    heping = rows["heping"]
    retry_at = rig.service.host.link("heping").client.retry_at
    assert heping["state"] == "retry_wait" and heping["registered_at"] is None and retry_at is not None
    assert heping["retry_at"] == retry_at + WALL_OFFSET and heping["district"] == HEPING


async def test_collect_has_one_registered_gauge_per_link(make_rig: RigFactory) -> None:
    rig = await make_rig(refused=("heping",))
    registry = CollectorRegistry()
    registry.register(rig.service)
    value = registry.get_sample_value

    assert value("kgw_upper_platform_registered", {"platform": "municipal", "level": "municipal"}) == 1
    assert value("kgw_upper_platform_registered", {"platform": "police", "level": "police"}) == 1
    assert value("kgw_upper_platform_registered", {"platform": "heping", "level": "district"}) == 0
    assert value("kgw_upper_platform_transitions_total", {"platform": "police", "state": "online"}) == 1


# --- stopping -----------------------------------------------------------------------------------------


async def test_stop_returns_as_soon_as_the_registered_uppers_answered_the_unregister(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "UNREGISTER_WAIT", 60.0)  # a time-out would fail the deadline below
    rig = await make_rig(refused=("heping",))
    municipal, police = rig.uppers["municipal"], rig.uppers["police"]
    municipal.hold_unregister = police.hold_unregister = True

    stopping = asyncio.ensure_future(rig.service.stop(rig.now))
    assert await wait_for(lambda: len(municipal.unregisters()) == len(police.unregisters()) == 1, 5)
    municipal.release(rig.now)
    await rig.net.settle()
    assert not stopping.done(), "the police have not answered yet"

    police.release(rig.now)
    await asyncio.wait_for(stopping, 5)
    assert rig.uppers["heping"].unregisters() == [] and not any(link.unregistering for link in rig.service.links)


async def test_stop_does_not_wait_when_no_upper_was_registered(
    make_rig: RigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "UNREGISTER_WAIT", 60.0)
    rig = await make_rig(refused=tuple(UPPERS))

    await asyncio.wait_for(rig.service.stop(rig.now), 5)

    await rig.net.settle()
    assert all(upper.unregisters() == [] for upper in rig.uppers.values())


# --- alarms upward -----------------------------------------------------------------------------------------


async def test_send_alarm_is_480_until_registered_then_the_uppers_final_status(make_rig: RigFactory) -> None:
    rig = await make_rig(refused=("heping",))
    message = OutboundMessage(an_alarm(ALARM_BUTTON, AlarmMethod.TELEPHONE), DeliveryEvent.ALARM, b"{}")

    assert await rig.service.send_alarm("heping", message) == 480
    assert await rig.service.send_alarm("municipal", message) == 200
    rig.uppers["municipal"].message_status = 503
    assert await rig.service.send_alarm("municipal", message) == 503

    await rig.net.settle()
    alarms = [decode_message(r.body)[0] for r in rig.uppers["municipal"].of_method("MESSAGE")]
    assert [a.device_id for a in alarms if isinstance(a, AlarmNotify)] == [ALARM_BUTTON, ALARM_BUTTON]
    assert not [r for r in rig.uppers["heping"].of_method("MESSAGE") if b"<CmdType>Alarm" in r.body]
