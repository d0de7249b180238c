"""RecordInfo: the query for a channel's recordings and its many-MESSAGE answer (docs/gb28181.md §12).

The query always carries ``<Type>all</Type>`` unless the caller asks for one kind:
some Dahua NVRs answer nothing without it. The answer names the *channel* in
``DeviceID`` (an NVR answers for its cameras), carries ``SumNum`` (the total over
every MESSAGE of the answer) and a ``RecordList Num="k"`` with this MESSAGE's
``Item``\\ s. :class:`RecordInfoAssembler` puts the pieces together the way WVP does:
de-duplicated on start+end, complete when the count reaches ``SumNum`` (``SumNum 0``
or no ``RecordList`` = no recordings; Hikvision devices may omit ``SumNum``: then the
``Num`` attribute is all we know), bounded in items and in time (the clock is the
caller's).

Times are GB/T 28181 local wall-clock times (naive ``datetime``; a zoned vendor time is
converted to this machine's local time); an item whose times do not parse is counted
(so the total can still be reached) but not kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final
from xml.etree.ElementTree import Element, SubElement

from gateway.errors import ManscdpError

from .codec import ChildIndex, children, decode_xml, element_text, encode_xml, local_name
from .gbtime import format_gb_time, parse_gb_time
from .messages import InvalidField

__all__ = [
    "MAX_RECORD_ITEMS",
    "RecordInfoAssembler",
    "RecordInfoQuery",
    "RecordInfoResponse",
    "RecordItem",
    "RecordType",
    "build_record_info_query",
    "build_record_info_response",
    "parse_record_info_query",
    "parse_record_info_response",
    "split_record_items",
]

CMD_TYPE: Final = "RecordInfo"
MAX_RECORD_ITEMS: Final = 5000  # one answer; a day of 1-minute segments is 1440
DEFAULT_TIMEOUT: Final = 10.0  # s without a new piece before an answer is given up as partial


class RecordType(StrEnum):
    """``Type`` of a query or an item (docs/gb28181.md §12)."""

    ALL = "all"
    TIME = "time"
    ALARM = "alarm"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class RecordInfoQuery:
    """``Query/RecordInfo`` for one channel and a local-time range."""

    sn: int
    device_id: str  # the channel
    start_time: datetime
    end_time: datetime
    secrecy: int = 0
    type: str = RecordType.ALL.value
    file_path: str | None = None
    address: str | None = None
    recorder_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordItem:
    """One recorded segment (``RecordList/Item``)."""

    device_id: str
    name: str | None
    start_time: datetime
    end_time: datetime
    file_path: str | None = None
    address: str | None = None
    secrecy: int | None = None
    type: str | None = None
    recorder_id: str | None = None
    file_size: int | None = None
    stream_number: int | None = None

    @property
    def key(self) -> tuple[datetime, datetime]:
        """What duplicates share (WVP de-duplicates on start+end time)."""
        return (self.start_time, self.end_time)


@dataclass(frozen=True, slots=True)
class RecordInfoResponse:
    """One MESSAGE of a RecordInfo answer.

    ``sum_num`` is None when the device left it out; ``num`` is the ``RecordList``'s
    ``Num`` attribute (None when absent), ``malformed`` counts items whose times did
    not parse (they count toward ``SumNum`` but are not in ``items``).
    """

    sn: int
    device_id: str
    name: str | None
    sum_num: int | None
    items: tuple[RecordItem, ...] = ()
    num: int | None = None
    malformed: int = 0


# --- building --------------------------------------------------------------------------------


def _add(parent: Element, tag: str, value: str | int | None) -> None:
    if value is not None:
        SubElement(parent, tag).text = str(value)


def _header(root: str, sn: int, device_id: str) -> Element:
    element = Element(root)
    _add(element, "CmdType", CMD_TYPE)
    _add(element, "SN", sn)
    _add(element, "DeviceID", device_id)
    return element


def build_record_info_query(query: RecordInfoQuery, charset: str = "GB2312") -> bytes:
    """The query body in the field order of docs/gb28181.md §12."""
    if query.end_time <= query.start_time:
        raise InvalidField("EndTime", "not after StartTime")
    root = _header("Query", query.sn, query.device_id)
    _add(root, "StartTime", format_gb_time(query.start_time))
    _add(root, "EndTime", format_gb_time(query.end_time))
    _add(root, "FilePath", query.file_path)
    _add(root, "Address", query.address)
    _add(root, "Secrecy", query.secrecy)
    _add(root, "Type", query.type or RecordType.ALL.value)
    _add(root, "RecorderID", query.recorder_id)
    return encode_xml(root, charset)


def build_record_info_response(response: RecordInfoResponse, charset: str = "GB2312") -> bytes:
    """One answer MESSAGE (what a simulated NVR sends)."""
    root = _header("Response", response.sn, response.device_id)
    _add(root, "Name", response.name)
    _add(root, "SumNum", response.sum_num)
    record_list = SubElement(root, "RecordList", {"Num": str(len(response.items))})
    for item in response.items:
        el = SubElement(record_list, "Item")
        _add(el, "DeviceID", item.device_id)
        _add(el, "Name", item.name)
        _add(el, "FilePath", item.file_path)
        _add(el, "Address", item.address)
        _add(el, "StartTime", format_gb_time(item.start_time))
        _add(el, "EndTime", format_gb_time(item.end_time))
        _add(el, "Secrecy", item.secrecy if item.secrecy is not None else 0)
        _add(el, "Type", item.type)
        _add(el, "RecorderID", item.recorder_id)
        _add(el, "FileSize", item.file_size)
        _add(el, "StreamNumber", item.stream_number)
    return encode_xml(root, charset)


def split_record_items(
    sn: int, device_id: str, name: str | None, items: tuple[RecordItem, ...] | list[RecordItem], per_message: int
) -> list[RecordInfoResponse]:
    """An answer split the way devices split it: ``per_message`` items each, all with ``SumNum``.

    No items: one MESSAGE with ``SumNum 0`` and an empty list.
    """
    if per_message < 1:
        raise ValueError("per_message must be at least 1")
    total = len(items)
    if total == 0:
        return [RecordInfoResponse(sn, device_id, name, 0, (), 0)]
    chunks = [tuple(items[i : i + per_message]) for i in range(0, total, per_message)]
    return [RecordInfoResponse(sn, device_id, name, total, chunk, len(chunk)) for chunk in chunks]


# --- parsing ---------------------------------------------------------------------------------


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _count(value: str | None) -> int | None:
    number = _int(value)
    return number if number is not None and number >= 0 else None


def _root_of(source: bytes | Element) -> Element:
    return decode_xml(source).root if isinstance(source, bytes) else source


def _check(root: Element, expected_root: str) -> ChildIndex:
    if local_name(root.tag).lower() != expected_root.lower():
        raise InvalidField("root", f"{local_name(root.tag)!r} is not {expected_root}")
    fields = ChildIndex(root)
    if (fields.text("CmdType") or "").lower() != CMD_TYPE.lower():
        raise InvalidField("CmdType", "not RecordInfo")
    return fields


def _sn(fields: ChildIndex) -> int:
    sn = _count(fields.text("SN"))
    if sn is None:
        raise InvalidField("SN", "missing or not a number")
    return sn


def _time(fields: ChildIndex, tag: str) -> datetime:
    """A naive local time: a vendor's zoned time (``Z``, ``+08:00``) is converted to local wall clock."""
    text = fields.text(tag)
    if text is None:
        raise InvalidField(tag, "missing")
    when = parse_gb_time(text)
    return when if when.tzinfo is None else when.astimezone().replace(tzinfo=None)


