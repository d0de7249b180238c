"""Simulator faults without sockets: parsing ``KG:MODE[:CAMERA]``, resolving them against the city, the
no-entrance plan, the black clip, the silent alarm box and the upper-down switch (simulators/faults.py)."""

from __future__ import annotations

from datetime import datetime

import av
import numpy as np
import pytest

from gateway.cli import build_parser, fleet_options_from_args
from gateway.gb28181.device_agent import DeviceAgent, Misbehaviour, ServerInfo
from gateway.gb28181.manscdp import AlarmNotify, Keepalive, serialize
from gateway.gb28181.requests import build_message
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint
from gateway.gb28181.sip.idsource import RandomIds
from gateway.gb28181.sip.transport import Peer, Transport
from gateway.registry.model import AreaTag, guess_area
from simulators.black_picture import BLACK_LUMA, BlackClips, encode_black_clip
from simulators.city import build_city, installer_areas
from simulators.demo import Demo, DemoOptions
from simulators.faults import (
    Fault,
    FaultError,
    FaultSpec,
    apply_plan_faults,
    describe,
    parse_fault,
    parse_faults,
    resolve_faults,
)
from simulators.fleet import device_profile
from simulators.upper_down import DOWN_STATUS, UpperDown
from simulators.video import VideoProfile

SMALL = VideoProfile(width=160, height=96, fps=10, seconds=1.0, bitrate=200_000)


# --- parsing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("3:camera-offline", FaultSpec(3, Fault.CAMERA_OFFLINE)),
        ("3:camera-offline:1", FaultSpec(3, Fault.CAMERA_OFFLINE, 1)),
        ("0:BLACK-PICTURE:12", FaultSpec(0, Fault.BLACK_PICTURE, 12)),
        ("12010100112160000300:no-entrance", FaultSpec("12010100112160000300", Fault.NO_ENTRANCE)),
        (" 7 : silent-alarm ", FaultSpec(7, Fault.SILENT_ALARM)),
        ("municipal:upper-down", FaultSpec("municipal", Fault.UPPER_DOWN)),
        ("district-120101:upper-down", FaultSpec("district-120101", Fault.UPPER_DOWN)),
    ],
)
def test_a_fault_is_target_mode_and_an_optional_camera(text: str, spec: FaultSpec) -> None:
    assert parse_fault(text) == spec
    assert parse_fault(str(spec)) == spec  # str() gives the canonical spec back


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("3", "TARGET:MODE"),
        ("3:camera-offline:1:2", "TARGET:MODE"),
        ("3:on-fire", "unknown fault mode"),
        ("3:no-entrance:1", "takes no camera"),
        ("3:silent-alarm:1", "takes no camera"),
        ("3:camera-offline:0", "camera number must be 1..99"),
        ("3:camera-offline:100", "camera number must be 1..99"),
        ("3:camera-offline:x", "camera number"),
        ("-1:camera-offline", "index or its 20-digit ID"),
        ("abc:camera-offline", "index or its 20-digit ID"),
        ("12010100112150000300:no-entrance", "not a kindergarten ID"),  # a 215 business group, not a 216
        ("1201010011216:no-entrance", "index is small"),
        ("5:upper-down", "names an upper platform"),
        (":camera-offline", "TARGET:MODE"),
    ],
)
def test_a_bad_fault_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(FaultError, match=says):
        parse_fault(text)


def test_kgw_simulate_takes_repeatable_faults() -> None:
    args = build_parser().parse_args(["simulate", "--fault", "0:silent-alarm", "--fault", "1:camera-offline:2"])
    assert fleet_options_from_args(args).faults == (
        FaultSpec(0, Fault.SILENT_ALARM),
        FaultSpec(1, Fault.CAMERA_OFFLINE, 2),
    )
    assert fleet_options_from_args(build_parser().parse_args(["simulate"])).faults == ()
    with pytest.raises(FaultError):
        fleet_options_from_args(build_parser().parse_args(["simulate", "--fault", "0:bogus"]))


def test_kgw_platform_takes_upper_down_and_a_control_port() -> None:
    args = build_parser().parse_args(["platform", "--level", "municipal", "--fault", "upper-down"])
    assert args.fault == "upper-down" and args.fault_control_port is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["platform", "--level", "municipal", "--fault", "camera-offline"])


# --- resolving against the city ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def city() -> list:
    return build_city(4, cameras_per_kindergarten=(4, 6), perimeter_share=0.0)


def cameras_of(kg) -> list[str]:
    return [c.id for d in kg.devices for c in d.channels if c.kind == "camera"]


