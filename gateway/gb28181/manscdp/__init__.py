"""MANSCDP: the XML application bodies of GB/T 28181 carried in SIP MESSAGE/NOTIFY.

``codec`` turns untrusted bytes into an ``xml.etree`` tree (charset sniffing, vendor
repairs, no DTDs); ``messages`` holds a frozen dataclass per CmdType and ``xmlmap``
maps trees to them and back.
"""

from __future__ import annotations

from .codec import (
    MAX_BODY_SIZE,
    BodyTooLarge,
    ChildIndex,
    DecodedXml,
    ForbiddenXml,
    UnknownCharset,
    XmlSyntaxError,
    charset_codec,
    children,
    decode_xml,
    element_text,
    encode_xml,
    local_name,
)
from .fastpath import decode_message
from .gbtime import format_gb_time, parse_gb_time
from .messages import (
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
from .xmlmap import parse_element, parse_manscdp, serialize, split_catalog, to_element

__all__ = [
    "decode_message",
    "MAX_BODY_SIZE",
    "AlarmDuty",
    "AlarmNotify",
    "BodyTooLarge",
    "CatalogItem",
    "CatalogQuery",
    "CatalogResponse",
    "ChildIndex",
    "CmdType",
    "DecodedXml",
    "DeviceInfoQuery",
    "DeviceInfoResponse",
    "DeviceStatusQuery",
    "DeviceStatusResponse",
    "ForbiddenXml",
    "InvalidField",
    "Keepalive",
    "ManscdpMessage",
    "ResultResponse",
    "Root",
    "UnknownCharset",
    "UnknownCommand",
    "UnsupportedRoot",
    "XmlSyntaxError",
    "charset_codec",
    "children",
    "decode_xml",
    "element_text",
    "encode_xml",
    "format_gb_time",
    "local_name",
    "parse_element",
    "parse_gb_time",
    "parse_manscdp",
    "serialize",
    "split_catalog",
    "to_element",
]
