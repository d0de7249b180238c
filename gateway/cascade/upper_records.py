"""An upper platform's ``Query/RecordInfo`` through the gateway (issue 11; docs/gb28181.md §12, §16.5).

As WVP does as a lower platform, the gateway answers an upper's RecordInfo by asking
the channel's own device (through the records helper's
:class:`~gateway.records.RecordService`: its own SN towards the device, answers
counted to ``SumNum``) and re-emitting the list upward as ``Response/RecordInfo``
MESSAGE(s) with the *upper's* SN, split like a catalog (``catalog_per_message`` items
per MESSAGE, each with ``SumNum`` and ``RecordList Num``).

Who may ask about what: only channels the upper's :class:`~gateway.cascade.policy.SharePolicy`
shares. Anything else (an unknown channel, the police asking about a classroom) is
refused with 403 to the MESSAGE itself (:meth:`UpperRecordQueries.status`, called
before the link acts on it) and never reaches a device. A device that does not
answer in time (or is offline) gets the upper a ``SumNum 0`` answer once the search
gave up, so the upper is not left waiting on its own timer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Final, Protocol

from gateway.cascade.policy import SharePolicy
from gateway.errors import ManscdpError
from gateway.gb28181.manscdp import ManscdpMessage, UnknownCommand
from gateway.gb28181.manscdp.records import (
    RecordInfoQuery,
    RecordItem,
    build_record_info_response,
    parse_record_info_query,
    split_record_items,
)
from gateway.records import RecordSearch, RecordSearchError, epoch
from gateway.registry.model import Channel

__all__ = ["MAX_RUNNING_PER_UPPER", "RecordSearcher", "UpperLinkLike", "UpperRecordQueries", "record_query_of"]

log = logging.getLogger("kgw.cascade.records")

MAX_RUNNING_PER_UPPER: Final = 16  # searches one upper may have running; more are refused 486 at the MESSAGE
CMD_TYPE: Final = "RecordInfo"


class RecordSearcher(Protocol):
    """The records service (what the console's API uses too)."""

    async def search(self, channel_id: str, start: int, end: int, type: str = "all") -> RecordSearch: ...


class _Client(Protocol):
    @property
    def charset(self) -> str: ...
    def send_message(self, body: bytes, now: float, key: object) -> str: ...


class _Config(Protocol):
    @property
    def catalog_per_message(self) -> int: ...


class UpperLinkLike(Protocol):
    """What is needed of an :class:`~gateway.cascade.upper.UpperLink`."""

    @property
    def name(self) -> str: ...
    @property
    def client(self) -> _Client: ...
    @property
    def config(self) -> _Config: ...


def record_query_of(message: ManscdpMessage) -> RecordInfoQuery | None:
    """The ``Query/RecordInfo`` a MESSAGE carries (raises :class:`ManscdpError` when it is unreadable)."""
    if not isinstance(message, UnknownCommand) or message.cmd_type.lower() != CMD_TYPE.lower():
        return None
    if message.element.tag != "Query":
        return None
    return parse_record_info_query(message.element)


class UpperRecordQueries:
    """Serves every upper's RecordInfo queries within its policy."""

    def __init__(
        self,
        records: RecordSearcher,
        channels: Mapping[str, Channel],
        policies: Mapping[str, SharePolicy],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.records = records
        self.channels = channels
        self.policies = policies
        self.loop = asyncio.get_running_loop()
        self._clock = clock or self.loop.time
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, int] = {}
        self.counters: dict[str, int] = {"answered": 0, "refused": 0, "empty_after_failure": 0, "messages": 0}

    def status(self, link: UpperLinkLike, message: ManscdpMessage) -> int | None:
        """The status for the MESSAGE: 403 outside the policy, 400 unreadable, 486 too many; None: not ours."""
        try:
            query = record_query_of(message)
        except ManscdpError as exc:
            log.info("upper %s: unreadable RecordInfo query: %s", link.name, exc)
            return 400
        if query is None:
            return None
        channel = self.channels.get(query.device_id)
        policy = self.policies.get(link.name)
        if channel is None or policy is None or not policy.allows_channel(channel):
            self.counters["refused"] += 1
            log.warning(
                "upper platform %s asked for the recordings of %s, which its policy does not share: 403",
                link.name,
                query.device_id[:20],
            )
            return 403
        if self._running.get(link.name, 0) >= MAX_RUNNING_PER_UPPER:
            return 486
        return 200

    def relay(self, link: UpperLinkLike, message: ManscdpMessage, now: float) -> bool:
        """Start the search for an accepted query (after :meth:`status` said 200); False: not a RecordInfo."""
        try:
            query = record_query_of(message)
        except ManscdpError:
            return True
        if query is None:
            return False
        self._running[link.name] = self._running.get(link.name, 0) + 1
        task = self.loop.create_task(self._answer(link, query))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(link.name, t))
        return True

    def close(self) -> None:
        """Cancel the searches still running (the gateway stops)."""
        for task in self._tasks:
            task.cancel()

    async def _answer(self, link: UpperLinkLike, query: RecordInfoQuery) -> None:
        channel_id = query.device_id
        items: tuple[RecordItem, ...] = ()
        try:
            found = await self.records.search(
                channel_id, epoch(query.start_time), epoch(query.end_time), query.type or "all"
            )
            items = tuple(dataclasses.replace(item, device_id=channel_id) for item in found.items)
        except RecordSearchError as exc:
            # WVP leaves the upper to its own timeout; an explicit empty answer ends its wait at once.
            self.counters["empty_after_failure"] += 1
            log.info("upper %s: RecordInfo of %s answered empty: %s", link.name, channel_id, exc.message)
        channel = self.channels.get(channel_id)
        name = channel.name if channel is not None and channel.name else None
        pieces = split_record_items(query.sn, channel_id, name, items, link.config.catalog_per_message)
        charset = link.client.charset
        for index, piece in enumerate(pieces):
            body = build_record_info_response(piece, charset)
            link.client.send_message(body, self._clock(), ("record_info", link.name, query.sn, index))
        self.counters["answered"] += 1
        self.counters["messages"] += len(pieces)
        log.info(
            "upper %s: RecordInfo of %s: %d items in %d messages (SN %d)",
            link.name,
            channel_id,
            len(items),
            len(pieces),
            query.sn,
        )

    def _done(self, upper: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        left = self._running.get(upper, 1) - 1
        if left > 0:
            self._running[upper] = left
        else:
            self._running.pop(upper, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("upper %s: RecordInfo answer failed", upper, exc_info=task.exception())
