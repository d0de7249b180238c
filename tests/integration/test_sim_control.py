"""The simulator's HTTP control endpoint presses alarms that leave as real SIP MESSAGEs.

The gateway has no alarm intake yet, so a minimal platform plays it: a bare
SipEndpoint behind a SipDriver on 127.0.0.1:0 that accepts every REGISTER
without a challenge, answers MESSAGEs 200, keeps every alarm it receives and
(when asked) acknowledges it with a ``Response/Alarm`` MESSAGE (docs/gb28181.md §9.2).
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.gb28181.device_agent import DeviceAgent
from gateway.gb28181.manscdp import AlarmNotify, ResultResponse, decode_message, serialize
from gateway.gb28181.requests import build_message
from gateway.gb28181.sip.endpoint import RequestReceived, SipEndpoint
from gateway.gb28181.sip.idsource import RandomIds
from gateway.gb28181.sip.message import SipRequest, make_response
from gateway.gb28181.sip.transport import Peer
from gateway.io.sip_io import SipDriver
from simulators.fleet import Fleet, FleetLookupError, FleetOptions
from tests.conftest import http_json, wait_for

GATEWAY_ID = "12010000002090000001"
REALM = GATEWAY_ID[:10]


class MiniPlatform:
    """Just enough of a GB/T 28181 platform for devices to register and raise alarms."""

    def __init__(self, *, acknowledge: bool = True) -> None:
        self.endpoint = SipEndpoint(RandomIds(), local_host="127.0.0.1", local_port=0, user_agent="kgw-test")
        self.acknowledge = acknowledge
        self.alarms: list[tuple[SipRequest, AlarmNotify]] = []

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        self.endpoint.receive(data, peer, now)
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, RequestReceived) and event.transaction is not None:
                self._answer(event, now)

    def get_timer(self) -> float | None:
        return self.endpoint.get_timer()

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        while self.endpoint.next_event() is not None:
            pass

    def _answer(self, event: RequestReceived, now: float) -> None:
        request = event.request
        assert event.transaction is not None
        response = make_response(request, 200, to_tag=self.endpoint.new_tag())
        if request.method == "REGISTER":
            response.headers.set("Expires", request.headers.get("Expires") or "3600")
        self.endpoint.send_response(event.transaction, response, now)
        if request.method != "MESSAGE":
            return
        message, _ = decode_message(request.body)
        if not isinstance(message, AlarmNotify):
            return
        self.alarms.append((request, message))
        if self.acknowledge:
            ack = serialize(ResultResponse("Alarm", message.sn, message.device_id, "OK"))
            reply = build_message(
                from_id=GATEWAY_ID,
                from_domain=REALM,
                from_tag=self.endpoint.new_tag(),
                to_id=message.device_id,
                to_domain=REALM,
                request_uri=f"sip:{message.device_id}@{event.peer.host}:{event.peer.port}",
                call_id=self.endpoint.new_call_id(),
                cseq=1,
                body=ack,
            )
            self.endpoint.send_request(reply, event.peer, now)


async def post_raw(url: str, body: bytes) -> int:
    """POST raw bytes (e.g. broken JSON) and return the status."""

    def call() -> int:
        request = urllib.request.Request(url, data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    return await asyncio.to_thread(call)


Started = Callable[..., Awaitable[tuple[Fleet, MiniPlatform, str]]]


@pytest.fixture
async def sim() -> AsyncIterator[Started]:
    """Start a mini platform and a fleet with its control endpoint; both closed at the end."""
    cleanup: list[tuple[Fleet, SipDriver]] = []

    async def start(*, acknowledge: bool = True, **options: Any) -> tuple[Fleet, MiniPlatform, str]:
        platform = MiniPlatform(acknowledge=acknowledge)
        driver = SipDriver(platform)
        port = await driver.listen("127.0.0.1", 0, tcp=False)
        settings: dict[str, Any] = {
            "gateway_port": port,
            "gateway_id": GATEWAY_ID,
            "kindergartens": 2,
            "cameras": (2, 2),
            "control_port": 0,
        }
        settings.update(options)
        fleet = Fleet(FleetOptions(**settings))
        await fleet.start()
        cleanup.append((fleet, driver))
        return fleet, platform, f"http://127.0.0.1:{fleet.control_port}"

    yield start
    for fleet, driver in cleanup:
        await fleet.stop(unregister=False)
        driver.close()


async def test_press_over_http_sends_an_alarm_and_tracks_its_answers(sim: Started) -> None:
    fleet, platform, base = await sim()
    kindergarten = fleet.city[1]
    box = next(d for d in kindergarten.devices if d.kind == "alarm_box")

    status, pressed = await http_json(base + "/press", {"kindergarten": kindergarten.id, "kind": "button"})

    assert status == 200
    assert (pressed["device_id"], pressed["source_id"], pressed["kind"]) == (box.id, box.id, "button")
    assert isinstance(pressed["sn"], int) and pressed["pressed_at_wall"] > 1.6e9
    assert await wait_for(lambda: len(platform.alarms) == 1, timeout=30)
    request, notify = platform.alarms[0]
    assert request.from_.uri.user == box.id
    assert (notify.sn, notify.device_id, notify.method, notify.priority) == (pressed["sn"], box.id, "1", "1")
    assert notify.alarm_time == pressed["alarm_time"]
    assert notify.longitude == box.channels[0].longitude

    assert await wait_for(lambda: fleet.alarm_summary()["responses"] == 1, timeout=30)
    status, alarms = await http_json(base + "/alarms")
    assert status == 200 and alarms["total"] == 1
    [item] = alarms["items"]
    assert (item["sn"], item["status"], item["attempts"], item["answered"], item["response"]) == (
        pressed["sn"],
        200,
        1,
        True,
        True,
    )
    status, summary = await http_json(base + "/summary")
    assert status == 200 and summary["devices"] == len(fleet.agents)
    assert (summary["alarms_pressed"], summary["alarms_answered"], summary["alarm_responses"]) == (1, 1, 1)


async def test_press_by_index_random_and_camera_kinds(sim: Started) -> None:
    fleet, platform, base = await sim()

    status, by_index = await http_json(base + "/press", {"kindergarten": 0})
    box = next(d for d in fleet.city[0].devices if d.kind == "alarm_box")
    assert status == 200 and (by_index["device_id"], by_index["kind"]) == (box.id, "button")
    status, anywhere = await http_json(base + "/press", {})
    assert status == 200 and anywhere["kind"] == "button"
    status, camera = await http_json(base + "/press", {"kindergarten": 0, "kind": "video_loss"})
    nvr = next(d for d in fleet.city[0].devices if d.kind == "nvr")
    assert status == 200 and camera["device_id"] == nvr.id and camera["source_id"] == nvr.channels[0].id

    assert await wait_for(lambda: len(platform.alarms) == 3, timeout=30)
    kinds = {(n.sn, n.method) for _, n in platform.alarms}
    assert (camera["sn"], "2") in kinds
    assert await wait_for(lambda: fleet.alarm_summary()["answered"] == 3, timeout=30), fleet.alarm_summary()


async def test_press_a_registered_alarm_box(sim: Started, monkeypatch: pytest.MonkeyPatch) -> None:
    """``{"registered": true}``: a random kindergarten whose alarm box is registered now (bench/alarm_storm_latency.py)."""
    fleet, platform, base = await sim()
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), timeout=30)
    status, pressed = await http_json(base + "/press", {"registered": True})
    boxes = {d.id for k in fleet.city for d in k.devices if d.kind == "alarm_box"}
    assert status == 200 and pressed["device_id"] in boxes and pressed["kind"] == "button"
    assert await wait_for(lambda: len(platform.alarms) == 1, timeout=30)
    status, body = await http_json(base + "/press", {"registered": "yes"})
    assert status == 400 and "registered" in body["error"]
    # nobody registered (as at the start of a storm): nothing to press
    monkeypatch.setattr(DeviceAgent, "registered", property(lambda agent: False))
    status, body = await http_json(base + "/press", {"registered": True})
    assert status == 404 and "registered" in body["error"]


async def test_press_errors_are_404_and_400(sim: Started) -> None:
    fleet, _platform, base = await sim()
    without = next(k for k in fleet.city if not any(d.kind == "perimeter_alarm" for d in k.devices))

    for payload, expected in [
        ({"kindergarten": "12010100002160099900"}, 404),
        ({"kindergarten": 99}, 404),
        ({"kindergarten": without.id, "kind": "perimeter"}, 404),
        ({"kind": "fire"}, 400),
        ({"kindergarten": True}, 400),
        ({"kindergarten": [1]}, 400),
        ([1, 2], 400),
    ]:
        status, body = await http_json(base + "/press", payload)
        assert (status, payload) == (expected, payload)
        assert isinstance(body["error"], str) and body["error"]
    assert await post_raw(base + "/press", b"{not json") == 400
    assert await post_raw(base + "/press", b"") == 200  # no body: a random button
    _, body = await http_json(base + "/press", {"kindergarten": without.id, "kind": "perimeter"})
    assert without.id in body["error"] and "perimeter" in body["error"]
    with pytest.raises(LookupError):
        fleet.press(without.id, "perimeter")
    with pytest.raises(FleetLookupError):
        fleet.press(-1)
    assert [r.kind for r in fleet.alarm_records()] == ["button"]


async def test_press_all_and_unacknowledged_alarms(sim: Started) -> None:
    fleet, platform, _base = await sim(acknowledge=False)

    records = fleet.press_all()
    perimeter = fleet.press_all("perimeter")

    assert len(records) == 2 and {r.kind for r in records} == {"button"}
    assert len(perimeter) == sum(1 for k in fleet.city if any(d.kind == "perimeter_alarm" for d in k.devices))
    assert await wait_for(lambda: fleet.alarm_summary()["answered"] == 2 + len(perimeter), timeout=30)
    summary = fleet.alarm_summary()
    assert (summary["pressed"], summary["responses"], summary["no_response"], summary["unanswered"]) == (
        2 + len(perimeter),
        0,
        2 + len(perimeter),
        0,
    )
    assert len(platform.alarms) == 2 + len(perimeter)


async def test_steady_alarm_rate_presses_buttons(sim: Started) -> None:
    fleet, platform, _base = await sim(alarm_rate=40.0, control_port=None)
    assert fleet.control is None

    assert await wait_for(lambda: len(platform.alarms) >= 5, timeout=30)
    assert {r.kind for r in fleet.alarm_records()} <= {"button", "perimeter"}
    await fleet.stop(unregister=False)
    pressed = fleet.alarm_summary()["pressed"]
    assert pressed >= 5


async def test_a_slow_alarm_rate_presses_too(sim: Started) -> None:
    """Below one alarm a second (the demo's one every 30 s) the first is due after 1/rate s."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    fleet, platform, _base = await sim(alarm_rate=0.9, control_port=None)
    assert await wait_for(lambda: len(platform.alarms) >= 1, timeout=30)
    await fleet.stop(unregister=False)
    # At most what the rate allows in the time it ran (a slow machine makes that time longer;
    # a burst, or pressing every tick, goes far beyond it).
    allowed = int((loop.time() - started) * 0.9)
    assert 1 <= fleet.alarm_summary()["pressed"] <= max(allowed, 1)
