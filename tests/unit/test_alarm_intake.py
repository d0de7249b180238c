"""Alarm notifications: parsing (vendor quirks), intake judgement and deduplication, payload."""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from gateway.alarms.intake import AlarmIntake, AlarmNotice
from gateway.alarms.model import AlarmMethod, AlarmState, DeliveryEvent, describe_alarm
from gateway.alarms.payload import Enrichment, KindergartenInfo, build_payload, encode_payload, rfc3339_ms
from gateway.gb28181.manscdp import AlarmNotify, ResultResponse, decode_message, serialize

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "manscdp"
SENDER = "12010100111340001001"
T0 = datetime(2026, 11, 29, 11, 34, 19).timestamp()  # local time of the gateway (offset 0 below)


def intake(**kw: object) -> AlarmIntake:
    ids = (f"alarm-{n}" for n in itertools.count(1))
    return AlarmIntake(lambda: next(ids), **kw)  # type: ignore[arg-type]


def notice(
    body: AlarmNotify,
    *,
    at: float = T0,
    registered: bool = True,
    sender: str = SENDER,
    peer: str = "udp:10.0.0.2:5060",
    untrusted: str = "",
) -> AlarmNotice:
    return AlarmNotice(sender, body, at, registered, "12010100112160001000", "120101", peer, untrusted)


def tamper(sn: int) -> AlarmNotify:
    return AlarmNotify(sn, SENDER, priority="3", method="2", alarm_type="2", alarm_time="2026-11-29T11:34:19")


def button(sn: int = 1, when: str = "2026-11-29T11:34:19", **kw: object) -> AlarmNotify:
    fields: dict[str, object] = {"priority": "1", "method": "1", "alarm_time": when, "description": "一键报警"}
    fields.update(kw)
    return AlarmNotify(sn, SENDER, **fields)  # type: ignore[arg-type]


# --- parsing -------------------------------------------------------------------------------------


def test_notes_example_parses_with_every_field() -> None:
    message, charset = decode_message((FIXTURES / "notes_alarm_notify_gb2312.xml").read_bytes())
    assert charset == "GB2312"
    assert message == AlarmNotify(
        3902,
        "34020000001340000001",
        priority="1",
        method="2",
        alarm_time="2024-05-20T10:20:11",
        description="lobby emergency button pressed",
        longitude=117.2008,
        latitude=39.0842,
    )


def test_wvp_lowercase_info_and_event_type_are_found() -> None:
    message, _ = decode_message((FIXTURES / "wvp_style_alarm_lowercase_info_gb2312.xml").read_bytes())
    assert isinstance(message, AlarmNotify)
    assert (message.method, message.alarm_type, message.event_type) == ("5", "6", "1")
    assert message.description == "周界入侵 东侧围墙"
    assert message.alarm_time == "2024-05-20 10:20:11"


def test_broken_alarm_still_parses_and_keeps_the_text() -> None:
    message, _ = decode_message((FIXTURES / "alarm_missing_and_invalid_fields_utf8.xml").read_bytes())
    assert isinstance(message, AlarmNotify)
    assert message.device_id == ""  # no DeviceID: kept, the sender stands in later
    assert (message.priority, message.method, message.alarm_type) == ("urgent", "9", "2")
    assert message.longitude == 999.0


def test_alarm_method_inside_info_is_accepted() -> None:
    body = (
        b'<?xml version="1.0"?><Notify><CmdType>Alarm</CmdType><SN>1</SN><DeviceID>'
        + SENDER.encode()
        + b"</DeviceID><Info><AlarmMethod>2</AlarmMethod><AlarmType>2</AlarmType></Info></Notify>"
    )
    message, _ = decode_message(body)
    assert isinstance(message, AlarmNotify) and (message.method, message.alarm_type) == ("2", "2")


@pytest.mark.parametrize("charset", ["GB2312", "UTF-8"])
def test_serialize_round_trips(charset: str) -> None:
    original = button(sn=42, alarm_type="6", event_type="1", longitude=117.2, latitude=39.1, method="5")
    parsed, used = decode_message(serialize(original, charset))
    assert parsed == original and used == charset


