"""SDP as GB/T 28181 uses it: one media line, ``y=`` (SSRC) and ``f=`` (docs/gb28181.md §15.3–§15.7).

``y=`` and ``f=`` are not RFC 4566 lines and break generic SDP parsers (docs/gb28181.md §19 item 17), so
this module reads the body line by line itself. :func:`parse_sdp` is tolerant of whatever
devices add (unknown lines and attributes, LF or CRLF, no final newline) and only refuses a
body it cannot stream from: no usable ``m=``/``c=`` line, a bad port, a bad ``t=``. That
raises :class:`SdpError`, answered with 488 Not Acceptable Here. :func:`build_sdp` always ends
with CRLF: Hikvision answers 415 otherwise (docs/gb28181.md §19 item 17).

Signalling meets media at :class:`MediaSessionSpec` (docs/design.md §4): :func:`answer_to_spec` turns
our offer plus the device's answer into the one frozen value the media layer needs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TypedDict

from gateway.gb28181.ids import ssrc_prefix
from gateway.gb28181.sdp_model import (
    RTP_AVP,
    TCP_RTP_AVP,
    Connection,
    Direction,
    MediaTransport,
    SdpBuildError,
    SdpError,
    SdpSession,
    SessionType,
    Setup,
)

__all__ = [
    "MAX_SDP_SIZE",
    "RTP_AVP",
    "TCP_RTP_AVP",
    "WVP_PAYLOADS",
    "Connection",
    "Direction",
    "MediaSessionSpec",
    "MediaTransport",
    "SdpBuildError",
    "SdpError",
    "SdpSession",
    "SessionType",
    "Setup",
    "answer_to_spec",
    "build_sdp",
    "make_ssrc",
    "offer_for_history",
    "offer_for_play",
    "offer_transport",
    "parse_sdp",
    "spec_from_offer",
    "ssrc_to_int",
    "ssrc_to_str",
]

MAX_SDP_SIZE = 16 * 1024  # a GB SDP is < 1 KiB; the SIP layer caps the whole message at 64 KiB
# The live offer's payload list as WVP writes it (docs/gb28181.md §15.3; 99 is H.265 as in ZLMediaKit, not SVAC).
WVP_PAYLOADS: Mapping[int, str] = MappingProxyType(
    {96: "PS/90000", 97: "MPEG4/90000", 98: "H264/90000", 99: "H265/90000"}
)
SSRC_MAX = 0xFFFFFFFF

_SSRC_RE = re.compile(r"[0-9]{1,10}")
# a=streamnumber (2022) and vendor spellings: stream, streamprofile (Dahua), streamMode (Mercury/TP-Link).
_STREAM_ATTRS = frozenset({"streamnumber", "stream", "streamprofile", "streammode"})
_STREAM_MODES = {"MAIN": 0, "SUB": 1}  # a=streamMode:MAIN|SUB, docs/gb28181.md §15.3
_DIRECTIONS = frozenset(d.value for d in Direction)
_SETUPS = frozenset(d.value for d in Setup)
_CONNECTIONS = frozenset(d.value for d in Connection)


# --- parsing -------------------------------------------------------------------------------


def _uint(text: str, max_digits: int) -> int | None:
    """ASCII digits only: ``int()`` would take Unicode digits and unbounded lengths."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def _ssrc_or_none(text: str) -> str | None:
    """A usable ``y=`` as 10 digits; SRS sent ``y=630886``, so shorter values are padded."""
    if _SSRC_RE.fullmatch(text) is None:
        return None
    value = int(text)
    # SSRC 0 is never a real choice: "never use 0000000000" (docs/gb28181.md §19 item 2).
    return f"{value:010d}" if 0 < value <= SSRC_MAX else None


def _normalise_protocol(token: str) -> str:
    parts = token.upper().split("/")
    if parts == ["RTP", "AVP"]:
        return RTP_AVP
    if sorted(parts) == ["AVP", "RTP", "TCP"]:  # TCP/RTP/AVP, and RTP/AVP/TCP as some write it
        return TCP_RTP_AVP
    raise SdpError(f"unsupported media protocol {token[:40]!r}")


class _Fields(TypedDict, total=False):
    """The :class:`SdpSession` keyword arguments read from a body's lines."""

    kind: str
    port: int
    protocol: str
    payload_types: tuple[int, ...]
    origin_user: str
    origin_address: str
    session_type: SessionType | str
    direction: Direction
    setup: Setup
    connection: Connection
    ssrc: str | None
    f_line: str
    uri: str
    start_time: int
    end_time: int
    download_speed: int
    file_size: int
    stream_number: int
    origin_session_id: str
    origin_version: str
    ssrc_raw: str


