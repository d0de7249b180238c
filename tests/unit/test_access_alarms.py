"""Device access and alarms: nothing is answered before the alarm is stored; repeats are absorbed."""

from __future__ import annotations

from pathlib import Path

from gb_harness import IPC_ID
from test_device_access import device_request, registered, responses_from_gateway

from gateway.gb28181.access import AlarmNotified, MessageRefused
from gateway.gb28181.manscdp import AlarmNotify, Keepalive, ResultResponse, decode_message, serialize
from gateway.gb28181.sip.message import SipRequest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "manscdp"


def alarm_body(device_id: str = IPC_ID, sn: int = 3902) -> bytes:
    notify = AlarmNotify(
        sn, device_id, priority="1", method="1", alarm_time="2026-11-29T11:34:19", description="一键报警"
    )
    return serialize(notify)


def gateway_requests(h: object, method: str) -> list[SipRequest]:
    return [m for m in h.messages("gw") if isinstance(m, SipRequest) and m.method == method]  # type: ignore[attr-defined]


def test_alarm_is_not_answered_until_confirmed() -> None:
    h, _agent = registered()
    before = len(responses_from_gateway(h, "MESSAGE"))
    device_request(h, IPC_ID, alarm_body())
    h.pump()
    events = h.of_type(AlarmNotified)
    assert len(events) == 1
    event = events[0]
    assert event.registered and event.device_id == IPC_ID and event.alarm.sn == 3902 and event.charset == "GB2312"
    assert len(responses_from_gateway(h, "MESSAGE")) == before  # no 200 yet: the alarm is not stored

    # the device retransmits (UDP Timer E): the open transaction absorbs it, no second event
    h.advance(2.0)
    assert len(h.of_type(AlarmNotified)) == 1
    assert len(responses_from_gateway(h, "MESSAGE")) == before

    sent_before = len(gateway_requests(h, "MESSAGE"))
    assert h.access.confirm_alarm(event, h.clock.now)
    h.pump()
    assert [r.status for r in responses_from_gateway(h, "MESSAGE")][before:] == [200]
    # then the standard's Response MESSAGE: same SN, the alarm's DeviceID, Result OK, in the device's charset
    acks = [decode_message(r.body)[0] for r in gateway_requests(h, "MESSAGE")[sent_before:]]
    assert ResultResponse("Alarm", 3902, IPC_ID, "OK") in acks


def test_store_failure_answers_500_so_the_device_retries() -> None:
    h, _agent = registered()
    device_request(h, IPC_ID, alarm_body())
    h.pump()
    event = h.of_type(AlarmNotified)[0]
    sent_before = len(gateway_requests(h, "MESSAGE"))
    h.access.confirm_alarm(event, h.clock.now, stored=False)
    h.pump()
    assert responses_from_gateway(h, "MESSAGE")[-1].status == 500
    assert len(gateway_requests(h, "MESSAGE")) == sent_before  # no Response MESSAGE for an unstored alarm


def test_unknown_sender_is_refused_404_without_an_event() -> None:
    h, _agent = registered()
    stranger = "12010000001340000099"
    device_request(h, stranger, alarm_body(stranger))
    h.pump()
    assert h.of_type(AlarmNotified) == []
    refused = h.of_type(MessageRefused)
    assert refused and refused[-1].status == 404 and refused[-1].reason == "alarm_from_unknown_device"


def test_known_but_unregistered_device_alarm_is_kept() -> None:
    h, _agent = registered()
    lapsed = "12010000001340000077"
    h.access.known_device = lambda device_id: device_id == lapsed
    device_request(h, lapsed, alarm_body(lapsed))
    h.pump()
    events = h.of_type(AlarmNotified)
    assert len(events) == 1 and events[0].registered is False
    # other MESSAGEs of an unregistered device still get 404 (it must register)
    device_request(h, lapsed, serialize(Keepalive(1, lapsed, "OK")))
    h.pump()
    assert h.of_type(MessageRefused)[-1].status == 404
    # confirming goes to where the alarm came from (no session)
    h.access.confirm_alarm(events[0], h.clock.now)
    h.pump()
    assert any(r.status == 200 for r in responses_from_gateway(h, "MESSAGE"))


def test_malformed_alarm_body_is_400() -> None:
    h, _agent = registered()
    device_request(h, IPC_ID, b"<Notify><CmdType>Alarm</CmdType><SN>x</SN></Notify>")
    h.pump()
    assert h.of_type(AlarmNotified) == []
    assert h.of_type(MessageRefused)[-1].status == 400


def test_real_world_shaped_alarm_bodies_reach_the_service() -> None:
    h, _agent = registered()
    for name in (
        "notes_alarm_notify_gb2312.xml",
        "wvp_style_alarm_lowercase_info_gb2312.xml",
        "alarm_missing_and_invalid_fields_utf8.xml",
    ):
        device_request(h, IPC_ID, (FIXTURES / name).read_bytes())
        h.pump()
    assert len(h.of_type(AlarmNotified)) == 3
