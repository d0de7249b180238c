"""Alarms first (issue 12): the bytes triage and its two bounded lanes (gateway/gb28181/sip/triage.py)."""

from __future__ import annotations

from gateway.gb28181.sip.triage import DatagramLanes, Lane, looks_like_alarm

ALARM_BODY = b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify><CmdType>Alarm</CmdType><SN>1</SN></Notify>'
ALARM = b"MESSAGE sip:12010000002090000001@1201000000 SIP/2.0\r\nContent-Length: 80\r\n\r\n" + ALARM_BODY
NOTIFY_ALARM = b"NOTIFY sip:12010000002090000001@1201000000 SIP/2.0\r\n\r\n" + ALARM_BODY
REGISTER = b"REGISTER sip:12010000002090000001@1201000000 SIP/2.0\r\nContent-Length: 0\r\n\r\n"
KEEPALIVE = b"MESSAGE sip:x SIP/2.0\r\n\r\n<Notify><CmdType>Keepalive</CmdType></Notify>"


def test_only_message_or_notify_requests_carrying_an_alarm_look_like_one() -> None:
    assert looks_like_alarm(ALARM, 65_535)
    assert looks_like_alarm(NOTIFY_ALARM, 65_535)
    assert not looks_like_alarm(REGISTER, 65_535)
    assert not looks_like_alarm(KEEPALIVE, 65_535)
    # a response quoting an alarm body, an alarm tucked into a REGISTER: bulk
    assert not looks_like_alarm(b"SIP/2.0 200 OK\r\n\r\n" + ALARM_BODY, 65_535)
    assert not looks_like_alarm(REGISTER + ALARM_BODY, 65_535)
    # oversized input is never urgent, however alarm-like
    assert not looks_like_alarm(ALARM + b" " * 70_000, 65_535)
    assert not looks_like_alarm(b"", 65_535)


def test_urgent_first_then_bulk_each_in_arrival_order() -> None:
    lanes: DatagramLanes[str] = DatagramLanes()
    for n in range(5_000):
        assert lanes.push(REGISTER + str(n).encode(), f"dev{n}", 0.0) is Lane.BULK
    assert lanes.push(ALARM, "alarm-box", 1.0) is Lane.URGENT
    first = lanes.pop_urgent()
    assert first is not None and first.data == ALARM and first.source == "alarm-box" and first.at == 1.0
    assert lanes.pop_urgent() is None
    order = []
    while (item := lanes.pop_bulk()) is not None:
        order.append(item.data)
    assert order == [REGISTER + str(n).encode() for n in range(5_000)]
    assert lanes.bulk_bytes == 0 and not lanes


def test_one_source_cannot_hold_more_than_its_share_of_the_urgent_lane() -> None:
    lanes: DatagramLanes[str] = DatagramLanes(per_source=4)
    lanes_of = [lanes.push(ALARM, "forger", 0.0) for _ in range(10)]
    assert lanes_of == [Lane.URGENT] * 4 + [Lane.BULK] * 6  # demoted, in order, not dropped
    assert lanes.push(ALARM, "real-box", 0.0) is Lane.URGENT  # another source still gets in
    assert lanes.counters.demoted == 6 and lanes.urgent_waiting == 5 and lanes.bulk_waiting == 6
    lanes.pop_urgent()
    assert lanes.push(ALARM, "forger", 0.0) is Lane.URGENT  # a served place is free again


def test_the_urgent_lane_is_bounded_in_total() -> None:
    lanes: DatagramLanes[int] = DatagramLanes(max_urgent=100)
    placed = [lanes.push(ALARM, source, 0.0) for source in range(150)]
    assert placed.count(Lane.URGENT) == 100 and placed.count(Lane.BULK) == 50
    assert lanes.urgent_waiting == 100


def test_the_bulk_lane_is_bounded_in_bytes_udp_is_dropped_tcp_forced() -> None:
    lanes: DatagramLanes[str] = DatagramLanes(max_bulk_bytes=10 * len(REGISTER))
    placed = [lanes.push(REGISTER, "dev", 0.0) for _ in range(12)]
    assert placed == [Lane.BULK] * 10 + [None, None]
    assert lanes.counters.dropped == 2
    assert lanes.push(REGISTER, "tcp-peer", 0.0, force=True) is Lane.BULK  # a TCP message is never dropped
    assert lanes.push(ALARM, "box", 0.0) is Lane.URGENT  # a full bulk lane does not stop an alarm
    lanes.clear()
    assert not lanes and lanes.bulk_bytes == 0
