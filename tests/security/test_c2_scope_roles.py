"""C2 (scope part): every role sees and does only what the permission table gives it, over real sockets.

A started node (access gateway with the console, the real routes) and a
simulated city of 16 kindergartens, one per district, so 和平区 and 河西区 both
have a kindergarten with an NVR (entrance, perimeter, classrooms, 午睡室 …)
and a one-button alarm box. Principals are injected by a test middleware
(``tests.scope_principals``); the authentication helper's logins are not
needed to test scope. Before the fix every route answered everyone.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gateway.alarms.model import Alarm, AlarmFilter, AlarmState
from gateway.app import GatewayService
from gateway.config import load_config
from gateway.registry.model import AreaTag, Kindergarten
from gateway.registry.provisioning import AreaChoice
from gateway.security.principal import Principal, Role
from gbplatform.app import build_gateway
from simulators.city import SimChannel, SimKindergarten, build_city, installer_areas
from simulators.fleet import Fleet
from tests.conftest import TEST_TOKEN_GRANT, wait_for
from tests.scope_principals import MemoryAudit, audit_part, auth_headers, call, grants

HEPING, HEXI = "120101", "120103"
CAMERAS = (9, 9)  # the first tier: entrance, perimeter, three classrooms, playground, kitchen, corridor, 午睡室
CITY = build_city(16, seed=2020, cameras_per_kindergarten=CAMERAS)
KG_HEPING = next(k for k in CITY if k.district_code == HEPING)
KG_HEXI = next(k for k in CITY if k.district_code == HEXI)

PRINCIPALS = {
    "admin": Principal("admin", Role.CITY_ADMIN),
    "heping": Principal("和平值班员", Role.DISTRICT_DUTY, district_code=HEPING),
    "police": Principal("公安", Role.POLICE),
    "kg": Principal("园长", Role.KINDERGARTEN, kindergarten_id=KG_HEPING.id),
    "ops": Principal("运维", Role.MAINTENANCE),
}


def camera(kg: SimKindergarten, area: str) -> SimChannel:
    """The kindergarten's NVR camera of ``area`` (entrance, dormitory, classroom …)."""
    return next(c for d in kg.devices if d.kind == "nvr" for c in d.channels if c.area == area)


def nvr_id(kg: SimKindergarten) -> str:
    return next(d.id for d in kg.devices if d.kind == "nvr")


@dataclass
class City:
    service: GatewayService
    fleet: Fleet
    audit: MemoryAudit

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"

    async def as_(self, who: str | None, path: str, data: Any = None, method: str | None = None) -> tuple[int, Any]:
        return await call(self.api + path, who, data, method)

    async def alarm_of(self, kg: SimKindergarten) -> Alarm:
        """Press the kindergarten's one-button alarm (once per test: a second press within the same
        second would be taken for a repeat); the stored alarm."""
        record = self.fleet.press(kg.id, "button")
        assert await wait_for(lambda: record.answered, 30), "the alarm was stored and answered"
        page = await self.service.alarms.list_alarms(AlarmFilter(kindergarten_id=kg.id))
        assert page.total == 1, "one alarm per kindergarten and test"
        return page.items[0]


@pytest.fixture
async def city(started_nodes: list[GatewayService], fleet_factory: Any) -> AsyncIterator[City]:
    audit = MemoryAudit()
    tokens = (TEST_TOKEN_GRANT, *grants(PRINCIPALS))
    config = load_config(None, sip_port=0, http_port=0, db=":memory:", flush_interval=0.2, api_tokens=tokens)
    service = build_gateway(config, web_parts=(audit_part(audit),))
    await service.start()
    started_nodes.append(service)
    await service.provisioning.add_kindergartens(
        [Kindergarten(k.id, k.name, k.district_code, k.address, k.longitude, k.latitude) for k in CITY]
    )
    # The installer confirmed each camera's area from the plan (only confirmed ones reach police).
    choices = [AreaChoice(c["id"], AreaTag(c["area"]), c["name"]) for k in CITY for c in installer_areas(k)]
    await service.provisioning.confirm_areas(choices, "installer", time.time())
    fleet = await fleet_factory(service, provision=False, kindergartens=len(CITY), cameras=CAMERAS)
    assert [k.id for k in fleet.city] == [k.id for k in CITY]
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 90)
    assert await wait_for(lambda: all(s.reported for s in service.directory.devices.values()), 90)
    for kg in (KG_HEPING, KG_HEXI):
        cid = camera(kg, "entrance").id
        assert await wait_for(lambda cid=cid: getattr(service.directory.channels.get(cid), "online", False), 60)
    yield City(service, fleet, audit)