def test_alarm_response_is_a_result_response() -> None:
    body = serialize(ResultResponse("Alarm", 3902, "34020000001340000001", "OK"))
    parsed, _ = decode_message(body)
    assert parsed == ResultResponse("Alarm", 3902, "34020000001340000001", "OK")


# --- intake ------------------------------------------------------------------------------------------


def test_clean_button_press_becomes_an_alarm_without_problems() -> None:
    result = intake().accept(notice(button()))
    alarm = result.alarm
    assert alarm is not None and result.duplicate_of is None
    assert (alarm.id, alarm.seq, alarm.priority, alarm.method, alarm.source_id) == ("alarm-1", 1, 1, 1, SENDER)
    assert alarm.alarm_time == "2026-11-29T11:34:19"
    assert alarm.problems == ()
    assert alarm.kind.name == "one_button" and alarm.kind.category == "emergency"
    assert alarm.order_key == "12010100112160001000"


def test_a_retransmission_of_the_same_session_is_a_duplicate_within_the_window() -> None:
    core = intake(window=600.0)
    first = core.accept(notice(button(sn=1))).alarm
    assert first is not None
    # the same SN from the same sender and address: the device resent it (issue 10, C4)
    again = core.accept(notice(button(sn=1), at=T0 + 5))
    assert again.alarm is None and again.duplicate_of == first.id
    later = core.accept(notice(button(sn=1), at=T0 + 601))
    assert later.alarm is not None and later.alarm.seq == 2


def test_a_new_sn_with_the_same_alarm_time_is_a_new_alarm() -> None:
    """The AlarmTime is predictable: keying on it let forged alarms swallow real presses (C4)."""
    core = intake()
    first = core.accept(notice(button(sn=1))).alarm
    second = core.accept(notice(button(sn=2), at=T0 + 5)).alarm
    assert first is not None and second is not None and second.id != first.id


def test_the_same_sn_from_another_address_is_a_new_alarm() -> None:
    core = intake()
    first = core.accept(notice(button(sn=1), peer="udp:10.0.0.2:5060")).alarm
    forged_first = core.accept(notice(button(sn=1), peer="udp:10.9.9.9:5060", at=T0 + 1))
    assert first is not None and forged_first.alarm is not None and forged_first.alarm.id != first.id


def test_nothing_is_merged_into_a_resolved_alarm() -> None:
    core = intake()
    first = core.accept(notice(button(sn=1))).alarm
    assert first is not None
    states = {first.id: AlarmState.RESOLVED}
    again = core.accept(notice(button(sn=1), at=T0 + 5), states.get)
    assert again.alarm is not None and again.alarm.id != first.id
    states[again.alarm.id] = AlarmState.ACKNOWLEDGED  # a resend of a press being handled is still that press
    assert core.accept(notice(button(sn=1), at=T0 + 6), states.get).duplicate_of == again.alarm.id


def test_trust_is_recorded_with_its_reason() -> None:
    core = intake()
    trusted = core.accept(notice(button(sn=1))).alarm
    mismatch = core.accept(notice(button(sn=2), untrusted="address_mismatch")).alarm
    lapsed = core.accept(notice(button(sn=3), registered=False)).alarm
    assert trusted is not None and trusted.verified and trusted.unverified_reason == ""
    assert mismatch is not None and not mismatch.verified and mismatch.unverified_reason == "address_mismatch"
    assert lapsed is not None and not lapsed.verified and lapsed.unverified_reason == "not_registered"


def test_a_flood_beyond_the_budget_is_collapsed_into_the_open_alarm() -> None:
    core = intake(rate=1.0, burst=3)
    made = [core.accept(notice(tamper(sn=n), at=T0)).alarm for n in range(3)]
    assert all(a is not None for a in made)
    over = core.accept(notice(tamper(sn=3), at=T0))
    assert over.alarm is None and over.collapsed_into == made[-1].id  # type: ignore[union-attr]
    # the one-button lane has its own budget: a press is never collapsed into the flood
    press = core.accept(notice(button(sn=4), at=T0)).alarm
    assert press is not None and press.urgent
    # a forged flood (another address, untrusted) has its own budget too: it cannot eat the device's
    forged = [core.accept(notice(tamper(sn=10 + n), at=T0, untrusted="address_mismatch")) for n in range(4)]
    assert [r.alarm is not None for r in forged] == [True, True, True, False]
    # the budget refills
    assert core.accept(notice(tamper(sn=20), at=T0 + 1.0)).alarm is not None


