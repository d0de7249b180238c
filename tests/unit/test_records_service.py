"""RecordService over a fake command broker: counting to SumNum, partial answers, silence, refusals, caps."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from gateway.command_broker import AnswerStream, CommandFailed
from gateway.gb28181.access import CommandBody
from gateway.gb28181.manscdp import ManscdpMessage, parse_manscdp
from gateway.gb28181.manscdp.records import (
    RecordInfoResponse,
    RecordItem,
    build_record_info_response,
    parse_record_info_query,
    split_record_items,
)
from gateway.records import RecordSearchError, RecordService, epoch

NVR = "34020000001110000001"
CHANNEL = "34020000001320000001"
T0 = datetime(2024, 5, 20, 8, 0, 0)
START, END = epoch(T0), epoch(T0 + timedelta(hours=2))


class FakeBroker:
    """Answers each query with scripted pieces (``None`` in the script = stop talking)."""

    def __init__(self, script: list[ManscdpMessage | CommandFailed | None], *, registered: bool = True) -> None:
        self.script = script
        self.registered = registered
        self.bodies: list[bytes] = []
        self.closed = 0

    def is_registered(self, device_id: str) -> bool:
        return self.registered

    def open(self, device_id: str, cmd_type: str, body: CommandBody) -> AnswerStream | None:
        assert device_id == NVR and cmd_type == "RecordInfo"
        self.bodies.append(body(42, "GB2312"))
        stream = AnswerStream(device_id, cmd_type, 42)
        for item in self.script:
            if item is None:
                break
            stream.put(item)

        def close() -> None:
            self.closed += 1

        stream._close = close
        return stream


class Channels:
    def device_of(self, channel_id: str) -> str | None:
        return NVR if channel_id == CHANNEL else None


def items(n: int) -> list[RecordItem]:
    return [
        RecordItem(CHANNEL, "门", T0 + timedelta(minutes=i), T0 + timedelta(minutes=i + 1), type="time")
        for i in range(n)
    ]


def wire(piece: RecordInfoResponse) -> ManscdpMessage:
    return parse_manscdp(build_record_info_response(piece))


def pieces(n: int, per: int) -> list[ManscdpMessage | CommandFailed | None]:
    return [wire(p) for p in split_record_items(42, CHANNEL, "门", items(n), per)]


async def test_counts_to_sumnum_and_converts_times_to_epoch() -> None:
    broker = FakeBroker(pieces(25, 10))
    found = await RecordService(broker, Channels(), timeout=5).search(CHANNEL, START, END, "all")
    assert found.complete and found.sum_num == 25 and len(found.items) == 25
    out = found.to_json()
    assert out["items"][0] == {
        "start": START,
        "end": START + 60,
        "type": "time",
        "name": "门",
        "file_path": None,
        "file_size": None,
    }
    query = parse_record_info_query(broker.bodies[0])
    assert (query.device_id, query.start_time, query.type) == (CHANNEL, T0, "all")
    assert broker.closed == 1


async def test_a_device_that_stops_half_way_gives_a_partial_answer() -> None:
    script = pieces(25, 10)[:2] + [None]
    found = await RecordService(FakeBroker(script), Channels(), timeout=0.2).search(CHANNEL, START, END)
    assert not found.complete and found.sum_num == 25 and len(found.items) == 20


async def test_silence_is_504_in_both_languages() -> None:
    service = RecordService(FakeBroker([None]), Channels(), timeout=0.2)
    with pytest.raises(RecordSearchError) as info:
        await service.search(CHANNEL, START, END)
    assert info.value.status == 504 and "did not answer" in info.value.message and "设备未" in info.value.message


async def test_refusals_and_bad_requests() -> None:
    cases: list[tuple[FakeBroker, str, int, int, str, int]] = [
        (FakeBroker([CommandFailed("status_403")]), CHANNEL, START, END, "all", 502),
        (FakeBroker([], registered=False), CHANNEL, START, END, "all", 409),
        (FakeBroker([]), "34020000001320000999", START, END, "all", 404),
        (FakeBroker([]), CHANNEL, END, START, "all", 400),
        (FakeBroker([]), CHANNEL, START, START + 40 * 86400, "all", 400),
        (FakeBroker([]), CHANNEL, START, END, "everything", 400),
    ]
    for broker, channel, start, end, kind, status in cases:
        with pytest.raises(RecordSearchError) as info:
            await RecordService(broker, Channels(), timeout=0.2).search(channel, start, end, kind)
        assert info.value.status == status, (channel, start, end, kind)


async def test_pieces_naming_another_channel_are_ignored() -> None:
    other = RecordInfoResponse(42, "34020000001320000002", None, 1, tuple(items(1)), 1)
    found = await RecordService(FakeBroker([wire(other), *pieces(3, 3)]), Channels(), timeout=1).search(
        CHANNEL, START, END
    )
    assert found.complete and len(found.items) == 3


async def test_no_sumnum_waits_a_short_grace_for_more_pieces() -> None:
    first = RecordInfoResponse(42, CHANNEL, None, None, tuple(items(2)), 2)
    second = RecordInfoResponse(42, CHANNEL, None, None, tuple(items(4)[2:]), 2)
    found = await RecordService(FakeBroker([wire(first), wire(second)]), Channels(), timeout=2).search(
        CHANNEL, START, END
    )
    assert found.complete and len(found.items) == 4 and found.to_json()["sum_num"] == 4


async def test_per_device_cap() -> None:
    service = RecordService(FakeBroker([None]), Channels(), timeout=0.5, per_device=1)
    first = asyncio.ensure_future(service.search(CHANNEL, START, END))
    await asyncio.sleep(0)
    with pytest.raises(RecordSearchError) as info:
        await service.search(CHANNEL, START, END)
    assert info.value.status == 429
    with pytest.raises(RecordSearchError):
        await first
    assert not service._running