def _media_line(value: str) -> _Fields:
    tokens = value.split()
    if len(tokens) < 4:
        raise SdpError("malformed m= line")
    port = _uint(tokens[1].split("/", 1)[0], 5)
    if port is None or not 0 < port <= 0xFFFF:
        raise SdpError(f"unusable m= port {tokens[1][:20]!r}")
    formats = [_uint(t, 3) for t in tokens[3:]]
    payload_types = tuple(pt for pt in formats if pt is not None and pt <= 127)
    if len(payload_types) != len(formats):
        raise SdpError("m= payload types must be 0-127")
    return {
        "kind": tokens[0].lower(),
        "port": port,
        "protocol": _normalise_protocol(tokens[2]),
        "payload_types": payload_types,
    }


def _connection_line(value: str) -> str:
    tokens = value.split()
    if len(tokens) != 3 or tokens[0].upper() != "IN" or tokens[1].upper() not in ("IP4", "IP6") or tokens[2][0] == "/":
        raise SdpError("malformed c= line")
    return tokens[2].split("/", 1)[0]  # drop a multicast /ttl


def _time_line(value: str) -> tuple[int, int]:
    tokens = value.split()
    times = [_uint(t, 20) for t in tokens]
    if len(times) != 2 or times[0] is None or times[1] is None:
        raise SdpError("malformed t= line")
    return times[0], times[1]


class _Reader:
    """Collects one body's lines into :class:`SdpSession` keyword arguments."""

    def __init__(self) -> None:
        self.fields: _Fields = {}
        self.rtpmap: dict[int, str] = {}
        self.fmtp: dict[int, str] = {}
        self.others: list[tuple[str, str | None]] = []
        self.session_c: str | None = None
        self.media_c: str | None = None
        self.sections = 0  # m= lines seen; a= and c= after a second m= are ignored

    def line(self, kind: str, value: str) -> None:
        if kind == "m":
            self.sections += 1
            if self.sections == 1:
                self.fields.update(_media_line(value))
        elif kind == "c" and self.sections <= 1:
            address = _connection_line(value)
            if self.sections:
                self.media_c = address
            else:
                self.session_c = address
        elif kind == "a" and self.sections <= 1:
            self.attribute(value)
        elif kind in ("o", "s", "u", "t", "y", "f"):
            self.session_line(kind, value)

    def session_line(self, kind: str, value: str) -> None:
        if kind == "o":
            tokens = value.split()
            self.fields["origin_user"] = tokens[0] if tokens else ""
            self.fields["origin_address"] = tokens[5] if len(tokens) >= 6 else ""
            if len(tokens) >= 3:
                self.fields["origin_session_id"], self.fields["origin_version"] = tokens[1], tokens[2]
        elif kind == "s":
            known = {t.value.lower(): t for t in SessionType}
            self.fields["session_type"] = known.get(value.lower(), value)
        elif kind == "u":
            self.fields["uri"] = value
        elif kind == "t" and "start_time" not in self.fields:
            self.fields["start_time"], self.fields["end_time"] = _time_line(value)
        elif kind == "y":
            self.fields["ssrc"], self.fields["ssrc_raw"] = _ssrc_or_none(value), value
        elif kind == "f":
            self.fields["f_line"] = value

    def attribute(self, text: str) -> None:
        name, sep, value = text.partition(":")
        name, value = name.strip(), value.strip()
        key = name.lower()
        if not sep:
            if key in _DIRECTIONS:
                self.fields["direction"] = Direction(key)
            else:
                self.others.append((name, None))
        elif not self.known_attribute(key, value):
            self.others.append((name, value))

    def known_attribute(self, key: str, value: str) -> bool:
        """Store a known ``a=name:value``; False when unknown or unusable (kept verbatim then)."""
        if key in ("rtpmap", "fmtp"):
            pt_text, _, rest = value.partition(" ")
            pt = _uint(pt_text, 3)
            if pt is None or not rest.strip():
                return False
            (self.rtpmap if key == "rtpmap" else self.fmtp)[pt] = rest.strip()
            return True
        lowered = value.lower()
        if key == "setup" and lowered in _SETUPS:
            self.fields["setup"] = Setup(lowered)
        elif key == "connection" and lowered in _CONNECTIONS:
            self.fields["connection"] = Connection(lowered)
        elif key in ("downloadspeed", "filesize") and (number := _uint(value, 20)) is not None:
            self.fields["download_speed" if key == "downloadspeed" else "file_size"] = number
        elif key in _STREAM_ATTRS and (number := _STREAM_MODES.get(value.upper(), _uint(value, 3))) is not None:
            self.fields["stream_number"] = number
        else:
            return False
        return True

    def finish(self) -> SdpSession:
        if not self.sections:
            raise SdpError("no m= line")
        address = self.media_c or self.session_c
        if address is None:
            raise SdpError("no c= line")
        fields: _Fields = {"origin_user": "", "origin_address": "", "session_type": "", **self.fields}
        return SdpSession(
            connection_address=address, rtpmap=self.rtpmap, fmtp=self.fmtp, attributes=tuple(self.others), **fields
        )


