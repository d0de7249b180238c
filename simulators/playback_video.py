"""Playback video of a simulated NVR: one encoded GOP per recorded second, cached.

Live video loops one pre-encoded clip (:mod:`simulators.video`); playback cannot,
because every recorded second looks different — it shows its own time
(:mod:`simulators.stamp`). So :func:`encode_second` renders and encodes exactly one
second of the test card (the camera's card of the live clip, plus the stamp and a
moving ball; a "no recording" banner over the seconds that fall into a gap of the
index) as one GOP of ``profile.fps`` frames, starting with a key frame.
``key_only`` gives just that key frame: at 4x and faster a playback sends one
picture per recorded second, as NVRs do (I-frames only), which keeps the encoding
cost per wall second flat.

:class:`SecondCache` is a small thread-safe LRU keyed by
:class:`SecondKey` (camera card, profile, second, gap, key_only): the playback
streamer asks for the next seconds ahead in a worker thread
(``asyncio.to_thread``), so the event loop never waits on an encoder. A 640x360
H.264 second costs ~10-30 ms (x264 ultrafast).

The units are raw Annex-B access units; the streamer muxes them to PS itself
with the playback's own timestamps (recorded time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from simulators.encode_cache import EncodeCache
from simulators.stamp import draw_stamp
from simulators.video import FONT_PATH, VideoProfile, _background, _encoder, _style

__all__ = ["DEFAULT_SECONDS_CACHED", "EncodedSecond", "SecondCache", "SecondKey", "encode_second", "render_second"]

DEFAULT_SECONDS_CACHED = 256


@dataclass(frozen=True, slots=True)
class SecondKey:
    """What one encoded second shows; hashable, the cache key."""

    title: str
    subtitle: str
    profile: VideoProfile
    epoch: int
    gap: bool = False
    key_only: bool = False
    utc_offset_hours: int = 8


@dataclass(frozen=True, slots=True)
class EncodedSecond:
    """One recorded second: ``(annex_b, keyframe)`` per frame, frame ``i`` shows ``epoch + i / fps``."""

    key: SecondKey
    units: tuple[tuple[bytes, bool], ...]
    encode_seconds: float


@lru_cache(maxsize=64)
def _card(title: str, subtitle: str, profile: VideoProfile, font_path: str | None) -> NDArray[np.uint8]:
    """The camera's static test card (the same one its live clip shows), drawn once."""
    card = _background(title, subtitle, profile, _style(title), font_path)
    card.setflags(write=False)
    return card


def render_second(key: SecondKey, *, font_path: str | None = FONT_PATH) -> list[NDArray[np.uint8]]:
    """The BGR frames of one recorded second (one frame when ``key_only``)."""
    profile = key.profile
    base = _card(key.title, key.subtitle, profile, font_path)
    style = _style(key.title)
    w, h = profile.width, profile.height
    radius = max(6, h // 14)
    count = 1 if key.key_only else profile.fps
    frames = []
    for n in range(count):
        img = base.copy()
        t = (key.epoch % 3600) + n / profile.fps
        x = radius + _bounce(t * style.velocity[0]) * (w - 2 * radius)
        y = radius + _bounce(0.3 + t * style.velocity[1]) * (h - 2 * radius)
        cv2.circle(img, (int(x), int(y)), radius, style.ball, -1, cv2.LINE_AA)
        if key.gap:
            scale = max(0.5, h / 300)
            cv2.putText(
                img, "NO RECORDING", (w // 5, h * 2 // 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 255), 2, cv2.LINE_AA
            )
        draw_stamp(img, key.epoch, n, utc_offset_hours=key.utc_offset_hours)
        frames.append(img)
    return frames


def encode_second(key: SecondKey, *, font_path: str | None = FONT_PATH) -> EncodedSecond:
    """Render and encode one recorded second as one closed GOP (see :class:`EncodedSecond`)."""
    started = time.perf_counter()
    ctx = _encoder(key.profile)
    packets: list[av.Packet[Any]] = []
    for n, img in enumerate(render_second(key, font_path=font_path)):
        i420 = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = n
        frame.time_base = ctx.time_base
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    packets.sort(key=lambda p: p.pts if p.pts is not None else 0)
    units = tuple((bytes(p), bool(p.is_keyframe) or i == 0) for i, p in enumerate(packets))
    return EncodedSecond(key, units, time.perf_counter() - started)


def _bounce(pos: float) -> float:
    pos %= 2.0
    return pos if pos <= 1.0 else 2.0 - pos


class SecondCache(EncodeCache[SecondKey, EncodedSecond]):
    """Encode each :class:`SecondKey` once; keep the ``max_size`` most recent. Thread-safe."""

    def __init__(self, max_size: int = DEFAULT_SECONDS_CACHED, *, font_path: str | None = FONT_PATH) -> None:
        super().__init__(lambda key: encode_second(key, font_path=font_path), max_size, what="second cache")
        self.font_path = font_path
