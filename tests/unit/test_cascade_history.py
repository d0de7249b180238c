"""The cascade's recordings paths, sans sockets: reading an upper's history offer, the MediaStatus
body sent upward, and which RecordInfo queries an upper may ask (docs/gb28181.md §16.4, §16.5)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.cascade.history import HistoryRefused, history_request, media_status_body
from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper_records import UpperRecordQueries
from gateway.gb28181.manscdp.fastpath import decode_message
from gateway.gb28181.manscdp.records import RecordInfoQuery, build_record_info_query
from gateway.gb28181.play import _is_media_end
from gateway.gb28181.sdp import SessionType, offer_for_history
from gateway.registry.model import Channel

CHANNEL = "12011600001310000001"
ELSEWHERE = "12019900001310000001"


def _offer(kind: SessionType = SessionType.PLAYBACK, **kw: Any) -> Any:
    return offer_for_history(
        session_type=kind, channel_id=CHANNEL, start=1_700_000_000, end=1_700_000_060,
        media_host="127.0.0.1", media_port=30000, ssrc="1100000001", **kw,
    )  # fmt: skip


def test_history_request_reads_window_and_speed() -> None:
    playback = history_request(_offer())
    assert (playback.session_type, playback.start, playback.end, playback.download_speed) == (
        SessionType.PLAYBACK, 1_700_000_000, 1_700_000_060, None,
    )  # fmt: skip
    download = history_request(_offer(SessionType.DOWNLOAD, download_speed=4))
    assert download.session_type is SessionType.DOWNLOAD and download.download_speed == 4
    for bad in (
        replace(_offer(), start_time=0, end_time=0),  # live-style t=0 0
        replace(_offer(), end_time=1_700_000_000),  # empty window
        replace(_offer(), end_time=1_700_000_000 + 40 * 86400),  # over a month
        replace(_offer(SessionType.DOWNLOAD), download_speed=64),
        replace(_offer(), session_type=SessionType.TALK),
    ):
        with pytest.raises(HistoryRefused) as refused:
            history_request(bad)
        assert refused.value.status == 488


def test_media_status_body_is_what_a_device_sends() -> None:
    body = media_status_body(CHANNEL, 7, "GB2312")
    assert _is_media_end(body)
    message, charset = decode_message(body)
    assert charset.upper() == "GB2312" and message.sn == 7 and message.device_id == CHANNEL  # type: ignore[union-attr]


async def test_record_queries_only_within_the_policy() -> None:
    channels = {
        CHANNEL: Channel(CHANNEL, "12011600001110000001", None, "120116"),
        ELSEWHERE: Channel(ELSEWHERE, "12019900001110000001", None, "120199"),
    }
    queries = UpperRecordQueries(
        records=SimpleNamespace(),  # type: ignore[arg-type]
        channels=channels,
        policies={"district": SharePolicy(PolicyLevel.DISTRICT, "120116")},
    )
    link: Any = SimpleNamespace(name="district")

    def ask(channel_id: str) -> int | None:
        query = RecordInfoQuery(5, channel_id, datetime(2024, 5, 20, 8), datetime(2024, 5, 20, 9))
        message, _ = decode_message(build_record_info_query(query))
        return queries.status(link, message)

    assert ask(CHANNEL) == 200
    assert ask(ELSEWHERE) == 403  # another district's camera
    assert ask("12011600001310009999") == 403  # unknown: no hint that it exists
    assert queries.counters["refused"] == 2
    keepalive, _ = decode_message(
        b"<?xml version='1.0'?><Notify><CmdType>Keepalive</CmdType><SN>1</SN>"
        b"<DeviceID>12011600002000000001</DeviceID><Status>OK</Status></Notify>"
    )
    assert queries.status(link, keepalive) is None  # not a RecordInfo: the link's own 200
    broken, _ = decode_message(
        b"<?xml version='1.0'?><Query><CmdType>RecordInfo</CmdType><SN>1</SN>"
        b"<DeviceID>" + CHANNEL.encode() + b"</DeviceID><StartTime>yesterday</StartTime></Query>"
    )
    assert queries.status(link, broken) == 400
