"""A dead camera's picture: valid video of an all-black frame, encoded once per profile and replayed.

The ``black-picture`` fault (:mod:`simulators.faults`): the lens is covered or the sensor is
dead, yet the camera streams as usual. The clip goes through the same encoder and PS muxer as
the test card (:mod:`simulators.video`), so the gateway, the console and a snapshot see a
well-formed stream of the camera's codec and size whose every pixel is black (Y=16, the
black of limited-range video).
"""

from __future__ import annotations

import time
from typing import Any

import av
import numpy as np

from simulators.encode_cache import EncodeCache
from simulators.video import EncodedClip, VideoProfile, _encoder, mux_clip

__all__ = ["BLACK_LUMA", "BlackClips", "encode_black_clip"]

BLACK_LUMA = 16  # limited-range (BT.601/709) black
NEUTRAL_CHROMA = 128
CACHE_SIZE = 16  # a profile per codec, size and microphone: a handful


def encode_black_clip(profile: VideoProfile) -> EncodedClip:
    """One loop of ``profile`` whose frames are all black (with the microphone tone when it has one)."""
    started = time.perf_counter()
    ctx = _encoder(profile)
    w, h = profile.width, profile.height
    i420 = np.empty((h * 3 // 2, w), dtype=np.uint8)
    i420[:h] = BLACK_LUMA
    i420[h:] = NEUTRAL_CHROMA
    packets: list[av.Packet[Any]] = []
    for n in range(profile.frame_count):
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = n
        frame.time_base = ctx.time_base
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    return mux_clip(packets, profile, started)


class BlackClips:
    """Each profile's black clip encoded once (thread-safe; :meth:`get` from a worker thread)."""

    def __init__(self, max_size: int = CACHE_SIZE) -> None:
        self._cache: EncodeCache[VideoProfile, EncodedClip] = EncodeCache(
            encode_black_clip, max_size, what="black clip cache"
        )

    def get(self, profile: VideoProfile) -> EncodedClip:
        """The black clip of ``profile``, encoding it on a miss."""
        return self._cache.get(profile)

    @property
    def misses(self) -> int:
        """How many profiles were encoded."""
        return self._cache.misses
