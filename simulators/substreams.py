"""Simulated cameras with a sub-stream (issue 11): which have one, and what each stream looks like.

A share of the cameras (chosen by a digest of the channel ID, so tests and the gateway
agree without talking) has a sub-stream: the same test card drawn at 320x180 with a
quarter of the bitrate; they answer an offer asking for it (``a=streamnumber:1`` or any
vendor spelling, which :func:`~gateway.gb28181.sdp.parse_sdp` reads alike) with the sub
clip and ``a=streamnumber:1``. The others stream their main clip whatever was asked and
say so (``a=streamnumber:0``), as a camera without a sub-stream does. Clips are encoded
once per profile (:class:`~simulators.video.ClipCache`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from simulators.video import VideoProfile

__all__ = ["SUB_SIZE", "SubStreams", "has_sub_stream"]

SUB_SIZE = (320, 180)  # a 360p main's usual sub-stream is CIF-class; this keeps 16:9


def has_sub_stream(channel_id: str, share: float) -> bool:
    """Whether the simulated camera ``channel_id`` has a sub-stream (``share`` of them do, 0..1)."""
    if share <= 0:
        return False
    if share >= 1:
        return True
    digest = hashlib.sha256(f"substream:{channel_id}".encode()).digest()
    return int.from_bytes(digest[:2], "big") < share * 65536


@dataclass(frozen=True, slots=True)
class SubStreams:
    """The fleet's sub-stream plan: the share of cameras with one, and the main profile it derives from."""

    share: float = 0.75

    def pick(self, channel_id: str, asked: int | None, main: VideoProfile) -> tuple[VideoProfile, int | None]:
        """The profile to stream and the stream number to state in the answer (None: echo the offer)."""
        if not asked:
            return main, None
        if not has_sub_stream(channel_id, self.share):
            return main, 0  # no sub-stream: main, and the answer says so
        width, height = SUB_SIZE
        return replace(main, width=width, height=height, bitrate=max(64_000, main.bitrate // 4)), 1