def parse_sdp(body: bytes) -> SdpSession:
    """Read an SDP body (CRLF, LF or CR line ends); raise :class:`SdpError` (488) if unusable.

    Missing or malformed ``y=`` is not an error (y is optional, docs/gb28181.md §19 item 2): ``ssrc`` is
    then None. Only the first ``m=`` section is read; later sections' ``a=``/``c=`` are skipped.
    """
    if len(body) > MAX_SDP_SIZE:
        raise SdpError(f"SDP body of {len(body)} bytes is over {MAX_SDP_SIZE}")
    text = body.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    reader = _Reader()
    for raw in text.split("\n"):
        line = raw.strip()
        if len(line) >= 2 and line[1] == "=":
            reader.line(line[0].lower(), line[2:].strip())
    return reader.finish()


# --- building ------------------------------------------------------------------------------


def _attribute_lines(s: SdpSession) -> list[str]:
    lines = [f"a={s.direction}"] if s.direction is not None else []
    ordered = [pt for pt in s.payload_types if pt in s.rtpmap] + [pt for pt in s.rtpmap if pt not in s.payload_types]
    lines += [f"a=rtpmap:{pt} {s.rtpmap[pt]}" for pt in dict.fromkeys(ordered)]
    lines += [f"a=fmtp:{pt} {params}" for pt, params in s.fmtp.items()]
    known = (
        ("setup", s.setup),
        ("connection", s.connection),
        ("downloadspeed", s.download_speed),
        ("filesize", s.file_size),
        ("streamnumber", s.stream_number),
    )
    for name, value in known:
        if value is not None:
            lines.append(f"a={name}:{value}")
    lines += [f"a={name}" if value is None else f"a={name}:{value}" for name, value in s.attributes]
    return lines


def build_sdp(session: SdpSession) -> bytes:
    """Write ``session`` in the line order of docs/gb28181.md §15.6, CRLF after every line including the last.

    ``y=`` is written zero-padded to 10 digits. Raises :class:`SdpBuildError` for an SSRC that
    is not 1–10 digits or a value that would inject a line break.
    """
    s = session

    def net(address: str) -> str:
        return f"IN {'IP6' if ':' in address else 'IP4'} {address}"

    lines = ["v=0", f"o={s.origin_user} {s.origin_session_id} {s.origin_version} {net(s.origin_address)}"]
    lines.append(f"s={s.session_type}")
    if s.uri is not None:
        lines.append(f"u={s.uri}")
    lines.append(f"c={net(s.connection_address)}")
    lines.append(f"t={s.start_time} {s.end_time}")
    lines.append(f"m={s.kind} {s.port} {s.protocol} {' '.join(str(pt) for pt in s.payload_types)}")
    lines += _attribute_lines(s)
    if s.ssrc is not None:
        if _SSRC_RE.fullmatch(s.ssrc) is None:
            raise SdpBuildError(f"y= must be 1-10 digits, not {s.ssrc[:20]!r}")
        lines.append(f"y={s.ssrc.zfill(10)}")
    if s.f_line is not None:
        lines.append(f"f={s.f_line}")
    if any("\r" in line or "\n" in line for line in lines):
        raise SdpBuildError("an SDP value contains a line break")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


# --- SSRC (docs/gb28181.md §15.4) ---------------------------------------------------------------------


def make_ssrc(domain: str, sequence: int, history: bool = False) -> str:
    """The 10-digit ``y=``: ``0`` live / ``1`` history, ``domain[3:8]``, ``sequence % 10000``.

    Raises :class:`~gateway.errors.InvalidDeviceId` for a domain that is not 10 digits, and
    :class:`SdpBuildError` rather than return ``0000000000`` (docs/gb28181.md §19 item 2).
    """
    ssrc = f"{1 if history else 0}{ssrc_prefix(domain)}{sequence % 10000:04d}"
    if int(ssrc) == 0:
        raise SdpBuildError("SSRC 0000000000 must not be used; pick another sequence")
    return ssrc


