"""What a simulated PTZ camera shows: a crop of a wider panorama, following its pan, tilt and zoom.

The camera's pose (:class:`~gateway.gb28181.device_ptz.PtzCameras`) is quantised
to a :class:`ViewKey` (17 pan x 9 tilt x 13 zoom steps); each distinct view is
rendered (a crop of the camera's panorama, :func:`window_of`) and encoded once, a
one-second clip that starts on a key frame, cached in :class:`ViewClips`, and
replayed like any test card. While the camera moves, :class:`ViewFollower` notices
the new view at the next frame, encodes it in a worker thread if it is not cached,
and :class:`FollowingReplayer` switches to it at a frame boundary with continuous
RTP and PS timestamps (the new clip's first frame is a key frame, so any viewer
decodes across the switch).

A test reads the view back from any decoded frame or snapshot: the view's indices
are burned into the top-left corner as a row of black/white blocks
(:func:`draw_marker`, :func:`read_marker`), large enough to survive H.264 and JPEG.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import av
import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from gateway.gb28181.device_agent import DeviceAgent
from gateway.gb28181.device_ptz import MAX_ZOOM, PtzCameras, PtzPose, window_of
from gateway.gb28181.manscdp.control import PTZ_TYPES_STEERABLE
from gateway.media.rtp.sender import ClipReplayer, ReplayFrame, rewrite_pes_timestamps
from simulators.city import SimChannel
from simulators.encode_cache import EncodeCache
from simulators.video import CLOCK_RATE, FONT_PATH, EncodedClip, VideoProfile, _encoder, _font, mux_clip

__all__ = [
    "PTZ_AREAS",
    "FollowingReplayer",
    "ViewClips",
    "ViewFollower",
    "ViewKey",
    "draw_marker",
    "equip_ptz",
    "ptz_type_for",
    "read_marker",
    "render_view",
    "view_follower",
]

PTZ_AREAS: Final = frozenset({"entrance", "perimeter"})
"""Simulated cameras at these places are ball cameras (PTZType 1); the rest are fixed bullets (3)."""
PAN_STEPS, TILT_STEPS, ZOOM_STEPS = 16, 8, 12
MARKER_BITS: Final = 6  # per value; 3 values
_GUARD: Final = (1, 0, 1)
Frame = NDArray[np.uint8]


def ptz_type_for(channel: SimChannel) -> int | None:
    """The catalog PTZType of a planned channel: 1 (球机) at the entrance and perimeter, 3 (固定枪机) elsewhere."""
    if channel.kind != "camera":
        return None
    return 1 if channel.area in PTZ_AREAS else 3


def equip_ptz(agent: DeviceAgent) -> PtzCameras:
    """Give a simulated device its DeviceControl behaviour (PTZ for its steerable channels)."""
    steerable = [c.device_id for c in agent.profile.channels if c.ptz_type in PTZ_TYPES_STEERABLE]
    feature = PtzCameras(steerable)
    agent.features.append(feature)
    return feature


# --- views ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ViewKey:
    """A quantised pose: pan 0..16 (left to right), tilt 0..8 (down to up), zoom 0..12 (1x to 4x)."""

    pan: int
    tilt: int
    zoom: int

    @classmethod
    def of(cls, pose: PtzPose) -> ViewKey:
        """The nearest view step of ``pose``."""
        return cls(
            round((pose.pan + 1.0) / 2.0 * PAN_STEPS),
            round((pose.tilt + 1.0) / 2.0 * TILT_STEPS),
            round((pose.zoom - 1.0) / (MAX_ZOOM - 1.0) * ZOOM_STEPS),
        )

    def pose(self) -> PtzPose:
        """The pose this view shows."""
        return PtzPose(
            self.pan / PAN_STEPS * 2.0 - 1.0,
            self.tilt / TILT_STEPS * 2.0 - 1.0,
            1.0 + self.zoom / ZOOM_STEPS * (MAX_ZOOM - 1.0),
        )


@lru_cache(maxsize=64)
def _panorama(title: str, subtitle: str, width: int, height: int, font_path: str | None) -> Frame:
    """The whole scene a camera can look at: twice its frame each way, with labelled cells to recognise."""
    pw, ph = width * 2, height * 2
    xs = np.linspace(0, 255, pw, dtype=np.float32)
    ys = np.linspace(0, 255, ph, dtype=np.float32)
    img = np.empty((ph, pw, 3), dtype=np.uint8)
    img[:, :, 0] = (xs[None, :] * 0.6 + 40).astype(np.uint8)  # blue grows to the right
    img[:, :, 1] = (ys[:, None] * 0.5 + 60).astype(np.uint8)  # green grows downwards
    img[:, :, 2] = 90
    cols, rows = 8, 6
    cw, ch = pw // cols, ph // rows
    for c in range(cols + 1):
        cv2.line(img, (c * cw, 0), (c * cw, ph - 1), (255, 255, 255), 2)
    for r in range(rows + 1):
        cv2.line(img, (0, r * ch), (pw - 1, r * ch), (255, 255, 255), 2)
    font = _font(font_path, max(10, ch // 4)) if font_path else None
    pil = Image.fromarray(img[:, :, ::-1])
    draw = ImageDraw.Draw(pil)
    for r in range(rows):
        for c in range(cols):
            label = f"{chr(65 + c)}{r + 1}"
            draw.text((c * cw + cw // 8, r * ch + ch // 4), label, fill=(255, 255, 255), font=font)
    if font is not None:
        draw.text((pw // 3, ph // 2 - ch // 2), f"{title} {subtitle}", fill=(255, 255, 0), font=font)
    return np.ascontiguousarray(np.asarray(pil)[:, :, ::-1])


def render_view(title: str, subtitle: str, key: ViewKey, profile: VideoProfile, font_path: str | None) -> Frame:
    """The camera's picture for ``key``: its window of the panorama, scaled to the frame, marker burned in."""
    panorama = _panorama(title, subtitle, profile.width, profile.height, font_path)
    ph, pw = panorama.shape[:2]
    left, top, width, height = window_of(key.pose())
    x0, y0 = round(left * pw), round(top * ph)
    x1, y1 = max(x0 + 2, round((left + width) * pw)), max(y0 + 2, round((top + height) * ph))
    crop = panorama[y0:y1, x0:x1]
    resized = cv2.resize(crop, (profile.width, profile.height), interpolation=cv2.INTER_AREA)
    view: Frame = np.ascontiguousarray(resized, dtype=np.uint8)
    draw_marker(view, key)
    return view


