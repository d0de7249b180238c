"""RTP over TCP framing (RFC 4571 §2): a 2-byte big-endian length before each packet.

GB/T 28181 TCP media (``TCP/RTP/AVP``, active or passive) uses RFC 4571 (docs/gb28181.md
§17.2). Some devices send RTSP-style interleaved frames instead (RFC 2326
§10.12: ``$``, channel, 2-byte length); we do not accept those, but say so
clearly when a stream starts that way, rather than reporting an absurd length.
A framing error cannot be recovered on a byte stream: the transport closes
that connection only.
"""

from __future__ import annotations

import enum

from gateway.errors import ConfigError
from gateway.media.rtp.packet import RtpBuildError, RtpError

MAX_RFC4571_PACKET = 0xFFFF
_PREFIX = 2
_INTERLEAVED_MAGIC = 0x24  # "$", RFC 2326 §10.12


class RtpFramingReason(enum.Enum):
    """Why a TCP media stream cannot be split into packets."""

    PACKET_TOO_LARGE = "packet_too_large"
    INTERLEAVED_FRAMING = "interleaved_framing"


class RtpFramingError(RtpError, ValueError):
    """The TCP media stream is not RFC 4571 framed RTP; close the connection."""

    def __init__(self, reason: RtpFramingReason, detail: str, *, offset: int) -> None:
        super().__init__(f"{reason.value}: {detail} (at stream offset {offset})")
        self.reason = reason
        self.offset = offset


class Rfc4571Framer:
    """Split an RFC 4571 byte stream into RTP/RTCP packets, and frame packets to send.

    At most ``2 + max_packet - 1`` bytes stay buffered between reads: anything
    longer would already hold a whole frame.
    """

    def __init__(self, max_packet: int = MAX_RFC4571_PACKET) -> None:
        if not 1 <= max_packet <= MAX_RFC4571_PACKET:
            raise ConfigError(f"max_packet must be 1..{MAX_RFC4571_PACKET}, not {max_packet}")
        self.max_packet = max_packet
        self._buffer = bytearray()
        self._offset = 0  # stream offset of the first buffered byte
        self.skipped_empty = 0  # zero-length frames seen (and skipped)

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of a frame."""
        return len(self._buffer)

    @property
    def max_buffered(self) -> int:
        """The most bytes :meth:`feed` ever keeps between calls."""
        return _PREFIX + self.max_packet - 1

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes from the stream; return every packet now complete, in order."""
        buf = self._buffer
        buf += data
        out: list[bytes] = []
        pos, size = 0, len(buf)
        try:
            while size - pos >= _PREFIX:
                if self._offset + pos == 0 and buf[0] == _INTERLEAVED_MAGIC:
                    if size < 3:
                        break
                    self._check_not_interleaved()
                length = (buf[pos] << 8) | buf[pos + 1]
                if length > self.max_packet:
                    raise RtpFramingError(
                        RtpFramingReason.PACKET_TOO_LARGE,
                        f"frame of {length} bytes > max_packet {self.max_packet}",
                        offset=self._offset + pos,
                    )
                end = pos + _PREFIX + length
                if end > size:
                    break
                if length:
                    out.append(bytes(buf[pos + _PREFIX : end]))
                else:
                    self.skipped_empty += 1
                pos = end
        finally:
            del buf[:pos]
            self._offset += pos
        return out

    def frame(self, packet: bytes) -> bytes:
        """Prefix one packet with its RFC 4571 length, ready to write to the stream."""
        if len(packet) > self.max_packet:
            raise RtpBuildError(f"packet of {len(packet)} bytes > max_packet {self.max_packet}")
        return len(packet).to_bytes(_PREFIX, "big") + packet

    def _check_not_interleaved(self) -> None:
        # "$" is also the high byte of any length in 0x2400..0x24FF, legal in
        # RFC 4571; such a frame's RTP packet starts with version 2 (0b10xxxxxx).
        # Under RFC 2326 byte 2 is instead the high byte of a length, below 0x40
        # for any packet under 16 KiB.
        if self._buffer[2] >> 6 != 2:
            raise RtpFramingError(
                RtpFramingReason.INTERLEAVED_FRAMING,
                "stream starts with '$': RFC 2326 interleaved framing, only RFC 4571 is supported",
                offset=0,
            )
