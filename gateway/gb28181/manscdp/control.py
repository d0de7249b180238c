"""DeviceControl: the PTZCmd byte code and the ``Control/DeviceControl`` bodies (docs/gb28181.md §10), sans-I/O.

``PTZCmd`` is 8 bytes written as 16 upper-case hex characters (§10.2): header
``A5``, version/check nibble, address, instruction, data 1, data 2, data 3 with
the address's high nibble, and a checksum. :class:`PtzCommand` encodes and
decodes it and refuses what no camera should act on (a wrong checksum, left and
right at once, preset 0, an unknown instruction). :func:`ptz_command` maps the
HTTP API's actions (``left``, ``zoom_in``, ``preset_call``…) to commands.

The other commands of §10.3 are small dataclasses (:data:`ControlCommand`);
:func:`control_element` builds the body, :func:`parse_control` reads one back
(the simulated camera and the cascade relay need it), tolerant of tag case and
charset as every MANSCDP reader here is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, TypeAlias
from xml.etree.ElementTree import Element, SubElement

from gateway.errors import ManscdpError

from .codec import ChildIndex, encode_xml, local_name
from .messages import ManscdpMessage, ResultResponse, Root, UnknownCommand

__all__ = [
    "CMD_DEVICE_CONTROL",
    "DEFAULT_CONTROL_PRIORITY",
    "PTZ_TYPES_STEERABLE",
    "AlarmReset",
    "ControlCommand",
    "DragZoom",
    "GuardControl",
    "HomePosition",
    "IFrame",
    "InvalidControl",
    "PtzAction",
    "PtzCommand",
    "PtzControl",
    "RecordControl",
    "TeleBoot",
    "control_body",
    "control_element",
    "control_result",
    "is_device_control",
    "parse_control",
    "ptz_command",
    "steers_camera",
]

CMD_DEVICE_CONTROL: Final = "DeviceControl"
DEFAULT_CONTROL_PRIORITY: Final = 5  # what WVP writes into every PTZ command (§10.1)

PTZ_TYPES_STEERABLE: Final = frozenset({1, 2, 4, 5})
"""Catalog ``PTZType`` values that take PTZ commands: 1 球机 (dome), 2 半球 (half-dome), 4 遥控枪机
(PTZ bullet) and 5 遥控半球 (remote half-dome). 3 固定枪机 (fixed bullet), 6/7 (multi-lens panoramas)
and an absent value do not: a fixed camera has no motor, and a camera whose catalog says nothing
is not steered on a guess (docs/gb28181.md §6.3)."""

_HEADER: Final = 0xA5
_MOTION_STOP: Final = 0x00
_FI_STOP: Final = 0x40
# Instruction codes of the preset / cruise / scan / auxiliary family (§10.2).
PRESET_SET, PRESET_CALL, PRESET_DELETE = 0x81, 0x82, 0x83
_OTHER_CODES: Final = frozenset({0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x8D})


class InvalidControl(ManscdpError):
    """A PTZCmd or DeviceControl body that is malformed or asks for something impossible."""


# --- PTZCmd -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PtzCommand:
    """The 8-byte PTZ command (docs/gb28181.md §10.2); fields are the bytes' meanings.

    ``data3`` is the high nibble of byte 7 (zoom speed 0-15, or the upper 4 bits of a
    12-bit cruise/scan value); ``address`` is 12 bits (byte 3 and byte 7's low nibble).
    """

    instruction: int
    data1: int = 0
    data2: int = 0
    data3: int = 0
    address: int = 1
    version: int = 0

    def __post_init__(self) -> None:
        for name, value, top in (
            ("instruction", self.instruction, 0xFF),
            ("data1", self.data1, 0xFF),
            ("data2", self.data2, 0xFF),
            ("data3", self.data3, 0x0F),
            ("address", self.address, 0xFFF),
            ("version", self.version, 0x0F),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise InvalidControl(f"PTZCmd {name} must be 0..{top}, not {value!r}")
        _check_instruction(self.instruction, self.data1, self.data2)

    def to_bytes(self) -> bytes:
        """The 8 bytes, checksum included."""
        check = ((_HEADER >> 4) + (_HEADER & 0x0F) + self.version) % 16
        head = bytes(
            (
                _HEADER,
                self.version << 4 | check,
                self.address & 0xFF,
                self.instruction,
                self.data1,
                self.data2,
                self.data3 << 4 | self.address >> 8,
            )
        )
        return head + bytes((sum(head) % 256,))

    def encode(self) -> str:
        """16 upper-case hex characters, as ``<PTZCmd>`` carries them."""
        return self.to_bytes().hex().upper()

    @classmethod
    def decode(cls, text: str) -> PtzCommand:
        """Read ``<PTZCmd>`` text (any case, surrounding spaces ignored); :class:`InvalidControl` when wrong."""
        cleaned = text.strip()
        if len(cleaned) != 16:
            raise InvalidControl(f"PTZCmd must be 16 hex characters, got {len(cleaned)}")
        try:
            raw = bytes.fromhex(cleaned)
        except ValueError:
            raise InvalidControl("PTZCmd is not hexadecimal") from None
        if raw[0] != _HEADER:
            raise InvalidControl(f"PTZCmd header must be A5, not {raw[0]:02X}")
        version, check = raw[1] >> 4, raw[1] & 0x0F
        if check != ((_HEADER >> 4) + (_HEADER & 0x0F) + version) % 16:
            raise InvalidControl(f"PTZCmd byte 2 check nibble {check:X} is wrong for version {version}")
        if sum(raw[:7]) % 256 != raw[7]:
            raise InvalidControl(f"PTZCmd checksum {raw[7]:02X} != {sum(raw[:7]) % 256:02X}")
        return cls(raw[3], raw[4], raw[5], raw[6] >> 4, (raw[6] & 0x0F) << 8 | raw[2], version)

    # --- what it means -------------------------------------------------------------------------

    @property
    def is_motion(self) -> bool:
        """A pan/tilt/zoom instruction (bits 7-6 = 00), the all-zero stop included."""
        return self.instruction & 0xC0 == 0

    @property
    def is_focus_iris(self) -> bool:
        """A focus/iris instruction (``0x4X``), its stop ``0x40`` included."""
        return self.instruction & 0xF0 == 0x40

    @property
    def is_stop(self) -> bool:
        """The PTZ stop (``0x00``) or the FI stop (``0x40``)."""
        return self.instruction in (_MOTION_STOP, _FI_STOP)

    @property
    def pan(self) -> int:
        """-1 left, +1 right, 0 none."""
        return _direction(self.instruction, 0x01, 0x02) if self.is_motion else 0

    @property
    def tilt(self) -> int:
        """+1 up, -1 down, 0 none."""
        return _direction(self.instruction, 0x08, 0x04) if self.is_motion else 0

    @property
    def zoom(self) -> int:
        """+1 in (tele), -1 out (wide), 0 none."""
        return _direction(self.instruction, 0x10, 0x20) if self.is_motion else 0

    @property
    def focus(self) -> int:
        """+1 far, -1 near, 0 none."""
        return _direction(self.instruction, 0x01, 0x02) if self.is_focus_iris else 0

    @property
    def iris(self) -> int:
        """+1 open, -1 close, 0 none."""
        return _direction(self.instruction, 0x04, 0x08) if self.is_focus_iris else 0

    @property
    def preset(self) -> int | None:
        """The preset number of a set/call/delete, else None."""
        return self.data2 if self.instruction in (PRESET_SET, PRESET_CALL, PRESET_DELETE) else None


def _direction(instruction: int, plus: int, minus: int) -> int:
    return (1 if instruction & plus else 0) - (1 if instruction & minus else 0)


def _check_instruction(code: int, data1: int, data2: int) -> None:
    """Refuse instructions no camera should act on (opposite directions together, preset 0, unknown codes)."""
    if code & 0xC0 == 0:
        for a, b, what in (
            (0x20, 0x10, "zoom in and out"),
            (0x08, 0x04, "up and down"),
            (0x02, 0x01, "left and right"),
        ):
            if code & a and code & b:
                raise InvalidControl(f"PTZCmd asks for {what} at once")
        return
    if code & 0xF0 == 0x40:
        if code & 0x0C == 0x0C:
            raise InvalidControl("PTZCmd asks to open and close the iris at once")
        if code & 0x03 == 0x03:
            raise InvalidControl("PTZCmd asks to focus near and far at once")
        return
    if code not in _OTHER_CODES:
        raise InvalidControl(f"unknown PTZCmd instruction {code:02X}")
    if code in (PRESET_SET, PRESET_CALL, PRESET_DELETE) and not 1 <= data2 <= 255:
        raise InvalidControl("preset number must be 1..255")


class PtzAction(StrEnum):
    """The actions of ``POST /api/channels/{id}/ptz`` (the console's pad)."""

    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"
    UP_LEFT = "up_left"
    UP_RIGHT = "up_right"
    DOWN_LEFT = "down_left"
    DOWN_RIGHT = "down_right"
    ZOOM_IN = "zoom_in"
    ZOOM_OUT = "zoom_out"
    FOCUS_NEAR = "focus_near"
    FOCUS_FAR = "focus_far"
    IRIS_OPEN = "iris_open"
    IRIS_CLOSE = "iris_close"
    STOP = "stop"
    PRESET_SET = "preset_set"
    PRESET_CALL = "preset_call"
    PRESET_DELETE = "preset_delete"

    @property
    def moves(self) -> bool:
        """A continuous movement that runs until a stop (what the auto-stop covers)."""
        return self not in (PtzAction.STOP, PtzAction.PRESET_SET, PtzAction.PRESET_CALL, PtzAction.PRESET_DELETE)


_PAN_TILT: Final = {
    PtzAction.LEFT: 0x02,
    PtzAction.RIGHT: 0x01,
    PtzAction.UP: 0x08,
    PtzAction.DOWN: 0x04,
    PtzAction.UP_LEFT: 0x0A,
    PtzAction.UP_RIGHT: 0x09,
    PtzAction.DOWN_LEFT: 0x06,
    PtzAction.DOWN_RIGHT: 0x05,
}
_FOCUS_IRIS: Final = {
    PtzAction.FOCUS_FAR: 0x41,
    PtzAction.FOCUS_NEAR: 0x42,
    PtzAction.IRIS_OPEN: 0x44,
    PtzAction.IRIS_CLOSE: 0x48,
}
_PRESETS: Final = {
    PtzAction.PRESET_SET: PRESET_SET,
    PtzAction.PRESET_CALL: PRESET_CALL,
    PtzAction.PRESET_DELETE: PRESET_DELETE,
}


def ptz_command(action: PtzAction | str, speed: int = 128, preset: int | None = None) -> PtzCommand:
    """The command for an API action; ``speed`` 0..255 (zoom uses its upper 4 bits), ``preset`` 1..255.

    Raises :class:`InvalidControl` (a ``ValueError``) for an unknown action or a value out of range.
    """
    try:
        act = PtzAction(action)
    except ValueError:
        raise InvalidControl(f"unknown PTZ action {str(action)[:40]!r}") from None
    if not isinstance(speed, int) or isinstance(speed, bool) or not 0 <= speed <= 255:
        raise InvalidControl(f"speed must be an integer 0..255, not {speed!r}")
    if act in _PAN_TILT:
        code = _PAN_TILT[act]
        return PtzCommand(code, speed if code & 0x03 else 0, speed if code & 0x0C else 0)
    if act in (PtzAction.ZOOM_IN, PtzAction.ZOOM_OUT):
        zoom_speed = max(1, speed >> 4) if speed else 0
        return PtzCommand(0x10 if act is PtzAction.ZOOM_IN else 0x20, data3=zoom_speed)
    if act in _FOCUS_IRIS:
        code = _FOCUS_IRIS[act]
        return PtzCommand(code, speed if code & 0x03 else 0, speed if code & 0x0C else 0)
    if act is PtzAction.STOP:
        return PtzCommand(_MOTION_STOP)
    if preset is None or not isinstance(preset, int) or isinstance(preset, bool) or not 1 <= preset <= 255:
        raise InvalidControl(f"{act.value} needs a preset number 1..255, not {preset!r}")
    return PtzCommand(_PRESETS[act], 0, preset)


# --- the other DeviceControl commands (§10.3) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PtzControl:
    """``<PTZCmd>`` with ``<Info><ControlPriority>``."""

    command: PtzCommand
    priority: int | None = DEFAULT_CONTROL_PRIORITY


@dataclass(frozen=True, slots=True)
class TeleBoot:
    """``<TeleBoot>Boot</TeleBoot>``: reboot the device."""


@dataclass(frozen=True, slots=True)
class RecordControl:
    """``<RecordCmd>Record|StopRecord</RecordCmd>`` (2022: optional ``<StreamNumber>``)."""

    start: bool
    stream_number: int | None = None


@dataclass(frozen=True, slots=True)
class GuardControl:
    """``<GuardCmd>SetGuard|ResetGuard</GuardCmd>``: arm or disarm."""

    arm: bool


@dataclass(frozen=True, slots=True)
class AlarmReset:
    """``<AlarmCmd>ResetAlarm</AlarmCmd>``, optionally only one ``AlarmMethod``/``AlarmType``."""

    method: str | None = None
    alarm_type: str | None = None


@dataclass(frozen=True, slots=True)
class HomePosition:
    """``<HomePosition>``: go back to preset ``preset_index`` after ``reset_time`` s idle (when enabled)."""

    enabled: bool
    reset_time: int = 0
    preset_index: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.reset_time <= 86_400:
            raise InvalidControl(f"HomePosition ResetTime must be 0..86400 s, not {self.reset_time}")
        if not 0 <= self.preset_index <= 255:
            raise InvalidControl(f"HomePosition PresetIndex must be 0..255, not {self.preset_index}")


@dataclass(frozen=True, slots=True)
class DragZoom:
    """``<DragZoomIn>``/``<DragZoomOut>`` (3-D positioning): a box drawn on a play window, in pixels."""

    zoom_in: bool
    length: int
    width: int
    mid_x: int
    mid_y: int
    length_x: int
    length_y: int

    def __post_init__(self) -> None:
        if self.length <= 0 or self.width <= 0:
            raise InvalidControl("DragZoom Length and Width (the play window) must be positive")
        if not (0 <= self.mid_x <= self.length and 0 <= self.mid_y <= self.width):
            raise InvalidControl("DragZoom MidPoint must lie inside the play window")
        if not (0 < self.length_x <= self.length and 0 < self.length_y <= self.width):
            raise InvalidControl("DragZoom LengthX/LengthY must be positive and fit the play window")


@dataclass(frozen=True, slots=True)
class IFrame:
    """``<IFameCmd>Send</IFameCmd>`` (the 2016 spelling WVP sends and parses; 2022's ``IFrameCmd`` is read too)."""


ControlCommand: TypeAlias = (
    PtzControl | TeleBoot | RecordControl | GuardControl | AlarmReset | HomePosition | DragZoom | IFrame
)

_DRAG_FIELDS: Final = (
    ("Length", "length"),
    ("Width", "width"),
    ("MidPointX", "mid_x"),
    ("MidPointY", "mid_y"),
    ("LengthX", "length_x"),
    ("LengthY", "length_y"),
)


def steers_camera(command: ControlCommand) -> bool:
    """Commands that move the camera's view (what the PTZ permission covers)."""
    return isinstance(command, PtzControl | DragZoom | HomePosition)


def _add(parent: Element, tag: str, text: object) -> Element:
    child = SubElement(parent, tag)
    child.text = str(text)
    return child


def control_element(sn: int, device_id: str, command: ControlCommand) -> Element:
    """The ``Control/DeviceControl`` document for ``command`` (field order as WVP writes it)."""
    root = Element(Root.CONTROL.value)
    _add(root, "CmdType", CMD_DEVICE_CONTROL)
    _add(root, "SN", sn)
    _add(root, "DeviceID", device_id)
    if isinstance(command, PtzControl):
        _add(root, "PTZCmd", command.command.encode())
        if command.priority is not None:
            _add(SubElement(root, "Info"), "ControlPriority", command.priority)
    elif isinstance(command, TeleBoot):
        _add(root, "TeleBoot", "Boot")
    elif isinstance(command, RecordControl):
        _add(root, "RecordCmd", "Record" if command.start else "StopRecord")
        if command.stream_number is not None:
            _add(root, "StreamNumber", command.stream_number)
    elif isinstance(command, GuardControl):
        _add(root, "GuardCmd", "SetGuard" if command.arm else "ResetGuard")
    elif isinstance(command, AlarmReset):
        _add(root, "AlarmCmd", "ResetAlarm")
        if command.method is not None or command.alarm_type is not None:
            info = SubElement(root, "Info")
            if command.method is not None:
                _add(info, "AlarmMethod", command.method)
            if command.alarm_type is not None:
                _add(info, "AlarmType", command.alarm_type)
    elif isinstance(command, HomePosition):
        home = SubElement(root, "HomePosition")
        _add(home, "Enabled", 1 if command.enabled else 0)
        _add(home, "ResetTime", command.reset_time)
        _add(home, "PresetIndex", command.preset_index)
    elif isinstance(command, DragZoom):
        drag = SubElement(root, "DragZoomIn" if command.zoom_in else "DragZoomOut")
        for tag, attr in _DRAG_FIELDS:
            _add(drag, tag, getattr(command, attr))
    else:
        _add(root, "IFameCmd", "Send")
    return root


def control_body(device_id: str, command: ControlCommand) -> Callable[[int, str], bytes]:
    """A body builder ``(sn, charset) -> bytes`` for :meth:`DeviceAccess.send_command`."""
    return lambda sn, charset: encode_xml(control_element(sn, device_id, command), charset)


# --- reading ------------------------------------------------------------------------------------


def is_device_control(message: ManscdpMessage) -> bool:
    """A ``Control/DeviceControl`` command (any CmdType case)."""
    return (
        isinstance(message, UnknownCommand)
        and message.root is Root.CONTROL
        and message.cmd_type.strip().lower() == "devicecontrol"
    )


def _int(fields: ChildIndex, tag: str, default: int | None = None) -> int:
    text = fields.text(tag)
    if text is None:
        if default is None:
            raise InvalidControl(f"{tag} is missing")
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidControl(f"{tag} is not an integer: {text[:20]!r}") from None


def parse_control(element: Element) -> ControlCommand:
    """The command of a ``Control/DeviceControl`` document; :class:`InvalidControl` when none is usable.

    Tags match exactly first, then in any case (vendors write ``<ptzcmd>``, WVP relays
    ``<info>``); values are compared case-insensitively (``record``, ``SETGUARD``).
    """
    fields = ChildIndex(element)
    if (ptz := fields.text("PTZCmd")) is not None:
        info = ChildIndex(fields.get("Info"))
        priority = info.text("ControlPriority")
        try:
            level = int(priority) if priority is not None else None
        except ValueError:
            level = None  # a priority we cannot read does not void the command
        return PtzControl(PtzCommand.decode(ptz), level)
    if fields.get("TeleBoot") is not None:
        if (fields.text("TeleBoot") or "").lower() != "boot":
            raise InvalidControl("TeleBoot must be Boot")
        return TeleBoot()
    if (record := fields.text("RecordCmd")) is not None:
        word = record.lower()
        if word not in ("record", "stoprecord"):
            raise InvalidControl(f"RecordCmd must be Record or StopRecord, not {record[:20]!r}")
        stream = fields.text("StreamNumber")
        return RecordControl(word == "record", int(stream) if stream is not None and stream.isdigit() else None)
    if (guard := fields.text("GuardCmd")) is not None:
        word = guard.lower()
        if word not in ("setguard", "resetguard"):
            raise InvalidControl(f"GuardCmd must be SetGuard or ResetGuard, not {guard[:20]!r}")
        return GuardControl(word == "setguard")
    if (alarm := fields.text("AlarmCmd")) is not None:
        if alarm.lower() != "resetalarm":
            raise InvalidControl(f"AlarmCmd must be ResetAlarm, not {alarm[:20]!r}")
        info = ChildIndex(fields.get("Info"))
        return AlarmReset(info.text("AlarmMethod"), info.text("AlarmType"))
    if (home := fields.get("HomePosition")) is not None:
        values = ChildIndex(home)
        return HomePosition(
            _int(values, "Enabled", 0) == 1, _int(values, "ResetTime", 0), _int(values, "PresetIndex", 0)
        )
    for tag, zoom_in in (("DragZoomIn", True), ("DragZoomOut", False)):
        if (drag := fields.get(tag)) is not None:
            values = ChildIndex(drag)
            numbers = {attr: _int(values, name) for name, attr in _DRAG_FIELDS}
            return DragZoom(zoom_in, **numbers)
    for tag in ("IFameCmd", "IFrameCmd"):
        if fields.get(tag) is not None:
            return IFrame()
    names = [local_name(child.tag) for child in element][3:6]
    raise InvalidControl(f"no DeviceControl command this gateway knows (children: {', '.join(names) or 'none'})")


def control_result(message: ManscdpMessage | None) -> bool | None:
    """A ``Response/DeviceControl``'s Result: True OK, False ERROR, None when it is no such answer."""
    if not isinstance(message, ResultResponse) or message.cmd_type.strip().lower() != "devicecontrol":
        return None
    return message.ok
