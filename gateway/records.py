"""Finding a channel's recordings on its device: RecordInfo over the command broker (docs/gb28181.md §12).

:meth:`RecordService.search` sends one ``Query/RecordInfo`` to the device that serves
the channel (an NVR answers for its cameras, a lower platform for its devices) through
:meth:`~gateway.command_broker.CommandBroker.open`, which hands back every answer MESSAGE
from that device's session with the query's SN. The pieces go into a
:class:`~gateway.gb28181.manscdp.records.RecordInfoAssembler` until the count reaches
``SumNum``. A device that says nothing within the timeout is a
:class:`RecordSearchError` 504; one that stops half-way gives what came, flagged
``complete=False``.

Times: the API speaks Unix epoch seconds; GB/T 28181 bodies carry local wall-clock
time, so the conversion uses this machine's zone (as the alarm intake does).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from gateway.command_broker import AnswerStream, CommandFailed
from gateway.errors import GatewayError, ManscdpError
from gateway.gb28181.access import CommandBody
from gateway.gb28181.manscdp import ResultResponse, UnknownCommand
from gateway.gb28181.manscdp.records import (
    MAX_RECORD_ITEMS,
    RecordInfoAssembler,
    RecordInfoQuery,
    RecordItem,
    RecordType,
    build_record_info_query,
    parse_record_info_response,
)

__all__ = ["RecordSearch", "RecordSearchError", "RecordService"]

log = logging.getLogger("kgw.records")

CMD_TYPE: Final = "RecordInfo"
MAX_SPAN: Final = 31 * 86400  # s one search may cover
NUM_GRACE: Final = 0.3  # s to wait for more pieces when an answer without SumNum looks complete by Num


class CommandOpener(Protocol):
    """What the service needs of the command broker."""

    def open(self, device_id: str, cmd_type: str, body: CommandBody) -> AnswerStream | None: ...
    def is_registered(self, device_id: str) -> bool: ...


class ChannelLocator(Protocol):
    """Which device serves a channel (None: no such channel)."""

    def device_of(self, channel_id: str) -> str | None: ...


class RecordSearchError(GatewayError):
    """A search that cannot be answered; ``status`` is the HTTP status, ``message`` zh-CN + English."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class RecordSearch:
    """What a search found (the API's JSON shape via :meth:`to_json`)."""

    channel_id: str
    start: int
    end: int
    type: str
    sum_num: int | None
    complete: bool
    items: tuple[RecordItem, ...]

    def to_json(self) -> dict[str, Any]:
        """``{"channel_id", "start", "end", "type", "sum_num", "complete", "items": [...]}``, items by start."""
        return {
            "channel_id": self.channel_id,
            "start": self.start,
            "end": self.end,
            "type": self.type,
            "sum_num": self.sum_num if self.sum_num is not None else len(self.items),
            "complete": self.complete,
            "items": [
                {
                    "start": epoch(item.start_time),
                    "end": epoch(item.end_time),
                    "type": item.type or "time",
                    "name": item.name,
                    "file_path": item.file_path,
                    "file_size": item.file_size,
                }
                for item in self.items
            ],
        }


def local_time(seconds: int) -> datetime:
    """The local wall-clock time GB bodies carry for an epoch second."""
    return datetime.fromtimestamp(seconds)


def epoch(when: datetime) -> int:
    """Epoch seconds of a naive local (or aware) time, rounded down."""
    return int(when.timestamp())