def test_faults_resolve_to_the_kindergartens_channels(city) -> None:
    specs = parse_faults(["1:camera-offline:2", f"{city[2].id}:black-picture", "1:silent-alarm", "3:no-entrance"])
    faults = resolve_faults(city, specs)
    assert set(faults) == {city[1].id, city[2].id, city[3].id}
    one = faults[city[1].id]
    assert one.index == 1 and one.offline == {cameras_of(city[1])[1]} and one.silent_alarm
    assert not one.black and not one.no_entrance
    assert one.modes == {Fault.CAMERA_OFFLINE, Fault.SILENT_ALARM}
    assert faults[city[2].id].black == set(cameras_of(city[2]))  # no camera number: every camera
    assert faults[city[3].id].no_entrance and not faults[city[3].id].offline
    assert one.as_json()["offline_channels"] == [cameras_of(city[1])[1]]


def test_faults_that_do_not_fit_the_city_are_refused(city) -> None:
    with pytest.raises(FaultError, match="no kindergarten #4"):
        resolve_faults(city, parse_faults(["4:no-entrance"]))
    with pytest.raises(FaultError, match="has cameras 1..") as err:
        resolve_faults(city, parse_faults(["0:camera-offline:40"]))
    assert city[0].name in str(err.value)
    other = "12011900112160000100"  # a kindergarten ID that is not in this small city
    with pytest.raises(FaultError, match="not in the simulated city"):
        resolve_faults(city, parse_faults([f"{other}:no-entrance"]))
    assert resolve_faults(city, parse_faults([f"{other}:no-entrance"]), partial=True) == {}  # another shard's
    with pytest.raises(FaultError, match="upper platform's fault"):
        resolve_faults(city, parse_faults(["municipal:upper-down"]))


@pytest.mark.parametrize("ipc", [False, True])
def test_no_entrance_leaves_no_camera_that_is_or_looks_like_an_entrance(ipc: bool) -> None:
    city = build_city(6, cameras_per_kindergarten=(20, 24), ipc_mode=ipc)  # enough cameras for a 后门 too
    kg = next(k for k in city if sum(c.area == "entrance" for d in k.devices for c in d.channels) >= 3)
    faults = resolve_faults(city, parse_faults([f"{kg.id}:no-entrance"]))[kg.id]
    changed = apply_plan_faults(kg, faults)
    assert cameras_of(changed) == cameras_of(kg)  # the same channels, only where they look is different
    cameras = [c for d in changed.devices for c in d.channels if c.kind == "camera"]
    assert not [c for c in cameras if c.area == "entrance"]
    assert not [c for c in cameras if guess_area(c.name) is AreaTag.ENTRANCE], [c.name for c in cameras]
    assert all(a["area"] != "entrance" for a in installer_areas(changed))  # the installer confirms none
    assert all(
        guess_area(item.name) is not AreaTag.ENTRANCE
        for d in changed.devices
        for item in device_profile(d, changed, "pw").channels
        if item.device_id in cameras_of(changed)
    )
    if ipc:  # an IPC carries its camera's name
        assert all(d.name == d.channels[0].name for d in changed.devices if d.kind == "ipc")
    alarm_box = next(d for d in changed.devices if d.kind == "alarm_box")
    assert alarm_box == next(d for d in kg.devices if d.kind == "alarm_box")  # the button stays where it was
    assert apply_plan_faults(kg, None) is kg
    assert "no-entrance" in describe(changed, faults)


def test_an_offline_camera_is_off_in_its_devices_catalog(city) -> None:
    faults = resolve_faults(city, parse_faults(["0:camera-offline:1"]))[city[0].id]
    nvr = next(d for d in city[0].devices if d.kind == "nvr")
    status = {
        item.device_id: item.status for item in device_profile(nvr, city[0], "pw", offline=faults.offline).channels
    }
    first = cameras_of(city[0])[0]
    assert status[first] == "OFF"
    assert all(s == "ON" for channel, s in status.items() if channel != first)
    assert "大门口" in describe(city[0], faults)  # camera 1 is the main gate


# --- black picture -----------------------------------------------------------------------------------------


def decode_gray(units, codec: str) -> list[np.ndarray]:
    ctx = av.CodecContext.create(codec, "r")
    images = []
    for unit in units:
        if not unit.is_video:
            continue
        for packet in ctx.parse(unit.data):
            images += [f.to_ndarray(format="gray") for f in ctx.decode(packet)]
    for packet in ctx.parse(b""):  # the parser holds the last access unit until flushed
        images += [f.to_ndarray(format="gray") for f in ctx.decode(packet)]
    images += [f.to_ndarray(format="gray") for f in ctx.decode(None)]
    return images


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_a_black_clip_is_valid_video_of_black_frames(codec: str) -> None:
    profile = VideoProfile(width=160, height=96, fps=10, seconds=1.0, bitrate=200_000, codec=codec, audio=True)
    clip = encode_black_clip(profile)
    assert len(clip.frames) == profile.frame_count and clip.frames[0][2]  # starts on a key frame
    images = decode_gray(clip.access_units, codec)
    assert len(images) == profile.frame_count
    assert all(img.shape == (96, 160) and int(img.max()) <= BLACK_LUMA + 4 for img in images)
    assert any(not u.is_video for u in clip.access_units)  # the microphone's tone is still there


