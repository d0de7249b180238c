"""SIP header names and structured header values (RFC 3261 §7.3, §20, §25).

Header values are kept as text in :class:`Headers`; the few headers the stack
reasons about (Via, From/To/Contact, CSeq, the SIP URI inside them) are parsed
on demand by the helpers here. Parsing is tolerant of what real GB/T 28181
devices send (spaces around ``;`` and ``=``, missing display names, odd
``Contact`` parameters) but strict about structure: anything unusable raises
:class:`~gateway.errors.SipParseError`, never another exception type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from gateway.errors import SipParseError

# RFC 3261 §7.3.3 compact forms, plus the RFC 3265 Event (o) and Subject (s).
COMPACT_FORMS: dict[str, str] = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "e": "Content-Encoding",
    "k": "Supported",
    "s": "Subject",
    "o": "Event",
    "u": "Allow-Events",
}

_CANONICAL: dict[str, str] = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Content-Encoding",
        "Max-Forwards",
        "Expires",
        "Date",
        "User-Agent",
        "Server",
        "Allow",
        "Supported",
        "Subject",
        "Event",
        "Subscription-State",
        "Authorization",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Route",
        "Record-Route",
        "Retry-After",
        "Allow-Events",
        "Min-Expires",
        "Warning",
        "X-GB-Ver",
        "Accept",
        "Require",
        "Unsupported",
    )
}


_NAME_CACHE: dict[str, str] = {}
_NAME_CACHE_MAX = 4096  # header names are few; a flood of made-up ones must not grow memory


def canonical_name(name: str) -> str:
    """Return the conventional spelling of a header name (compact forms expanded)."""
    cached = _NAME_CACHE.get(name)
    if cached is not None:
        return cached
    lowered = name.strip().lower()
    if len(lowered) == 1 and lowered in COMPACT_FORMS:
        result = COMPACT_FORMS[lowered]
    else:
        result = _CANONICAL.get(lowered) or "-".join(part.capitalize() for part in lowered.split("-"))
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[name] = result
    return result


class Headers:
    """An ordered, case-insensitive multi-map of header fields.

    Order matters in SIP (Via, Route), so fields are kept as a list of
    ``(canonical name, value)`` pairs; lookups compare canonical names.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        cache = _NAME_CACHE
        self._items: list[tuple[str, str]] = [(cache.get(n) or canonical_name(n), v) for n, v in items]

    @classmethod
    def from_canonical(cls, items: list[tuple[str, str]]) -> Headers:
        """Wrap fields whose names are already canonical (no copy, no renaming)."""
        new = cls()
        new._items = items
        return new

    def names(self) -> set[str]:
        """The canonical names present."""
        return {n for n, _ in self._items}

    # get/get_all run ~20 times per message: the name cache is consulted inline.

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name``, or ``default``."""
        key = _NAME_CACHE.get(name) or canonical_name(name)
        for n, v in self._items:
            if n == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order."""
        key = _NAME_CACHE.get(name) or canonical_name(name)
        return [v for n, v in self._items if n == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def set(self, name: str, value: str) -> None:
        """Replace every field called ``name`` by one field, kept at the first one's place."""
        key = canonical_name(name)
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if n == key:
                if not placed:
                    out.append((key, value))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((key, value))
        self._items = out

    def replace_first(self, name: str, value: str) -> None:
        """Replace the value of the first field called ``name`` in place (keeps the others)."""
        key = canonical_name(name)
        for index, (n, _) in enumerate(self._items):
            if n == key:
                self._items[index] = (key, value)
                return
        self._items.append((key, value))

    def add(self, name: str, value: str) -> None:
        """Append a field (for repeatable headers)."""
        self._items.append((canonical_name(name), value))

    def prepend(self, name: str, value: str) -> None:
        """Insert a field before all others (a proxy's Via goes on top)."""
        self._items.insert(0, (canonical_name(name), value))

    def remove(self, name: str) -> None:
        """Drop every field called ``name``."""
        key = canonical_name(name)
        self._items = [(n, v) for n, v in self._items if n != key]

    def items(self) -> list[tuple[str, str]]:
        """A copy of the fields in order."""
        return list(self._items)

    def copy(self) -> Headers:
        """A shallow copy."""
        new = Headers()
        new._items = list(self._items)
        return new

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def split_top_level(value: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside quotes and angle brackets (RFC 3261 §7.3.1)."""
    if '"' not in value and "<" not in value:  # the common case, at C speed
        return [p.strip() for p in value.split(sep) if p.strip()]
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` parameters into an ordered dict (names lower-cased)."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    for raw in split_top_level(text, ";"):
        name, eq, value = raw.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        params[name] = value.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Inverse of :func:`parse_params`, with a leading ``;`` when non-empty."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(slots=True)
class SipUri:
    """A ``sip:``/``sips:`` URI: GB/T 28181 uses ``sip:<20-digit id>@<domain or ip:port>``."""

    user: str | None
    host: str
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a SIP URI; headers (``?…``) are ignored."""
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise SipParseError(f"not a SIP URI: {text[:80]!r}")
        rest = rest.split("?", 1)[0]
        hostport, _, param_text = rest.partition(";")
        user: str | None = None
        if "@" in hostport:
            user, _, hostport = hostport.rpartition("@")
            user = user.split(":", 1)[0]  # drop a password part
        host, port = _split_hostport(hostport)
        return cls(user=user or None, host=host, port=port, scheme=scheme, params=parse_params(param_text))

    def __str__(self) -> str:
        userinfo = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}:{userinfo}{self.host}{port}{format_params(self.params)}"


def is_ascii_digits(text: str) -> bool:
    """True for a non-empty run of ``0``-``9``.

    ``str.isdigit`` alone is not enough: it accepts ``'²'``, which ``int``
    then refuses with a bare ValueError.
    """
    return text.isascii() and text.isdigit()


_BAD_HOST = re.compile(r'[ \t<>"]')


def _split_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if not text:
        raise SipParseError("empty host")
    if text.startswith("["):  # IPv6 reference
        end = text.find("]")
        if end < 0:
            raise SipParseError("unterminated IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    if not host or _BAD_HOST.search(host):
        raise SipParseError(f"bad host {host[:40]!r}")
    if not port_text:
        return host, None
    if not is_ascii_digits(port_text) or len(port_text) > 5 or not 0 < int(port_text) < 65536:
        raise SipParseError(f"bad port {port_text[:10]!r}")
    return host, int(port_text)


@dataclass(slots=True)
class NameAddr:
    """From, To or Contact: optional display name, a URI and header parameters (tag…)."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse ``"Name" <sip:…>;tag=x`` or the bare ``sip:…;tag=x`` form."""
        text = text.strip()
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError("unterminated <uri>")
            display = text[:lt].strip().strip('"').strip() or None
            uri = SipUri.parse(text[lt + 1 : gt])
            params = parse_params(text[gt + 1 :])
            return cls(uri=uri, display=display, params=params)
        # RFC 3261 §20.10: without <>, parameters after the URI belong to the header.
        uri_text, _, param_text = text.partition(";")
        return cls(uri=SipUri.parse(uri_text), params=parse_params(param_text))

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (dialog identification)."""
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def _find_unquoted(text: str, ch: str) -> int:
    if '"' not in text:
        return text.find(ch)
    quoted = False
    for i, c in enumerate(text):
        if c == '"':
            quoted = not quoted
        elif c == ch and not quoted:
            return i
    return -1


_VIA_PROTOCOL = re.compile(r"\s*([^\s/]+)\s*/\s*([^\s/]+)\s*/\s*([^\s/;]+)\s+(.*)", re.DOTALL)


@dataclass(slots=True)
class Via:
    """One Via value: transport, sent-by and parameters (branch, rport, received)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse ``SIP/2.0/UDP host:port;branch=z9hG4bK…;rport``."""
        # RFC 3261 §25.1 allows LWS around the slashes and between the
        # protocol and sent-by (a tab is as good as a space).
        match = _VIA_PROTOCOL.match(text)
        if match is None:
            raise SipParseError(f"bad Via protocol {text.strip()[:40]!r}")
        pieces = [match.group(1), match.group(2), match.group(3)]
        rest = match.group(4)
        if pieces[0].upper() != "SIP":
            raise SipParseError(f"bad Via protocol {text.strip()[:40]!r}")
        sent_by, _, param_text = rest.strip().partition(";")
        host, port = _split_hostport(sent_by)
        return cls(transport=pieces[2].upper(), host=host, port=port, params=parse_params(param_text))

    @property
    def branch(self) -> str | None:
        """The transaction branch parameter."""
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_via_values(values: Iterable[str]) -> list[Via]:
    """All Via values of a message, top first (several per field are allowed)."""
    return [Via.parse(part) for value in values for part in split_top_level(value)]


@dataclass(frozen=True, slots=True)
class CSeq:
    """The CSeq header: sequence number and method."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        """Parse ``20 MESSAGE``."""
        parts = text.split()
        if len(parts) != 2 or not is_ascii_digits(parts[0]) or len(parts[0]) > 10:
            raise SipParseError(f"bad CSeq {text[:40]!r}")
        seq = int(parts[0])
        if seq >= 2**31:  # RFC 3261 §8.1.1.5
            raise SipParseError("CSeq out of range")
        return cls(seq=seq, method=parts[1].upper())

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