class RecordService:
    """RecordInfo searches of the gateway's channels, bounded per device and in total."""

    def __init__(
        self,
        commands: CommandOpener,
        channels: ChannelLocator,
        *,
        timeout: float = 10.0,
        max_items: int = MAX_RECORD_ITEMS,
        per_device: int = 4,
        total: int = 64,
    ) -> None:
        self.commands = commands
        self.channels = channels
        self.timeout = timeout
        self.max_items = max_items
        self.per_device = per_device
        self.total = total
        self._running: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()  # complete / partial / timeout / failed
        # Channel id -> whether its last search that reached the device was answered (the coverage dashboard).
        self.answers: dict[str, bool] = {}

    async def search(self, channel_id: str, start: int, end: int, type: str = "all") -> RecordSearch:
        """The channel's recordings between ``start`` and ``end`` (epoch s) of ``type``.

        Raises :class:`RecordSearchError`: 400 bad range/type, 404 unknown channel,
        409 device offline, 429/503 too many searches, 502 the device refused,
        504 no answer in time.
        """
        kind = _record_type(type)
        if not 0 < start < end or end - start > MAX_SPAN:
            raise RecordSearchError(
                400, f"时间范围无效 (invalid time range: need 0 < start < end, at most {MAX_SPAN // 86400} days)"
            )
        device_id = self.channels.device_of(channel_id)
        if device_id is None:
            raise RecordSearchError(404, f"未知通道 (unknown channel {channel_id})")
        if not self.commands.is_registered(device_id):
            raise RecordSearchError(409, f"设备离线 (device {device_id} of channel {channel_id} is offline)")
        if sum(self._running.values()) >= self.total:
            raise RecordSearchError(503, "录像查询过多,请稍后再试 (too many record searches running)")
        if self._running[device_id] >= self.per_device:
            raise RecordSearchError(429, f"该设备录像查询过多 (too many record searches on device {device_id})")
        self._running[device_id] += 1
        try:
            found = await self._search(device_id, channel_id, start, end, kind)
            self.answers[channel_id] = True
            return found
        except RecordSearchError as exc:
            if exc.status in (502, 504):  # the device refused or said nothing: its recordings are not reachable
                self.answers[channel_id] = False
            raise
        finally:
            self._running[device_id] -= 1
            if self._running[device_id] <= 0:
                del self._running[device_id]

    async def _search(self, device_id: str, channel_id: str, start: int, end: int, kind: RecordType) -> RecordSearch:
        begin, finish = local_time(start), local_time(end)

        def body(sn: int, charset: str) -> bytes:
            return build_record_info_query(RecordInfoQuery(sn, channel_id, begin, finish, type=kind.value), charset)

        stream = self.commands.open(device_id, CMD_TYPE, body)
        if stream is None:
            raise RecordSearchError(409, f"设备离线 (device {device_id} of channel {channel_id} is offline)")
        loop = asyncio.get_running_loop()
        assembler = RecordInfoAssembler(
            channel_id, started_at=loop.time(), timeout=self.timeout, max_items=self.max_items
        )
        overall = loop.time() + 3 * self.timeout  # a trickle of pieces cannot hold a search forever
        try:
            while True:
                now = loop.time()
                wait = min(assembler.deadline(), overall) - now
                if assembler.counted_by_num:
                    wait = min(wait, NUM_GRACE)
                answer = await stream.next(max(0.0, wait)) if wait > 0 else None
                if answer is None:
                    if assembler.counted_by_num:
                        break  # no SumNum and every piece's Num arrived: that was all
                    if assembler.messages == 0:
                        self.outcomes["timeout"] += 1
                        raise RecordSearchError(
                            504,
                            f"设备未在规定时间内应答录像查询 (device {device_id} did not answer RecordInfo in time)",
                        )
                    break  # partial
                if isinstance(answer, CommandFailed):
                    self.outcomes["failed"] += 1
                    raise RecordSearchError(
                        502, f"设备拒绝录像查询 (device {device_id} refused RecordInfo: {answer.reason})"
                    )
                if isinstance(answer, ResultResponse) and answer.result.upper() != "OK" and assembler.messages == 0:
                    self.outcomes["failed"] += 1
                    raise RecordSearchError(
                        502, f"设备拒绝录像查询 (device {device_id} answered RecordInfo {answer.result})"
                    )
                element = answer.element if isinstance(answer, (ResultResponse, UnknownCommand)) else None
                if element is None:
                    continue
                try:
                    piece = parse_record_info_response(element)
                except ManscdpError as exc:
                    log.info("unusable RecordInfo piece from %s: %s", device_id, exc)
                    continue
                if piece.device_id not in ("", channel_id, device_id):
                    log.info("RecordInfo piece from %s names another channel %s", device_id, piece.device_id[:20])
                    continue
                if assembler.add(piece, loop.time()) and not assembler.counted_by_num:
                    break
        finally:
            stream.close()
        complete = assembler.complete and not assembler.truncated
        self.outcomes["complete" if complete else "partial"] += 1
        return RecordSearch(
            channel_id=channel_id,
            start=start,
            end=end,
            type=kind.value,
            sum_num=assembler.sum_num,
            complete=complete,
            items=tuple(assembler.items),
        )


def _record_type(text: str) -> RecordType:
    try:
        return RecordType(text.lower())
    except ValueError:
        raise RecordSearchError(
            400, f"录像类型无效 (type must be all, time, alarm or manual, not {text[:20]!r})"
        ) from None
