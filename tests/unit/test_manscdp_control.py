"""PTZCmd encoding against the notes' verified table (docs/gb28181.md §10.2) and DeviceControl bodies (§10.3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.gb28181.manscdp import ResultResponse, UnknownCommand, decode_xml, parse_manscdp
from gateway.gb28181.manscdp.control import (
    AlarmReset,
    DragZoom,
    GuardControl,
    HomePosition,
    IFrame,
    InvalidControl,
    PtzAction,
    PtzCommand,
    PtzControl,
    RecordControl,
    TeleBoot,
    control_body,
    control_result,
    is_device_control,
    parse_control,
    ptz_command,
    steers_camera,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "manscdp"

# (command built field by field, the table's PTZCmd) -- every row of docs/gb28181.md §10.2.
VECTORS = [
    ("stop", PtzCommand(0x00), "A50F0100000000B5"),
    ("pan left, speed 0x1F", PtzCommand(0x02, 0x1F), "A50F01021F0000D6"),
    ("pan right, speed 0x80", PtzCommand(0x01, 0x80), "A50F010180000036"),
    ("tilt up, speed 0x80", PtzCommand(0x08, 0, 0x80), "A50F01080080003D"),
    ("up-left 0x40/0x40", PtzCommand(0x0A, 0x40, 0x40), "A50F010A4040003F"),
    ("zoom in, zoom speed 5", PtzCommand(0x10, data3=5), "A50F011000005015"),
    ("focus near, speed 0x20", PtzCommand(0x42, 0x20), "A50F014220000017"),
    ("iris open, speed 0x20", PtzCommand(0x44, 0, 0x20), "A50F014400200019"),
    ("FI stop", PtzCommand(0x40), "A50F0140000000F5"),
    ("set preset 1", PtzCommand(0x81, 0, 1), "A50F018100010037"),
    ("call preset 3", PtzCommand(0x82, 0, 3), "A50F01820003003A"),
    ("delete preset 3", PtzCommand(0x83, 0, 3), "A50F01830003003B"),
    ("cruise group 1 add preset 2", PtzCommand(0x84, 1, 2), "A50F01840102003C"),
    ("cruise group 1 speed 300", PtzCommand(0x86, 1, 0x2C, 0x1), "A50F0186012C1078"),
    ("cruise group 1 dwell 10 s", PtzCommand(0x87, 1, 10), "A50F0187010A0047"),
    ("start cruise group 1", PtzCommand(0x88, 1), "A50F01880100003E"),
    ("scan group 1 start", PtzCommand(0x89, 1, 0), "A50F01890100003F"),
    ("scan group 1 left", PtzCommand(0x89, 1, 1), "A50F018901010040"),
    ("scan group 1 right", PtzCommand(0x89, 1, 2), "A50F018901020041"),
    ("scan group 1 speed 100", PtzCommand(0x8A, 1, 100), "A50F018A016400A4"),
    ("aux switch 1 on", PtzCommand(0x8C, 1), "A50F018C01000042"),
    ("aux switch 1 off", PtzCommand(0x8D, 1), "A50F018D01000043"),
]


@pytest.mark.parametrize(("label", "command", "hex_text"), VECTORS, ids=[v[0] for v in VECTORS])
def test_every_vector_of_the_notes_table_encodes_and_decodes(label: str, command: PtzCommand, hex_text: str) -> None:
    assert command.encode() == hex_text, label
    assert PtzCommand.decode(hex_text) == command
    assert PtzCommand.decode(hex_text.lower()) == command  # vendors write lower case


@pytest.mark.parametrize(
    ("action", "speed", "preset", "hex_text"),
    [
        ("stop", 0, None, "A50F0100000000B5"),
        ("left", 0x1F, None, "A50F01021F0000D6"),
        ("right", 0x80, None, "A50F010180000036"),
        ("up", 0x80, None, "A50F01080080003D"),
        ("up_left", 0x40, None, "A50F010A4040003F"),
        ("zoom_in", 0x50, None, "A50F011000005015"),  # API speed 0x50 -> zoom speed 5 (upper nibble)
        ("focus_near", 0x20, None, "A50F014220000017"),
        ("iris_open", 0x20, None, "A50F014400200019"),
        ("preset_set", 128, 1, "A50F018100010037"),
        ("preset_call", 128, 3, "A50F01820003003A"),
        ("preset_delete", 128, 3, "A50F01830003003B"),
    ],
)
def test_api_actions_map_to_the_table(action: str, speed: int, preset: int | None, hex_text: str) -> None:
    assert ptz_command(action, speed, preset).encode() == hex_text


def test_directions_and_meaning_read_back() -> None:
    down_right = PtzCommand.decode(ptz_command("down_right", 200).encode())
    assert (down_right.pan, down_right.tilt, down_right.zoom) == (1, -1, 0)
    assert (down_right.data1, down_right.data2) == (200, 200)
    zoom_out = ptz_command("zoom_out", 255)
    assert (zoom_out.zoom, zoom_out.data3) == (-1, 15)
    assert ptz_command("zoom_in", 3).data3 == 1  # a slow but non-zero zoom stays non-zero
    assert ptz_command("iris_close", 9).iris == -1 and ptz_command("focus_far", 9).focus == 1
    assert ptz_command("stop").is_stop and PtzCommand(0x40).is_stop
    assert ptz_command("preset_call", preset=7).preset == 7 and ptz_command("left").preset is None
    assert PtzCommand(0x02, address=0xABC).encode()[4:6] == "BC"  # address low byte in byte 3 ...
    assert PtzCommand.decode(PtzCommand(0x02, address=0xABC).encode()).address == 0xABC  # ... high nibble in byte 7


@pytest.mark.parametrize(
    ("hex_text", "why"),
    [
        ("A50F0100000000B4", "checksum"),
        ("A40F0100000000B4", "header"),
        ("A50E0100000000B4", "check nibble"),
        ("A50F01030000", "16 hex"),
        ("A50F01ZZ00000000", "hexadecimal"),
        ("A50F010300000000", "left and right"),  # checksum fixed below
    ],
)
def test_malformed_commands_are_refused(hex_text: str, why: str) -> None:
    if why == "left and right":
        raw = bytearray(bytes.fromhex(hex_text))
        raw[7] = sum(raw[:7]) % 256
        hex_text = raw.hex()
    with pytest.raises(InvalidControl, match=why):
        PtzCommand.decode(hex_text)


@pytest.mark.parametrize(
    ("instruction", "data2"),
    [(0x0C, 0), (0x30, 0), (0x4C, 0), (0x43, 0), (0x81, 0), (0x82, 0), (0x50, 0), (0xC0, 0), (0x8B, 0)],
)
def test_invalid_combinations_cannot_be_built(instruction: int, data2: int) -> None:
    with pytest.raises(InvalidControl):
        PtzCommand(instruction, 0, data2)


@pytest.mark.parametrize(
    ("action", "speed", "preset"),
    [("spin", 1, None), ("left", 256, None), ("left", -1, None), ("preset_call", 1, 0), ("preset_set", 1, None)],
)
def test_bad_api_input_is_refused(action: str, speed: int, preset: int | None) -> None:
    with pytest.raises(InvalidControl):
        ptz_command(action, speed, preset)


@given(
    st.sampled_from(sorted(set(PtzAction) - {PtzAction.PRESET_SET, PtzAction.PRESET_CALL, PtzAction.PRESET_DELETE})),
    st.integers(0, 255),
)
def test_every_action_round_trips(action: PtzAction, speed: int) -> None:
    command = ptz_command(action, speed)
    assert PtzCommand.decode(command.encode()) == command


@given(st.binary(min_size=8, max_size=8))
def test_decoding_any_bytes_either_reads_or_refuses(raw: bytes) -> None:
    try:
        command = PtzCommand.decode(raw.hex())
    except InvalidControl:
        return
    assert command.encode() == raw.hex().upper()


# --- bodies ---------------------------------------------------------------------------------------------

CHANNEL = "34020000001320000001"
COMMANDS = [
    PtzControl(ptz_command("left", 0x1F)),
    TeleBoot(),
    RecordControl(True),
    RecordControl(False, stream_number=1),
    GuardControl(True),
    GuardControl(False),
    AlarmReset(),
    AlarmReset("2", "1"),
    HomePosition(True, 30, 3),
    DragZoom(True, 1920, 1080, 960, 540, 200, 100),
    DragZoom(False, 704, 576, 10, 20, 30, 40),
    IFrame(),
]


@pytest.mark.parametrize("command", COMMANDS, ids=[type(c).__name__ for c in COMMANDS])
@pytest.mark.parametrize("charset", ["GB2312", "UTF-8"])
def test_bodies_round_trip(command: object, charset: str) -> None:
    body = control_body(CHANNEL, command)(4711, charset)  # type: ignore[arg-type]
    assert body.startswith(f'<?xml version="1.0" encoding="{charset}"?>'.encode())
    message = parse_manscdp(body)
    assert isinstance(message, UnknownCommand) and is_device_control(message)
    assert (message.sn, message.device_id) == (4711, CHANNEL)
    assert parse_control(message.element) == command


def test_the_notes_envelope_parses() -> None:
    body = (FIXTURES / "notes_devicecontrol_ptz_gb2312.xml").read_bytes()
    assert control_body("34020000001320000001", PtzControl(PtzCommand(0x02, 0x1F)))(130822, "GB2312") == body
    message = parse_manscdp(body)
    assert isinstance(message, UnknownCommand)
    command = parse_control(message.element)
    assert command == PtzControl(PtzCommand(0x02, 0x1F), 5)
    assert steers_camera(command)


def test_vendor_case_and_gb2312_are_tolerated() -> None:
    decoded = decode_xml((FIXTURES / "composed_devicecontrol_guard_lowercase_gb2312.xml").read_bytes())
    assert decoded.charset == "GB2312"
    message = parse_manscdp((FIXTURES / "composed_devicecontrol_guard_lowercase_gb2312.xml").read_bytes())
    assert is_device_control(message)
    assert isinstance(message, UnknownCommand)
    assert parse_control(message.element) == GuardControl(True)
    assert not steers_camera(GuardControl(True))


def test_2022_iframe_spelling_and_unknown_commands() -> None:
    body = b'<?xml version="1.0"?><Control><CmdType>DeviceControl</CmdType><SN>1</SN><DeviceID>1</DeviceID><IFrameCmd>Send</IFrameCmd></Control>'
    message = parse_manscdp(body)
    assert isinstance(message, UnknownCommand) and parse_control(message.element) == IFrame()
    for inner in (
        "<FormatSDCard>0</FormatSDCard>",
        "<RecordCmd>Maybe</RecordCmd>",
        "<PTZCmd>A50F0100000000B4</PTZCmd>",
        "<HomePosition><Enabled>1</Enabled><ResetTime>x</ResetTime></HomePosition>",
        "<DragZoomIn><Length>10</Length></DragZoomIn>",
        "<HomePosition><Enabled>1</Enabled><PresetIndex>300</PresetIndex></HomePosition>",
    ):
        text = f"<Control><CmdType>DeviceControl</CmdType><SN>1</SN><DeviceID>1</DeviceID>{inner}</Control>"
        message = parse_manscdp(text.encode())
        assert isinstance(message, UnknownCommand)
        with pytest.raises(InvalidControl):
            parse_control(message.element)


def test_results_are_read_from_responses() -> None:
    ok = parse_manscdp(
        b"<Response><CmdType>DeviceControl</CmdType><SN>9</SN><DeviceID>1</DeviceID><Result>OK</Result></Response>"
    )
    error = parse_manscdp(
        b"<Response><CmdType>devicecontrol</CmdType><SN>9</SN><DeviceID>1</DeviceID><Result>ERROR</Result></Response>"
    )
    assert isinstance(ok, ResultResponse)
    assert control_result(ok) is True and control_result(error) is False
    assert control_result(None) is None
    assert control_result(ResultResponse("Alarm", 1, "1")) is None