def parse_record_info_query(source: bytes | Element) -> RecordInfoQuery:
    """A ``Query/RecordInfo`` (what a device or a lower platform receives). Raises ``ManscdpError``."""
    fields = _check(_root_of(source), "Query")
    device_id = fields.text("DeviceID")
    if device_id is None:
        raise InvalidField("DeviceID", "missing")
    start, end = _time(fields, "StartTime"), _time(fields, "EndTime")
    if end <= start:
        raise InvalidField("EndTime", "not after StartTime")
    return RecordInfoQuery(
        sn=_sn(fields),
        device_id=device_id,
        start_time=start,
        end_time=end,
        secrecy=_int(fields.text("Secrecy")) or 0,
        type=(fields.text("Type") or RecordType.ALL.value).lower(),
        file_path=fields.text("FilePath"),
        address=fields.text("Address"),
        recorder_id=fields.text("RecorderID"),
    )


def _item(element: Element, channel: str) -> RecordItem | None:
    fields = ChildIndex(element)
    try:
        start, end = _time(fields, "StartTime"), _time(fields, "EndTime")
    except ManscdpError:
        return None
    if end < start:
        return None
    kind = fields.text("Type")
    return RecordItem(
        device_id=fields.text("DeviceID") or channel,
        name=fields.text("Name"),
        start_time=start,
        end_time=end,
        file_path=fields.text("FilePath"),
        address=fields.text("Address"),
        secrecy=_int(fields.text("Secrecy")),
        type=kind.lower() if kind is not None else None,
        recorder_id=fields.text("RecorderID"),
        file_size=_count(fields.text("FileSize")),
        stream_number=_count(fields.text("StreamNumber")),
    )


