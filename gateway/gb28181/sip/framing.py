"""Content-Length framing of SIP over stream transports (RFC 3261 §18.3).

TCP delivers a byte stream: one read may hold several messages, or a piece of
one. :class:`StreamFramer` buffers bytes and yields whole messages. It is
strict where a stream cannot recover (no Content-Length, oversized header
block or body): it raises :class:`SipFramingError` and the transport closes
only that connection. CRLF keep-alives between messages (RFC 5626 §3.5.1)
are absorbed; a double-CRLF ping is reported so the caller can answer with
a single CRLF pong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import MessageTooLarge, SipParseError
from gateway.gb28181.sip.message import MAX_MESSAGE_SIZE

MAX_HEADER_BLOCK = 16_384

# The first empty line ends the head, whatever the line ends: the same rule as
# parse_message, so the framer and the parser agree on where the body starts.
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


class SipFramingError(SipParseError):
    """The stream cannot be split into messages any more; close the connection."""


@dataclass(frozen=True, slots=True)
class FramedMessage:
    """One complete message cut from the stream."""

    data: bytes


@dataclass(frozen=True, slots=True)
class KeepalivePing:
    """A CRLFCRLF ping: answer with CRLF (RFC 5626 §3.5.1)."""


class StreamFramer:
    """Cut a SIP byte stream into messages by Content-Length."""

    def __init__(self, *, max_message: int = MAX_MESSAGE_SIZE, max_header_block: int = MAX_HEADER_BLOCK) -> None:
        self._buffer = bytearray()
        self._max_message = max_message
        self._max_header = max_header_block

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of a message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[FramedMessage | KeepalivePing]:
        """Add bytes; return every message (and ping) now complete, in order."""
        self._buffer += data
        out: list[FramedMessage | KeepalivePing] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _next(self) -> FramedMessage | KeepalivePing | None:
        buf = self._buffer
        # Absorb keep-alive CRLFs between messages.
        skip = 0
        while skip < len(buf) and buf[skip] in (0x0D, 0x0A):
            skip += 1
        if skip:
            ping_at = bytes(buf[:skip]).find(b"\r\n\r\n")
            if ping_at >= 0:
                del buf[: ping_at + 4]
                return KeepalivePing()
            if skip == len(buf):
                # Only line breaks so far: the last three may be the start of
                # a ping split across reads (``\r\n\r`` + ``\n``), keep them.
                del buf[: max(0, skip - 3)]
                return None
            del buf[:skip]
        blank = _BLANK_LINE.search(buf)
        if blank is None:
            if len(buf) > self._max_header:
                raise SipFramingError("header block too large or not SIP")
            return None
        end, head_len = blank.start(), blank.end()
        if head_len > self._max_header:
            raise SipFramingError("header block too large")
        length = _content_length(bytes(buf[:end]))
        total = head_len + length
        if total > self._max_message:
            raise MessageTooLarge(f"message of {total} bytes on stream")
        if len(buf) < total:
            return None
        message = bytes(buf[:total])
        del buf[:total]
        return FramedMessage(message)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        name = name.strip().lower()
        if name in (b"content-length", b"l"):
            value = value.strip()
            if not value.isdigit() or len(value) > 9:
                raise SipFramingError("bad Content-Length on stream")
            return int(value)
    # RFC 3261 §18.3: Content-Length MUST be used with stream transports.
    raise SipFramingError("no Content-Length on stream transport")
