"""The SDP data model: :class:`SdpSession` and the enums and errors it uses.

:mod:`gateway.gb28181.sdp` reads and writes these values and exports them all; import them
from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from types import MappingProxyType

from gateway.errors import GatewayError, SipError

__all__ = [
    "RTP_AVP",
    "TCP_RTP_AVP",
    "Connection",
    "Direction",
    "MediaTransport",
    "SdpBuildError",
    "SdpError",
    "SdpSession",
    "SessionType",
    "Setup",
]

RTP_AVP = "RTP/AVP"
TCP_RTP_AVP = "TCP/RTP/AVP"  # RFC 4571 framing


class SdpError(SipError, ValueError):
    """An SDP body from a peer we cannot stream from; the INVITE is answered 488."""

    status_hint = 488


class SdpBuildError(GatewayError, ValueError):
    """Local misuse: a value we were asked to write cannot go into an SDP body."""


class SessionType(StrEnum):
    """The ``s=`` line (docs/gb28181.md §15.3)."""

    PLAY = "Play"
    PLAYBACK = "Playback"
    DOWNLOAD = "Download"
    TALK = "Talk"

    @property
    def history(self) -> bool:
        """True for recorded media: its SSRC starts with ``1`` (docs/gb28181.md §15.4)."""
        return self in (SessionType.PLAYBACK, SessionType.DOWNLOAD)


class MediaTransport(Enum):
    """How RTP travels, named like WVP's ``streamMode`` (docs/gb28181.md §15.5, §19 item 3).

    The names take the point of view of the media *receiver*, which is the side that sends
    the INVITE and the offer (the platform, or the gateway playing a camera). In an offer,
    ``a=setup:passive`` means the **offerer listens** and the device connects to the offer's
    ``c=``/``m=``: that is ``TCP_PASSIVE``. ``a=setup:active`` means the offerer connects to the
    answer's ``c=``/``m=`` after the 200 OK: ``TCP_ACTIVE``. Device UIs ("TCP主动") often use the
    opposite perspective; these names do not.
    """

    UDP = "UDP"
    TCP_PASSIVE = "TCP-PASSIVE"
    TCP_ACTIVE = "TCP-ACTIVE"


class Direction(StrEnum):
    """``a=recvonly`` in offers from the receiver, ``a=sendonly`` in the sender's answer."""

    RECVONLY = "recvonly"
    SENDONLY = "sendonly"
    SENDRECV = "sendrecv"


class Setup(StrEnum):
    """``a=setup`` (RFC 4145), TCP only; other values stay in :attr:`SdpSession.attributes`."""

    ACTIVE = "active"
    PASSIVE = "passive"


class Connection(StrEnum):
    """``a=connection`` (RFC 4145)."""

    NEW = "new"
    EXISTING = "existing"


@dataclass(frozen=True, slots=True)
class SdpSession:
    """One GB/T 28181 SDP body: session lines plus its (first) media description.

    ``rtpmap``/``fmtp`` map payload type to value and are frozen into read-only mappings, so
    a session compares by value but is not hashable. ``ssrc`` is the ``y=`` value as 10 digits,
    or None when ``y=`` is missing or unusable (``ssrc_raw`` then keeps what was received, for
    logs). ``attributes`` keeps every other ``a=`` line in order as ``(name, value or None)``.
    """

    origin_user: str
    origin_address: str
    session_type: SessionType | str  # a str only for an ``s=`` we do not know
    connection_address: str
    port: int
    payload_types: tuple[int, ...]
    kind: str = "video"
    protocol: str = RTP_AVP
    rtpmap: Mapping[int, str] = field(default_factory=dict)
    fmtp: Mapping[int, str] = field(default_factory=dict)
    direction: Direction | None = None
    setup: Setup | None = None
    connection: Connection | None = None
    ssrc: str | None = None
    f_line: str | None = None
    uri: str | None = None
    start_time: int = 0
    end_time: int = 0
    download_speed: int | None = None
    file_size: int | None = None
    stream_number: int | None = None
    attributes: tuple[tuple[str, str | None], ...] = ()
    origin_session_id: str = "0"
    origin_version: str = "0"
    ssrc_raw: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "payload_types", tuple(self.payload_types))
        object.__setattr__(self, "rtpmap", MappingProxyType(dict(self.rtpmap)))
        object.__setattr__(self, "fmtp", MappingProxyType(dict(self.fmtp)))
        object.__setattr__(self, "attributes", tuple(self.attributes))

    @property
    def ssrc_valid(self) -> bool:
        """True when ``y=`` was present and usable."""
        return self.ssrc is not None

    @property
    def ssrc_int(self) -> int | None:
        """The SSRC as the RTP header carries it (decimal value of ``y=``), or None."""
        return None if self.ssrc is None else int(self.ssrc)

    @property
    def is_tcp(self) -> bool:
        """True for ``TCP/RTP/AVP`` (RFC 4571 framing)."""
        return self.protocol == TCP_RTP_AVP
