"""MANSCDP dataclasses to and from XML trees: parsing (lenient where devices differ) and serialising.

Field order follows GB/T 28181-2016 Annex A's examples; see :mod:`.messages` for
the reading rules (exact tag first, then case-insensitive; empty means absent).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias
from xml.etree.ElementTree import Element, SubElement

from gateway.errors import ManscdpError

from .codec import ChildIndex, children, decode_xml, element_text, encode_xml, local_name
from .messages import (
    DRILL_MARK,
    AlarmDuty,
    AlarmNotify,
    CatalogItem,
    CatalogQuery,
    CatalogResponse,
    CmdType,
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
)

__all__ = ["parse_element", "parse_manscdp", "serialize", "split_catalog", "to_element"]

_SN_RE: Final = re.compile(r"[0-9]{1,20}")
_INT_RE: Final = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")


# --- parsing ------------------------------------------------------------------------


def _opt_int(value: str | None) -> int | None:
    return int(value) if value is not None and _INT_RE.fullmatch(value) else None


def _opt_float(value: str | None) -> float | None:
    if value is None or not _FLOAT_RE.fullmatch(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _opt_port(value: str | None) -> int | None:
    port = _opt_int(value)
    return port if port is not None and 0 <= port <= 65535 else None


def _required_count(fields: ChildIndex, tag: str) -> int | None:
    value = fields.text(tag)
    if value is None:
        return None
    if not _SN_RE.fullmatch(value):
        raise InvalidField(tag, "not a non-negative integer")
    return int(value)


def _opt_str(value: str | None) -> str | None:
    return value


# (attribute, tag, converter) in the element order kgw writes (the examples in docs/gb28181.md §6.2 and §9.1).
_FieldSpec: TypeAlias = tuple[tuple[str, str, Callable[[str | None], Any]], ...]
_ITEM_FIELDS: Final[_FieldSpec] = (
    ("device_id", "DeviceID", _opt_str),
    ("name", "Name", _opt_str),
    ("manufacturer", "Manufacturer", _opt_str),
    ("model", "Model", _opt_str),
    ("owner", "Owner", _opt_str),
    ("civil_code", "CivilCode", _opt_str),
    ("block", "Block", _opt_str),
    ("address", "Address", _opt_str),
    ("parental", "Parental", _opt_int),
    ("parent_id", "ParentID", _opt_str),
    ("business_group_id", "BusinessGroupID", _opt_str),
    ("safety_way", "SafetyWay", _opt_int),
    ("register_way", "RegisterWay", _opt_int),
    ("secrecy", "Secrecy", _opt_int),
    ("ip_address", "IPAddress", _opt_str),
    ("port", "Port", _opt_port),
    ("status", "Status", _opt_str),
    ("longitude", "Longitude", _opt_float),
    ("latitude", "Latitude", _opt_float),
)
_DEVICE_INFO_FIELDS: Final[_FieldSpec] = (
    ("device_name", "DeviceName", _opt_str),
    ("result", "Result", _opt_str),
    ("manufacturer", "Manufacturer", _opt_str),
    ("model", "Model", _opt_str),
    ("firmware", "Firmware", _opt_str),
    ("channel", "Channel", _opt_int),
)
_DEVICE_STATUS_FIELDS: Final[_FieldSpec] = (
    ("result", "Result", _opt_str),
    ("online", "Online", _opt_str),
    ("status", "Status", _opt_str),
    ("reason", "Reason", _opt_str),
    ("encode", "Encode", _opt_str),
    ("record", "Record", _opt_str),
    ("device_time", "DeviceTime", _opt_str),
)


def _read(fields: ChildIndex, spec: _FieldSpec) -> dict[str, Any]:
    return {attr: convert(fields.text(tag)) for attr, tag, convert in spec}


def _write(parent: Element, obj: object, spec: _FieldSpec) -> None:
    for attr, tag, _ in spec:
        _add(parent, tag, getattr(obj, attr))


def parse_manscdp(body: bytes) -> ManscdpMessage:
    """Parse a MANSCDP body; raises only ``ManscdpError`` (or a subclass)."""
    return parse_element(decode_xml(body).root)


def parse_element(root: Element) -> ManscdpMessage:
    """Map an already parsed document to its message (use with :func:`decode_xml` for the charset)."""
    root_name = local_name(root.tag)
    kind = _ROOTS.get(root_name.lower())
    if kind is None:
        raise UnsupportedRoot(root_name)
    fields = ChildIndex(root)
    cmd_type = fields.text("CmdType")
    if cmd_type is None:
        raise InvalidField("CmdType", "missing")
    sn = _required_count(fields, "SN")
    if sn is None:
        raise InvalidField("SN", "missing")
    device_id = fields.text("DeviceID")
    known = _CMD_TYPES.get(cmd_type.lower())
    parser = _PARSERS.get((kind, known)) if known is not None else None
    if parser is not None:
        if device_id is None and known is not CmdType.ALARM:  # an alarm is kept even without one
            raise InvalidField("DeviceID", "missing")
        return parser(fields, sn, device_id or "", kind)
    if kind is Root.RESPONSE and fields.get("Result") is not None:
        result = fields.text("Result") or ""
        return ResultResponse(cmd_type, sn, device_id or "", result, element=root)
    return UnknownCommand(kind, cmd_type, sn, device_id or "", root)


_ROOTS: Final = {member.value.lower(): member for member in Root}
_CMD_TYPES: Final = {member.value.lower(): member for member in CmdType}


def _parse_keepalive(fields: ChildIndex, sn: int, device_id: str, kind: Root) -> Keepalive:
    info = fields.get("Info")
    status = fields.text("Status")
    if status is None and info is not None:
        status = ChildIndex(info).text("Status")  # Hikvision quirk, docs/gb28181.md §4.1 / owl#64
    ids = tuple(t for t in (element_text(e) for e in children(info, "DeviceID")) if t is not None)
    return Keepalive(sn, device_id, status, ids)


def _parse_catalog(fields: ChildIndex, sn: int, device_id: str, kind: Root) -> CatalogQuery | CatalogResponse:
    if kind is Root.QUERY:
        return CatalogQuery(sn, device_id, fields.text("StartTime"), fields.text("EndTime"))
    item_elements = children(fields.get("DeviceList"), "Item")
    items = tuple(i for i in map(_parse_item, item_elements) if i is not None)
    sum_num = _required_count(fields, "SumNum")
    return CatalogResponse(sn, device_id, len(items) if sum_num is None else sum_num, items, kind)


def _parse_item(element: Element) -> CatalogItem | None:
    """One catalog item, or ``None`` if it has no DeviceID (WVP skips those too)."""
    f = ChildIndex(element)
    if f.text("DeviceID") is None:
        return None
    info = ChildIndex(f.get("Info"))
    values = _read(f, _ITEM_FIELDS)
    # WVP reads BusinessGroupID at top level or inside Info (docs/gb28181.md §6.3); PTZType and
    # RoomType belong in Info but are accepted at top level too.
    values["business_group_id"] = values["business_group_id"] or info.text("BusinessGroupID")
    values["ptz_type"] = _opt_int(info.text("PTZType") or f.text("PTZType"))
    values["room_type"] = _opt_int(info.text("RoomType") or f.text("RoomType"))
    values["event"] = f.text("Event")
    return CatalogItem(**values)


def _parse_device_info(fields: ChildIndex, sn: int, device_id: str, kind: Root) -> DeviceInfoQuery | DeviceInfoResponse:
    if kind is Root.QUERY:
        return DeviceInfoQuery(sn, device_id)
    return DeviceInfoResponse(sn, device_id, **_read(fields, _DEVICE_INFO_FIELDS))


def _parse_device_status(
    fields: ChildIndex, sn: int, device_id: str, kind: Root
) -> DeviceStatusQuery | DeviceStatusResponse:
    if kind is Root.QUERY:
        return DeviceStatusQuery(sn, device_id)
    # "Alarmstatus" with a lower-case s is the standard spelling; the Num/num attribute
    # is informational and read from neither (docs/gb28181.md §8).
    duties: list[AlarmDuty] = []
    for item in children(fields.get("Alarmstatus"), "Item"):
        f = ChildIndex(item)
        duty_id = f.text("DeviceID")
        if duty_id is not None:
            duties.append(AlarmDuty(duty_id, f.text("DutyStatus")))
    return DeviceStatusResponse(sn, device_id, **_read(fields, _DEVICE_STATUS_FIELDS), alarm_status=tuple(duties))


def _parse_alarm(fields: ChildIndex, sn: int, device_id: str, kind: Root) -> AlarmNotify:
    info = ChildIndex(fields.get("Info"))
    param = ChildIndex(info.get("AlarmTypeParam") or fields.get("AlarmTypeParam"))
    description = fields.text("AlarmDescription")
    drill = (info.text("Drill") or "").strip().lower() in ("1", "true") or (description or "").startswith(DRILL_MARK)
    return AlarmNotify(
        sn,
        device_id,
        priority=fields.text("AlarmPriority"),
        method=fields.text("AlarmMethod") or info.text("AlarmMethod"),
        alarm_time=fields.text("AlarmTime"),
        description=description,
        longitude=_opt_float(fields.text("Longitude")),
        latitude=_opt_float(fields.text("Latitude")),
        alarm_type=info.text("AlarmType") or fields.text("AlarmType"),
        event_type=param.text("EventType") or info.text("EventType") or fields.text("EventType"),
        drill=drill,
    )


_Parser: TypeAlias = Callable[[ChildIndex, int, str, Root], ManscdpMessage]
_PARSERS: Final[dict[tuple[Root, CmdType], _Parser]] = {
    (Root.NOTIFY, CmdType.KEEPALIVE): _parse_keepalive,
    (Root.QUERY, CmdType.CATALOG): _parse_catalog,
    (Root.RESPONSE, CmdType.CATALOG): _parse_catalog,
    (Root.NOTIFY, CmdType.CATALOG): _parse_catalog,
    (Root.QUERY, CmdType.DEVICE_INFO): _parse_device_info,
    (Root.RESPONSE, CmdType.DEVICE_INFO): _parse_device_info,
    (Root.QUERY, CmdType.DEVICE_STATUS): _parse_device_status,
    (Root.RESPONSE, CmdType.DEVICE_STATUS): _parse_device_status,
    (Root.NOTIFY, CmdType.ALARM): _parse_alarm,
}


# --- serialising --------------------------------------------------------------------


def _add(parent: Element, tag: str, value: str | int | float | None) -> None:
    """Append ``<tag>value</tag>`` unless ``value`` is None (absent fields are omitted)."""
    if value is not None:
        SubElement(parent, tag).text = value if isinstance(value, str) else repr(value)


def _header(root: Root, cmd_type: str, sn: int, device_id: str) -> Element:
    element = Element(root.value)
    _add(element, "CmdType", str(cmd_type))
    _add(element, "SN", str(sn))
    _add(element, "DeviceID", device_id)
    return element


def _item_element(parent: Element, item: CatalogItem) -> None:
    """Field order of the catalog example in docs/gb28181.md §6.2; Event last, as WVP's notify items."""
    el = SubElement(parent, "Item")
    _write(el, item, _ITEM_FIELDS)
    if item.ptz_type is not None or item.room_type is not None:
        info = SubElement(el, "Info")
        _add(info, "PTZType", item.ptz_type)
        _add(info, "RoomType", item.room_type)
    _add(el, "Event", item.event)