def test_over_the_budget_without_an_open_alarm_is_still_a_new_alarm() -> None:
    core = intake(rate=1.0, burst=1)
    first = core.accept(notice(tamper(sn=1))).alarm
    assert first is not None
    closed = {first.id: AlarmState.ACKNOWLEDGED}  # somebody took it: do not hide new ones in it
    second = core.accept(notice(tamper(sn=2)), closed.get)
    assert second.alarm is not None
    assert core.accept(notice(tamper(sn=3)), lambda _id: AlarmState.NEW, collapse=False).alarm is not None


def test_a_new_press_is_a_new_alarm() -> None:
    core = intake()
    a = core.accept(notice(button(sn=1, when="2026-11-29T11:34:19"))).alarm
    b = core.accept(notice(button(sn=2, when="2026-11-29T11:34:25"), at=T0 + 6)).alarm
    assert a is not None and b is not None and a.id != b.id and b.seq == a.seq + 1


def test_without_a_usable_time_the_sn_identifies_the_event() -> None:
    core = intake()
    a = core.accept(notice(button(sn=7, when="garbage"))).alarm
    assert a is not None and a.alarm_time is None
    assert any("unreadable" in p for p in a.problems)
    assert core.accept(notice(button(sn=7, when="garbage"), at=T0 + 1)).duplicate_of == a.id
    assert core.accept(notice(button(sn=8, when="garbage"), at=T0 + 1)).alarm is not None


def test_missing_and_invalid_fields_are_kept_as_problems() -> None:
    message, _ = decode_message((FIXTURES / "alarm_missing_and_invalid_fields_utf8.xml").read_bytes())
    assert isinstance(message, AlarmNotify)
    alarm = intake().accept(notice(message, registered=False)).alarm
    assert alarm is not None
    assert alarm.source_id == SENDER  # the sender stands in for the missing DeviceID
    assert (alarm.priority, alarm.method, alarm.alarm_type, alarm.longitude) == (None, None, 2, None)
    text = " | ".join(alarm.problems)
    for expected in (
        "DeviceID missing",
        "AlarmPriority 'urgent' invalid",
        "AlarmMethod '9' invalid",
        "days off the gateway clock",
        "Longitude 999.0 out of range",
        "sender not registered",
    ):
        assert expected in text
    assert alarm.sender_registered is False


@pytest.mark.parametrize("when", ["2099-01-01T00:00:00", "1970-01-01T08:00:00", "2026-11-27T11:34:19"])
def test_absurd_device_clock_is_flagged_and_ignored(when: str) -> None:
    alarm = intake().accept(notice(button(when=when))).alarm
    assert alarm is not None and alarm.alarm_time is None
    assert any("days off" in p for p in alarm.problems)


def test_zoned_device_time_is_converted_to_local() -> None:
    core = intake(local_offset=lambda _t: 8 * 3600.0)
    at = datetime.fromisoformat("2026-11-29T03:34:19+00:00").timestamp()
    alarm = core.accept(notice(button(when="2026-11-29T03:34:20Z"), at=at)).alarm
    assert alarm is not None and alarm.alarm_time == "2026-11-29T11:34:20" and alarm.problems == ()


def test_non_gb_source_id_is_flagged() -> None:
    body = AlarmNotify(1, "camera-7", priority="1", method="1", alarm_time="2026-11-29T11:34:19")
    alarm = intake().accept(notice(body)).alarm
    assert alarm is not None and alarm.source_id == "camera-7"
    assert any("not a 20-digit code" in p for p in alarm.problems)


def test_restore_continues_the_sequence_and_the_window() -> None:
    first = intake().accept(notice(button(sn=1))).alarm
    assert first is not None
    restarted = intake()
    restarted.remember(first)
    restarted.remember_seq(41)
    assert restarted.accept(notice(button(sn=1), at=T0 + 2)).duplicate_of == first.id
    fresh = restarted.accept(notice(button(sn=10, when="2026-11-29T11:35:00"), at=T0 + 41)).alarm
    assert fresh is not None and fresh.seq == 42


