"""MANSCDP commands: parsing real captures and vendor variants, serialising, splitting, times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.errors import ManscdpError
from gateway.gb28181.manscdp import (
    AlarmDuty,
    CatalogItem,
    CatalogQuery,
    CatalogResponse,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    InvalidField,
    Keepalive,
    ManscdpMessage,
    ResultResponse,
    Root,
    UnknownCommand,
    UnsupportedRoot,
    decode_xml,
    format_gb_time,
    parse_gb_time,
    parse_manscdp,
    serialize,
    split_catalog,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "manscdp"
DEVICE = "34020000001110000001"
CAMERA = "34020000001320000001"
KINDERGARTEN = "和平区第三幼儿园·大门口"
RARE = "萳"


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _gb(xml: str) -> bytes:
    return ('<?xml version="1.0" encoding="GB2312"?>\r\n' + xml).encode("gb18030")


# --- real captures ----------------------------------------------------------------


def test_sbgb_keepalive_single_quoted_prolog() -> None:
    msg = parse_manscdp(_fixture("sbgb_keepalive_gb2312_single_quoted.xml"))
    assert msg == Keepalive(sn=1, device_id="34020000001320000002", status="OK")
    assert isinstance(msg, Keepalive)
    assert msg.online is True
    assert msg.root is Root.NOTIFY
    assert msg.cmd_type == "Keepalive"


def test_camsim_keepalive_utf8_thirteen_digit_sn() -> None:
    msg = parse_manscdp(_fixture("camsim_keepalive_utf8_13digit_sn.xml"))
    assert isinstance(msg, Keepalive)
    assert msg.sn == 1795913124140
    assert msg.sn > 2**32
    assert msg.device_id == "34020000001320000010"
    assert msg.online is True


@pytest.mark.parametrize(
    ("name", "sn"), [("sbgb_catalog_response_no_num.xml", 54019), ("sbgb_catalog_unsolicited_sn1_no_num.xml", 1)]
)
def test_sbgb_catalog_without_num_attribute(name: str, sn: int) -> None:
    msg = parse_manscdp(_fixture(name))
    assert msg == CatalogResponse(
        sn=sn,
        device_id="34020000001320000002",
        sum_num=1,
        items=(
            CatalogItem(
                device_id="34020000001310000003",
                name="ch1",
                manufacturer="StrawberryInno",
                model="v1",
                status="ON",
            ),
        ),
    )
    assert isinstance(msg, CatalogResponse)
    assert msg.items[0].online is True


def test_camsim_catalog_full_item() -> None:
    msg = parse_manscdp(_fixture("camsim_catalog_response_utf8_full_item.xml"))
    assert isinstance(msg, CatalogResponse)
    assert (msg.sn, msg.sum_num, msg.root) == (10820, 1, Root.RESPONSE)
    assert msg.items == (
        CatalogItem(
            device_id="34020000001310000010",
            name="1",
            manufacturer="SimCamera",
            model="SC-2000",
            owner="Owner",
            civil_code="340200000",
            address="Address",
            parental=0,
            parent_id="34020000001320000010",
            safety_way=0,
            register_way=1,
            secrecy=0,
            status="ON",
        ),
    )


def test_sbgb_deviceinfo_response() -> None:
    msg = parse_manscdp(_fixture("sbgb_deviceinfo_response_result_last.xml"))
    assert msg == DeviceInfoResponse(
        sn=64883,
        device_id="34020000001320000002",
        device_name="Superdock",
        result="OK",
        manufacturer="StrawberryInno",
        model="test",
        firmware="1.0",
        channel=None,
    )


def test_camsim_deviceinfo_response_without_result() -> None:
    msg = parse_manscdp(_fixture("camsim_deviceinfo_response_utf8_no_result.xml"))
    assert isinstance(msg, DeviceInfoResponse)
    assert (msg.sn, msg.device_name, msg.result, msg.firmware, msg.channel) == (68201, "camsim-1", None, "V1.0.0", 1)


def test_camsim_devicestatus_response() -> None:
    msg = parse_manscdp(_fixture("camsim_devicestatus_response_utf8.xml"))
    assert msg == DeviceStatusResponse(
        sn=79677,
        device_id="34020000001320000010",
        result="OK",
        online="ONLINE",
        status="ON",
        encode="ON",
        record="OFF",
    )
    assert isinstance(msg, DeviceStatusResponse)
    assert msg.is_online is True


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("platform_catalog_query_gb2312_crlf.xml", CatalogQuery(54019, "34020000001320000002")),
        ("platform_deviceinfo_query_gb2312.xml", DeviceInfoQuery(64883, "34020000001320000002")),
        ("platform_devicestatus_query_gb2312.xml", DeviceStatusQuery(79677, "34020000001320000010")),
    ],
)
def test_platform_queries(name: str, expected: ManscdpMessage) -> None:
    assert parse_manscdp(_fixture(name)) == expected


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.xml")), ids=lambda p: p.name)
def test_captures_survive_serialize_in_both_charsets(path: Path) -> None:
    msg = parse_manscdp(path.read_bytes())
    for charset in ("GB2312", "UTF-8"):
        assert parse_manscdp(serialize(msg, charset)) == msg


def test_serialized_query_matches_the_platform_capture_byte_for_byte() -> None:
    assert serialize(CatalogQuery(54019, "34020000001320000002")) == _fixture("platform_catalog_query_gb2312_crlf.xml")


# --- vendor variants ----------------------------------------------------------------


@pytest.mark.parametrize("status", ["OK", "ok", "On", "ONLINE", "online"])
def test_keepalive_online_spellings(status: str) -> None:
    msg = parse_manscdp(
        _gb(
            f"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{CAMERA}</DeviceID><Status>{status}</Status></Notify>"
        )
    )
    assert isinstance(msg, Keepalive)
    assert msg.online is True


@pytest.mark.parametrize("status", ["ERROR", "OFF", "", None])
def test_keepalive_not_online(status: str | None) -> None:
    tail = "" if status is None else f"<Status>{status}</Status>"
    msg = parse_manscdp(
        _gb(f"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>{CAMERA}</DeviceID>{tail}</Notify>")
    )
    assert isinstance(msg, Keepalive)
    assert msg.online is False


def test_keepalive_status_inside_info_hikvision() -> None:
    xml = (
        f"<Notify><CmdType>Keepalive</CmdType><SN>7</SN><DeviceID>{CAMERA}</DeviceID>"
        f"<Info><Status>OK</Status></Info></Notify>"
    )
    msg = parse_manscdp(_gb(xml))
    assert isinstance(msg, Keepalive)
    assert msg.status == "OK"
    assert msg.online is True


def test_keepalive_faulty_devices_in_info() -> None:
    xml = (
        f"<Notify><CmdType>Keepalive</CmdType><SN>7</SN><DeviceID>{DEVICE}</DeviceID><Status>OK</Status>"
        f"<Info><DeviceID>{CAMERA}</DeviceID><DeviceID>34020000001320000002</DeviceID></Info></Notify>"
    )
    msg = parse_manscdp(_gb(xml))
    assert isinstance(msg, Keepalive)
    assert msg.info_device_ids == (CAMERA, "34020000001320000002")
    assert parse_manscdp(serialize(msg)) == msg


def test_keepalive_with_empty_info() -> None:
    xml = f"<Notify><CmdType>Keepalive</CmdType><SN>7</SN><DeviceID>{CAMERA}</DeviceID><Status>OK</Status><Info/></Notify>"
    msg = parse_manscdp(_gb(xml))
    assert isinstance(msg, Keepalive)
    assert msg.info_device_ids == ()


def _catalog(items: str, sum_num: str | None = "2", root: str = "Response") -> bytes:
    total = "" if sum_num is None else f"<SumNum>{sum_num}</SumNum>"
    return _gb(
        f"<{root}><CmdType>Catalog</CmdType><SN>17430</SN><DeviceID>{DEVICE}</DeviceID>{total}"
        f'<DeviceList Num="9">{items}</DeviceList></{root}>'
    )


def test_catalog_item_all_fields_and_lowercase_info_tag() -> None:
    item = (
        f"<Item><DeviceID>{CAMERA}</DeviceID><Name>{KINDERGARTEN}</Name><Manufacturer>Hikvision</Manufacturer>"
        "<Model>DS-2CD3T46</Model><Owner>Owner</Owner><CivilCode>120101</CivilCode><Block>B1</Block>"
        "<Address>Gate 1 & east pole</Address><Parental>0</Parental><ParentID>34020000001110000001</ParentID>"
        "<SafetyWay>0</SafetyWay><RegisterWay>1</RegisterWay><Secrecy>0</Secrecy><IPAddress>10.0.0.5</IPAddress>"
        "<Port>5060</Port><Status>ON</Status><Longitude>117.2008</Longitude><Latitude>39.0842</Latitude>"
        "<info><PTZType>3</PTZType><RoomType>1</RoomType><BusinessGroupID>12010100002150000001</BusinessGroupID></info>"
        "</Item>"
    )
    msg = parse_manscdp(_catalog(item, "1"))
    assert isinstance(msg, CatalogResponse)
    assert msg.items[0] == CatalogItem(
        device_id=CAMERA,
        name=KINDERGARTEN,
        manufacturer="Hikvision",
        model="DS-2CD3T46",
        owner="Owner",
        civil_code="120101",
        block="B1",
        address="Gate 1 & east pole",
        parental=0,
        parent_id=DEVICE,
        safety_way=0,
        register_way=1,
        secrecy=0,
        status="ON",
        ip_address="10.0.0.5",
        port=5060,
        longitude=117.2008,
        latitude=39.0842,
        ptz_type=3,
        room_type=1,
        business_group_id="12010100002150000001",
    )


@pytest.mark.parametrize(
    ("status", "online"),
    [
        ("ON", True),
        ("On", True),
        ("ONLINE", True),
        ("OK", True),
        ("OFF", False),
        ("Off", False),
        ("OFFLINE", False),
        ("ONLY", None),
    ],
)
def test_catalog_item_status_spellings(status: str, online: bool | None) -> None:
    assert CatalogItem(CAMERA, status=status).online is online
    assert CatalogItem(CAMERA).online is None


def test_catalog_malformed_optional_fields_become_none() -> None:
    item = (
        f"<Item><DeviceID>{CAMERA}</DeviceID><Parental>yes</Parental><Port>70000</Port>"
        "<Longitude>abc</Longitude><Latitude>nan</Latitude><Info><PTZType>1.5</PTZType></Info></Item>"
    )
    msg = parse_manscdp(_catalog(item, "1"))
    assert isinstance(msg, CatalogResponse)
    assert msg.items == (CatalogItem(CAMERA),)


def test_catalog_items_without_device_id_are_skipped() -> None:
    items = (
        f"<Item><Name>orphan</Name></Item><Item><DeviceID> </DeviceID></Item><Item><DeviceID>{CAMERA}</DeviceID></Item>"
    )
    msg = parse_manscdp(_catalog(items))
    assert isinstance(msg, CatalogResponse)
    assert [i.device_id for i in msg.items] == [CAMERA]
    assert msg.sum_num == 2


def test_catalog_without_sumnum_counts_its_items() -> None:
    msg = parse_manscdp(_catalog(f"<Item><DeviceID>{CAMERA}</DeviceID></Item>", None))
    assert isinstance(msg, CatalogResponse)
    assert msg.sum_num == 1


def test_catalog_with_bad_sumnum_is_rejected() -> None:
    with pytest.raises(InvalidField) as info:
        parse_manscdp(_catalog("", "-1"))
    assert info.value.field == "SumNum"


def test_catalog_notify_with_events_and_business_group_at_top_level() -> None:
    items = (
        f"<Item><DeviceID>{CAMERA}</DeviceID><Event>DEL</Event></Item>"
        "<Item><DeviceID>12010100002160000001</DeviceID><Name>Nanjing Rd</Name>"
        "<BusinessGroupID>12010100002150000001</BusinessGroupID><Event>ADD</Event></Item>"
    )
    msg = parse_manscdp(_catalog(items, root="Notify"))
    assert isinstance(msg, CatalogResponse)
    assert msg.root is Root.NOTIFY
    assert [i.event for i in msg.items] == ["DEL", "ADD"]
    assert msg.items[1].business_group_id == "12010100002150000001"
    assert parse_manscdp(serialize(msg)) == msg


def test_catalog_query_with_time_window() -> None:
    xml = (
        f"<Query><CmdType>Catalog</CmdType><SN>5</SN><DeviceID>{DEVICE}</DeviceID>"
        "<StartTime>2024-05-20T08:00:00</StartTime><EndTime>2024-05-20T09:00:00</EndTime></Query>"
    )
    msg = parse_manscdp(_gb(xml))
    assert msg == CatalogQuery(5, DEVICE, "2024-05-20T08:00:00", "2024-05-20T09:00:00")
    assert parse_manscdp(serialize(msg)) == msg


@pytest.mark.parametrize(("tag", "attr"), [("Alarmstatus", "Num"), ("Alarmstatus", "num"), ("AlarmStatus", "Num")])
def test_devicestatus_alarm_status_variants(tag: str, attr: str) -> None:
    xml = (
        f"<Response><CmdType>DeviceStatus</CmdType><SN>248</SN><DeviceID>{DEVICE}</DeviceID><Result>OK</Result>"
        f"<Online>ONLINE</Online><Status>OK</Status><Encode>ON</Encode><Record>OFF</Record>"
        f'<DeviceTime>2024-05-20T10:16:02</DeviceTime><{tag} {attr}="2">'
        f"<Item><DeviceID>34020000001340000001</DeviceID><DutyStatus>ONDUTY</DutyStatus></Item>"
        f"<Item><DeviceID>34020000001340000002</DeviceID><DutyStatus>ALARM</DutyStatus></Item>"
        f"</{tag}></Response>"
    )
    msg = parse_manscdp(_gb(xml))
    assert isinstance(msg, DeviceStatusResponse)
    assert msg.alarm_status == (
        AlarmDuty("34020000001340000001", "ONDUTY"),
        AlarmDuty("34020000001340000002", "ALARM"),
    )
    assert msg.device_time == "2024-05-20T10:16:02"
    assert parse_manscdp(serialize(msg)) == msg


def test_devicestatus_offline() -> None:
    assert DeviceStatusResponse(1, DEVICE, online="OFFLINE").is_online is False
    assert DeviceStatusResponse(1, DEVICE).is_online is None


def test_case_insensitive_child_tags_and_root() -> None:
    msg = parse_manscdp(
        _gb(
            f"<notify><cmdtype>keepalive</cmdtype><sn> 3 </sn><deviceid>{CAMERA}</deviceid><status>OK</status></notify>"
        )
    )
    assert msg == Keepalive(3, CAMERA, "OK")


def test_exact_case_wins_over_folded_duplicate() -> None:
    xml = f"<Notify><CmdType>Keepalive</CmdType><SN>3</SN><DeviceID>{CAMERA}</DeviceID><status>OFF</status><Status>OK</Status></Notify>"
    msg = parse_manscdp(_gb(xml))
    assert isinstance(msg, Keepalive)
    assert msg.status == "OK"


def test_namespaced_document() -> None:
    xml = f'<Notify xmlns="urn:x"><CmdType>Keepalive</CmdType><SN>3</SN><DeviceID>{CAMERA}</DeviceID><Status>OK</Status></Notify>'
    assert parse_manscdp(_gb(xml)) == Keepalive(3, CAMERA, "OK")


# --- unknown and invalid ------------------------------------------------------------


def test_unknown_cmdtype_is_returned_not_raised() -> None:
    xml = f"<Query><CmdType>RecordInfo</CmdType><SN>9</SN><DeviceID>{CAMERA}</DeviceID><Type>all</Type></Query>"
    msg = parse_manscdp(_gb(xml))
    assert isinstance(msg, UnknownCommand)
    assert (msg.root, msg.cmd_type, msg.sn, msg.device_id) == (Root.QUERY, "RecordInfo", 9, CAMERA)
    assert msg.element.findtext("Type") == "all"


def test_known_cmdtype_under_unexpected_root_is_unknown() -> None:
    msg = parse_manscdp(_gb(f"<Control><CmdType>Catalog</CmdType><SN>9</SN><DeviceID>{CAMERA}</DeviceID></Control>"))
    assert isinstance(msg, UnknownCommand)
    assert msg.root is Root.CONTROL


def test_broadcast_without_device_id() -> None:
    xml = "<Notify><CmdType>Broadcast</CmdType><SN>9</SN><SourceID>1</SourceID><TargetID>2</TargetID></Notify>"
    msg = parse_manscdp(_gb(xml))
    assert isinstance(msg, UnknownCommand)
    assert msg.device_id == ""


def test_result_response_for_device_control() -> None:
    xml = f"<Response><CmdType>DeviceControl</CmdType><SN>11</SN><DeviceID>{CAMERA}</DeviceID><Result>ERROR</Result></Response>"
    msg = parse_manscdp(_gb(xml))
    assert msg == ResultResponse("DeviceControl", 11, CAMERA, "ERROR")
    assert isinstance(msg, ResultResponse)
    assert msg.ok is False
    assert msg.element is not None
    assert parse_manscdp(serialize(msg)) == msg


def test_unknown_command_serializes_its_element() -> None:
    xml = f"<Query><CmdType>PresetQuery</CmdType><SN>9</SN><DeviceID>{CAMERA}</DeviceID></Query>"
    msg = parse_manscdp(_gb(xml))
    assert parse_manscdp(serialize(msg, "UTF-8")) == msg


@pytest.mark.parametrize("root", ["Request", "html", "Item"])
def test_unsupported_root(root: str) -> None:
    with pytest.raises(UnsupportedRoot) as info:
        parse_manscdp(_gb(f"<{root}><CmdType>Keepalive</CmdType><SN>1</SN></{root}>"))
    assert isinstance(info.value, ManscdpError)
    assert info.value.status_hint == 415
    assert info.value.root == root


@pytest.mark.parametrize(
    ("xml", "field"),
    [
        ("<Notify><SN>1</SN><DeviceID>1</DeviceID></Notify>", "CmdType"),
        ("<Notify><CmdType> </CmdType><SN>1</SN></Notify>", "CmdType"),
        ("<Notify><CmdType>Keepalive</CmdType><DeviceID>1</DeviceID></Notify>", "SN"),
        ("<Notify><CmdType>Keepalive</CmdType><SN>abc</SN><DeviceID>1</DeviceID></Notify>", "SN"),
        ("<Notify><CmdType>Keepalive</CmdType><SN>-5</SN><DeviceID>1</DeviceID></Notify>", "SN"),
        ("<Notify><CmdType>Keepalive</CmdType><SN>1_000</SN><DeviceID>1</DeviceID></Notify>", "SN"),
        ("<Notify><CmdType>Keepalive</CmdType><SN>1" + "0" * 30 + "</SN></Notify>", "SN"),
        ("<Notify><CmdType>Keepalive</CmdType><SN>1</SN></Notify>", "DeviceID"),
    ],
)
def test_invalid_header(xml: str, field: str) -> None:
    with pytest.raises(InvalidField) as info:
        parse_manscdp(_gb(xml))
    assert info.value.field == field
    assert info.value.status_hint == 400


# --- serialising --------------------------------------------------------------------


def _rich_item(name: str) -> CatalogItem:
    return CatalogItem(
        device_id=CAMERA,
        name=name,
        manufacturer="Hikvision",
        model="DS-2CD3T46",
        owner="Owner",
        civil_code="340200",
        block="B",
        address="Gate 1 <east> & pole",
        parental=0,
        parent_id=DEVICE,
        safety_way=0,
        register_way=1,
        secrecy=0,
        status="ON",
        ip_address="10.0.0.5",
        port=5060,
        longitude=117.2008,
        latitude=39.0842,
        ptz_type=3,
        room_type=2,
        business_group_id="12010100002150000001",
        event="UPDATE",
    )


ROUND_TRIP_MESSAGES: list[ManscdpMessage] = [
    Keepalive(43, CAMERA),
    CatalogQuery(17430, DEVICE),
    CatalogResponse(17430, DEVICE, 3, (_rich_item(KINDERGARTEN), _rich_item(RARE + KINDERGARTEN))),
    CatalogResponse(1, DEVICE, 0, ()),
    DeviceInfoQuery(522901, DEVICE),
    DeviceInfoResponse(522901, DEVICE, "NVR-大厅", "OK", "Hikvision", "DS-7808N", "V4.30.085", 8),
    DeviceStatusQuery(248, DEVICE),
    DeviceStatusResponse(
        248, DEVICE, "OK", "ONLINE", "OK", "ON", "OFF", "2024-05-20T10:16:02", "萳 ok", (AlarmDuty(CAMERA, "OFFDUTY"),)
    ),
    ResultResponse("DeviceControl", 12, CAMERA, "OK"),
]


@pytest.mark.parametrize("charset", ["GB2312", "UTF-8"])
@pytest.mark.parametrize("msg", ROUND_TRIP_MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: ManscdpMessage, charset: str) -> None:
    body = serialize(msg, charset)
    assert decode_xml(body).charset == charset
    assert parse_manscdp(body) == msg


def test_catalog_element_order_follows_the_notes_example() -> None:
    body = serialize(CatalogResponse(17430, DEVICE, 3, (_rich_item("Gate 1"),)))
    root = decode_xml(body).root
    assert [c.tag for c in root] == ["CmdType", "SN", "DeviceID", "SumNum", "DeviceList"]
    item = root.find("DeviceList/Item")
    assert item is not None
    assert [c.tag for c in item] == [
        "DeviceID",
        "Name",
        "Manufacturer",
        "Model",
        "Owner",
        "CivilCode",
        "Block",
        "Address",
        "Parental",
        "ParentID",
        "BusinessGroupID",
        "SafetyWay",
        "RegisterWay",
        "Secrecy",
        "IPAddress",
        "Port",
        "Status",
        "Longitude",
        "Latitude",
        "Info",
        "Event",
    ]
    info = item.find("Info")
    assert info is not None
    assert [c.tag for c in info] == ["PTZType", "RoomType"]


def test_none_fields_are_omitted_and_num_counts_items() -> None:
    body = serialize(CatalogResponse(1, DEVICE, 5, (CatalogItem(CAMERA), CatalogItem(DEVICE))))
    root = decode_xml(body).root
    device_list = root.find("DeviceList")
    assert device_list is not None
    assert device_list.get("Num") == "2"
    assert [[c.tag for c in item] for item in device_list] == [["DeviceID"], ["DeviceID"]]


def test_empty_catalog_has_num_zero() -> None:
    root = decode_xml(serialize(CatalogResponse(1, DEVICE, 0))).root
    assert root.findtext("SumNum") == "0"
    device_list = root.find("DeviceList")
    assert device_list is not None
    assert device_list.get("Num") == "0"
    assert len(device_list) == 0


def test_keepalive_bytes_match_the_notes_example() -> None:
    expected = (
        '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>43</SN>\r\n'
        "<DeviceID>34020000001320000001</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
    ).encode("ascii")
    assert serialize(Keepalive(43, CAMERA)) == expected


# --- split_catalog -------------------------------------------------------------------


def _items(n: int) -> list[CatalogItem]:
    return [CatalogItem(f"340200000013200{i:05d}", name=f"通道{i}") for i in range(n)]


def test_split_catalog_chunks() -> None:
    chunks = split_catalog(7, DEVICE, _items(5), 2)
    assert [len(c.items) for c in chunks] == [2, 2, 1]
    assert all(c.sum_num == 5 and c.sn == 7 and c.device_id == DEVICE and c.root is Root.RESPONSE for c in chunks)
    assert [i for c in chunks for i in c.items] == _items(5)


def test_split_catalog_notify_root() -> None:
    chunks = split_catalog(7, DEVICE, _items(3), 8, root=Root.NOTIFY)
    assert len(chunks) == 1
    assert chunks[0].root is Root.NOTIFY


def test_split_empty_catalog_is_one_message() -> None:
    assert split_catalog(7, DEVICE, [], 4) == [CatalogResponse(7, DEVICE, 0, ())]


def test_split_catalog_rejects_non_positive_chunk_size() -> None:
    with pytest.raises(ManscdpError):
        split_catalog(7, DEVICE, _items(1), 0)


# --- time strings --------------------------------------------------------------------

CST = timezone(timedelta(hours=8))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-20T08:00:00", datetime(2024, 5, 20, 8, 0, 0)),
        ("2024-5-2T8:3:0", datetime(2024, 5, 2, 8, 3, 0)),
        ("2024-05-20 08:00:00", datetime(2024, 5, 20, 8, 0, 0)),
        ("2024-05-20T08:00:00.123", datetime(2024, 5, 20, 8, 0, 0, 123000)),
        ("2024-05-20T08:00:00,5", datetime(2024, 5, 20, 8, 0, 0, 500000)),
        ("2024-05-20T08:00:00+08:00", datetime(2024, 5, 20, 8, 0, 0, tzinfo=CST)),
        ("2024-05-20T08:00:00.123+0800", datetime(2024, 5, 20, 8, 0, 0, 123000, tzinfo=CST)),
        ("2024-05-20T00:00:00Z", datetime(2024, 5, 20, tzinfo=UTC)),
        ("2024-05-20T08:00:00-05", datetime(2024, 5, 20, 8, tzinfo=timezone(timedelta(hours=-5)))),
        (" 2024-05-20T08:00:00 ", datetime(2024, 5, 20, 8, 0, 0)),
    ],
)
def test_parse_gb_time_variants(text: str, expected: datetime) -> None:
    parsed = parse_gb_time(text)
    assert parsed == expected
    assert parsed.tzinfo == expected.tzinfo


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2024-13-01T00:00:00",
        "2024-02-30T00:00:00",
        "2024-05-20T25:00:00",
        "2024-05-20",
        "2024-05-20T08:00:00+25:00",
        "２０２４-05-20T08:00:00",
    ],
)
def test_parse_gb_time_rejects(text: str) -> None:
    with pytest.raises(ManscdpError):
        parse_gb_time(text)


def test_format_gb_time() -> None:
    assert format_gb_time(datetime(2024, 5, 2, 8, 3, 0, 999999)) == "2024-05-02T08:03:00"
    assert format_gb_time(datetime(2024, 5, 2, 8, 3, 0, tzinfo=CST)) == "2024-05-02T08:03:00"
    assert parse_gb_time(format_gb_time(datetime(2024, 12, 31, 23, 59, 59))) == datetime(2024, 12, 31, 23, 59, 59)
