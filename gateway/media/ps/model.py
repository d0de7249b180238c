"""Values shared by the PS demuxer and muxer: stream ids, stream types, access units.

GB/T 28181 carries media as an ISO/IEC 13818-1 program stream (docs/gb28181.md §17.3).
Stream types follow ireader/media-server's ``mpeg-proto.h``, which ZLMediaKit and most
platforms use; G.711 A-law is 0x90 and µ-law 0x91 there (docs/gb28181.md §17.3 records the
disagreement).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from gateway.errors import GatewayError

__all__ = [
    "PTS_MASK",
    "AccessUnit",
    "DemuxStats",
    "PsDemuxError",
    "StreamId",
    "StreamType",
]

PTS_MASK = (1 << 33) - 1  # PTS, DTS and SCR base are 33-bit counters of a 90 kHz clock


class PsDemuxError(GatewayError, ValueError):
    """Misuse of the PS demuxer or muxer (bad arguments, feeding after close).

    Malformed *input* never raises: it is counted in :class:`DemuxStats` and skipped.
    """


class StreamId(IntEnum):
    """Start-code values (the byte after ``00 00 01``) of ISO/IEC 13818-1 Table 2-18."""

    END = 0xB9
    PACK = 0xBA
    SYSTEM_HEADER = 0xBB
    PSM = 0xBC
    PRIVATE_1 = 0xBD
    PADDING = 0xBE
    PRIVATE_2 = 0xBF
    AUDIO = 0xC0  # audio streams are 0xC0-0xDF
    VIDEO = 0xE0  # video streams are 0xE0-0xEF
    ECM = 0xF0
    EMM = 0xF1
    DSMCC = 0xF2
    DIRECTORY = 0xFF


class StreamType(IntEnum):
    """PSM ``stream_type`` values (docs/gb28181.md §17.3), plus guesses that have no wire value.

    Members at 0x100 and above are ours: they name what the demuxer inferred when the
    PSM was missing or named something we do not know. The muxer refuses them.
    """

    MPEG1_VIDEO = 0x01
    MPEG2_VIDEO = 0x02
    MPEG1_AUDIO = 0x03
    MPEG2_AUDIO = 0x04
    AAC = 0x0F
    MPEG4 = 0x10
    H264 = 0x1B
    H265 = 0x24
    SVAC_VIDEO = 0x80
    G711A = 0x90
    G711U = 0x91
    G722 = 0x92
    G723 = 0x93
    G729 = 0x99
    SVAC_AUDIO = 0x9B
    OPUS = 0x9C
    UNKNOWN_VIDEO = 0x100
    UNKNOWN_AUDIO = 0x101

    @property
    def is_video(self) -> bool:
        """True for video codecs (and unknown video)."""
        return self in _VIDEO_TYPES

    @property
    def wire_value(self) -> int | None:
        """The byte written in a PSM, or None for our synthetic members."""
        return int(self) if self < 0x100 else None

    @classmethod
    def from_psm(cls, value: int, stream_id: int) -> StreamType:
        """Map a PSM byte; unknown values become UNKNOWN_VIDEO/AUDIO by stream id."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN_VIDEO if is_video_stream_id(stream_id) else cls.UNKNOWN_AUDIO


_VIDEO_TYPES = frozenset(
    {
        StreamType.MPEG1_VIDEO,
        StreamType.MPEG2_VIDEO,
        StreamType.MPEG4,
        StreamType.H264,
        StreamType.H265,
        StreamType.SVAC_VIDEO,
        StreamType.UNKNOWN_VIDEO,
    }
)


def is_video_stream_id(stream_id: int) -> bool:
    """0xE0-0xEF: MPEG video stream numbers (ISO/IEC 13818-1 Table 2-22)."""
    return 0xE0 <= stream_id <= 0xEF


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One coded frame of one elementary stream.

    ``data`` is Annex-B (start codes included) for H.264/H.265, the raw PES payload
    bytes otherwise. ``pts``/``dts`` are 90 kHz ticks, None when the stream gave none
    (a PES may carry one PTS for several frames; ISO/IEC 13818-1 §2.4.3.7 gives it to
    the first frame starting in that PES). ``dts`` equals ``pts`` when only a PTS was sent.
    """

    stream_type: StreamType
    stream_id: int
    pts: int | None
    dts: int | None
    data: bytes
    keyframe: bool

    @property
    def is_video(self) -> bool:
        """True when the unit belongs to a video stream."""
        return self.stream_type.is_video


@dataclass(slots=True)
class DemuxStats:
    """Counters kept by :class:`~gateway.media.ps.PsDemuxer`; they only grow."""

    packs: int = 0
    """Pack headers parsed (including Hikvision's truncated ones)."""
    pes: int = 0
    """Audio/video PES packets accepted."""
    units: int = 0
    """Access units emitted."""
    resyncs: int = 0
    """Times the parser lost sync on bad bytes and searched for the next pack header."""
    dropped_bytes: int = 0
    """Input bytes thrown away: garbage, broken packets, incomplete or oversized units."""
    oversized: int = 0
    """Access units dropped for exceeding ``max_unit_size`` (or the total buffer cap)."""
    psm_updates: int = 0
    """Program stream maps that (re)built the stream table."""
    skipped_packets: int = 0
    """Packets skipped by length: private streams, padding, system headers, ECM/EMM..."""
