"""SIP messages: parsing and serialisation (RFC 3261 §7, §25).

:func:`parse_message` turns one complete datagram (or one framed TCP message)
into a :class:`SipRequest` or :class:`SipResponse`. It accepts what real
GB/T 28181 devices send — compact header names, any header-name case, folded
lines, bare-LF line endings, bodies without a trailing CRLF — and refuses
everything else with :class:`SipParseError` (or :class:`MessageTooLarge`),
never with another exception type: the hypothesis tests check that for
arbitrary bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.errors import MessageTooLarge, SipParseError
from gateway.gb28181.sip.headers import (
    _NAME_CACHE,
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    is_ascii_digits,
    parse_via_values,
    split_top_level,
)

MAX_MESSAGE_SIZE = 65_536  # docs/design.md §6: cap every SIP message at 64 KiB
MAX_HEADER_COUNT = 128
MAX_HEADER_LINE = 8_192

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    423: "Interval Too Brief",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    513: "Message Too Large",
}

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_T = TypeVar("_T")


@dataclass(slots=True)
class _MessageBase:
    headers: Headers
    body: bytes
    # Parsed header values keyed by (header, raw text): a message is asked for
    # its From/To/Via/CSeq many times on its way through the stack, and keying
    # on the raw text keeps the cache right when a header is replaced.
    _parsed: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)

    def _cached(self, name: str, value: str, parse: Callable[[str], _T]) -> _T:
        key = (name, value)
        hit: _T | None = self._parsed.get(key)  # the key's name says which parser filled it
        if hit is None:
            hit = self._parsed[key] = parse(value)
        return hit

    # Convenience accessors for the headers every transaction needs. They
    # raise SipParseError when the header is missing or malformed.

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        value = self.headers.get("Call-ID")
        if not value:
            raise SipParseError("missing Call-ID")
        return value.strip()

    @property
    def cseq(self) -> CSeq:
        """The parsed CSeq."""
        value = self.headers.get("CSeq")
        if value is None:
            raise SipParseError("missing CSeq")
        return self._cached("CSeq", value, CSeq.parse)

    @property
    def vias(self) -> list[Via]:
        """Every Via, top first."""
        values = self.headers.get_all("Via")
        if not values:
            raise SipParseError("missing Via")
        return list(self._cached("Via", "\n".join(values), lambda _: tuple(parse_via_values(values))))

    @property
    def top_via(self) -> Via:
        """The topmost Via (the one a transaction is matched on)."""
        vias = self.vias
        if not vias:  # ``Via: ,`` or an empty value
            raise SipParseError("empty Via")
        return vias[0]

    @property
    def from_(self) -> NameAddr:
        """The parsed From header."""
        return self._name_addr("From")

    @property
    def to(self) -> NameAddr:
        """The parsed To header."""
        return self._name_addr("To")

    def _name_addr(self, name: str) -> NameAddr:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {name}")
        return self._cached(name, value, NameAddr.parse)

    @property
    def contact(self) -> NameAddr | None:
        """The first Contact, or None (``*`` also gives None)."""
        value = self.headers.get("Contact")
        if value is None or value.strip() == "*":
            return None
        values = split_top_level(value)
        if not values:
            raise SipParseError("empty Contact")
        return NameAddr.parse(values[0])

    @property
    def content_type(self) -> str:
        """Media type, lower-cased, without parameters ('' when absent)."""
        value = self.headers.get("Content-Type") or ""
        return value.split(";", 1)[0].strip().lower()

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass(slots=True)
class SipRequest(_MessageBase):
    """A SIP request: method, Request-URI (kept as text), headers and body."""

    method: str = ""
    uri: str = ""

    def __bytes__(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} SIP/2.0")


@dataclass(slots=True)
class SipResponse(_MessageBase):
    """A SIP response: status code, reason phrase, headers and body."""

    status: int = 200
    reason: str = "OK"

    def __bytes__(self) -> bytes:
        return self._serialize(f"SIP/2.0 {self.status} {self.reason}")


SipMessage = SipRequest | SipResponse


def make_request(method: str, uri: str, headers: Headers | None = None, body: bytes = b"") -> SipRequest:
    """Build a request (the caller fills Via, From, To, Call-ID, CSeq)."""
    return SipRequest(headers=headers or Headers(), body=body, method=method, uri=uri)


_COPIED_INTO_RESPONSE = frozenset({"Via", "From", "To", "Call-ID", "CSeq"})


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> SipResponse:
    """Build a response that copies Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2).

    ``to_tag`` is added to To when it has none yet (every final response to a
    dialog-less request needs one).
    """
    items = [(n, v) for n, v in request.headers.items() if n in _COPIED_INTO_RESPONSE]
    if to_tag is not None and status > 100:
        for index, (name, value) in enumerate(items):
            if name == "To":
                if ";tag=" not in value.replace(" ", "").lower():
                    items[index] = ("To", f"{value};tag={to_tag}")
                break
    headers = Headers.from_canonical(items)
    for name, value in extra or ():
        headers.add(name, value)
    return SipResponse(
        headers=headers, body=body, status=status, reason=reason or REASON_PHRASES.get(status, "Unknown")
    )


def parse_message(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> SipMessage:
    """Parse one complete SIP message.

    The body is the bytes after the blank line, cut to Content-Length when the
    header is present (UDP allows it to be absent: the datagram's end is the
    end of the body, RFC 3261 §18.3).
    """
    if len(data) > max_size:
        raise MessageTooLarge(f"message of {len(data)} bytes exceeds {max_size}")
    head, body = _split_head(data.lstrip(b"\r\n"))  # RFC 3261 §7.5: ignore leading CRLFs
    return _parse_head(head, body, check_length=True)


def parse_head(head: bytes) -> SipMessage:
    """Parse a header block alone, ignoring Content-Length.

    For answering a message refused for its size: its head is still good
    enough to build a stateless 513 from, but its body is not there.
    """
    head, _ = _split_head(head.lstrip(b"\r\n"))
    return _parse_head(head, b"", check_length=False)


def _parse_head(head: bytes, body: bytes, *, check_length: bool) -> SipMessage:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # GB/T 28181 headers are ASCII; tolerate stray GBK bytes in display names.
        text = head.decode("gb18030", errors="replace")
    lines = _unfold(text.split("\n"))
    while lines and not lines[0]:
        lines.pop(0)  # RFC 3261 §7.5: ignore leading CRLFs
    if not lines:
        raise SipParseError("empty message")
    start = lines[0]
    headers = _parse_header_lines(lines[1:])
    if check_length:
        body = _apply_content_length(headers, body)
    if start.startswith("SIP/"):
        return _parse_status_line(start, headers, body)
    return _parse_request_line(start, headers, body)


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    # The first empty line ends the head, whatever the line ends are (bare-LF
    # senders). Looking for CRLFCRLF first would find one inside the body of
    # a bare-LF message and swallow the body's start into the headers.
    match = _BLANK_LINE.search(data)
    if match is None:
        return data, b""
    return data[: match.start()], data[match.end() :]


def _unfold(raw_lines: list[str]) -> list[str]:
    """Join continuation lines (RFC 3261 §7.3.1 header folding)."""
    if all(len(raw) <= MAX_HEADER_LINE and raw[:1] not in (" ", "\t") for raw in raw_lines):
        # The common case: nothing folded; only strip the CR of CRLF line ends.
        return [raw[:-1] if raw[-1:] == "\r" else raw for raw in raw_lines]
    lines: list[str] = []
    for raw in raw_lines:
        line = raw[:-1] if raw.endswith("\r") else raw
        if len(line) > MAX_HEADER_LINE:
            raise MessageTooLarge("header line too long")
        if line[:1] in (" ", "\t") and lines:
            lines[-1] = lines[-1] + " " + line.strip()
        else:
            lines.append(line)
    return lines


_CHECKED_NAMES: set[str] = set()  # header names already validated (a few dozen in practice)


def _valid_header_name(name: str) -> bool:
    """Token characters only (RFC 3261 §25.1); valid names are remembered."""
    if not name or not all(c in _TOKEN_CHARS for c in name):
        return False
    if len(_CHECKED_NAMES) < 4096:
        _CHECKED_NAMES.add(name)
    return True


def _parse_header_lines(lines: list[str]) -> Headers:
    if len(lines) > MAX_HEADER_COUNT:
        raise MessageTooLarge(f"{len(lines)} header fields")
    items: list[tuple[str, str]] = []
    checked, cache = _CHECKED_NAMES, _NAME_CACHE
    for line in lines:
        name, colon, value = line.partition(":")
        if name not in checked:  # the common case skips strip and validation
            if not line.strip():
                continue
            name = name.strip()
            if not colon or (name not in checked and not _valid_header_name(name)):
                raise SipParseError(f"bad header line {line[:60]!r}")
        elif not colon:
            raise SipParseError(f"bad header line {line[:60]!r}")
        items.append((cache.get(name) or canonical_name(name), value.strip()))
    return Headers.from_canonical(items)


def _apply_content_length(headers: Headers, body: bytes) -> bytes:
    value = headers.get("Content-Length")
    if value is None:
        return body
    value = value.strip()
    if not is_ascii_digits(value) or len(value) > 9:
        raise SipParseError(f"bad Content-Length {value[:20]!r}")
    length = int(value)
    if length > len(body):
        raise SipParseError(f"Content-Length {length} larger than the {len(body)}-byte body")
    return body[:length]


def _parse_request_line(line: str, headers: Headers, body: bytes) -> SipRequest:
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0":
        raise SipParseError(f"bad request line {line[:80]!r}")
    method, uri, _ = parts
    if not method or not all(c in _TOKEN_CHARS for c in method) or ":" not in uri:
        raise SipParseError(f"bad request line {line[:80]!r}")
    return SipRequest(headers=headers, body=body, method=method.upper(), uri=uri)


def _parse_status_line(line: str, headers: Headers, body: bytes) -> SipResponse:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version != "SIP/2.0" or len(code) != 3 or not is_ascii_digits(code) or not 100 <= int(code) <= 699:
        raise SipParseError(f"bad status line {line[:80]!r}")
    return SipResponse(headers=headers, body=body, status=int(code), reason=reason.strip())


MANDATORY_REQUEST_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")
_MANDATORY = frozenset(MANDATORY_REQUEST_HEADERS)


_CONTACT_METHODS = frozenset({"REGISTER", "INVITE", "SUBSCRIBE"})


def check_mandatory(message: SipMessage) -> None:
    """Raise SipParseError unless Via, From, To, Call-ID and CSeq parse (RFC 3261 §8.1.1).

    A request that fails this gets a stateless 400 when it can be answered at
    all (sipgo does the same); a response that fails it is dropped.
    """
    missing = _MANDATORY - message.headers.names()
    if missing:
        raise SipParseError(f"missing {', '.join(sorted(missing))}")
    top_via = message.top_via
    _ = message.from_, message.call_id
    # To is parsed when someone reads it; here it only has to look like an address
    # (parsing it in full for every keepalive was 4 % of the gateway's CPU).
    to_value = message.headers.get("To") or ""
    if ":" not in to_value:
        raise SipParseError("To is not an address")
    cseq = message.cseq
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise SipParseError("CSeq method does not match the request method")
    if top_via.branch is None and isinstance(message, SipRequest):
        # RFC 2543 peers have no branch; we key transactions on it, so refuse.
        raise SipParseError("Via without branch")
    if cseq.method in _CONTACT_METHODS:
        # The cores read Contact of these (registrar, dialogs): a broken one is a 400
        # here, never an exception in a handler (issue 10, L1: ``Contact: <sip:…`` unclosed).
        _ = message.contact


__all__ = [
    "MAX_MESSAGE_SIZE",
    "REASON_PHRASES",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "check_mandatory",
    "make_request",
    "make_response",
    "parse_head",
    "parse_message",
]
