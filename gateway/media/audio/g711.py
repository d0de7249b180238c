"""G.711 A-law (PCMA) coding and its RTP packets, vectorised with numpy (ITU-T G.711, RFC 3551 §4.5.14).

Voice broadcast sends what a browser's microphone heard to a device as PCMA: 8 kHz mono,
one byte per sample, RTP payload type 8 on an 8 kHz clock, 20 ms (160 samples) per packet
as WVP and ZLMediaKit send it (docs/gb28181.md §15.10). The coder is a 64 Ki-entry table
built once and indexed by the 16-bit sample, so encoding costs one ``take`` per frame;
decoding (the simulated device that reports what it heard) is a 256-entry table.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.media.rtp.packet import RtpPacket

__all__ = ["PCMA_CLOCK", "PCMA_PAYLOAD_TYPE", "SAMPLES_PER_PACKET", "PcmaPacketizer", "alaw_decode", "alaw_encode"]

PCMA_PAYLOAD_TYPE = 8  # RFC 3551 static payload type
PCMA_CLOCK = 8000
SAMPLES_PER_PACKET = 160  # 20 ms


def _segment_encode(sample: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    """The G.711 A-law encoder (the reference algorithm, over arrays of 16-bit linear samples)."""
    pcm = sample >> 3  # A-law works on 13-bit magnitudes
    sign = np.where(pcm >= 0, 0xD5, 0x55)  # sign bit set for positive values, then even bits inverted
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    # Segment = position of the highest set bit above the 5 low bits (0..7).
    segment = np.zeros_like(magnitude)
    for n, bound in enumerate((0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)):
        segment = np.where(magnitude > bound, n + 1, segment)
    clipped = segment >= 8
    shift = np.where(segment < 2, 1, segment)
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(clipped, 0x7F, code)
    return ((code ^ sign) & 0xFF).astype(np.uint8)


def _build_tables() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]]:
    linear = np.arange(-32768, 32768, dtype=np.int32)
    encode = _segment_encode(linear)
    # Index by the int16's bit pattern (0..65535): rotate so that index 0 is sample 0.
    encode = np.roll(encode, -32768)
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (codes & 0x70) >> 4
    value = (codes & 0x0F) << 4
    value = np.where(segment == 0, value + 8, value + 0x108)
    value = np.where(segment > 1, value << (segment - 1), value)
    decode = np.where(codes & 0x80, value, -value).astype(np.int16)
    return encode.astype(np.uint8), decode


_ENCODE, _DECODE = _build_tables()


def alaw_encode(samples: npt.NDArray[np.int16] | bytes) -> bytes:
    """Signed 16-bit native-endian mono samples (array or bytes) → A-law bytes, one per sample."""
    pcm = np.frombuffer(samples, dtype=np.int16) if isinstance(samples, bytes | bytearray) else samples
    return bytes(_ENCODE[pcm.astype(np.int16).view(np.uint16)])


def alaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """A-law bytes → signed 16-bit samples."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


class PcmaPacketizer:
    """A-law bytes in any amount → RTP packets of 20 ms (PT 8, 8 kHz clock); the remainder waits.

    Sans-I/O: SSRC and the sequence/timestamp origins are passed in. The marker bit is set on
    the first packet of a talk spurt (RFC 3551 §4.1), i.e. the first one, and the first after
    :meth:`silence` (the speaker paused and nothing was sent).
    """

    def __init__(self, ssrc: int, *, initial_sequence: int = 0, initial_timestamp: int = 0) -> None:
        self.ssrc = ssrc
        self._sequence = initial_sequence & 0xFFFF
        self._timestamp = initial_timestamp & 0xFFFFFFFF
        self._pending = bytearray()
        self._marker = True
        self.packets = 0
        self.samples = 0

    def push(self, alaw: bytes) -> list[bytes]:
        """Queue samples; returns the encoded RTP packets now complete."""
        self._pending += alaw
        out: list[bytes] = []
        while len(self._pending) >= SAMPLES_PER_PACKET:
            payload = bytes(self._pending[:SAMPLES_PER_PACKET])
            del self._pending[:SAMPLES_PER_PACKET]
            packet = RtpPacket(
                payload_type=PCMA_PAYLOAD_TYPE,
                sequence=self._sequence,
                timestamp=self._timestamp,
                ssrc=self.ssrc,
                payload=payload,
                marker=self._marker,
            )
            out.append(bytes(packet))
            self._marker = False
            self._sequence = (self._sequence + 1) & 0xFFFF
            self._timestamp = (self._timestamp + SAMPLES_PER_PACKET) & 0xFFFFFFFF
            self.packets += 1
            self.samples += SAMPLES_PER_PACKET
        return out

    def silence(self, samples: int) -> None:
        """The speaker sent nothing for ``samples``: the clock moves on, the next packet is marked."""
        self._timestamp = (self._timestamp + max(0, samples)) & 0xFFFFFFFF
        self._marker = True
