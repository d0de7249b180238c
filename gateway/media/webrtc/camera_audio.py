"""The camera's own microphone to the browser: G.711 A-law from its PS stream, passed through to WebRTC.

Cameras with a microphone put G.711 (PSM stream type 0x90, A-law) beside the video in their
PS. :class:`CameraAudioTrack` is an aiortc audio track whose ``recv()`` returns ``av.Packet``
objects holding PCMA bytes: aiortc's PCMA encoder packs them as RTP as they are (no decoding,
no re-encoding). PES payloads are cut into 20 ms packets (160 samples) with timestamps from
the PES PTS on the 8 kHz clock, the packet size browsers expect.

The :class:`~gateway.media.webrtc.passthrough.FanoutVideoTrack` of the same viewer feeds it
(:meth:`CameraAudioTrack.feed`) the audio units it reads from the channel's fanout, so the
viewer stays one fanout consumer. G.711 µ-law cameras are not passed on (the answer offers
PCMA only).
"""

from __future__ import annotations

import asyncio
from collections import deque
from fractions import Fraction

import av
from aiortc import MediaStreamTrack, RTCRtpCodecCapability, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from av.stream import Stream

from gateway.media.audio import PCMA_CLOCK, SAMPLES_PER_PACKET
from gateway.media.ps import AccessUnit, StreamType

__all__ = ["CameraAudioTrack", "pcma_codec_preferences"]

AUDIO_TIME_BASE = Fraction(1, PCMA_CLOCK)
MAX_QUEUED = 100  # packets (2 s): a viewer that does not read loses the oldest


class CameraAudioTrack(MediaStreamTrack):
    """PCMA packets from the camera, fed by the viewer's video track."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[av.Packet[Stream]] = deque(maxlen=MAX_QUEUED)
        self._ready = asyncio.Event()
        self._next_ts = 0
        self.units = 0

    def feed(self, unit: AccessUnit) -> None:
        """One audio unit of the camera's stream (other codecs than G.711 A-law are ignored)."""
        if unit.stream_type is not StreamType.G711A or self.readyState != "live":
            return
        self.units += 1
        timestamp = unit.pts * PCMA_CLOCK // 90000 if unit.pts is not None else self._next_ts
        data = unit.data
        for offset in range(0, len(data), SAMPLES_PER_PACKET):
            packet = av.Packet(data[offset : offset + SAMPLES_PER_PACKET])
            packet.pts = timestamp + offset
            packet.time_base = AUDIO_TIME_BASE
            self._queue.append(packet)
        self._next_ts = timestamp + len(data)
        self._ready.set()

    async def recv(self) -> av.Packet[Stream]:
        """The next 20 ms of PCMA; waits for the camera."""
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._queue:
                return self._queue.popleft()
            self._ready.clear()
            await self._ready.wait()

    def stop(self) -> None:
        """End the track (a pending recv() sees it)."""
        super().stop()
        self._ready.set()


def pcma_codec_preferences() -> list[RTCRtpCodecCapability]:
    """aiortc's PCMA capability only: the camera's audio goes out as it came."""
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/pcma"]