async def test_heping_duty_officer_cannot_see_or_touch_hexi(city: City) -> None:
    hexi_gate, heping_gate = camera(KG_HEXI, "entrance").id, camera(KG_HEPING, "entrance").id
    status, listing = await city.as_("heping", "/api/channels?limit=1000")
    assert status == 200
    ids = {c["id"] for c in listing["items"]}
    assert hexi_gate not in ids, "a 和平区 duty officer listed a 河西区 channel"
    assert heping_gate in ids and all(c["district_code"] == HEPING for c in listing["items"])
    status, listing = await city.as_("heping", f"/api/channels?district={HEXI}")
    assert status == 200 and listing["items"] == [] and listing["total"] == 0
    status, listing = await city.as_("heping", "/api/devices?limit=1000")
    assert status == 200 and {d["district_code"] for d in listing["items"]} == {HEPING}
    status, listing = await city.as_("heping", "/api/kindergartens?limit=1000")
    assert status == 200 and [k["id"] for k in listing["items"]] == [KG_HEPING.id]
    status, listing = await city.as_("heping", "/api/districts")
    assert status == 200 and [d["district_code"] for d in listing["items"]] == [HEPING]

    # One object outside the scope answers like an unknown one.
    assert (await city.as_("heping", f"/api/devices/{nvr_id(KG_HEXI)}"))[0] == 404
    assert (await city.as_("heping", f"/api/devices/{nvr_id(KG_HEXI)}/channels"))[0] == 404
    assert (await city.as_("heping", f"/api/devices/{nvr_id(KG_HEXI)}/query/DeviceInfo", {}))[0] == 404
    assert (await city.as_("heping", f"/api/channels/{hexi_gate}/live", {}))[0] == 404
    assert (await city.as_("heping", f"/api/channels/{hexi_gate}/snapshot.jpg"))[0] == 404
    assert (await city.as_("heping", f"/api/channels/{hexi_gate}/webrtc", {"sdp": "v=0"}))[0] == 404
    assert hexi_gate not in city.service.live.streams, "nothing was opened for the refused viewer"

    alarm = await city.alarm_of(KG_HEXI)
    status, listing = await city.as_("heping", "/api/alarms")
    assert status == 200 and alarm.id not in {a["id"] for a in listing["items"]}
    assert (await city.as_("heping", f"/api/alarms/{alarm.id}"))[0] == 404
    assert (await city.as_("heping", f"/api/alarms/{alarm.id}/deliveries"))[0] == 404  # a drill's proof too
    assert (await city.as_("admin", f"/api/alarms/{alarm.id}/deliveries"))[0] == 200
    assert (await city.as_("heping", f"/api/alarms/{alarm.id}/ack", {"user": "和平值班员"}))[0] == 404
    assert (await city.as_("heping", f"/api/alarms/{alarm.id}/resolve", {"user": "和平值班员"}))[0] == 404
    assert (await city.service.alarms.get_alarm(alarm.id)).state is not AlarmState.ACKNOWLEDGED
    assert city.audit.denied("和平值班员"), "refused views and writes are audited as access_denied"

    # Their own district works.
    assert (await city.as_("heping", f"/api/channels/{heping_gate}/live", {}))[0] == 200
    own = await city.alarm_of(KG_HEPING)
    status, body = await city.as_("heping", f"/api/alarms/{own.id}/ack", {"user": "和平值班员"})
    assert status == 200 and body["state"] == "acknowledged"


async def test_police_see_only_shareable_cameras(city: City) -> None:
    nap_room, classroom = camera(KG_HEPING, "dormitory"), camera(KG_HEPING, "classroom")
    gate = camera(KG_HEPING, "entrance")
    status, listing = await city.as_("police", "/api/channels?limit=1000")
    assert status == 200
    text = json.dumps(listing, ensure_ascii=False)
    assert nap_room.id not in text and "午睡室" not in text, "police saw a 午睡室 camera or its name"
    assert classroom.id not in text and "教室" not in text, "police saw a classroom camera or its name"
    assert gate.id in {c["id"] for c in listing["items"]}
    status, listing = await city.as_("police", f"/api/devices/{nvr_id(KG_HEPING)}/channels")
    assert status == 403 and "午睡室" not in json.dumps(listing, ensure_ascii=False)
    assert (await city.as_("police", "/api/devices"))[0] == 403
    status, listing = await city.as_("police", "/api/districts")
    heping = next(d for d in listing["items"] if d["district_code"] == HEPING)
    shareable = sum(1 for c in (await city.as_("police", f"/api/channels?district={HEPING}"))[1]["items"])
    assert status == 200 and heping["channels"] == shareable and heping["devices"] == 0

    assert (await city.as_("police", f"/api/channels/{nap_room.id}/live", {}))[0] == 404
    assert (await city.as_("police", f"/api/channels/{nap_room.id}/snapshot.jpg"))[0] == 404
    assert (await city.as_("police", f"/api/channels/{classroom.id}/webrtc", {"sdp": "v=0"}))[0] == 404
    assert nap_room.id not in city.service.live.streams and classroom.id not in city.service.live.streams
    assert city.audit.denied("公安")
    status, body = await city.as_("police", f"/api/channels/{gate.id}/live", {})
    assert status == 200, body

    alarm = await city.alarm_of(KG_HEPING)
    status, listing = await city.as_("police", "/api/alarms")
    assert status == 200 and alarm.id in {a["id"] for a in listing["items"]}
    assert (await city.as_("police", f"/api/alarms/{alarm.id}/ack", {"user": "公安"}))[0] == 403
    assert (await city.service.alarms.get_alarm(alarm.id)).state is not AlarmState.ACKNOWLEDGED


