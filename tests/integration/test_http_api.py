"""The HTTP API, /healthz and /metrics against a gateway with a registered simulated district."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import GatewayService
from gateway.config import load_config
from gbplatform.app import build_gateway
from simulators.fleet import Fleet, FleetOptions
from tests.conftest import TEST_TOKEN_GRANT, http_json, http_text, wait_for

KINDERGARTENS = 6
UNKNOWN_DEVICE = "12010100111189999999"


@dataclass
class District:
    """A gateway with a catalogued fleet; ``offline_id`` went silent and is offline."""

    service: GatewayService
    fleet: Fleet
    offline_id: str

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"

    def channels_of(self, device_id: str) -> int:
        return len(self.fleet.agents[device_id].profile.channels)

    @property
    def all_channels(self) -> int:
        return sum(len(a.profile.channels) for a in self.fleet.agents.values())


@pytest.fixture(scope="module")
async def district() -> AsyncIterator[District]:
    """One gateway and catalogued fleet shared by the read-only tests of this module."""
    service = build_gateway(
        load_config(
            None,
            sip_port=0,
            http_port=0,
            db=":memory:",
            flush_interval=0.2,
            # 3 s of silence makes a device offline; the fleet keeps alive every 0.2 s, so only
            # the silenced NVR goes offline, not a device whose keepalive a busy machine delayed
            # (the tests below count online devices exactly).
            keepalive_interval=1.0,
            keepalive_missed=3,
            api_tokens=(TEST_TOKEN_GRANT,),
        )
    )
    await service.start()
    fleet = Fleet(
        FleetOptions(
            gateway_port=service.sip_port,
            gateway_id=service.config.id,
            password=service.config.password,
            kindergartens=KINDERGARTENS,
            keepalive_interval=0.2,
            api=f"http://127.0.0.1:{service.http_port}",
        )
    )
    try:
        await fleet.start()
        channels = sum(len(a.profile.channels) for a in fleet.agents.values())
        assert await wait_for(lambda: service.directory.online_counts()[1] == len(fleet.agents), timeout=60)
        assert await wait_for(lambda: service.directory.online_counts()[2] == channels, timeout=60)
        # One NVR goes silent, so every "online" figure has something to tell apart.
        offline_id = next(i for i, a in fleet.agents.items() if len(a.profile.channels) > 1)
        fleet.agents[offline_id].misbehaviour.silent = True
        assert await wait_for(lambda: not service.directory.devices[offline_id].row.online, timeout=30)
        await service.writer.flush()
        yield District(service, fleet, offline_id)
    finally:
        await fleet.stop(unregister=False)
        await service.stop()


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def post_raw(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, Any]:
    """POST arbitrary bytes (e.g. broken JSON) from a worker thread."""

    def call() -> tuple[int, Any]:
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    return await asyncio.to_thread(call)


async def collect_pages(url: str, limit: int) -> tuple[list[dict[str, Any]], set[int]]:
    """Walk ``url`` page by page; return every item and the totals seen."""
    items: list[dict[str, Any]] = []
    totals: set[int] = set()
    offset = 0
    sep = "&" if "?" in url else "?"
    while True:
        status, page = await http_json(f"{url}{sep}offset={offset}&limit={limit}")
        assert status == 200
        assert page["offset"] == offset and page["limit"] == limit
        assert len(page["items"]) <= limit
        totals.add(page["total"])
        items += page["items"]
        offset += limit
        if offset >= page["total"]:
            return items, totals


# --- health and metrics ----------------------------------------------------------------------------------


async def test_healthz_and_metrics(district):
    service, fleet = district.service, district.fleet
    devices = len(fleet.agents)
    online_channels = district.all_channels - district.channels_of(district.offline_id)

    status, health = await http_json(f"{district.api}/healthz")
    assert status == 200
    assert health["status"] == "ok"
    assert health["gateway_id"] == service.config.id
    assert health["sip_port"] == service.sip_port
    assert health["devices_known"] == devices
    assert health["devices_online"] == devices - 1
    assert health["channels_online"] == online_channels

    samples = metric_samples(await http_text(f"{district.api}/metrics"))
    assert samples[("kgw_devices_online", ())] == devices - 1
    assert samples[("kgw_devices_known", ())] == devices
    assert samples[("kgw_channels_online", ())] == online_channels
    assert samples[("kgw_sip_requests_total", (("method", "REGISTER"),))] >= 2 * devices  # challenge + answer
    assert samples[("kgw_sip_requests_total", (("method", "MESSAGE"),))] > devices
    assert samples[("kgw_sip_responses_total", (("class", "2xx"),))] >= devices
    assert samples[("kgw_sip_responses_total", (("class", "4xx"),))] >= devices  # the 401 challenges
    answered = "kgw_sip_requests_answered_total"
    assert samples[(answered, (("class", "4xx"), ("method", "REGISTER")))] >= devices
    assert samples[(answered, (("class", "2xx"), ("method", "REGISTER")))] >= devices
    assert samples[(answered, (("class", "2xx"), ("method", "MESSAGE")))] > devices
    assert samples[("kgw_registrations_total", (("result", "ok"),))] == devices
    per_district = Counter(k.district_code for k in fleet.city for d in k.devices if d.id != district.offline_id)
    for code, count in per_district.items():
        assert samples[("kgw_district_devices_online", (("district", code),))] == count


# --- lists, pagination and filters ---------------------------------------------------------------------------


async def test_device_pagination_is_stable_and_complete(district):
    items, totals = await collect_pages(f"{district.api}/api/devices", limit=3)
    assert totals == {len(district.fleet.agents)}
    ids = [d["id"] for d in items]
    assert len(ids) == len(set(ids)), "no duplicates across pages"
    assert set(ids) == set(district.fleet.agents)
    assert ids == sorted(ids)
    status, past_end = await http_json(f"{district.api}/api/devices?offset=1000&limit=10")
    assert status == 200 and past_end["items"] == [] and past_end["total"] == len(district.fleet.agents)


async def test_channel_pagination_is_stable_and_complete(district):
    items, totals = await collect_pages(f"{district.api}/api/channels", limit=7)
    assert totals == {district.all_channels}
    ids = [c["id"] for c in items]
    assert len(ids) == len(set(ids))
    plan = {ch.id for k in district.fleet.city for d in k.devices for ch in d.channels}
    assert set(ids) == plan


async def test_device_filters(district):
    api, city = district.api, district.fleet.city
    for kindergarten in city:
        status, page = await http_json(f"{api}/api/devices?kindergarten={kindergarten.id}")
        assert status == 200
        assert {d["id"] for d in page["items"]} == {d.id for d in kindergarten.devices}
        assert page["total"] == len(kindergarten.devices)
    by_district: dict[str, set[str]] = {}
    for kindergarten in city:
        by_district.setdefault(kindergarten.district_code, set()).update(d.id for d in kindergarten.devices)
    for code, ids in by_district.items():
        status, page = await http_json(f"{api}/api/devices?district={code}&limit=1000")
        assert {d["id"] for d in page["items"]} == ids
        assert all(d["district_code"] == code and d["district_name"] for d in page["items"])
    status, page = await http_json(f"{api}/api/devices?district=120199")
    assert status == 200 and page["total"] == 0

    status, online = await http_json(f"{api}/api/devices?online=true&limit=1000")
    assert online["total"] == len(district.fleet.agents) - 1
    assert district.offline_id not in {d["id"] for d in online["items"]}
    status, offline = await http_json(f"{api}/api/devices?online=false&limit=1000")
    assert [d["id"] for d in offline["items"]] == [district.offline_id]

    status, nvrs = await http_json(f"{api}/api/devices?type=118&limit=1000")
    assert {d["id"] for d in nvrs["items"]} == {i for i in district.fleet.agents if i[10:13] == "118"}

    kindergarten = next(k for k in city if any(d.id == district.offline_id for d in k.devices))
    status, page = await http_json(f"{api}/api/devices?kindergarten={kindergarten.id}&online=false")
    assert [d["id"] for d in page["items"]] == [district.offline_id]


async def test_channel_filters(district):
    api, city = district.api, district.fleet.city
    for kindergarten in city:
        for device in kindergarten.devices:
            status, page = await http_json(f"{api}/api/channels?device={device.id}&limit=1000")
            assert status == 200
            assert {c["id"] for c in page["items"]} == {ch.id for ch in device.channels}
            assert all(c["device_id"] == device.id and c["kindergarten_id"] == kindergarten.id for c in page["items"])
        status, page = await http_json(f"{api}/api/channels?kindergarten={kindergarten.id}&limit=1000")
        assert page["total"] == sum(len(d.channels) for d in kindergarten.devices)
    code = city[0].district_code
    status, page = await http_json(f"{api}/api/channels?district={code}&limit=1000")
    expected = {ch.id for k in city if k.district_code == code for d in k.devices for ch in d.channels}
    assert {c["id"] for c in page["items"]} == expected

    status, offline = await http_json(f"{api}/api/channels?online=false&limit=1000")
    assert offline["total"] == district.channels_of(district.offline_id)
    assert {c["device_id"] for c in offline["items"]} == {district.offline_id}
    status, online = await http_json(f"{api}/api/channels?online=true&limit=1000")
    assert online["total"] == district.all_channels - district.channels_of(district.offline_id)

    cameras = [ch for k in city for d in k.devices for ch in d.channels if ch.kind == "camera"]
    for area in ("entrance", "perimeter", "classroom"):
        status, page = await http_json(f"{api}/api/channels?area={area}&limit=1000")
        assert status == 200
        assert all(c["area"] == area for c in page["items"])
        planned = {ch.id for ch in cameras if ch.area == area}
        got = {c["id"] for c in page["items"]}
        assert planned <= got, f"every planned {area} camera is tagged {area}"
    # Privacy: no indoor camera of the plan may ever be tagged as a public area.
    indoor = {ch.id for ch in cameras if ch.area in ("classroom", "dormitory", "kitchen")}
    for area in ("entrance", "perimeter"):
        status, page = await http_json(f"{api}/api/channels?area={area}&limit=1000")
        assert not indoor & {c["id"] for c in page["items"]}


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-5",
        "offset=-1",
        "offset=x",
        "online=maybe",
    ],
)
async def test_bad_list_parameters_are_400(district, query):
    for path in ("/api/devices", "/api/channels", "/api/kindergartens"):
        if path == "/api/kindergartens" and query.startswith("online"):
            continue
        status, body = await http_json(f"{district.api}{path}?{query}")
        assert status == 400, (path, query)
        assert "error" in body


async def get_status(url: str) -> int:
    """Only the status of a GET (the body of an error need not be JSON)."""

    def call() -> int:
        try:
            with urllib.request.urlopen(url, timeout=20) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    return await asyncio.to_thread(call)


async def test_events_list_and_bad_parameters(district):
    status, events = await http_json(f"{district.api}/api/events?entity={district.offline_id}")
    assert status == 200
    assert events["items"][0]["online"] is False and events["items"][0]["reason"] == "keepalive_timeout"
    status, events = await http_json(f"{district.api}/api/events?limit=2")
    assert status == 200 and len(events["items"]) == 2
    for query in ("limit=abc", "since=yesterday"):
        assert await get_status(f"{district.api}/api/events?{query}") == 400, query


@pytest.mark.parametrize("query", ["limit=0", "limit=-1"])
async def test_events_with_non_positive_limit_is_400(district, query):
    assert await get_status(f"{district.api}/api/events?{query}") == 400


async def test_bad_area_is_400_and_unknown_device_404(district):
    status, body = await http_json(f"{district.api}/api/channels?area=rooftop")
    assert status == 400 and "error" in body
    status, body = await http_json(f"{district.api}/api/devices/{UNKNOWN_DEVICE}")
    assert status == 404 and "error" in body
    status, device = await http_json(f"{district.api}/api/devices/{district.offline_id}")
    assert status == 200 and device["id"] == district.offline_id and device["online"] is False
    status, page = await http_json(f"{district.api}/api/devices/{district.offline_id}/channels")
    assert status == 200 and page["total"] == district.channels_of(district.offline_id)


async def test_districts_match_the_plan(district):
    status, body = await http_json(f"{district.api}/api/districts")
    assert status == 200
    got = {item["district_code"]: item for item in body["items"]}
    city = district.fleet.city
    assert set(got) == {k.district_code for k in city}
    for code, item in got.items():
        kgs = [k for k in city if k.district_code == code]
        devices = [d for k in kgs for d in k.devices]
        assert item["kindergartens"] == len(kgs)
        assert item["devices"] == len(devices)
        assert item["devices_online"] == sum(1 for d in devices if d.id != district.offline_id)
        assert item["channels"] == sum(len(d.channels) for d in devices)
        assert item["channels_online"] == sum(len(d.channels) for d in devices if d.id != district.offline_id)
        assert item["name"]


async def test_kindergartens_are_listed(district):
    status, page = await http_json(f"{district.api}/api/kindergartens?limit=1000")
    assert status == 200
    assert {k["id"]: k["name"] for k in page["items"]} == {k.id: k.name for k in district.fleet.city}
    code = district.fleet.city[0].district_code
    status, page = await http_json(f"{district.api}/api/kindergartens?district={code}")
    assert {k["id"] for k in page["items"]} == {k.id for k in district.fleet.city if k.district_code == code}


async def test_bad_kindergarten_posts_are_400(gateway_factory):
    service = await gateway_factory()
    url = f"http://127.0.0.1:{service.http_port}/api/kindergartens"
    for body in (
        b"{not json",
        b"",
        b"[1, 2]",
        b'{"name": "x"}',
        b'{"id": "123", "name": "x"}',
        b'{"id": "12010100112160009900", "name": ""}',
        b"\xff\xfe",
    ):
        status, _ = await post_raw(url, body)
        assert status == 400, body
    status, page = await http_json(url)
    assert status == 200 and page["total"] == 0, "nothing half-stored"
    status, stored = await http_json(url, [{"id": "12010100112160009900", "name": "和平区新幼儿园"}])
    assert status == 201 and stored["stored"] == 1
    status, page = await http_json(f"{url}?district=120101")
    assert [k["id"] for k in page["items"]] == ["12010100112160009900"]


# --- queries to devices ---------------------------------------------------------------------------------


async def test_device_queries(district):
    api = district.api
    device_id, agent = next(
        (i, a) for i, a in district.fleet.agents.items() if i != district.offline_id and i[10:13] == "118"
    )
    status, info = await http_json(f"{api}/api/devices/{device_id}/query/DeviceInfo", method="POST")
    assert status == 200
    assert info["device_id"] == device_id
    assert info["manufacturer"] == agent.profile.manufacturer
    assert info["model"] == agent.profile.model
    assert info["channel"] == len(agent.profile.channels)

    status, device_status = await http_json(f"{api}/api/devices/{device_id}/query/DeviceStatus", method="POST")
    assert status == 200
    assert device_status["online"] == "ONLINE"
    assert device_status["device_id"] == device_id

    status, catalog = await http_json(f"{api}/api/devices/{device_id}/query/Catalog", method="POST")
    assert status == 202 and isinstance(catalog["sn"], int)

    status, body = await http_json(f"{api}/api/devices/{UNKNOWN_DEVICE}/query/DeviceInfo", method="POST")
    assert status == 404 and "error" in body
    status, body = await http_json(f"{api}/api/devices/{device_id}/query/Reboot", method="POST")
    assert status == 400


async def test_query_to_a_silent_device_times_out_with_504(gateway_factory, fleet_factory):
    service = await gateway_factory(query_timeout=0.5)
    fleet = await fleet_factory(service, kindergartens=1, keepalive_interval=0.2)
    assert await wait_for(lambda: service.directory.online_counts()[1] == len(fleet.agents), timeout=60)
    device_id, agent = next(iter(fleet.agents.items()))
    agent.misbehaviour.silent = True
    status, body = await http_json(
        f"http://127.0.0.1:{service.http_port}/api/devices/{device_id}/query/DeviceInfo", method="POST"
    )
    assert status == 504 and "error" in body