def test_forget_lets_a_failed_store_be_retried_as_new() -> None:
    core = intake()
    alarm = core.accept(notice(button())).alarm
    assert alarm is not None
    core.forget(alarm.dedupe_key)
    assert core.accept(notice(button())).alarm is not None


def test_memory_is_bounded_and_pruned() -> None:
    core = intake(max_remembered=10, window=60.0)
    for n in range(25):
        core.accept(notice(button(sn=n, when="bad"), at=T0 + n))
    assert len(core._recent) == 10
    assert core.prune(T0 + 200) == 10 and not core._recent


def test_description_is_bounded() -> None:
    alarm = intake().accept(notice(button(description="长" * 5000))).alarm
    assert alarm is not None and len(alarm.description) == 512


# --- kinds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "alarm_type", "name", "category"),
    [
        (1, None, "one_button", "emergency"),
        (2, None, "alarm_input", "emergency"),
        (2, 1, "video_loss", "device"),
        (2, 2, "tamper", "device"),
        (5, 6, "perimeter_intrusion", "analytics"),
        (5, 5, "tripwire", "analytics"),
        (6, 1, "disk_fault", "fault"),
        (6, 99, "fault_99", "fault"),
        (4, None, "gps", "other"),
        (None, None, "unknown", "other"),
        (42, None, "unknown", "other"),
    ],
)
def test_describe_alarm(method: int | None, alarm_type: int | None, name: str, category: str) -> None:
    kind = describe_alarm(method, alarm_type)
    assert (kind.name, kind.category) == (name, category) and kind.name_zh


def test_every_standard_method_has_a_kind() -> None:
    assert all(describe_alarm(int(m), None).name != "unknown" for m in AlarmMethod)


# --- payload ------------------------------------------------------------------------------------------


def test_payload_schema_1() -> None:
    alarm = intake().accept(notice(button(), at=T0 + 0.1234)).alarm
    assert alarm is not None
    info = Enrichment(
        gateway_id="12010000002090000001",
        kindergarten=KindergartenInfo(
            "12010100112160001000", "和平区第一幼儿园", "120101", "和平区", "和平路1号", 117.2, 39.1
        ),
        device_name="一键报警箱",
        source_name="大门一键报警",
        source_area="entrance",
        live_channel_id="12010100111310001001",
        live_url="http://gw/live/12010100111310001001",
        snapshot_url="http://gw/api/alarms/alarm-1/snapshot.jpg",
        alarm_url="http://gw/api/alarms/alarm-1",
    )
    payload = build_payload(alarm, DeliveryEvent.ALARM, info)
    body = encode_payload(payload)
    decoded = json.loads(body)
    assert decoded["schema"] == 1 and decoded["event"] == "alarm" and decoded["alarm_id"] == "alarm-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", decoded["received_at"])
    assert decoded["received_at"] == rfc3339_ms(T0 + 0.123)
    assert decoded["kindergarten"]["name"] == "和平区第一幼儿园"
    assert decoded["location"] == {"longitude": 117.2, "latitude": 39.1}  # from the site: the alarm had none
    assert decoded["live"]["url"].endswith("/live/12010100111310001001")
    assert decoded["priority"] == 1 and decoded["kind"] == "one_button"
    assert "escalation" not in decoded
    assert "和平区".encode() in body  # not \\u-escaped
    escalated = build_payload(alarm, DeliveryEvent.ESCALATED, info, escalated_at=T0 + 180)
    assert escalated["event"] == "escalated" and escalated["escalation"]["level"] == "municipal"


def test_rfc3339_ms_rounds_to_milliseconds() -> None:
    assert rfc3339_ms(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339_ms(1.9996) == "1970-01-01T00:00:02.000Z"
    assert rfc3339_ms(1_764_387_259.5) == "2025-11-29T03:34:19.500Z"


def test_the_same_event_relayed_by_another_platform_is_another_alarm() -> None:
    """Issue 10 (C4): only a retransmission of the same session is merged. Two paths are two
    senders; receivers see both (each with its own alarm_id) rather than one real press lost."""
    core = intake()
    first = core.accept(notice(button(sn=1), sender="12010000002090000001")).alarm
    assert first is not None
    relayed = core.accept(notice(button(sn=77), sender="12010100002000000001", at=T0 + 0.2))
    assert relayed.alarm is not None and relayed.alarm.id != first.id