def _block(width: int) -> int:
    return max(4, width // 32)


def draw_marker(img: Frame, key: ViewKey) -> None:
    """Burn ``key`` into the top-left corner: guard bits 101, then pan, tilt, zoom in 6 bits each."""
    bits = [*_GUARD]
    for value in (key.pan, key.tilt, key.zoom):
        bits += [(value >> (MARKER_BITS - 1 - i)) & 1 for i in range(MARKER_BITS)]
    b = _block(img.shape[1])
    img[0 : 3 * b, 0 : (len(bits) + 2) * b] = 128  # a grey band: neither bit colour
    for i, bit in enumerate(bits):
        x = (i + 1) * b
        img[b : 2 * b, x : x + b] = 255 if bit else 0


def read_marker(img: Frame) -> ViewKey | None:
    """The view burned into a decoded picture (BGR or grey), or None when there is no marker."""
    grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    b = _block(grey.shape[1])
    inset = max(1, b // 4)
    bits = []
    for i in range(len(_GUARD) + 3 * MARKER_BITS):
        x = (i + 1) * b
        patch = grey[b + inset : 2 * b - inset, x + inset : x + b - inset]
        bits.append(1 if float(patch.mean()) > 128 else 0)
    if tuple(bits[: len(_GUARD)]) != _GUARD:
        return None
    values = []
    for n in range(3):
        chunk = bits[len(_GUARD) + n * MARKER_BITS : len(_GUARD) + (n + 1) * MARKER_BITS]
        values.append(int("".join(map(str, chunk)), 2))
    return ViewKey(*values)


def encode_view(
    title: str, subtitle: str, key: ViewKey, profile: VideoProfile, *, font_path: str | None = FONT_PATH
) -> EncodedClip:
    """One second of the view (key frame first), a running counter so it is video, PS-muxed."""
    started = time.perf_counter()
    base = render_view(title, subtitle, key, profile, font_path)
    ctx = _encoder(profile)
    count = profile.fps
    packets: list[av.Packet[Any]] = []
    b = _block(profile.width)
    for n in range(count):
        img = base.copy()
        cv2.putText(img, f"{n:02d}", (b, profile.height - b), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        i420 = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = n
        frame.time_base = ctx.time_base
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    return mux_clip(packets, profile, started)  # with the microphone's tone when the camera has one


class ViewClips:
    """Each (camera, view, profile) encoded once; the ``max_size`` most recent kept. Thread-safe."""

    def __init__(self, max_size: int = 256, *, font_path: str | None = FONT_PATH) -> None:
        self.font_path = font_path
        self._cache: EncodeCache[tuple[str, str, ViewKey, VideoProfile], EncodedClip] = EncodeCache(
            lambda k: encode_view(*k, font_path=font_path), max_size, what="PTZ view cache"
        )

    @property
    def encoded(self) -> int:
        """How many views were encoded so far."""
        return self._cache.misses

    def peek(self, title: str, subtitle: str, key: ViewKey, profile: VideoProfile) -> EncodedClip | None:
        """The cached clip, or None."""
        return self._cache.peek((title, subtitle, key, profile))

    def get(self, title: str, subtitle: str, key: ViewKey, profile: VideoProfile) -> EncodedClip:
        """The clip, encoded on a miss (call from a worker thread)."""
        return self._cache.get((title, subtitle, key, profile))


_SHARED_CLIPS = ViewClips()


class ViewFollower:
    """Follows one PTZ channel's view for its streams: which clip to show now, encoded off the loop."""

    def __init__(
        self,
        cameras: PtzCameras,
        channel_id: str,
        title: str,
        subtitle: str,
        profile: VideoProfile,
        clips: ViewClips = _SHARED_CLIPS,
    ) -> None:
        self.cameras = cameras
        self.channel_id = channel_id
        self.title, self.subtitle, self.profile = title, subtitle, profile
        self.clips = clips
        self.shown: ViewKey | None = None
        self.switches = 0
        self._pending: tuple[ViewKey, asyncio.Future[EncodedClip]] | None = None

    def wanted(self, now: float) -> ViewKey:
        """The view the camera's pose asks for at ``now``."""
        return ViewKey.of(self.cameras.pose(self.channel_id, now) or PtzPose())

    def initial(self, now: float) -> EncodedClip:
        """The clip of the current view (blocking: call it in a worker thread)."""
        key = self.wanted(now)
        self.shown = key
        return self.clips.get(self.title, self.subtitle, key, self.profile)

    def poll(self, now: float) -> EncodedClip | None:
        """A clip to switch to, once the view changed and its clip is ready; else None."""
        key = self.wanted(now)
        if key == self.shown:
            return None
        if self._pending is not None:
            pending_key, future = self._pending
            if not future.done():
                return None
            self._pending = None
            if pending_key == key and not future.cancelled() and future.exception() is None:
                return self._switched(key, future.result())
        clip = self.clips.peek(self.title, self.subtitle, key, self.profile)
        if clip is not None:
            return self._switched(key, clip)
        future = asyncio.ensure_future(asyncio.to_thread(self.clips.get, self.title, self.subtitle, key, self.profile))
        self._pending = (key, future)
        return None

    def _switched(self, key: ViewKey, clip: EncodedClip) -> EncodedClip:
        self.shown = key
        self.switches += 1
        return clip

    def replayer(self, clip: EncodedClip, clock: Any) -> FollowingReplayer:
        """A replayer starting with ``clip`` that switches as the view changes (``clock()`` is loop time)."""
        return FollowingReplayer(self, clip, clock)

    def close(self) -> None:
        """Forget a pending encode (its result stays cached)."""
        self._pending = None


class FollowingReplayer:
    """:class:`ClipReplayer`'s interface over the clip of whatever view the camera has now."""

    def __init__(self, follower: ViewFollower, clip: EncodedClip, clock: Any) -> None:
        self.follower = follower
        self._clock = clock
        self._fps = clip.profile.fps
        self._current = ClipReplayer(clip.frames, self._fps)
        self._base = 0  # 90 kHz ticks before the current clip began

    def next_due_time(self) -> float:
        """Elapsed seconds at which the next frame is due."""
        return self._base / CLOCK_RATE + self._current.next_due_time()

    def frames_due(self, elapsed_seconds: float) -> Sequence[ReplayFrame]:
        """The frames due by ``elapsed_seconds``, switching clips first when the view changed."""
        clip = self.follower.poll(self._clock())
        if clip is not None:
            self._base += round(self._current.next_due_time() * CLOCK_RATE)
            self._current = ClipReplayer(clip.frames, self._fps)
        frames = self._current.frames_due(elapsed_seconds - self._base / CLOCK_RATE)
        if not self._base:
            return frames
        return [
            f._replace(timestamp=f.timestamp + self._base, ps_frame=rewrite_pes_timestamps(f.ps_frame, self._base))
            for f in frames
        ]


def view_follower(
    agent: DeviceAgent, channel_id: str, title: str, subtitle: str, profile: VideoProfile
) -> ViewFollower | None:
    """A follower when ``channel_id`` is a PTZ channel of ``agent``; None for a fixed camera."""
    for feature in agent.features:
        if isinstance(feature, PtzCameras) and channel_id in feature.channels:
            return ViewFollower(feature, channel_id, title, subtitle, profile)
    return None
