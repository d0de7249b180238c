"""HMAC-SHA256 signatures of webhook deliveries (pure: no I/O, the clock is passed in).

The signed string is ``f"{timestamp}."`` followed by the raw body, so a
receiver can reject replays of an old body (stale timestamp) and cannot be
fooled by moving bytes between the timestamp and the body. The header carries
``sha256=<hex>`` so the algorithm can change later without a new header.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Final

__all__ = [
    "ALARM_ID_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "SIGNATURE_PREFIX",
    "TIMESTAMP_HEADER",
    "sign",
    "verify",
]

SIGNATURE_HEADER: Final = "X-KGW-Signature"
TIMESTAMP_HEADER: Final = "X-KGW-Timestamp"
ALARM_ID_HEADER: Final = "X-KGW-Alarm-Id"
EVENT_HEADER: Final = "X-KGW-Event"
SIGNATURE_PREFIX: Final = "sha256="
_HEX_DIGEST_LEN: Final = 64
_MAX_TIMESTAMP_DIGITS: Final = 12  # seconds since the epoch; bounds int() work on hostile input


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode("ascii"), hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``"<timestamp>."`` + body)."""
    return SIGNATURE_PREFIX + _digest(secret, timestamp, body)


def verify(
    secret: bytes,
    signature_header: str | None,
    timestamp_header: str | None,
    body: bytes,
    *,
    now: float,
    max_age: float = 300,
) -> bool:
    """Whether the headers sign ``body`` with ``secret`` and the timestamp is within ``max_age`` of ``now``.

    Malformed headers (missing, wrong prefix, not 64 hex digits, a timestamp
    that is not a plain decimal integer) are rejected rather than raised on:
    the caller answers 401 either way. The comparison is constant-time.
    """
    if not signature_header or not timestamp_header:
        return False
    timestamp_text = timestamp_header.strip()
    if not timestamp_text.isascii() or not timestamp_text.isdigit() or len(timestamp_text) > _MAX_TIMESTAMP_DIGITS:
        return False
    timestamp = int(timestamp_text)
    if not math.isfinite(now) or abs(now - timestamp) > max_age:
        return False
    signature = signature_header.strip()
    if not signature.startswith(SIGNATURE_PREFIX):
        return False
    hex_part = signature[len(SIGNATURE_PREFIX) :].lower()
    if len(hex_part) != _HEX_DIGEST_LEN or not hex_part.isascii():
        return False
    try:
        bytes.fromhex(hex_part)
    except ValueError:
        return False
    return hmac.compare_digest(hex_part, _digest(secret, timestamp, body))
