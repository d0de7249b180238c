"""RTSP packets (as FFmpeg hands them) → the access units every fan-out consumer knows.

Pure. FFmpeg's RTSP demuxer gives H.264/H.265 in Annex-B with the parameter sets
from the SDP (``sprop-parameter-sets``) in the stream's extradata; many cameras send
them only there. A key frame without its parameter sets in band gets them prepended,
so a late joiner (GOP cache), a snapshot decoder and the upper's PS remux can decode it
alone. Key frames are found by NAL type, not FFmpeg's flag (its RTP depacketiser does
not set it for every codec).
"""

from __future__ import annotations

from collections.abc import Iterator

from gateway.media.ps import AccessUnit, StreamType

__all__ = ["CODECS", "VIDEO_STREAM_ID", "access_unit", "nal_types", "to_90khz"]

VIDEO_STREAM_ID = 0xE0  # the PES stream id a PS demuxer gives the first video stream
#: FFmpeg codec names the gateway passes through. H.265 is refused for now: the H.265→H.264
#: transcoder tells a source's end from its INVITE's state, which an RTSP feed does not have.
CODECS = {"h264": StreamType.H264}
_H264_IDR = 5
_H264_SPS = 7
_H265_IRAP = range(16, 22)  # BLA, IDR, CRA
_H265_VPS = 32


def nal_types(data: bytes, codec: StreamType) -> Iterator[int]:
    """The NAL unit types of an Annex-B buffer, in order."""
    start = 0
    while (at := data.find(b"\x00\x00\x01", start)) >= 0 and at + 3 < len(data):
        header = data[at + 3]
        yield header & 0x1F if codec is StreamType.H264 else (header >> 1) & 0x3F
        start = at + 3


def access_unit(codec: StreamType, data: bytes, pts: int | None, dts: int | None, extradata: bytes) -> AccessUnit:
    """One coded frame as an :class:`AccessUnit` (parameter sets prepended to a key frame that lacks them)."""
    types = set(nal_types(data, codec))
    if codec is StreamType.H264:
        keyframe, has_params = _H264_IDR in types, _H264_SPS in types
    else:
        keyframe, has_params = bool(types & set(_H265_IRAP)), _H265_VPS in types
    if keyframe and not has_params and extradata.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        data = extradata + data
    return AccessUnit(codec, VIDEO_STREAM_ID, pts, dts if dts is not None else pts, data, keyframe)


def to_90khz(value: int | None, numerator: int, denominator: int) -> int | None:
    """A timestamp in the stream's time base as 90 kHz ticks (what PS and RTP video use), or None."""
    if value is None or denominator == 0:
        return None
    return (value * numerator * 90000 // denominator) & 0x1FFFFFFFF
