"""GB/T 28181 identifiers (gateway.gb28181.ids)."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.errors import GatewayError, InvalidDeviceId
from gateway.gb28181.ids import (
    TIANJIN_DISTRICTS,
    DeviceType,
    GbId,
    district_name,
    is_civil_code,
    is_gb_id,
    make_id,
    ssrc_prefix,
)

CAMERA_ID = "12010100111320000001"  # docs/architecture.md §4 layout: 和平区, education, IPC


def test_parse_splits_every_field() -> None:
    gb = GbId.parse(CAMERA_ID)
    assert gb.value == CAMERA_ID
    assert gb.center == "12010100"
    assert gb.civil_code == "120101"
    assert gb.grassroots == "00"
    assert gb.industry == "11"
    assert gb.type_code == 132
    assert isinstance(gb.type_code, int)
    assert gb.network == 0
    assert isinstance(gb.network, int)
    assert gb.serial == "000001"
    assert gb.domain == "1201010011"
    assert gb.device_type is DeviceType.IPC
    assert str(gb) == CAMERA_ID


def test_server_id_from_notes() -> None:
    gb = GbId.parse("34020000002000000001")
    assert gb.domain == "3402000000"
    assert gb.device_type is DeviceType.SIP_SERVER
    assert gb.is_platform
    assert not gb.is_peripheral


@pytest.mark.parametrize(
    ("type_code", "peripheral", "platform"),
    [
        (111, False, False),
        (118, False, False),
        (130, False, False),
        (131, True, False),
        (132, True, False),
        (134, True, False),
        (143, True, False),
        (198, True, False),
        (199, False, False),
        (200, False, True),
        (209, False, True),
        (215, False, True),
        (216, False, True),
        (299, False, True),
        (300, False, False),
    ],
)
def test_classification(type_code: int, peripheral: bool, platform: bool) -> None:
    gb = GbId.parse(make_id("120101", "11", type_code, 0, 7))
    assert gb.is_peripheral is peripheral
    assert gb.is_platform is platform


def test_unknown_type_code_has_no_device_type() -> None:
    gb = GbId.parse(make_id("120101", "11", 999, 0, 1))
    assert gb.type_code == 999
    assert gb.device_type is None


def test_device_type_codes_used_by_the_design() -> None:
    assert DeviceType.DVR == 111
    assert DeviceType.ALARM_CONTROLLER == 117
    assert DeviceType.NVR == 118
    assert DeviceType.CAMERA == 131
    assert DeviceType.IPC == 132
    assert DeviceType.ALARM_INPUT == 134
    assert DeviceType.ALARM_OUTPUT == 135
    assert DeviceType.SIP_SERVER == 200
    assert DeviceType.ACCESS_GATEWAY == 209
    assert DeviceType.BUSINESS_GROUP == 215
    assert DeviceType.VIRTUAL_ORGANISATION == 216


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1201010011132000000",  # 19 digits
        "120101001113200000011",  # 21 digits
        " 12010100111320000001",
        "12010100111320000001 ",
        "12010100111320000001\n",
        "+1201010011132000001",
        "-1201010011132000001",
        "1201010011132000000a",
        "120101001113200000١",  # Arabic-Indic digit one: str.isdigit() says True
        "12010100111320000０1",  # full-width zero
        "1201010011132000000²",  # superscript two
        "1201010011_132000001",
    ],
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(InvalidDeviceId) as info:
        GbId.parse(bad)
    assert isinstance(info.value, GatewayError)
    assert isinstance(info.value, ValueError)
    assert is_gb_id(bad) is False


@pytest.mark.parametrize("bad", [None, 12010100111320000001, b"12010100111320000001"])
def test_parse_rejects_non_text(bad: object) -> None:
    with pytest.raises(InvalidDeviceId):
        GbId.parse(bad)  # type: ignore[arg-type]
    assert is_gb_id(bad) is False


def test_direct_construction_validates_too() -> None:
    with pytest.raises(InvalidDeviceId):
        GbId("123")


def test_gbid_is_a_frozen_ordered_value() -> None:
    a = GbId.parse("12010100111320000001")
    b = GbId.parse("12010100111320000002")
    assert a == GbId.parse("12010100111320000001")
    assert hash(a) == hash(GbId.parse("12010100111320000001"))
    assert a < b
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.value = "12010100111320000003"  # type: ignore[misc]


def test_is_gb_id() -> None:
    assert is_gb_id(CAMERA_ID)
    assert not is_gb_id("1201")


@pytest.mark.parametrize("code", ["12", "1201", "120101", "12010100"])
def test_civil_codes(code: str) -> None:
    assert is_civil_code(code)


@pytest.mark.parametrize("code", ["", "1", "120", "12010", "1201010", "120101001", "1201010011", "12a1", "١٢"])
def test_not_civil_codes(code: str) -> None:
    assert not is_civil_code(code)


def test_make_id_layout() -> None:
    assert make_id("120101", "11", 132, 0, 1) == "12010100111320000001"
    assert make_id("120119", "11", DeviceType.ALARM_INPUT, 7, 999_999) == "12011900111347999999"
    assert make_id("340200", "00", 200, 0, 1, grassroots="00") == "34020000002000000001"
    assert make_id("120101", "11", 5, 0, 0) == "12010100110050000000"
    assert is_gb_id(make_id("120116", "11", 118, 0, 42))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"civil_code6": "12010"},
        {"civil_code6": "1201010"},
        {"civil_code6": "12010a"},
        {"industry": "1"},
        {"industry": "١١"},
        {"type_code": 1000},
        {"type_code": -1},
        {"type_code": True},
        {"network": 10},
        {"network": -1},
        {"serial": 1_000_000},
        {"serial": -5},
        {"serial": 1.0},
        {"grassroots": "0"},
    ],
)
def test_make_id_rejects(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "civil_code6": "120101",
        "industry": "11",
        "type_code": 132,
        "network": 0,
        "serial": 1,
    }
    args.update(kwargs)
    with pytest.raises(InvalidDeviceId):
        make_id(**args)  # type: ignore[arg-type]


def test_tianjin_districts() -> None:
    assert len(TIANJIN_DISTRICTS) == 16
    assert TIANJIN_DISTRICTS["120101"] == "和平区"
    assert TIANJIN_DISTRICTS["120116"] == "滨海新区"
    assert TIANJIN_DISTRICTS["120119"] == "蓟州区"
    assert all(code.startswith("1201") and len(code) == 6 for code in TIANJIN_DISTRICTS)
    with pytest.raises(TypeError):
        TIANJIN_DISTRICTS["120199"] = "x"  # type: ignore[index]


def test_district_name() -> None:
    assert district_name("120102") == "河东区"
    assert district_name("12011000") == "东丽区"  # centre code
    assert district_name(CAMERA_ID) == "和平区"  # whole ID
    assert district_name("120107") is None  # not a district
    assert district_name("1201") is None  # municipal level
    assert district_name("340200") is None  # not Tianjin
    assert district_name("12010a") is None
    assert district_name("") is None


def test_ssrc_prefix() -> None:
    assert ssrc_prefix("3402000000") == "20000"
    assert ssrc_prefix("1201010011") == "10100"
    assert ssrc_prefix("3402000000.spvmn.cn") == "20000"
    assert ssrc_prefix(GbId.parse(CAMERA_ID).domain) == "10100"
    for bad in ("", "340200", "34020a0000", "127.0.0.1:5060"):
        with pytest.raises(InvalidDeviceId):
            ssrc_prefix(bad)
