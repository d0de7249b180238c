"""RecordInfo query/answer codec and the many-MESSAGE reassembly (docs/gb28181.md §12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import ManscdpError
from gateway.gb28181.manscdp import decode_xml, parse_manscdp
from gateway.gb28181.manscdp.records import (
    RecordInfoAssembler,
    RecordInfoQuery,
    RecordInfoResponse,
    RecordItem,
    build_record_info_query,
    build_record_info_response,
    parse_record_info_query,
    parse_record_info_response,
    split_record_items,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "manscdp"
CHANNEL = "34020000001320000001"
T0 = datetime(2024, 5, 20, 8, 0, 0)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def segments(n: int, start: datetime = T0, length: int = 60) -> list[RecordItem]:
    return [
        RecordItem(
            CHANNEL,
            "大门",
            start + timedelta(seconds=i * length),
            start + timedelta(seconds=(i + 1) * length),
            type="time",
        )
        for i in range(n)
    ]


# --- query ---------------------------------------------------------------------------------------


def test_query_is_built_after_the_notes_and_always_says_type_all() -> None:
    body = build_record_info_query(RecordInfoQuery(77, CHANNEL, T0, T0 + timedelta(hours=1)))
    assert body.startswith(b'<?xml version="1.0" encoding="GB2312"?>\r\n')
    text = body.decode("gb18030")
    for line in (
        "<CmdType>RecordInfo</CmdType>",
        "<SN>77</SN>",
        f"<DeviceID>{CHANNEL}</DeviceID>",
        "<StartTime>2024-05-20T08:00:00</StartTime>",
        "<EndTime>2024-05-20T09:00:00</EndTime>",
        "<Secrecy>0</Secrecy>",
        "<Type>all</Type>",
    ):
        assert line in text
    assert "FilePath" not in text and "RecorderID" not in text
    # the generic parser sees a Query it does not model: the device side answers 200 and reads the element
    assert parse_manscdp(body).cmd_type == "RecordInfo"


def test_query_round_trips_with_optional_fields_and_utf8() -> None:
    query = RecordInfoQuery(
        5, CHANNEL, T0, T0 + timedelta(minutes=5), type="alarm", file_path="/a/b", address="北京路", recorder_id="r1"
    )
    parsed = parse_record_info_query(build_record_info_query(query, "UTF-8"))
    assert parsed == query


def test_query_refuses_a_reversed_range() -> None:
    with pytest.raises(ManscdpError):
        build_record_info_query(RecordInfoQuery(1, CHANNEL, T0, T0))
    body = build_record_info_query(RecordInfoQuery(1, CHANNEL, T0, T0 + timedelta(seconds=1)))
    with pytest.raises(ManscdpError):
        parse_record_info_query(body.replace(b"2024-05-20T08:00:01", b"2024-05-20T07:00:00"))


# --- answers -------------------------------------------------------------------------------------


def test_gb2312_first_part_of_a_split_answer() -> None:
    piece = parse_record_info_response(fixture("composed_recordinfo_response_gb2312_part1.xml"))
    assert (piece.sn, piece.device_id, piece.name, piece.sum_num, piece.num) == (77, CHANNEL, "幼儿园大门", 3, 2)
    first, second = piece.items
    assert first.file_path == "/mnt/hdd1/ch01/20240520080000.mp4" and first.address == "北京路1号"
    assert (first.start_time, first.end_time) == (T0, datetime(2024, 5, 20, 8, 30))
    assert (first.type, first.file_size, first.recorder_id) == ("time", 536870912, "34020000001110000001")
    # space instead of T and milliseconds
    assert second.start_time == datetime(2024, 5, 20, 8, 30)
    assert second.end_time == datetime(2024, 5, 20, 8, 31, 10, 500000)
    assert (second.type, second.stream_number, second.file_path) == ("alarm", 0, None)


def test_utf8_vendor_times_zone_and_no_padding() -> None:
    piece = parse_record_info_response(fixture("composed_recordinfo_response_utf8_part2_vendor_times.xml"))
    (item,) = piece.items
    expected = datetime(2024, 5, 20, 8, 40, tzinfo=UTC).astimezone().replace(tzinfo=None)
    assert item.start_time == expected  # a zoned time becomes local wall clock
    assert item.end_time == datetime(2024, 5, 20, 9, 0, 0)
    assert item.type == "manual"


def test_no_sumnum_and_a_broken_item_keep_the_good_one() -> None:
    piece = parse_record_info_response(fixture("composed_recordinfo_response_no_sumnum_bad_item.xml"))
    assert (piece.sum_num, piece.num, piece.malformed, len(piece.items)) == (None, 2, 1, 1)


def test_sumnum_zero_without_list_is_an_empty_answer() -> None:
    piece = parse_record_info_response(fixture("composed_recordinfo_response_sumnum0_no_list.xml"))
    assert (piece.sum_num, piece.num, piece.items) == (0, None, ())
    assembler = RecordInfoAssembler(CHANNEL, started_at=0.0)
    assert assembler.add(piece, 0.1) and assembler.items == []


def test_not_a_record_info_answer_is_refused() -> None:
    for body in (
        fixture("composed_recordinfo_response_gb2312_part1.xml").replace(b"RecordInfo", b"Catalog"),
        b"<?xml version='1.0'?><Query><CmdType>RecordInfo</CmdType><SN>1</SN></Query>",
        b"<Response><CmdType>RecordInfo</CmdType><SN>x</SN></Response>",
        b"not xml at all",
    ):
        with pytest.raises(ManscdpError):
            parse_record_info_response(body)


def test_response_builder_round_trips_in_both_charsets() -> None:
    items = segments(3)
    for charset in ("GB2312", "UTF-8"):
        (piece,) = split_record_items(9, CHANNEL, "大门", items, per_message=10)
        parsed = parse_record_info_response(build_record_info_response(piece, charset))
        assert parsed.items == tuple(RecordItem(**{**_fields(i), "secrecy": 0}) for i in items)
        assert (parsed.sum_num, parsed.num, parsed.name) == (3, 3, "大门")
        # also from an already decoded tree (what the command broker hands over)
        root = decode_xml(build_record_info_response(piece, charset)).root
        assert parse_record_info_response(root) == parsed


def _fields(item: RecordItem) -> dict[str, object]:
    return {name: getattr(item, name) for name in RecordItem.__slots__}


# --- reassembly ----------------------------------------------------------------------------------


def test_split_answer_from_two_charsets_completes_at_sumnum() -> None:
    assembler = RecordInfoAssembler(CHANNEL, started_at=0.0)
    assert not assembler.add(parse_record_info_response(fixture("composed_recordinfo_response_gb2312_part1.xml")), 0.1)
    assert assembler.add(
        parse_record_info_response(fixture("composed_recordinfo_response_utf8_part2_vendor_times.xml")), 0.2
    )
    assert [i.start_time.minute for i in assembler.items][:2] == [0, 30]
    assert assembler.name == "幼儿园大门" and assembler.messages == 2


def test_500_items_in_100_messages_out_of_order_with_a_retransmitted_piece() -> None:
    pieces = split_record_items(3, CHANNEL, "大门", segments(500), per_message=5)
    assert len(pieces) == 100
    wire = [build_record_info_response(p, "GB2312") for p in pieces]
    order = list(reversed(wire[1:])) + [wire[50], wire[0]]  # reversed, one piece twice, first one last
    assembler = RecordInfoAssembler(CHANNEL, started_at=0.0)
    done = [assembler.add(parse_record_info_response(body), 1.0) for body in order]
    assert done[-1] and not any(done[:-1])
    items = assembler.items
    assert len(items) == 500 and items == sorted(items, key=lambda i: i.start_time)
    assert items[0].start_time == T0 and items[-1].end_time == T0 + timedelta(minutes=500)


def test_missing_sumnum_falls_back_to_num() -> None:
    assembler = RecordInfoAssembler(CHANNEL, started_at=0.0)
    short = RecordInfoResponse(1, CHANNEL, None, None, tuple(segments(2)), num=3)  # Num says 3, two came
    assert not assembler.add(short, 0.1) and not assembler.complete
    hik = RecordInfoAssembler(CHANNEL, started_at=0.0)
    assert hik.add(parse_record_info_response(fixture("composed_recordinfo_response_no_sumnum_bad_item.xml")), 0.1)
    assert hik.counted_by_num and len(hik.items) == 1 and hik.malformed == 1


def test_item_cap_truncates_and_completes() -> None:
    assembler = RecordInfoAssembler(CHANNEL, started_at=0.0, max_items=10)
    for piece in split_record_items(1, CHANNEL, None, segments(50), per_message=7):
        if assembler.add(piece, 0.0):
            break
    assert assembler.truncated and assembler.complete and len(assembler.items) == 10


def test_timeout_by_injected_time_moves_with_each_piece() -> None:
    assembler = RecordInfoAssembler(CHANNEL, started_at=100.0, timeout=5.0)
    assert assembler.deadline() == 105.0 and not assembler.timed_out(104.9) and assembler.timed_out(105.0)
    pieces = split_record_items(1, CHANNEL, None, segments(10), per_message=4)
    assembler.add(pieces[0], 104.0)
    assert not assembler.timed_out(108.0) and assembler.timed_out(109.0)
    assert len(assembler.items) == 4 and not assembler.complete


def test_malformed_items_still_count_toward_sumnum() -> None:
    assembler = RecordInfoAssembler(CHANNEL, started_at=0.0)
    assert assembler.add(RecordInfoResponse(1, CHANNEL, None, 3, tuple(segments(2)), num=3, malformed=1), 0.0)
    assert len(assembler.items) == 2 and assembler.malformed == 1
