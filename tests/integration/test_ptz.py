"""PTZ and device control end to end on loopback: HTTP → gateway → DeviceControl → simulated camera → picture.

The simulated ball camera burns its view (pan, tilt, zoom steps) into every frame
(simulators/ptz_view.py); the test decodes the gateway's live stream with PyAV and
reads it back, so "the command took effect" is seen in the picture itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import av
import pytest

from gateway import live as live_module
from gateway.gb28181.device_ptz import PtzCameras
from gateway.live import LiveStream
from gateway.security.principal import Principal, Role
from simulators.city import build_city
from simulators.ptz_view import ViewKey, read_marker
from simulators.video import VideoProfile
from tests.conftest import TEST_TOKEN_GRANT, http_json, wait_for
from tests.scope_principals import call, grants

VIDEO = VideoProfile(width=320, height=180, fps=10, seconds=1.0)
CITY = build_city(1, seed=2020, cameras_per_kindergarten=(3, 3))
KG = CITY[0]
_CAMERAS = {c.area: c.id for d in KG.devices for c in d.channels if c.kind == "camera"}
ENTRANCE, CLASSROOM = _CAMERAS["entrance"], _CAMERAS["classroom"]
OTHER_DISTRICT = next(code for code in ("120101", "120102", "120103") if code != KG.district_code)
PRINCIPALS = {
    "police": Principal("police", Role.POLICE),
    "duty-here": Principal("duty-here", Role.DISTRICT_DUTY, KG.district_code),
    "duty-elsewhere": Principal("duty-elsewhere", Role.DISTRICT_DUTY, OTHER_DISTRICT),
}


async def _setup(gateway_factory: Any, fleet_factory: Any, **config: Any) -> tuple[Any, Any, PtzCameras, str]:
    service = await gateway_factory(api_tokens=(TEST_TOKEN_GRANT, *grants(PRINCIPALS)), **config)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(3, 3), video=VIDEO)

    def ready() -> bool:
        channel = service.directory.channels.get(ENTRANCE)
        return channel is not None and channel.online and channel.ptz_type == 1

    assert await wait_for(ready, 60)
    agent = next(a for a in fleet.agents.values() if ENTRANCE in {c.device_id for c in a.profile.channels})
    feature = next(f for f in agent.features if isinstance(f, PtzCameras))
    return service, fleet, feature, f"http://127.0.0.1:{service.http_port}"


class Picture:
    """Decodes a live stream and reads the view marker of its newest frame."""

    def __init__(self, stream: LiveStream, viewer: str) -> None:
        self.stream, self.viewer = stream, viewer
        self.decoder = av.CodecContext.create("h264", "r")
        self.latest: ViewKey | None = None
        self.started = False

    async def until(self, predicate: Any, timeout: float = 30.0) -> ViewKey | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            units = self.stream.fanout.pull(self.viewer)
            for unit in units:
                self.started = self.started or unit.keyframe
                if not self.started:
                    continue
                for frame in self.decoder.decode(av.Packet(unit.data)):
                    self.latest = read_marker(frame.to_ndarray(format="bgr24"))
            if self.latest is not None and predicate(self.latest):
                return self.latest
            if not units:
                self.stream.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stream.wakeup.wait(), 0.5)
        return None


async def test_ptz_moves_the_picture_and_a_preset_brings_it_back(gateway_factory, fleet_factory, monkeypatch):
    monkeypatch.setattr(live_module, "LINGER", 0.2)
    service, _, feature, base = await _setup(gateway_factory, fleet_factory)
    stream, viewer = await service.live.watch(ENTRANCE)
    picture = Picture(stream, viewer)
    home = await picture.until(lambda key: True)
    assert home == ViewKey(8, 4, 0), "the ball camera starts centred, zoomed out"

    url = f"{base}/api/channels/{ENTRANCE}/ptz"
    assert (await http_json(url, {"action": "preset_set", "preset": 1}))[0] == 200
    status, body = await http_json(url, {"action": "right", "speed": 255})
    assert status == 200 and body["ptz_cmd"] == "A50F0101FF0000B5" and body["auto_stop"] == 2.0
    moved = await picture.until(lambda key: key.pan >= 11)
    assert moved is not None, f"the picture did not pan right (last {picture.latest})"
    assert (await http_json(url, {"action": "stop"}))[0] == 200
    assert await wait_for(lambda: not feature.moving(ENTRANCE), 10)
    assert not service.control.moving(ENTRANCE)

    assert (await http_json(url, {"action": "zoom_in", "speed": 255}))[0] == 200
    zoomed = await picture.until(lambda key: key.zoom >= 3)
    assert zoomed is not None and zoomed.pan >= 11
    assert (await http_json(url, {"action": "stop"}))[0] == 200

    assert (await http_json(url, {"action": "preset_call", "preset": 1}))[0] == 200
    assert await picture.until(lambda key: key == home) == home, "the preset returns to the same view"
    service.live.leave(ENTRANCE, viewer)
    kinds = [type(r.command).__name__ for r in feature.received]
    assert kinds.count("PtzControl") == 6


async def test_bad_input_scope_and_device_answers(gateway_factory, fleet_factory):
    service, fleet, feature, base = await _setup(gateway_factory, fleet_factory, control_timeout=1.0, ptz_auto_stop=0.5)
    ptz = f"{base}/api/channels/{{}}/ptz"
    device_id = service.directory.device_of(ENTRANCE)
    control = f"{base}/api/devices/{device_id}/control"

    status, body = await http_json(ptz.format(CLASSROOM), {"action": "left"})
    assert status == 409 and "PTZ" in body["error"]
    assert (await http_json(ptz.format(CLASSROOM)))[1] == {"channel_id": CLASSROOM, "ptz_type": 3, "steerable": False}
    assert (await http_json(ptz.format(ENTRANCE)))[1]["steerable"] is True
    assert (await call(ptz.format(ENTRANCE), "police"))[0] == 403
    assert (await http_json(ptz.format(ENTRANCE), {"action": "spin"}))[0] == 400
    assert (await http_json(ptz.format(ENTRANCE), {"action": "left", "speed": 300}))[0] == 400
    assert (await http_json(ptz.format(ENTRANCE), {"action": "preset_call", "preset": 0}))[0] == 400
    assert (await http_json(ptz.format(ENTRANCE), ["left"]))[0] == 400
    assert (await http_json(ptz.format("12010000001310000099"), {"action": "left"}))[0] == 404
    # Scope: the police may not steer at all; another district's duty officer is told "unknown".
    assert (await call(ptz.format(ENTRANCE), "police", {"action": "left"}))[0] == 403
    assert (await call(ptz.format(ENTRANCE), "duty-elsewhere", {"action": "left"}))[0] == 404
    assert (await call(control, "duty-elsewhere", {"command": "guard_set"}))[0] == 404
    assert (await call(ptz.format(ENTRANCE), "duty-here", {"action": "stop"}))[0] == 200
    assert not feature.received or all(r.channel_id == ENTRANCE for r in feature.received)

    # A lost release: the gateway stops the camera itself.
    assert (await http_json(ptz.format(ENTRANCE), {"action": "left", "speed": 64}))[0] == 200
    assert await wait_for(lambda: feature.moving(ENTRANCE), 10)
    assert await wait_for(lambda: not feature.moving(ENTRANCE), 10)
    assert service.control.auto_stops == 1

    # Commands answered with a Result.
    status, body = await http_json(control, {"command": "guard_set"})
    assert (status, body["result"]) == (200, "OK") and feature.state[device_id] == "armed"
    status, _ = await http_json(control, {"command": "record_start", "channel_id": CLASSROOM})
    assert status == 200 and feature.state[CLASSROOM] == "recording"
    assert (await http_json(control, {"command": "home_position", "channel_id": CLASSROOM, "preset": 1}))[0] == 409
    assert (await http_json(control, {"command": "home_position", "channel_id": ENTRANCE, "reset_time": 30}))[0] == 200
    assert (await http_json(control, {"command": "reboot_everything"}))[0] == 400
    assert (await http_json(control, {"command": "drag_zoom_in", "channel_id": ENTRANCE, "length": 0}))[0] == 400
    assert (await http_json(control, {"command": "iframe", "channel_id": "12010000001310000099"}))[0] == 404
    feature.result = "ERROR"
    status, body = await http_json(control, {"command": "guard_reset"})
    assert status == 502 and "ERROR" in body["error"]
    feature.result = None
    status, body = await http_json(control, {"command": "alarm_reset"})
    assert status == 504 and "did not answer" in body["error"]

    # Offline: nothing is sent.
    agent = next(a for a in fleet.agents.values() if a.profile.device_id == device_id)
    agent.stop(asyncio.get_running_loop().time(), unregister=True)
    assert await wait_for(lambda: not service.commands.is_registered(device_id), 20)
    status, body = await http_json(ptz.format(ENTRANCE), {"action": "left"})
    assert status == 409 and "offline" in body["error"]
    assert (await http_json(control, {"command": "teleboot"}))[0] == 409


@pytest.mark.parametrize("route", ["ptz", "control"])
async def test_requests_are_audited(gateway_factory, fleet_factory, route):
    service, _, _, base = await _setup(gateway_factory, fleet_factory)
    device_id = service.directory.device_of(ENTRANCE)
    if route == "ptz":
        url, data, action = f"{base}/api/channels/{ENTRANCE}/ptz", {"action": "stop"}, "ptz_control"
    else:
        url, data, action = f"{base}/api/devices/{device_id}/control", {"command": "iframe"}, "device_control"
    assert (await http_json(url, data))[0] == 200
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    items: list[Any] = []
    while not items and loop.time() < deadline:  # the trail writes behind
        status, trail = await http_json(f"{base}/api/audit?action={action}")
        items = trail["items"] if status == 200 else []
        await asyncio.sleep(0.1)
    assert items and items[0]["outcome"] == "ok" and items[0]["target"] in (ENTRANCE, device_id)