def ssrc_to_int(ssrc: str) -> int:
    """The RTP header value of a ``y=`` string: its decimal value (``"0200000001"`` → 200000001)."""
    if _SSRC_RE.fullmatch(ssrc) is None or int(ssrc) > SSRC_MAX:
        raise SdpError(f"not an SSRC: {ssrc[:20]!r}")
    return int(ssrc)


def ssrc_to_str(ssrc: int) -> str:
    """The ``y=`` spelling of an RTP SSRC: 10 digits, zero-padded."""
    if not 0 <= ssrc <= SSRC_MAX:
        raise SdpBuildError(f"SSRC {ssrc} does not fit 32 bits")
    return f"{ssrc:010d}"


# --- offers, answers and the media spec ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaSessionSpec:
    """Everything the media layer needs for one stream; the only value shared with signalling.

    Seen from the media receiver (the INVITE's sender). ``local_host``/``local_port`` are the
    offer's ``c=``/``m=``: where we receive UDP, or listen for ``TCP_PASSIVE``.
    ``remote_host``/``remote_port`` are the answer's ``c=``/``m=``: where we *connect* for
    ``TCP_ACTIVE``; for the other modes only the address the sender announced. A spec made from
    an offer alone has ``remote_host == ""`` and ``remote_port == 0``.
    """

    ssrc: int
    transport: MediaTransport
    remote_host: str
    remote_port: int
    payload_types: tuple[int, ...]
    stream_number: int | None
    session_type: SessionType
    local_host: str = ""
    local_port: int = 0
    encodings: tuple[tuple[int, str], ...] = ()  # (PT, rtpmap) pairs, e.g. (96, "PS/90000")

    @property
    def ssrc_text(self) -> str:
        """The SSRC as written in ``y=``."""
        return ssrc_to_str(self.ssrc)


def offer_transport(offer: SdpSession) -> MediaTransport:
    """The mode an offer asks for, per docs/gb28181.md §15.5.

    ``a=setup`` is ignored on ``RTP/AVP`` (devices write nonsense there). A TCP offer without
    ``a=setup`` is read as ``TCP_PASSIVE``: the offer's port is a listening port.
    """
    if not offer.is_tcp:
        return MediaTransport.UDP
    return MediaTransport.TCP_ACTIVE if offer.setup is Setup.ACTIVE else MediaTransport.TCP_PASSIVE


def offer_for_play(
    *,
    origin_user: str,
    media_host: str,
    media_port: int,
    ssrc: str,
    transport: MediaTransport = MediaTransport.UDP,
    origin_address: str | None = None,
    stream_number: int | None = None,
) -> SdpSession:
    """The standard live offer of docs/gb28181.md §15.6: ``s=Play``, ``t=0 0``, ``a=recvonly``, PT 96–99 as WVP.

    TCP modes add ``a=setup`` (``passive``: we listen; ``active``: we connect) and
    ``a=connection:new``. ``origin_address`` defaults to ``media_host``. Playback and Download
    offers are this with :func:`dataclasses.replace` of ``session_type``, ``uri``, the times
    and a history SSRC (docs/gb28181.md §15.6).
    """
    if _ssrc_or_none(ssrc) is None:
        raise SdpBuildError(f"offer needs a non-zero 1-10 digit SSRC, not {ssrc[:20]!r}")
    tcp = transport is not MediaTransport.UDP
    return SdpSession(
        origin_user=origin_user,
        origin_address=media_host if origin_address is None else origin_address,
        session_type=SessionType.PLAY,
        connection_address=media_host,
        port=media_port,
        payload_types=tuple(WVP_PAYLOADS),
        protocol=TCP_RTP_AVP if tcp else RTP_AVP,
        rtpmap=WVP_PAYLOADS,
        direction=Direction.RECVONLY,
        setup=(Setup.ACTIVE if transport is MediaTransport.TCP_ACTIVE else Setup.PASSIVE) if tcp else None,
        connection=Connection.NEW if tcp else None,
        ssrc=ssrc.zfill(10),
        stream_number=stream_number,
    )


