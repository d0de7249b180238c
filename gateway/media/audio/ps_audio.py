"""Broadcast audio for devices that take it inside PS: G.711 A-law in an audio-only program stream.

Many Hikvision and Dahua devices offer ``m=audio <port> RTP/AVP 96`` with
``a=rtpmap:96 PS/90000`` for voice broadcast (docs/gb28181.md §15.10): they want the
A-law samples wrapped like their own camera audio. Each 20 ms of samples becomes one PS
pack (pack header; system header and a PSM naming stream type 0x90 G.711A every
``PSM_PERIOD`` packs from the first; one PES 0xC0 with the PTS), sent as RTP on the 90 kHz
clock with the dynamic payload type the device offered. A pack of 160 samples fits one RTP
packet; the marker bit closes each frame as for video PS (ZLMediaKit's ``CommonRtpEncoder``).
Sans-I/O: SSRC and origins come from the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.media.audio.g711 import PCMA_CLOCK, SAMPLES_PER_PACKET
from gateway.media.ps.model import StreamType
from gateway.media.ps.mux import PsMuxer
from gateway.media.rtp.sender import CLOCK_RATE, PS_PAYLOAD_TYPE, RtpPacketizer

__all__ = ["PsAudioPacketizer"]


@dataclass(frozen=True, slots=True)
class _AudioFrame:
    """One 20 ms A-law frame as :meth:`PsMuxer.mux` reads it."""

    data: bytes
    pts: int
    dts: int
    keyframe: bool = False
    is_video: bool = False


class PsAudioPacketizer:
    """A-law bytes in any amount → RTP packets of audio-only PS (90 kHz clock); the remainder waits."""

    def __init__(
        self,
        ssrc: int,
        *,
        payload_type: int = PS_PAYLOAD_TYPE,
        initial_sequence: int = 0,
        initial_timestamp: int = 0,
    ) -> None:
        self.ssrc = ssrc
        self._muxer = PsMuxer(None, StreamType.G711A)
        self._rtp = RtpPacketizer(
            ssrc, payload_type, initial_sequence=initial_sequence & 0xFFFF, initial_timestamp=initial_timestamp
        )
        self._pending = bytearray()
        self._clock = 0  # 90 kHz ticks of the next frame since the first
        self.packets = 0
        self.samples = 0

    def push(self, alaw: bytes) -> list[bytes]:
        """Queue samples; returns the RTP packets of the PS packs now complete."""
        self._pending += alaw
        out: list[bytes] = []
        while len(self._pending) >= SAMPLES_PER_PACKET:
            frame = bytes(self._pending[:SAMPLES_PER_PACKET])
            del self._pending[:SAMPLES_PER_PACKET]
            pack = self._muxer.mux(_AudioFrame(frame, self._clock, self._clock))
            packets = self._rtp.packetize(pack, self._clock)
            out.extend(bytes(p) for p in packets)
            self.packets += len(packets)
            self.samples += SAMPLES_PER_PACKET
            self._clock += _ticks(SAMPLES_PER_PACKET)
        return out

    def silence(self, samples: int) -> None:
        """The speaker sent nothing for ``samples`` (8 kHz): the 90 kHz clock moves on."""
        self._clock += _ticks(max(0, samples))


def _ticks(samples: int) -> int:
    """8 kHz samples as 90 kHz ticks (160 samples = 1800 ticks)."""
    return samples * CLOCK_RATE // PCMA_CLOCK
