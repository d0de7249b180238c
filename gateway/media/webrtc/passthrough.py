"""H.264 pass-through from a :class:`~gateway.media.relay.StreamFanout` to a WebRTC viewer.

:class:`FanoutVideoTrack` is an aiortc ``MediaStreamTrack`` whose ``recv()`` returns
``av.Packet`` objects: aiortc then packetises the camera's Annex-B bytes as RTP (RFC 6184)
without decoding or re-encoding them (docs/dependencies.md). The fanout's GOP cache gives a new
viewer a key frame at once, which matters because aiortc ignores PLI/FIR in pass-through.

Signalling: the viewer makes the offer and :func:`answer_offer` answers it (the WHEP
shape). The answer's transceiver is created first, ``sendonly``, with H.264-only codec
preferences, and only then is the offer applied; otherwise aiortc may answer with VP8
first and send H.264 bytes labelled VP8 (docs/dependencies.md, "codec order"). We chose this over
a server-made offer because it needs one HTTP round trip and no second answer step, and
the preference list pins the codec just as reliably.

ICE (issue 10, M2): host candidates only on the configured media host — aioice gathers
on every interface and offers no option for that, so its module-level address lookup
(``aioice.ice.get_host_addresses``, the one place it enumerates interfaces) is replaced
by :func:`_ice_host_addresses`, which answers the host :func:`answer_offer` was given (a
wildcard host keeps aioice's own list). And no mDNS: a viewer's ``.local`` candidates
are removed from its offer before aiortc sees them, because resolving one makes aioice
bind 0.0.0.0:5353; ICE still works through the peer-reflexive candidate the viewer's
checks create.

This package sits under ``gateway/media``, whose modules may not import ``asyncio`` or
``time`` (tests/unit/test_import_contracts.py). The owner therefore passes in the clock
and the wake-up event (an ``asyncio.Event``, one per fanout is enough): after each
``fanout.publish(unit, now)`` it calls ``event.set()`` (or :meth:`FanoutVideoTrack.notify`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Protocol

import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av.stream import Stream

from gateway.errors import GatewayError
from gateway.media.ps import AccessUnit, StreamType
from gateway.media.relay import RelayError, StreamFanout
from gateway.media.webrtc.camera_audio import CameraAudioTrack, pcma_codec_preferences

__all__ = [
    "FanoutVideoTrack",
    "WakeEvent",
    "WebRtcError",
    "answer_offer",
    "h264_codec_preferences",
    "strip_mdns_candidates",
    "use_ice_host",
]

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = Fraction(1, 90000)
_PTS_STEP_WITHOUT_PTS = 3600  # 40 ms at 90 kHz: a guess for units the camera sent without a PTS
# Constrained Baseline first: every browser offers it; other profiles are still decoded in practice.
_PROFILE_ORDER = ("42e01f", "42001f")
_WILDCARDS = ("", "0.0.0.0", "::")
_MDNS_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ \S+\.local .*$\r?\n?", re.MULTILINE | re.IGNORECASE)
_AIOICE_HOST_ADDRESSES = aioice.ice.get_host_addresses
_ice_hosts: tuple[str, ...] = ()  # the configured media host(s); () = every interface (aioice's default)


def _ice_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """aioice's interface list, narrowed to the configured host (see the module docstring)."""
    if not _ice_hosts:
        return _AIOICE_HOST_ADDRESSES(use_ipv4, use_ipv6)
    return [h for h in _ice_hosts if (":" in h and use_ipv6) or (":" not in h and use_ipv4)]


aioice.ice.get_host_addresses = _ice_host_addresses


def use_ice_host(ice_host: str) -> None:
    """Gather host candidates on ``ice_host`` only ("" or a wildcard: every interface)."""
    global _ice_hosts  # noqa: PLW0603 - one media host per process; read by _ice_host_addresses
    _ice_hosts = () if ice_host in _WILDCARDS else (ice_host,)


def strip_mdns_candidates(sdp: str) -> str:
    """The offer without ``.local`` (mDNS) candidates, so aioice never opens its mDNS socket."""
    return _MDNS_CANDIDATE.sub("", sdp)


class WebRtcError(GatewayError):
    """The WebRTC session could not be negotiated (bad offer, no common codec)."""


