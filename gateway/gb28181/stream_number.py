"""Which of a camera's streams an offer asks for: ``a=streamnumber:`` and its vendor spellings.

GB/T 28181-2022 selects the stream with ``a=streamnumber:<n>`` (0 main, 1 sub…). Devices
built before 2022 use their vendor's spelling (docs/gb28181.md §15.3): ``a=stream:<n>``
(the generic pre-2022 form WVP calls 通用), ``a=streamprofile:<n>`` (Dahua) and
``a=streamMode:MAIN|SUB`` (TP-Link, Mercury). A device that does not know the spelling it
gets streams its main stream anyway, so the spelling is chosen per device from what the
gateway knows (:func:`choose_style`), in this order:

1. a configured override for the device, then for its manufacturer;
2. ``X-GB-Ver`` of its REGISTER at 3.0 or above: the 2022 form;
3. the manufacturer from its DeviceInfo: TP-Link/Mercury → ``streamMode``, Dahua → ``streamprofile``;
4. otherwise the 2022 form (the standard one; configurable as the default).

The main stream is asked for with no attribute at all (every device's default), so
offers for main are what they always were. Sans-I/O: values in, values out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from enum import StrEnum

from gateway.gb28181.sdp_model import SdpSession

__all__ = [
    "MAIN",
    "SUB",
    "StreamStyle",
    "answered_stream",
    "choose_style",
    "parse_style",
    "stream_attribute",
    "with_stream",
]

MAIN = 0
SUB = 1

# Substrings of DeviceInfo's <Manufacturer> (lower-cased) → their vendor spelling.
_VENDOR_STYLES: tuple[tuple[str, str], ...] = (
    ("tp-link", "streammode"),
    ("tplink", "streammode"),
    ("mercury", "streammode"),
    ("水星", "streammode"),
    ("dahua", "streamprofile"),
    ("大华", "streamprofile"),
)


class StreamStyle(StrEnum):
    """How an offer writes the stream number (the attribute's name)."""

    STREAMNUMBER = "streamnumber"  # GB/T 28181-2022
    STREAM = "stream"  # generic pre-2022 spelling
    STREAMPROFILE = "streamprofile"  # Dahua
    STREAMMODE = "streamMode"  # TP-Link / Mercury: MAIN|SUB


def parse_style(text: str) -> StreamStyle:
    """A style from configuration text (case-insensitive; ``2022`` is the standard form)."""
    key = text.strip().lower()
    if key in ("2022", "gb2022"):
        return StreamStyle.STREAMNUMBER
    for style in StreamStyle:
        if style.value.lower() == key:
            return style
    raise ValueError(f"stream number style must be one of {', '.join(s.value for s in StreamStyle)}, not {text!r}")


def _gb_2022(gb_version: str | None) -> bool:
    major, _, _ = (gb_version or "").strip().partition(".")
    return major.isascii() and major.isdigit() and int(major) >= 3


def choose_style(
    *,
    device_id: str,
    manufacturer: str = "",
    gb_version: str | None = None,
    overrides: Mapping[str, StreamStyle] | None = None,
    default: StreamStyle = StreamStyle.STREAMNUMBER,
) -> StreamStyle:
    """The spelling to use for ``device_id`` (see the module docstring for the order).

    ``overrides`` maps a device ID, or a manufacturer (matched case-insensitively as a
    substring of DeviceInfo's), to a style.
    """
    overrides = overrides or {}
    if device_id in overrides:
        return overrides[device_id]
    maker = manufacturer.strip().lower()
    if maker:
        for name, style in overrides.items():
            if not name.isdigit() and name.strip().lower() in maker:
                return style
    if _gb_2022(gb_version):
        return StreamStyle.STREAMNUMBER
    for needle, style_name in _VENDOR_STYLES:
        if needle in maker:
            return parse_style(style_name)
    return default


def stream_attribute(style: StreamStyle, number: int) -> tuple[str, str]:
    """The ``a=`` line's (name, value) asking for stream ``number`` in ``style``."""
    if number < 0 or number > 9:
        raise ValueError(f"stream number must be 0-9, not {number}")
    if style is StreamStyle.STREAMMODE:
        if number > SUB:
            raise ValueError("streamMode knows only MAIN and SUB")
        return style.value, "SUB" if number == SUB else "MAIN"
    return style.value, str(number)


def with_stream(offer: SdpSession, number: int, style: StreamStyle) -> SdpSession:
    """``offer`` asking for stream ``number``: unchanged for main, one attribute line otherwise.

    The attribute goes into :attr:`SdpSession.attributes` (not ``stream_number``), so
    that :func:`~gateway.gb28181.sdp.answer_to_spec` reports the stream number the
    *answer* states (how a device says it sends its main stream after all).
    """
    if number == MAIN:
        return offer
    kept = tuple((n, v) for n, v in offer.attributes if n.lower() not in _NAMES)
    return replace(offer, stream_number=None, attributes=(*kept, stream_attribute(style, number)))


_NAMES = frozenset(s.value.lower() for s in StreamStyle)


def answered_stream(asked: int, stated: int | None) -> int:
    """The stream a device sends: what its answer states, else what was asked (it said nothing)."""
    return asked if stated is None else stated
