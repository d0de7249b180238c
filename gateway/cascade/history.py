"""An upper platform's Playback and Download through the gateway (issue 11; docs/gb28181.md §16.4, §15.9).

Unlike live view nothing is shared: every upper INVITE with ``s=Playback`` or
``s=Download`` gets its own device session through the records helper's
:class:`~gateway.playback.PlaybackService` (its own device INVITE with the same
``t=`` window and ``a=downloadspeed``, its own RTP port and fan-out). The relay
(:class:`~gateway.cascade.relay.UpperRelay`) answers the upper with the upper's
SSRC and transport and re-muxes the fan-out's access units to it, as for live.

This module holds what is specific to recordings: reading the upper's offer
(:func:`history_request`), opening/ending the device session, forwarding the
upper's MANSRTSP INFO verbatim (as WVP does) and the ``Notify/MediaStatus`` 121
body the gateway sends in the upper's dialog when the device reached the end.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final, Protocol
from xml.etree.ElementTree import Element, SubElement

from gateway.errors import GatewayError
from gateway.gb28181.manscdp import encode_xml
from gateway.gb28181.play import MEDIA_STATUS_END, PlayInfoAnswered
from gateway.gb28181.sdp import SdpSession, SessionType
from gateway.playback import Playback, PlaybackError

__all__ = [
    "END_OF_FILE",
    "HistoryRefused",
    "HistoryRequest",
    "PlaybackSource",
    "UpperHistory",
    "history_request",
    "media_status_body",
]

log = logging.getLogger("kgw.cascade.history")

END_OF_FILE: Final = "end_of_file"  # PlaybackService's end reason for the device's MediaStatus 121
MAX_WINDOW: Final = 31 * 86400  # s: no upper asks for more than a month in one session
MAX_DOWNLOAD_SPEED: Final = 32
# PlaybackService refusals (HTTP statuses) → the SIP status the upper's INVITE gets (WVP: 486 on failure).
REFUSALS: Final = {400: 488, 404: 404, 409: 480, 429: 486, 503: 486, 502: 486, 504: 480}


class HistoryRefused(GatewayError):
    """The upper's history INVITE cannot be served; ``status`` is the SIP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """What an upper's Playback/Download offer asks of the device (epoch seconds, as deployed)."""

    session_type: SessionType
    start: int
    end: int
    download_speed: int | None = None


def history_request(offer: SdpSession) -> HistoryRequest:
    """Read ``s=``, ``t=`` and ``a=downloadspeed`` of an upper's offer; 488 for a window we cannot ask for."""
    kind = offer.session_type
    if not isinstance(kind, SessionType) or kind not in (SessionType.PLAYBACK, SessionType.DOWNLOAD):
        raise HistoryRefused(488, f"not a history session: s={str(kind)[:20]}")
    start, end = offer.start_time, offer.end_time
    if not 0 < start < end or end - start > MAX_WINDOW:
        raise HistoryRefused(488, f"bad t= window {start} {end}")
    speed = None
    if kind is SessionType.DOWNLOAD:
        speed = offer.download_speed or 1
        if not 1 <= speed <= MAX_DOWNLOAD_SPEED:
            raise HistoryRefused(488, f"bad downloadspeed {speed}")
    return HistoryRequest(kind, start, end, speed)


def media_status_body(channel_id: str, sn: int, charset: str) -> bytes:
    """``Notify/MediaStatus`` with ``NotifyType 121`` (docs/gb28181.md §13): the file was sent completely."""
    root = Element("Notify")
    SubElement(root, "CmdType").text = "MediaStatus"
    SubElement(root, "SN").text = str(sn)
    SubElement(root, "DeviceID").text = channel_id
    SubElement(root, "NotifyType").text = str(MEDIA_STATUS_END)
    return encode_xml(root, charset)


class PlaybackSource(Protocol):
    """What the cascade needs of the playback service (one device session per call)."""

    async def start(
        self,
        channel_id: str,
        start: int,
        end: int,
        owner: str = "",
        transport: None = None,
        *,
        session_type: SessionType = SessionType.PLAYBACK,
        download_speed: int | None = None,
    ) -> Playback: ...
    async def forward(self, playback_id: str, body: bytes) -> PlayInfoAnswered: ...
    def stop(self, playback_id: str, reason: str = "stopped") -> Playback | None: ...


class UpperHistory:
    """Opens, controls and ends the device sessions of the uppers' history calls."""

    def __init__(self, playback: PlaybackSource) -> None:
        self.playback = playback
        self.loop = asyncio.get_running_loop()

    async def open(self, upper: str, channel_id: str, request: HistoryRequest, consumer: str) -> Playback:
        """Start the device session and attach ``consumer`` to its fan-out; :class:`HistoryRefused` otherwise."""
        try:
            pb = await self.playback.start(
                channel_id,
                request.start,
                request.end,
                owner=f"upper:{upper}",
                session_type=request.session_type,
                download_speed=request.download_speed,
            )
        except PlaybackError as exc:
            raise HistoryRefused(REFUSALS.get(exc.status, 486), exc.message) from exc
        pb.fanout.attach(consumer, self.loop.time())
        return pb

    @staticmethod
    def over(pb: Playback) -> bool:
        """The device session ended (MediaStatus 121, device BYE, RTP timeout, stop)."""
        return not pb.active

    def release(self, pb: Playback, consumer: str, reason: str) -> None:
        """The upper's call is over: leave the fan-out and end the device session (BYE to the device)."""
        if consumer in pb.fanout.consumers:
            pb.fanout.detach(consumer, self.loop.time())
        self.playback.stop(pb.id, reason)

    async def info(self, pb: Playback, body: bytes) -> tuple[int, bytes]:
        """Forward the upper's INFO body; the device's status and MANSRTSP answer body (if any)."""
        try:
            answer = await self.playback.forward(pb.id, body)
        except PlaybackError as exc:
            return (481 if exc.status in (404, 409) else 408 if exc.status == 504 else 500), b""
        return answer.status, answer.body