def parse_record_info_response(source: bytes | Element) -> RecordInfoResponse:
    """One answer MESSAGE; tolerant per item (a broken item never loses its neighbours).

    Raises ``ManscdpError`` when it is not a RecordInfo answer at all.
    """
    fields = _check(_root_of(source), "Response")
    device_id = fields.text("DeviceID") or ""
    record_list = fields.get("RecordList")
    items: list[RecordItem] = []
    malformed = 0
    for element in children(record_list, "Item"):
        item = _item(element, device_id)
        if item is None:
            malformed += 1
        else:
            items.append(item)
    num = _count(record_list.get("Num") or record_list.get("num")) if record_list is not None else None
    return RecordInfoResponse(
        sn=_sn(fields),
        device_id=device_id,
        name=element_text(fields.get("Name")),
        sum_num=_count(fields.text("SumNum")),
        items=tuple(items),
        num=num,
        malformed=malformed,
    )


# --- reassembly ------------------------------------------------------------------------------


@dataclass(slots=True)
class RecordInfoAssembler:
    """Collects the MESSAGEs of one answer until ``SumNum`` items came (sans-I/O: ``now`` is given).

    ``complete`` says the count was reached (or the device said there is nothing);
    ``timed_out(now)`` says no piece came for ``timeout`` seconds; ``truncated`` that
    ``max_items`` cut the answer. The items are sorted by start time.
    """

    channel_id: str
    started_at: float
    timeout: float = DEFAULT_TIMEOUT
    max_items: int = MAX_RECORD_ITEMS
    sum_num: int | None = None
    name: str | None = None
    truncated: bool = False
    messages: int = 0
    _items: dict[tuple[datetime, datetime], RecordItem] = field(default_factory=dict)
    _malformed: int = 0
    _num_total: int = 0
    _last_piece: float = 0.0
    _empty: bool = False

    def __post_init__(self) -> None:
        self._last_piece = self.started_at

    @property
    def received(self) -> int:
        """Distinct items so far, malformed ones included (what counts toward ``SumNum``)."""
        return len(self._items) + self._malformed

    @property
    def expected(self) -> int | None:
        """The total the device announced (``SumNum``), or None while it never did."""
        return self.sum_num

    @property
    def complete(self) -> bool:
        """True once everything announced arrived (or the answer said "nothing")."""
        if self._empty or self.truncated:
            return True
        if self.sum_num is not None:
            return self.received >= self.sum_num
        return self.counted_by_num

    @property
    def counted_by_num(self) -> bool:
        """No ``SumNum`` anywhere: complete once the ``Num`` of every piece arrived (WVP's fallback).

        A device that splits such an answer cannot be told apart from one that sent it
        whole, so a caller may wait a short grace for further pieces when this is how
        the answer completed.
        """
        return self.sum_num is None and self.messages > 0 and self.received >= self._num_total

    @property
    def items(self) -> list[RecordItem]:
        """What arrived so far, sorted by start (then end) time."""
        return sorted(self._items.values(), key=lambda item: item.key)

    @property
    def malformed(self) -> int:
        """Items whose times did not parse."""
        return self._malformed

    def add(self, piece: RecordInfoResponse, now: float) -> bool:
        """Take one answer MESSAGE; True when the answer is now complete."""
        self.messages += 1
        self._last_piece = now
        if piece.name and self.name is None:
            self.name = piece.name
        if piece.sum_num is not None:
            # A device that changes its mind mid-answer: the larger total wins (never stop early).
            self.sum_num = piece.sum_num if self.sum_num is None else max(self.sum_num, piece.sum_num)
        if piece.sum_num == 0 or (piece.sum_num is None and piece.num in (None, 0) and not piece.items):
            self._empty = not self._items and not self._malformed
        for item in piece.items:
            if item.key in self._items:
                continue
            if self.received >= self.max_items:
                self.truncated = True
                break
            self._items[item.key] = item
        self._malformed += piece.malformed
        self._num_total += piece.num if piece.num is not None else len(piece.items) + piece.malformed
        return self.complete

    def deadline(self) -> float:
        """When the answer is given up if no further piece arrives."""
        return self._last_piece + self.timeout

    def timed_out(self, now: float) -> bool:
        """No piece for ``timeout`` seconds and still incomplete (what came is a partial answer)."""
        return not self.complete and now >= self.deadline()
