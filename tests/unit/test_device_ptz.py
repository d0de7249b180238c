"""Simulated PTZ cameras (gateway/gb28181/device_ptz.py) against the gateway core in memory, on a fake clock."""

from __future__ import annotations

import pytest
from gb_harness import NVR_ID, GbHarness, make_harness

from gateway.gb28181.access_events import ManscdpReceived
from gateway.gb28181.device_agent import DeviceAgent
from gateway.gb28181.device_ptz import MAX_ZOOM, PtzCameras, PtzPose, window_of
from gateway.gb28181.manscdp import ResultResponse
from gateway.gb28181.manscdp.control import (
    ControlCommand,
    DragZoom,
    GuardControl,
    HomePosition,
    PtzCommand,
    PtzControl,
    RecordControl,
    TeleBoot,
    control_body,
    control_result,
    ptz_command,
)


def _ready(result: str | None = "OK") -> tuple[GbHarness, DeviceAgent, PtzCameras, str, str]:
    h = make_harness()
    agent = h.add_agent(NVR_ID, n_channels=2)
    ptz, fixed = (c.device_id for c in agent.profile.channels)
    feature = PtzCameras([ptz], result=result)
    agent.features.append(feature)
    h.start(agent)
    h.pump(until=2.0)
    assert agent.registered
    h.take()
    return h, agent, feature, ptz, fixed


def _send(h: GbHarness, target: str, command: ControlCommand) -> int:
    sn = h.access.send_command(NVR_ID, "DeviceControl", control_body(target, command), h.clock.now)
    assert sn is not None
    h.deliver()
    return sn


def _answers(h: GbHarness, sn: int) -> list[bool | None]:
    return [
        control_result(e.message)
        for e in h.of_type(ManscdpReceived)
        if isinstance(e.message, ResultResponse) and e.message.sn == sn
    ]


def test_a_move_integrates_speed_until_the_stop() -> None:
    h, _, feature, ptz, _ = _ready()
    start = feature.pose(ptz, h.clock.now)
    assert start == PtzPose()
    _send(h, ptz, PtzControl(ptz_command("right", 255)))
    assert feature.moving(ptz)
    h.advance(1.0)
    _send(h, ptz, PtzControl(ptz_command("stop")))
    pose = feature.pose(ptz, h.clock.now)
    assert pose is not None and pose.pan == pytest.approx(0.5, abs=0.02) and pose.tilt == 0.0
    h.advance(5.0)
    assert feature.pose(ptz, h.clock.now) == pose  # stopped: it stays
    assert not feature.moving(ptz)
    # Half speed up-left for 2 s: a quarter unit each way per second.
    _send(h, ptz, PtzControl(ptz_command("up_left", 128)))
    h.advance(2.0)
    moved = feature.pose(ptz, h.clock.now)
    assert moved is not None
    assert moved.pan == pytest.approx(0.5 - 0.502, abs=0.02) and moved.tilt == pytest.approx(0.502, abs=0.02)
    # A long move ends at the mechanical stop.
    _send(h, ptz, PtzControl(ptz_command("zoom_in", 255)))
    h.advance(30.0)
    zoomed = feature.pose(ptz, h.clock.now)
    assert zoomed is not None and zoomed.zoom == MAX_ZOOM
    assert not _answers(h, 0)


def test_presets_return_to_the_same_view() -> None:
    h, _, feature, ptz, _ = _ready()
    _send(h, ptz, PtzControl(ptz_command("down_right", 200)))
    h.advance(0.7)
    _send(h, ptz, PtzControl(ptz_command("stop")))
    _send(h, ptz, PtzControl(ptz_command("preset_set", preset=7)))
    saved = feature.pose(ptz, h.clock.now)
    _send(h, ptz, PtzControl(ptz_command("left", 255)))
    h.advance(3.0)
    assert feature.pose(ptz, h.clock.now) != saved
    _send(h, ptz, PtzControl(ptz_command("preset_call", preset=7)))
    assert feature.pose(ptz, h.clock.now) == saved
    assert not feature.moving(ptz)  # a preset call ends the running move
    _send(h, ptz, PtzControl(ptz_command("preset_delete", preset=7)))
    _send(h, ptz, PtzControl(ptz_command("right", 255)))
    h.advance(0.5)
    _send(h, ptz, PtzControl(ptz_command("preset_call", preset=7)))  # deleted: nothing happens
    assert feature.pose(ptz, h.clock.now) != saved