def to_element(msg: ManscdpMessage) -> Element:
    """Build the XML tree of ``msg`` (see :func:`serialize`)."""
    if isinstance(msg, UnknownCommand):
        return msg.element
    root = _header(msg.root, msg.cmd_type, msg.sn, msg.device_id)
    if isinstance(msg, Keepalive):
        _add(root, "Status", msg.status)
        if msg.info_device_ids:
            info = SubElement(root, "Info")
            for faulty in msg.info_device_ids:
                _add(info, "DeviceID", faulty)
    elif isinstance(msg, CatalogQuery):
        _add(root, "StartTime", msg.start_time)
        _add(root, "EndTime", msg.end_time)
    elif isinstance(msg, CatalogResponse):
        _add(root, "SumNum", msg.sum_num)
        device_list = SubElement(root, "DeviceList", {"Num": str(len(msg.items))})
        for item in msg.items:
            _item_element(device_list, item)
    elif isinstance(msg, DeviceInfoResponse):
        _write(root, msg, _DEVICE_INFO_FIELDS)
    elif isinstance(msg, DeviceStatusResponse):
        _status_body(root, msg)
    elif isinstance(msg, AlarmNotify):
        _alarm_body(root, msg)
    elif isinstance(msg, ResultResponse):
        _add(root, "Result", msg.result)
    return root  # DeviceInfoQuery / DeviceStatusQuery carry the header only