def test_black_clips_are_encoded_once_per_profile() -> None:
    clips = BlackClips()
    assert clips.get(SMALL) is clips.get(SMALL)
    assert clips.misses == 1


# --- silent alarm box -----------------------------------------------------------------------------------------


def alarm_box(misbehaviour: Misbehaviour) -> tuple[DeviceAgent, SipEndpoint]:
    city = build_city(1, cameras_per_kindergarten=(2, 2))
    box = next(d for d in city[0].devices if d.kind == "alarm_box")
    endpoint = SipEndpoint(RandomIds(), local_host="127.0.0.1", local_port=5999)
    server = ServerInfo("12010000002090000001", "1201000000", Peer(Transport.UDP, "127.0.0.1", 5060))
    return DeviceAgent(device_profile(box, city[0], "pw"), server, endpoint, misbehaviour=misbehaviour), endpoint


def test_a_silent_alarm_box_records_the_press_but_sends_nothing() -> None:
    loud, loud_endpoint = alarm_box(Misbehaviour())
    silent, silent_endpoint = alarm_box(Misbehaviour(alarm_silent=True))
    wall = datetime(2026, 3, 2, 8, 0, 0)
    loud.press_alarm(1.0, wall)
    record = silent.press_alarm(1.0, wall)
    assert [d for d, _ in loud_endpoint.data_to_send() if b"<CmdType>Alarm</CmdType>" in d]
    assert silent_endpoint.data_to_send() == []
    assert silent.stats.alarms_sent == 1 and silent.stats.alarm_messages == 0
    assert silent.alarms[record.sn] is record and record.attempts == 0 and not record.answered


# --- upper-down switch ------------------------------------------------------------------------------------------


def deliver(body: bytes, switch: UpperDown, platform: SipEndpoint) -> tuple[bool, int | None]:
    """A gateway's MESSAGE with ``body`` reaches the platform: (taken by the switch, status the gateway got)."""
    gateway = SipEndpoint(RandomIds(), local_host="127.0.0.1", local_port=5060)
    request = build_message(
        from_id="12010000002090000001",
        from_domain="1201000000",
        from_tag=gateway.new_tag(),
        to_id="12000000002000000001",
        to_domain="1200000000",
        request_uri="sip:12000000002000000001@127.0.0.1:5070",
        call_id=gateway.new_call_id(),
        cseq=1,
        body=body,
    )
    gateway.send_request(request, Peer(Transport.UDP, "127.0.0.1", 5070), 0.0)
    for data, _ in gateway.data_to_send():
        platform.receive(data, Peer(Transport.UDP, "127.0.0.1", 5060), 0.0)
    event = platform.next_event()
    assert isinstance(event, RequestReceived)
    taken = switch.route(event, 0.0)
    for data, _ in platform.data_to_send():
        gateway.receive(data, Peer(Transport.UDP, "127.0.0.1", 5070), 0.0)
    answer = gateway.next_event()
    return taken, answer.response.status if isinstance(answer, ResponseReceived) else None


def test_an_upper_that_is_down_refuses_alarms_only_and_comes_back() -> None:
    platform = SipEndpoint(RandomIds(), local_host="127.0.0.1", local_port=5070)
    switch = UpperDown(platform, down=True)
    alarm = serialize(AlarmNotify(sn=7, device_id="12010100111340001001", priority="1", method="1"))
    keepalive = serialize(Keepalive(8, "12010000002090000001", "OK"))
    assert deliver(alarm, switch, platform) == (True, DOWN_STATUS)
    assert deliver(keepalive, switch, platform) == (False, None)  # the platform answers it as usual
    assert deliver(b"<Notify><CmdType>Alarm</CmdType>broken", switch, platform) == (False, None)
    assert switch.refused == 1
    switch.down = False
    assert deliver(alarm, switch, platform) == (False, None)  # up again: the platform takes its alarms
    assert switch.as_json() == {"down": False, "refused": 1}


# --- the demo -------------------------------------------------------------------------------------------------


def test_the_demo_shows_three_faulty_kindergartens_of_its_twenty_and_none_in_a_small_city() -> None:
    specs = Demo(DemoOptions(kindergartens=20)).fault_specs()
    assert {s.fault for s in specs} == {Fault.CAMERA_OFFLINE, Fault.BLACK_PICTURE, Fault.NO_ENTRANCE}
    assert Fault.SILENT_ALARM not in {s.fault for s in specs}  # the demo's random presses all arrive
    assert Demo(DemoOptions(kindergartens=3)).fault_specs() == ()
    assert Demo(DemoOptions(kindergartens=20, faults=())).fault_specs() == ()  # --no-faults
    given = Demo(DemoOptions(kindergartens=20, faults=("2:silent-alarm", "police:upper-down"))).fault_specs()
    assert given == (FaultSpec(2, Fault.SILENT_ALARM), FaultSpec("police", Fault.UPPER_DOWN))
    city = build_city(20)
    assert len(resolve_faults(city, specs)) == 3