def test_home_position_returns_after_the_reset_time_and_is_answered() -> None:
    h, _, feature, ptz, fixed = _ready()
    _send(h, ptz, PtzControl(ptz_command("preset_set", preset=1)))  # home = where it looks now
    sn = _send(h, ptz, HomePosition(True, 10, 1))
    h.pump()
    assert _answers(h, sn) == [True]
    _send(h, ptz, PtzControl(ptz_command("up", 255)))
    h.advance(1.0)
    _send(h, ptz, PtzControl(ptz_command("stop")))
    assert feature.pose(ptz, h.clock.now) != PtzPose()
    h.advance(5.0)
    assert feature.pose(ptz, h.clock.now) != PtzPose()  # not idle long enough
    h.advance(6.0)
    assert feature.pose(ptz, h.clock.now) == PtzPose()
    sn = _send(h, fixed, HomePosition(True, 10, 1))  # a fixed camera has no home position
    h.pump()
    assert _answers(h, sn) == [False]


def test_drag_zoom_centres_on_the_box() -> None:
    h, _, feature, ptz, _ = _ready()
    # A box in the right half of a 1920x1080 window, a quarter of its width.
    sn = _send(h, ptz, DragZoom(True, 1920, 1080, 1440, 540, 480, 270))
    h.pump()
    assert _answers(h, sn) == [True]
    pose = feature.pose(ptz, h.clock.now)
    assert pose is not None and pose.zoom == pytest.approx(4.0) and pose.pan == pytest.approx(0.5)
    left, top, width, _ = window_of(pose)
    assert left + width / 2 == pytest.approx(0.625)  # the box's centre is now the view's


@pytest.mark.parametrize(
    ("command", "effect"),
    [
        (TeleBoot(), "rebooted"),
        (RecordControl(True), "recording"),
        (GuardControl(False), "disarmed"),
    ],
)
def test_other_commands_are_answered_ok(command: ControlCommand, effect: str) -> None:
    h, _, feature, ptz, _ = _ready()
    sn = _send(h, NVR_ID, command)
    h.pump()
    assert _answers(h, sn) == [True]
    assert feature.state[NVR_ID] == effect


def test_misbehaving_devices_answer_error_or_nothing() -> None:
    h, _, feature, _, _ = _ready(result="ERROR")
    sn = _send(h, NVR_ID, GuardControl(True))
    h.pump()
    assert _answers(h, sn) == [False]
    h, _, feature, _, _ = _ready(result=None)
    sn = _send(h, NVR_ID, GuardControl(True))
    h.advance(5.0)
    assert _answers(h, sn) == [] and feature.received_total == 1


def test_ptz_for_a_fixed_channel_and_broken_commands_are_refused() -> None:
    h, _, feature, ptz, fixed = _ready()
    _send(h, fixed, PtzControl(ptz_command("left", 255)))
    assert feature.pose(fixed, h.clock.now) is None and feature.refused == 1
    # A PTZCmd with a wrong checksum (built by hand: PtzCommand refuses it).
    body = control_body(ptz, PtzControl(PtzCommand(0x02, 1)))(5, "GB2312").replace(
        b"A50F0102010000B8", b"A50F0102010000B9"
    )
    h.access.send_command(
        NVR_ID, "DeviceControl", lambda sn, charset: body.replace(b"<SN>5<", f"<SN>{sn}<".encode()), 0
    )
    h.deliver()
    assert feature.refused == 2
    assert feature.pose(ptz, h.clock.now) == PtzPose()
