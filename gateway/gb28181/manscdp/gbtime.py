"""Time strings in MANSCDP bodies (docs/gb28181.md §5.4).

The canonical form is local time ``YYYY-MM-DDTHH:MM:SS`` without a zone; devices also
send it without zero padding, with milliseconds, with a zone offset (WVP's DateUtil
accepts all three) or with a space instead of ``T`` (owl).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from gateway.errors import ManscdpError

__all__ = ["format_gb_time", "parse_gb_time"]

_GB_TIME_RE: Final = re.compile(
    r"\s*([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})[Tt ]+([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})"
    r"(?:[.,]([0-9]{1,9}))?\s*(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?\s*"
)


def format_gb_time(dt: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS``: the wall-clock fields of ``dt``, no zone, no fraction.

    GB/T 28181 times are local time; convert an aware datetime to local first.
    """
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"


def parse_gb_time(s: str) -> datetime:
    """Parse a GB time leniently (WVP's DateUtil variants plus owl's space separator).

    Accepts missing zero padding, a fraction (milliseconds), and a zone offset; the
    result is naive unless the string carried a zone. Raises ``ManscdpError``.
    """
    match = _GB_TIME_RE.fullmatch(s)
    if match is None:
        raise ManscdpError(f"not a GB/T 28181 time: {s[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=_zone(zone))
    except ValueError as exc:
        raise ManscdpError(f"invalid GB/T 28181 time: {s[:40]!r}") from exc


def _zone(zone: str | None) -> timezone | None:
    if zone is None:
        return None
    if zone in ("Z", "z"):
        return UTC
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or "0")
    if hours > 23 or minutes > 59:
        raise ManscdpError(f"invalid zone offset {zone!r}")
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if zone[0] == "-" else offset)
