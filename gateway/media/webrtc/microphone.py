"""A staff member's microphone over WebRTC, turned into G.711 A-law for a voice broadcast (喊话).

The browser offers its microphone track (Opus, usually 48 kHz stereo); :func:`answer_microphone`
answers ``recvonly`` and reads the track: every decoded ``av.AudioFrame`` is resampled to 8 kHz
mono 16-bit by PyAV's ``AudioResampler`` (:class:`MicrophoneEncoder`) and A-law encoded by the
table coder of :mod:`gateway.media.audio`, then handed to ``on_audio`` — the broadcast, which
cuts it into 20 ms PCMA RTP packets. Re-encoding is the point here (a browser cannot send
G.711 at 8 kHz reliably), unlike the video relay.

ICE follows :func:`~gateway.media.webrtc.passthrough.answer_offer`: no ICE servers, host
candidates on the media host only, the viewer's mDNS candidates removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from gateway.media.audio import PCMA_CLOCK, alaw_encode
from gateway.media.webrtc.passthrough import WebRtcError, strip_mdns_candidates, use_ice_host

__all__ = ["MicrophoneEncoder", "answer_microphone"]

log = logging.getLogger(__name__)


class MicrophoneEncoder:
    """Decoded audio frames of any rate and layout → A-law bytes, 8 kHz mono."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=PCMA_CLOCK)
        self.frames = 0

    def encode(self, frame: av.AudioFrame) -> bytes:
        """The A-law bytes of ``frame`` (the resampler may hold a few samples back)."""
        self.frames += 1
        out = bytearray()
        for resampled in self._resampler.resample(frame):
            samples = resampled.to_ndarray().reshape(-1).astype(np.int16, copy=False)
            out += alaw_encode(samples)
        return bytes(out)


async def answer_microphone(
    offer_sdp: str, on_audio: Callable[[bytes], None], *, ice_host: str = ""
) -> tuple[RTCPeerConnection, str]:
    """Answer the browser's offer (its audio received, nothing sent); feed ``on_audio`` with A-law bytes.

    Returns the connection and the answer SDP. The reader stops when the track ends (the
    caller's ``await pc.close()`` ends it). :class:`WebRtcError` for an offer without audio
    or one aiortc cannot answer.
    """
    use_ice_host(ice_host)
    offer_sdp = strip_mdns_candidates(offer_sdp)
    if "m=audio" not in offer_sdp:
        raise WebRtcError("the offer has no audio (microphone) track")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    readers: set[asyncio.Task[None]] = set()

    @pc.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        task = asyncio.get_running_loop().create_task(_read(track, on_audio), name="kgw-microphone")
        readers.add(task)
        task.add_done_callback(readers.discard)

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.direction = "recvonly"
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # aiortc raises ValueError, InvalidStateError, OperationError, ...
        await pc.close()
        raise WebRtcError(f"cannot answer the WebRTC offer: {exc}") from exc
    return pc, pc.localDescription.sdp


async def _read(track: MediaStreamTrack, on_audio: Callable[[bytes], None]) -> None:
    encoder = MicrophoneEncoder()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame):
            continue
        try:
            alaw = encoder.encode(frame)
            if alaw:
                on_audio(alaw)
        except Exception:  # a bad frame or a sink bug must not end the speaker's session silently
            log.exception("microphone frame dropped")
