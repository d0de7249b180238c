"""RTP fixed header codec (RFC 3550 §5.1) and serial-number arithmetic.

GB/T 28181 senders use the plain header (``0x80``/``0x60``, no CSRC, no
extension, no padding; docs/gb28181.md §17.1), but the parser reads every field RFC 3550
defines, so a camera that does set them is not dropped for it. Malformed
packets raise :class:`RtpParseError`, whose ``reason`` says which check failed;
the receiver counts them and drops the packet (docs/design.md §6).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from gateway.errors import GatewayError

RTP_VERSION = 2
RTP_HEADER_SIZE = 12  # RFC 3550 §5.1: the fixed header without CSRCs
MAX_CSRC = 15  # the CC field has four bits
MAX_EXTENSION_DATA = 0xFFFF * 4  # RFC 3550 §5.3.1: length counts 32-bit words

_FIXED = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")


class RtpError(GatewayError):
    """Root of the RTP errors of the media plane."""


class RtpParseReason(enum.Enum):
    """Which check a malformed RTP packet failed."""

    TRUNCATED_HEADER = "truncated_header"
    BAD_VERSION = "bad_version"
    TRUNCATED_CSRC = "truncated_csrc"
    TRUNCATED_EXTENSION = "truncated_extension"
    ZERO_PADDING = "zero_padding"
    PADDING_TOO_LARGE = "padding_too_large"


class RtpParseError(RtpError, ValueError):
    """Bytes that are not a well-formed RTP packet; drop the packet and count it."""

    def __init__(self, reason: RtpParseReason, detail: str, *, size: int) -> None:
        super().__init__(f"{reason.value}: {detail} (packet of {size} bytes)")
        self.reason = reason
        self.size = size


class RtpBuildError(RtpError, ValueError):
    """An :class:`RtpPacket` built locally with a field out of range (our bug, not the peer's)."""


# --- serial-number arithmetic (RFC 1982, as RFC 3550 §A.1 uses it) ----------


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**16."""
    return (a + n) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in 16-bit sequence space, in ``[-32768, 32767]``."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_newer(a: int, b: int) -> bool:
    """True when sequence number ``a`` comes after ``b`` (across wrap-around)."""
    return seq_diff(a, b) > 0


def ts_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & 0xFFFFFFFF


def ts_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in 32-bit timestamp space."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def ts_newer(a: int, b: int) -> bool:
    """True when RTP timestamp ``a`` comes after ``b`` (across wrap-around)."""
    return ts_diff(a, b) > 0


def is_rtcp(data: bytes) -> bool:
    """True when a datagram on an RTP port is RTCP (RFC 5761 §4: second byte 192..223)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


# --- the packet ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet; ``RtpPacket.parse(data)`` and ``bytes(packet)`` are inverses.

    ``padding`` is the number of padding octets (the count octet included;
    0 means the P bit is clear). ``payload`` excludes the padding. Padding is
    written as zeros followed by the count, so a packet whose padding octets
    were not zero does not serialise back byte for byte.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: bool = False
    extension_profile: int = 0
    extension_data: bytes = b""
    padding: int = 0
    version: int = RTP_VERSION

    def __post_init__(self) -> None:
        checks = (
            (self.version == RTP_VERSION, "version"),
            (0 <= self.payload_type <= 0x7F, "payload_type"),
            (0 <= self.sequence <= 0xFFFF, "sequence"),
            (0 <= self.timestamp <= 0xFFFFFFFF, "timestamp"),
            (0 <= self.ssrc <= 0xFFFFFFFF, "ssrc"),
            (len(self.csrcs) <= MAX_CSRC and all(0 <= c <= 0xFFFFFFFF for c in self.csrcs), "csrcs"),
            (0 <= self.extension_profile <= 0xFFFF, "extension_profile"),
            (len(self.extension_data) % 4 == 0 and len(self.extension_data) <= MAX_EXTENSION_DATA, "extension_data"),
            (self.extension or (not self.extension_profile and not self.extension_data), "extension"),
            (0 <= self.padding <= 0xFF, "padding"),
        )
        for ok, name in checks:
            if not ok:
                raise RtpBuildError(f"RTP field {name} out of range")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Decode one RTP packet; raises :class:`RtpParseError` when it is malformed."""
        size = len(data)
        if size < RTP_HEADER_SIZE:
            raise RtpParseError(RtpParseReason.TRUNCATED_HEADER, "shorter than the fixed header", size=size)
        first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RtpParseError(RtpParseReason.BAD_VERSION, f"version {first >> 6}", size=size)
        pos = RTP_HEADER_SIZE + 4 * (first & 0x0F)
        if size < pos:
            raise RtpParseError(RtpParseReason.TRUNCATED_CSRC, f"{first & 0x0F} CSRCs announced", size=size)
        csrcs = struct.unpack_from(f"!{first & 0x0F}I", data, RTP_HEADER_SIZE)
        extension = bool(first & 0x10)
        profile, ext_data = 0, b""
        if extension:
            if size < pos + 4:
                raise RtpParseError(RtpParseReason.TRUNCATED_EXTENSION, "no extension header", size=size)
            profile, words = _EXTENSION.unpack_from(data, pos)
            ext_end = pos + 4 + 4 * words
            if size < ext_end:
                raise RtpParseError(RtpParseReason.TRUNCATED_EXTENSION, f"{words} words announced", size=size)
            ext_data = bytes(data[pos + 4 : ext_end])
            pos = ext_end
        end, padding = size, 0
        if first & 0x20:
            # RFC 3550 §5.1: the last octet counts the padding, itself included.
            padding = data[-1]
            if padding == 0:
                raise RtpParseError(RtpParseReason.ZERO_PADDING, "padding count 0", size=size)
            if padding > size - pos:
                raise RtpParseError(
                    RtpParseReason.PADDING_TOO_LARGE, f"padding {padding} > body {size - pos}", size=size
                )
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(second & 0x80),
            csrcs=csrcs,
            extension=extension,
            extension_profile=profile,
            extension_data=ext_data,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        first = (self.version << 6) | (0x20 if self.padding else 0) | (0x10 if self.extension else 0) | len(self.csrcs)
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [_FIXED.pack(first, second, self.sequence, self.timestamp, self.ssrc)]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension:
            parts.append(_EXTENSION.pack(self.extension_profile, len(self.extension_data) // 4))
            parts.append(self.extension_data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)
