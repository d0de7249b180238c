"""JPEG snapshot of a channel from its access units (e.g. a fanout's GOP cache).

Decodes from the latest key frame with a PyAV ``CodecContext`` (``h264`` or ``hevc`` by
stream type) and encodes the first picture with OpenCV. The decoder holds each frame
until the next one starts, so after the units run out it is flushed with
``decode(None)``. CPU-bound (a few ms at 360p, tens at 1080p): call it from an executor.
"""

from __future__ import annotations

from collections.abc import Sequence

import av
import cv2

from gateway.errors import GatewayError
from gateway.media.ps import AccessUnit, StreamType

__all__ = ["SnapshotError", "snapshot_jpeg"]

_DECODERS = {StreamType.H264: "h264", StreamType.H265: "hevc"}


class SnapshotError(GatewayError):
    """No decodable key frame among the units, or the picture could not be encoded."""


def snapshot_jpeg(units: Sequence[AccessUnit], quality: int = 80) -> bytes:
    """A JPEG of the picture at the latest decodable key frame in `units`.

    Only H.264/H.265 video units are used. Key frames are tried from the newest back,
    so a truncated last GOP falls back to the one before it.
    """
    if not 0 <= quality <= 100:
        raise SnapshotError(f"JPEG quality must be 0-100, not {quality}")
    video = [u for u in units if u.stream_type in _DECODERS]
    keys = [i for i, u in enumerate(video) if u.keyframe]
    for start in reversed(keys):
        frame = _decode_first(video, start)
        if frame is not None:
            ok, jpeg = cv2.imencode(".jpg", frame.to_ndarray(format="bgr24"), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise SnapshotError("JPEG encoding failed")
            return bytes(jpeg.tobytes())
    raise SnapshotError("no decodable key frame" if keys else "no key frame among the units")


def _decode_first(video: Sequence[AccessUnit], start: int) -> av.VideoFrame | None:
    """The first picture decoded from `video[start:]` (same codec as the key frame), or None."""
    stream_type = video[start].stream_type
    codec = av.CodecContext.create(_DECODERS[stream_type], "r")
    if not isinstance(codec, av.VideoCodecContext):  # narrows the type; "h264"/"hevc" are video
        raise SnapshotError(f"{_DECODERS[stream_type]} is not a video decoder")
    try:
        for unit in video[start:]:
            if unit.stream_type is not stream_type:
                continue
            frames = codec.decode(av.Packet(unit.data))
            if frames:
                return frames[0]
        frames = codec.decode(None)
        return frames[0] if frames else None
    except av.FFmpegError:
        return None