async def test_kindergarten_sees_only_its_own_alarms_and_no_video(city: City) -> None:
    own, other = await city.alarm_of(KG_HEPING), await city.alarm_of(KG_HEXI)
    status, listing = await city.as_("kg", "/api/alarms")
    assert status == 200 and [a["id"] for a in listing["items"]] == [own.id], "园方 saw another site's alarm"
    assert (await city.as_("kg", f"/api/alarms/{other.id}"))[0] == 404
    status, body = await city.as_("kg", f"/api/alarms/{own.id}")
    assert status == 200 and body["live_channel_id"] is None and body["has_snapshot"] is False
    gate = camera(KG_HEPING, "entrance").id
    assert (await city.as_("kg", f"/api/channels/{gate}/live", {}))[0] == 403
    assert (await city.as_("kg", f"/api/channels/{gate}/snapshot.jpg"))[0] == 403
    assert (await city.as_("kg", f"/api/channels/{gate}/webrtc", {"sdp": "v=0"}))[0] == 403
    assert (await city.as_("kg", "/api/channels"))[0] == 403
    assert (await city.as_("kg", f"/api/alarms/{own.id}/ack", {"user": "园长"}))[0] == 403
    assert (await city.as_("kg", f"/api/alarms/{own.id}/snapshot.jpg"))[0] == 403


async def test_maintenance_lists_devices_but_never_watches_indoors(city: City) -> None:
    status, listing = await city.as_("ops", "/api/devices?limit=1000")
    assert status == 200 and listing["total"] == len(city.service.directory.devices)
    for area in ("dormitory", "classroom"):
        indoor = camera(KG_HEPING, area).id
        assert (await city.as_("ops", f"/api/channels/{indoor}/live", {}))[0] == 404, f"运维 opened a {area} camera"
        assert (await city.as_("ops", f"/api/channels/{indoor}/snapshot.jpg"))[0] == 404
        assert indoor not in city.service.live.streams
    assert city.audit.denied("运维")
    alarm = await city.alarm_of(KG_HEXI)
    assert (await city.as_("ops", f"/api/alarms/{alarm.id}"))[0] == 200
    assert (await city.as_("ops", f"/api/alarms/{alarm.id}/resolve", {"user": "运维"}))[0] == 403
    assert (await city.as_("ops", "/api/upper-platforms"))[0] == 200
    assert (await city.as_("heping", "/api/upper-platforms"))[0] == 403


async def test_anonymous_requests_are_refused(city: City) -> None:
    for path in ("/api/devices", "/api/channels", "/api/alarms", "/api/kindergartens", "/api/live"):
        assert (await city.as_(None, path))[0] == 401, path
    gate = camera(KG_HEPING, "entrance").id
    assert (await city.as_(None, f"/api/channels/{gate}/snapshot.jpg"))[0] == 401
    assert (await city.as_(None, "/healthz"))[0] == 200


async def test_district_websocket_never_carries_another_districts_alarm(city: City) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{city.api}/api/alarms/ws", headers=auth_headers("heping")) as ws,
    ):
        assert (await ws.receive_json(timeout=30))["type"] == "hello"
        other = await city.alarm_of(KG_HEXI)
        own = await city.alarm_of(KG_HEPING)  # pressed after: its event comes after every 河西 event
        seen: list[dict[str, Any]] = []
        while not any(e.get("alarm", {}).get("id") == own.id for e in seen):
            seen.append(await ws.receive_json(timeout=30))
        assert other.id not in json.dumps(seen), "a 和平区 console received a 河西区 alarm"
        assert {e["alarm"]["district_code"] for e in seen if "alarm" in e} == {HEPING}


async def test_kindergarten_websocket_carries_only_its_own_alarms(city: City) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{city.api}/api/alarms/ws", headers=auth_headers("kg")) as ws,
    ):
        assert (await ws.receive_json(timeout=30))["type"] == "hello"
        other = await city.alarm_of(KG_HEXI)
        own = await city.alarm_of(KG_HEPING)
        seen = []
        while not any(e.get("alarm", {}).get("id") == own.id for e in seen):
            seen.append(await ws.receive_json(timeout=30))
        assert other.id not in json.dumps(seen), "园方's feed carried another kindergarten's alarm"