def _alarm_body(root: Element, msg: AlarmNotify) -> None:
    """Element order of the alarm example in docs/gb28181.md §9.1; AlarmType inside Info.

    A drill (§9.3) starts its AlarmDescription with the drill mark and carries ``Info/Drill`` 1.
    """
    description = msg.description
    if msg.drill and not (description or "").startswith(DRILL_MARK):
        description = DRILL_MARK + (description or "")
    _add(root, "AlarmPriority", msg.priority)
    _add(root, "AlarmMethod", msg.method)
    _add(root, "AlarmTime", msg.alarm_time)
    _add(root, "AlarmDescription", description)
    _add(root, "Longitude", msg.longitude)
    _add(root, "Latitude", msg.latitude)
    if msg.alarm_type is not None or msg.event_type is not None or msg.drill:
        info = SubElement(root, "Info")
        _add(info, "AlarmType", msg.alarm_type)
        if msg.event_type is not None:
            _add(SubElement(info, "AlarmTypeParam"), "EventType", msg.event_type)
        if msg.drill:
            _add(info, "Drill", "1")


def _status_body(root: Element, msg: DeviceStatusResponse) -> None:
    _write(root, msg, _DEVICE_STATUS_FIELDS)
    if msg.alarm_status:
        alarm = SubElement(root, "Alarmstatus", {"Num": str(len(msg.alarm_status))})
        for duty in msg.alarm_status:
            item = SubElement(alarm, "Item")
            _add(item, "DeviceID", duty.device_id)
            _add(item, "DutyStatus", duty.duty_status)


def serialize(msg: ManscdpMessage, charset: str = "GB2312") -> bytes:
    """Encode ``msg`` as a MANSCDP body in ``charset`` (the one the peer uses)."""
    return encode_xml(to_element(msg), charset)


def split_catalog(
    sn: int,
    device_id: str,
    items: Sequence[CatalogItem],
    per_message: int,
    root: Root = Root.RESPONSE,
) -> list[CatalogResponse]:
    """Cut a catalog into chunks of ``per_message`` items, each with ``SumNum`` = total.

    Always returns at least one chunk: an empty catalog is one message with
    ``SumNum 0`` and ``DeviceList Num="0"`` (docs/gb28181.md §6.2). Keep chunks small (WVP uses
    1-8 items) so each UDP MESSAGE stays below the path MTU.
    """
    if per_message < 1:
        raise ManscdpError("per_message must be at least 1")
    total = len(items)
    if total == 0:
        return [CatalogResponse(sn, device_id, 0, (), root)]
    return [
        CatalogResponse(sn, device_id, total, tuple(items[start : start + per_message]), root)
        for start in range(0, total, per_message)
    ]
