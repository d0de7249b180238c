"""Audio for voice broadcast (喊话): G.711 A-law coding, PCMA RTP packets and A-law in PS (sans-I/O)."""

from __future__ import annotations

from gateway.media.audio.g711 import (
    PCMA_CLOCK,
    PCMA_PAYLOAD_TYPE,
    SAMPLES_PER_PACKET,
    PcmaPacketizer,
    alaw_decode,
    alaw_encode,
)
from gateway.media.audio.ps_audio import PsAudioPacketizer

__all__ = [
    "PCMA_CLOCK",
    "PCMA_PAYLOAD_TYPE",
    "SAMPLES_PER_PACKET",
    "PcmaPacketizer",
    "PsAudioPacketizer",
    "alaw_decode",
    "alaw_encode",
]