def offer_for_history(
    *,
    session_type: SessionType,
    channel_id: str,
    start: int,
    end: int,
    media_host: str,
    media_port: int,
    ssrc: str,
    transport: MediaTransport = MediaTransport.UDP,
    download_speed: int | None = None,
    stream_number: int | None = None,
) -> SdpSession:
    """A Playback or Download offer (docs/gb28181.md §15.6): the live offer with ``s=``,
    ``u=<channel>:0`` and ``t=<start> <end>`` in **Unix epoch seconds** (what deployed
    platforms and devices use, not the NTP epoch of RFC 4566), a history SSRC (``1…``) and,
    for a download, ``a=downloadspeed:``.

    Raises :class:`SdpBuildError` for a live session type, an empty or reversed time range,
    or a history SSRC that does not start with ``1``.
    """
    if not session_type.history:
        raise SdpBuildError(f"{session_type} is not a history session")
    if not 0 < start < end:
        raise SdpBuildError(f"history range must be 0 < start < end, not {start}..{end}")
    if not ssrc.zfill(10).startswith("1"):
        raise SdpBuildError("a history SSRC starts with 1 (docs/gb28181.md §15.4)")
    live = offer_for_play(
        origin_user=channel_id,
        media_host=media_host,
        media_port=media_port,
        ssrc=ssrc,
        transport=transport,
        stream_number=stream_number,
    )
    speed = download_speed if session_type is SessionType.DOWNLOAD else None
    return replace(
        live,
        session_type=session_type,
        uri=f"{channel_id}:0",
        start_time=start,
        end_time=end,
        download_speed=speed,
    )


def spec_from_offer(offer: SdpSession) -> MediaSessionSpec:
    """What we asked for, before any answer; raises :class:`SdpError` without ``y=`` or known ``s=``."""
    if offer.ssrc_int is None:
        raise SdpError("offer has no usable y= SSRC")
    if not isinstance(offer.session_type, SessionType):
        raise SdpError(f"unknown session type {str(offer.session_type)[:20]!r}")
    return MediaSessionSpec(
        ssrc=offer.ssrc_int,
        transport=offer_transport(offer),
        remote_host="",
        remote_port=0,
        payload_types=offer.payload_types,
        stream_number=offer.stream_number,
        session_type=offer.session_type,
        local_host=offer.connection_address,
        local_port=offer.port,
        encodings=tuple(offer.rtpmap.items()),
    )


def _answered_transport(offered: MediaTransport, answer: SdpSession) -> MediaTransport:
    if not answer.is_tcp:
        # RTP/AVP wins whatever a=setup says (a camera answered a UDP offer with
        # a=setup:active); a TCP offer answered with RTP/AVP falls back to UDP like Monibuca.
        return MediaTransport.UDP
    if offered is MediaTransport.UDP:
        raise SdpError("answer switched a UDP offer to TCP")
    # The offer decides who connects: sbgb answers a=setup:active even to an active offer.
    return offered


def answer_to_spec(offer: MediaSessionSpec | SdpSession, answer: SdpSession) -> MediaSessionSpec:
    """Combine our offer (as sent, or its spec) with the device's answer (docs/gb28181.md §15.4, §15.5).

    * SSRC: the answer's ``y=`` when present and valid (a sender may pick its own, §19 item 1),
      otherwise the offered one (WVP's rule; camsim answers with its device ID in ``y=``).
    * Transport: UDP when the answer says ``RTP/AVP`` (its ``a=setup`` ignored); for a TCP
      answer the offered mode stands. A TCP answer to a UDP offer raises :class:`SdpError`.
    * Remote address: the answer's ``c=`` and ``m=`` port, the address to connect to for
      ``TCP_ACTIVE``. Payload types come from the answer, their names from its ``rtpmap``
      or else from the offer's.
    """
    base = offer if isinstance(offer, MediaSessionSpec) else spec_from_offer(offer)
    offered_names = dict(base.encodings)
    encodings = tuple(
        (pt, answer.rtpmap.get(pt) or offered_names[pt])
        for pt in answer.payload_types
        if pt in answer.rtpmap or pt in offered_names
    )
    return MediaSessionSpec(
        ssrc=base.ssrc if answer.ssrc_int is None else answer.ssrc_int,
        transport=_answered_transport(base.transport, answer),
        remote_host=answer.connection_address,
        remote_port=answer.port,
        payload_types=answer.payload_types,
        stream_number=answer.stream_number if base.stream_number is None else base.stream_number,
        session_type=base.session_type,
        local_host=base.local_host,
        local_port=base.local_port,
        encodings=encodings,
    )
