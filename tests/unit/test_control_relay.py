"""The uppers' DeviceControl verdicts (gateway/cascade/control_relay.py): policy, police and allow_ptz, TeleBoot."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.cascade.control_relay import ControlRelay
from gateway.cascade.policy import SharePolicy
from gateway.gb28181.manscdp import Keepalive, parse_manscdp
from gateway.gb28181.manscdp.control import (
    ControlCommand,
    DragZoom,
    GuardControl,
    HomePosition,
    IFrame,
    PtzControl,
    RecordControl,
    TeleBoot,
    control_body,
    ptz_command,
)
from gateway.registry.model import AreaTag, Channel

DISTRICT = "120101"
ENTRANCE = "12010100001310000101"
CLASSROOM = "12010100001310000103"
FIXED_ENTRANCE = "12010100001310000104"
DEVICE = "12010100001180000100"
CHANNELS = {
    ENTRANCE: Channel(
        ENTRANCE, DEVICE, None, DISTRICT, "大门口", confirmed_area=AreaTag.ENTRANCE, ptz_type=1, type_code=131
    ),
    CLASSROOM: Channel(
        CLASSROOM, DEVICE, None, DISTRICT, "大一班", confirmed_area=AreaTag.CLASSROOM, ptz_type=1, type_code=131
    ),
    FIXED_ENTRANCE: Channel(
        FIXED_ENTRANCE, DEVICE, None, DISTRICT, "后门", confirmed_area=AreaTag.ENTRANCE, ptz_type=3, type_code=131
    ),
}


class Commands:
    def __init__(self, registered: bool = True) -> None:
        self.registered = registered

    def is_registered(self, device_id: str) -> bool:
        return self.registered


def _relay(registered: bool = True) -> ControlRelay:
    policies = {
        "district": SharePolicy.district(DISTRICT),
        "other": SharePolicy.district("120102"),
        "police": SharePolicy.police(),
        "police-ptz": SharePolicy.police(),
    }
    relay = ControlRelay(policies, CHANNELS)
    relay.commands = Commands(registered)  # type: ignore[assignment]
    return relay


def _link(name: str) -> Any:
    return SimpleNamespace(name=name, config=SimpleNamespace(allow_ptz=name == "police-ptz"))


def _message(channel: str, command: ControlCommand) -> Any:
    return parse_manscdp(control_body(channel, command)(1, "GB2312"))


LEFT = PtzControl(ptz_command("left", 10))


@pytest.mark.parametrize(
    ("upper", "channel", "command", "status"),
    [
        ("district", ENTRANCE, LEFT, 200),
        ("district", CLASSROOM, RecordControl(True), 200),
        ("district", ENTRANCE, TeleBoot(), 403),
        ("district", FIXED_ENTRANCE, LEFT, 403),  # a fixed bullet does not move
        ("district", FIXED_ENTRANCE, GuardControl(True), 200),
        ("district", "12010100001310000999", LEFT, 403),  # unknown: as outside the policy
        ("other", ENTRANCE, LEFT, 403),  # another district's platform
        ("police", ENTRANCE, LEFT, 403),
        ("police", ENTRANCE, HomePosition(True, 10, 1), 403),
        ("police", ENTRANCE, IFrame(), 200),
        ("police", ENTRANCE, GuardControl(False), 403),
        ("police", CLASSROOM, IFrame(), 403),  # never an indoor camera
        ("police-ptz", ENTRANCE, LEFT, 200),
        ("police-ptz", ENTRANCE, DragZoom(True, 100, 100, 50, 50, 10, 10), 200),
        ("police-ptz", CLASSROOM, LEFT, 403),
        ("police-ptz", ENTRANCE, RecordControl(False), 403),
    ],
)
def test_verdicts(upper: str, channel: str, command: ControlCommand, status: int) -> None:
    relay = _relay()
    assert relay.status(_link(upper), _message(channel, command)) == status


def test_unreadable_commands_offline_devices_and_other_messages() -> None:
    relay = _relay()
    body = b"<Control><CmdType>DeviceControl</CmdType><SN>1</SN><DeviceID>%s</DeviceID><PTZCmd>A5</PTZCmd></Control>"
    assert relay.status(_link("district"), parse_manscdp(body % ENTRANCE.encode())) == 400
    assert relay.status(_link("district"), Keepalive(1, "x")) is None  # not a DeviceControl: not its kind
    assert _relay(registered=False).status(_link("district"), _message(ENTRANCE, LEFT)) == 480
    assert relay.refused == 1