class WakeEvent(Protocol):
    """What the track needs of an ``asyncio.Event``."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def wait(self) -> Awaitable[object]: ...


class FanoutVideoTrack(MediaStreamTrack):
    """A video track fed by one consumer of a :class:`StreamFanout`; H.264 only, no re-encoding.

    Attaches ``consumer_id`` on creation and detaches on :meth:`stop`. Audio units and
    video in any codec other than H.264 are skipped (aiortc has no H.265).
    """

    kind = "video"

    def __init__(
        self,
        fanout: StreamFanout,
        consumer_id: str,
        *,
        wakeup: WakeEvent,
        clock: Callable[[], float],
    ) -> None:
        super().__init__()
        self._fanout = fanout
        self._consumer_id = consumer_id
        self._wakeup = wakeup
        self._clock = clock
        self._pending: list[AccessUnit] = []
        self._last_pts: int | None = None
        self._attached = False
        self.audio: CameraAudioTrack | None = None  # the viewer's audio track: fed the camera's G.711
        fanout.attach(consumer_id, clock())
        self._attached = True

    @property
    def consumer_id(self) -> str:
        """The fanout consumer this track reads."""
        return self._consumer_id

    def notify(self) -> None:
        """Wake a pending :meth:`recv` (call after publishing to the fanout)."""
        self._wakeup.set()

    async def recv(self) -> av.Packet[Stream]:
        """The next H.264 access unit as an ``av.Packet`` (90 kHz pts); waits for one."""
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            unit = self._next_h264()
            if unit is not None:
                return self._packet(unit)
            self._wakeup.clear()  # nothing queued: clear and wait in one step (no lost wake-up)
            await self._wakeup.wait()

    def stop(self) -> None:
        """End the track and detach from the fanout (idempotent)."""
        if self._attached:
            self._attached = False
            try:
                self._fanout.detach(self._consumer_id, self._clock())
            except RelayError:
                log.debug("consumer %s already gone from %s", self._consumer_id, self._fanout.channel_id)
        super().stop()
        if self.audio is not None:
            self.audio.stop()
        self._wakeup.set()  # let a pending recv() see the ended state

    def _next_h264(self) -> AccessUnit | None:
        while True:
            if not self._pending:
                try:
                    self._pending = self._fanout.pull(self._consumer_id)
                except RelayError as exc:  # the owner detached us or dropped the fanout
                    raise MediaStreamError from exc
                if not self._pending:
                    return None
                self._pending.reverse()  # pop() from the end, oldest first
            unit = self._pending.pop()
            if unit.stream_type is StreamType.H264:
                return unit
            if self.audio is not None and not unit.is_video:
                self.audio.feed(unit)

    def _packet(self, unit: AccessUnit) -> av.Packet[Stream]:
        pts = unit.pts
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + _PTS_STEP_WITHOUT_PTS
        self._last_pts = pts
        packet = av.Packet(unit.data)
        packet.pts = pts
        packet.dts = pts
        packet.time_base = VIDEO_TIME_BASE
        packet.is_keyframe = unit.keyframe
        return packet


def h264_codec_preferences() -> list[RTCRtpCodecCapability]:
    """aiortc's H.264 (packetization-mode=1) capabilities, Constrained Baseline first, plus RTX."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    h264 = [
        c for c in codecs if c.mimeType.lower() == "video/h264" and str(c.parameters.get("packetization-mode")) == "1"
    ]
    h264.sort(key=lambda c: _rank(str(c.parameters.get("profile-level-id", ""))))
    rtx = [c for c in codecs if c.mimeType.lower() == "video/rtx"]
    return [*h264, *rtx]


def _rank(profile_level_id: str) -> int:
    try:
        return _PROFILE_ORDER.index(profile_level_id.lower())
    except ValueError:
        return len(_PROFILE_ORDER)


async def answer_offer(offer_sdp: str, track: MediaStreamTrack, *, ice_host: str = "") -> tuple[RTCPeerConnection, str]:
    """Answer a viewer's SDP offer with `track` sent H.264-only; returns the connection and answer SDP.

    No ICE servers are configured (closed networks; aiortc would otherwise try a public STUN
    host). The answer carries the host candidates, gathered before it is returned. The
    caller owns the connection and must ``await pc.close()``; on failure it is closed here
    and :class:`WebRtcError` is raised. ``ice_host``: the only address host candidates are
    gathered on ("" or a wildcard: every interface).
    """
    use_ice_host(ice_host)
    offer_sdp = strip_mdns_candidates(offer_sdp)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        transceiver.setCodecPreferences(h264_codec_preferences())
        if isinstance(track, FanoutVideoTrack) and "m=audio" in offer_sdp:  # the camera's microphone, if any
            track.audio = CameraAudioTrack()
            pc.addTransceiver(track.audio, direction="sendonly").setCodecPreferences(pcma_codec_preferences())
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # aiortc raises ValueError, InvalidStateError, OperationError, ...
        await pc.close()
        raise WebRtcError(f"cannot answer the WebRTC offer: {exc}") from exc
    return pc, pc.localDescription.sdp
