"""Real video for simulated cameras: a drawn test card, encoded once, muxed to GB/T 28181 PS.

Each camera profile is rendered with OpenCV/Pillow (kindergarten and camera name in
Chinese, a running clip clock, a frame counter and a bouncing ball so motion shows),
encoded to H.264 (libx264) or H.265 (libx265) by PyAV with no B-frames and one key frame
per GOP, and muxed frame by frame with :class:`~gateway.media.ps.PsMuxer`. The result,
an :class:`EncodedClip`, is what :class:`~gateway.media.rtp.sender.ClipReplayer` loops.
:class:`ClipCache` makes "encode once, replay" hold across hundreds of cameras that
share a profile.

Encoding costs ~0.1 s per 4-s 640x360 clip (ultrafast + zerolatency), so callers on an
event loop should run :meth:`ClipCache.get` in a thread on a miss.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, Literal

import av
import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from gateway.errors import ConfigError
from gateway.media.audio import PCMA_CLOCK, alaw_encode
from gateway.media.ps import AccessUnit, PsMuxer, StreamId, StreamType
from simulators.encode_cache import EncodeCache

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "FONT_PATH",
    "MICROPHONE_TONE_HZ",
    "ClipCache",
    "EncodedClip",
    "VideoProfile",
    "encode_clip",
    "mux_clip",
    "has_microphone",
    "render_frames",
]

FONT_PATH = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"  # Debian fonts-wqy-microhei (CJK)
DEFAULT_CACHE_SIZE = 512
CLOCK_RATE = 90000  # PS PTS and the RTP video clock tick at 90 kHz (docs/gb28181.md §17.1)

Codec = Literal["h264", "hevc"]
Frame = NDArray[np.uint8]

# codec -> (PyAV encoder, PSM stream type, encoder options). x264's repeat-headers and
# x265's repeat-headers put SPS/PPS (and VPS) in front of every key frame, so a viewer
# that joins at any GOP can decode; scenecut=0 keeps key frames exactly every `gop`.
_ENCODERS: dict[str, tuple[str, StreamType, dict[str, str]]] = {
    "h264": (
        "libx264",
        StreamType.H264,
        {"preset": "ultrafast", "tune": "zerolatency", "bf": "0", "x264-params": "repeat-headers=1:scenecut=0"},
    ),
    "hevc": (
        "libx265",
        StreamType.H265,
        {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x265-params": "log-level=error:repeat-headers=1:bframes=0:scenecut=0:open-gop=0",
        },
    ),
}


@dataclass(frozen=True, slots=True)
class VideoProfile:
    """How a simulated camera's clip looks on the wire; hashable, so it keys :class:`ClipCache`.

    ``gop`` is the key-frame interval in frames (0 means ``fps``: one key frame a second).
    """

    width: int = 640
    height: int = 360
    fps: int = 25
    seconds: float = 4.0
    codec: Codec = "h264"
    bitrate: int = 1_000_000
    gop: int = 0
    audio: bool = False  # a G.711 A-law tone beside the video (a camera with a microphone)

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 64 or self.width % 2 or self.height % 2:
            raise ConfigError(f"video size must be even and at least 64x64, not {self.width}x{self.height}")
        if not 1 <= self.fps <= 120:
            raise ConfigError(f"fps must be in 1..120, not {self.fps}")
        if self.frame_count < 1:
            raise ConfigError(f"clip of {self.seconds} s at {self.fps} fps has no frames")
        if self.codec not in _ENCODERS:
            raise ConfigError(f"codec must be one of {sorted(_ENCODERS)}, not {self.codec!r}")
        if self.bitrate <= 0 or self.gop < 0:
            raise ConfigError("bitrate must be positive and gop not negative")

    @property
    def frame_count(self) -> int:
        """Frames in one clip loop."""
        return round(self.seconds * self.fps)

    @property
    def key_interval(self) -> int:
        """Frames between key frames (``gop``, or ``fps`` when gop is 0)."""
        return self.gop or self.fps

    @property
    def stream_type(self) -> StreamType:
        """The PSM stream type of this profile's codec."""
        return _ENCODERS[self.codec][1]


@dataclass(frozen=True, slots=True)
class EncodedClip:
    """One encoded loop: PS frames ready for ``ClipReplayer(clip.frames, profile.fps)``."""

    profile: VideoProfile
    frames: tuple[tuple[bytes, int, bool], ...]
    """``(ps_frame, pts_90k, keyframe)`` per video frame, in decode (= display) order."""
    access_units: tuple[AccessUnit, ...]
    """The Annex-B access units that were muxed (for tests and non-PS sinks)."""
    encode_seconds: float
    """Wall time spent rendering, encoding and muxing."""


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True, slots=True)
class _Style:
    """Colours and layout derived from the title, so neighbouring feeds look different."""

    background: tuple[int, int, int]
    accent: tuple[int, int, int]
    ball: tuple[int, int, int]
    text_top: bool
    velocity: tuple[float, float]  # ball speed as fractions of width/height per second


def _style(title: str) -> _Style:
    """A stable style from a digest of ``title`` (hashlib, not ``hash()``: stable across runs)."""
    d = hashlib.sha256(title.encode()).digest()

    def hsv(h: int, s: int, v: int) -> tuple[int, int, int]:
        px = cv2.cvtColor(np.array([[[h % 180, s, v]]], dtype=np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
        return int(px[0]), int(px[1]), int(px[2])

    return _Style(
        background=hsv(d[0], 120 + d[1] % 80, 70 + d[2] % 50),
        accent=hsv(d[0] + 90, 160, 200),
        ball=hsv(d[0] + 45, 220, 250),
        text_top=bool(d[3] & 1),
        velocity=(0.25 + d[4] / 600, 0.2 + d[5] / 700),
    )


@lru_cache(maxsize=16)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont | None:
    """The TrueType font at ``path``, or None when it cannot be loaded."""
    try:
        return ImageFont.truetype(path, size)
    except OSError:
        return None


def _ascii(text: str) -> str:
    """``text`` reduced to what cv2.putText can draw; a digest label when nothing is left."""
    kept = "".join(ch for ch in text if 32 <= ord(ch) < 127).strip()
    return kept or "cam-" + hashlib.sha256(text.encode()).hexdigest()[:6]


def _background(title: str, subtitle: str, profile: VideoProfile, style: _Style, font_path: str | None) -> Frame:
    """The static part of the card: colour field, bars, grid and the two names."""
    w, h = profile.width, profile.height
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = style.background
    bars = [(255, 255, 255), (0, 255, 255), (255, 255, 0), (0, 255, 0), (255, 0, 255), (0, 0, 255), (255, 0, 0)]
    bar_h, bar_w = h // 10, w // len(bars)
    bar_y = h - bar_h if style.text_top else 0
    for i, colour in enumerate(bars):
        img[bar_y : bar_y + bar_h, i * bar_w : (i + 1) * bar_w] = colour
    for x in range(0, w, max(16, w // 16)):
        cv2.line(img, (x, 0), (x, h - 1), style.accent, 1)
    band_y = h // 8 if style.text_top else h // 2
    cv2.rectangle(img, (0, band_y), (w - 1, band_y + h * 3 // 10), (24, 24, 24), -1)
    title_px, sub_px = max(12, h // 12), max(10, h // 16)
    font, sub_font = (_font(font_path, title_px), _font(font_path, sub_px)) if font_path else (None, None)
    origin = (w // 20, band_y + h // 30)
    sub_origin = (w // 20, origin[1] + title_px + h // 30)
    if font is not None and sub_font is not None:
        pil = Image.fromarray(img[:, :, ::-1])  # Pillow draws RGB
        draw = ImageDraw.Draw(pil)
        draw.text(origin, title, font=font, fill=(255, 255, 255))
        draw.text(sub_origin, subtitle, font=sub_font, fill=style.accent[::-1])
        return np.ascontiguousarray(np.asarray(pil)[:, :, ::-1])
    _put(img, _ascii(title), (origin[0], origin[1] + title_px), h / 360, (255, 255, 255))
    _put(img, _ascii(subtitle), (sub_origin[0], sub_origin[1] + sub_px), h / 480, style.accent)
    return img


def _put(img: Frame, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int]) -> None:
    """ASCII text with cv2 (Hershey font), anti-aliased, stroke width following the scale."""
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, max(1, round(scale * 1.5)), cv2.LINE_AA)


def _bounce(pos: float) -> float:
    """Triangle wave in [0, 1]: a position that reflects off both walls."""
    pos %= 2.0
    return pos if pos <= 1.0 else 2.0 - pos


def render_frames(
    title: str, subtitle: str, profile: VideoProfile, *, font_path: str | None = FONT_PATH
) -> Iterator[Frame]:
    """Yield ``profile.frame_count`` BGR test-card frames (height x width x 3, uint8).

    ``title`` (the kindergarten) and ``subtitle`` (the camera) are drawn with Pillow in
    the CJK font at ``font_path``; without it they fall back to ASCII via cv2.putText.
    Every frame shows the clip clock ``mm:ss.ff`` (seconds since clip start, ff in
    hundredths), the frame number, and a ball bouncing across the card.
    """
    style = _style(title)
    base = _background(title, subtitle, profile, style, font_path)
    w, h = profile.width, profile.height
    radius = max(6, h // 14)
    scale = h / 300
    clock_y = h - h // 7 if style.text_top else h // 6
    for n in range(profile.frame_count):
        t = n / profile.fps
        img = base.copy()
        x = radius + _bounce(t * style.velocity[0]) * (w - 2 * radius)
        y = radius + _bounce(0.3 + t * style.velocity[1]) * (h - 2 * radius)
        cv2.circle(img, (int(x), int(y)), radius, style.ball, -1, cv2.LINE_AA)
        cv2.circle(img, (int(x), int(y)), radius // 2, style.background, -1, cv2.LINE_AA)
        minutes, secs = divmod(t, 60.0)
        clock = f"{int(minutes):02d}:{secs:05.2f}"
        _put(img, clock, (w // 20, clock_y), scale, (255, 255, 255))
        _put(img, f"#{n:05d}", (w * 3 // 5, clock_y), scale, (255, 255, 255))
        yield img


# --------------------------------------------------------------------------- encoding


def _encoder(profile: VideoProfile) -> av.VideoCodecContext:
    """A PyAV encoder for ``profile``: no B-frames, fixed GOP, yuv420p, Annex-B output."""
    name, _, options = _ENCODERS[profile.codec]
    ctx = av.CodecContext.create(name, "w")
    if not isinstance(ctx, av.VideoCodecContext):  # only if the FFmpeg build maps the name oddly
        raise ConfigError(f"PyAV encoder {name} is not a video encoder")
    ctx.width, ctx.height = profile.width, profile.height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, profile.fps)
    ctx.framerate = Fraction(profile.fps)
    ctx.bit_rate = profile.bitrate
    ctx.gop_size = profile.key_interval
    ctx.max_b_frames = 0
    ctx.options = {**options, "g": str(profile.key_interval)}
    return ctx


def encode_clip(title: str, subtitle: str, profile: VideoProfile, *, font_path: str | None = FONT_PATH) -> EncodedClip:
    """Render, encode and PS-mux one clip loop (see :class:`EncodedClip`)."""
    started = time.perf_counter()
    ctx = _encoder(profile)
    packets: list[av.Packet[Any]] = []
    for n, img in enumerate(render_frames(title, subtitle, profile, font_path=font_path)):
        i420 = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts = n
        frame.time_base = ctx.time_base
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    return mux_clip(packets, profile, started)


def mux_clip(packets: list[av.Packet[Any]], profile: VideoProfile, started: float) -> EncodedClip:
    """PS-mux encoded packets (and, for a camera with a microphone, its tone) into a replayable clip."""
    stream_type = profile.stream_type
    muxer = PsMuxer(stream_type, StreamType.G711A if profile.audio else None)
    units: list[AccessUnit] = []
    frames: list[tuple[bytes, int, bool]] = []
    for n, packet in enumerate(packets):
        index = packet.pts if packet.pts is not None else n
        pts = index * CLOCK_RATE // profile.fps
        key = packet.is_keyframe or n == 0
        unit = AccessUnit(stream_type, StreamId.VIDEO, pts, pts, bytes(packet), key)
        units.append(unit)
        ps = muxer.mux(unit)
        if profile.audio:  # this frame's share of the tone, in the same pack sequence
            sound = AccessUnit(StreamType.G711A, StreamId.AUDIO, pts, pts, _tone(index, profile.fps), False)
            units.append(sound)
            ps += muxer.mux(sound)
        frames.append((ps, pts, key))
    return EncodedClip(profile, tuple(frames), tuple(units), time.perf_counter() - started)


MICROPHONE_TONE_HZ = 440.0  # what a simulated camera's microphone hears (a whole number of cycles per loop)


def _tone(frame: int, fps: int) -> bytes:
    """A-law samples of the microphone tone for video frame ``frame`` (1/fps s of it)."""
    start, end = frame * PCMA_CLOCK // fps, (frame + 1) * PCMA_CLOCK // fps
    t = np.arange(start, end) / PCMA_CLOCK
    return alaw_encode((0.3 * 32767 * np.sin(2 * np.pi * MICROPHONE_TONE_HZ * t)).astype(np.int16))


def has_microphone(channel_id: str) -> bool:
    """Which simulated cameras have a microphone: those with an even channel number (NN: 02, 04…)."""
    return channel_id[-2:].isdigit() and int(channel_id[-2:]) % 2 == 0


# --------------------------------------------------------------------------- cache


class ClipCache:
    """Each ``(title, subtitle, profile)`` encoded once; the ``max_size`` most recent kept (thread-safe)."""

    def __init__(self, max_size: int = DEFAULT_CACHE_SIZE, *, font_path: str | None = FONT_PATH) -> None:
        self.font_path = font_path
        self._cache: EncodeCache[tuple[str, str, VideoProfile], EncodedClip] = EncodeCache(
            lambda key: encode_clip(*key, font_path=font_path), max_size, what="clip cache"
        )

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def max_size(self) -> int:
        """How many clips are kept."""
        return self._cache.max_size

    @property
    def hits(self) -> int:
        """Lookups served from the cache."""
        return self._cache.hits

    @property
    def misses(self) -> int:
        """Lookups that encoded."""
        return self._cache.misses

    def get(self, title: str, subtitle: str, profile: VideoProfile) -> EncodedClip:
        """The cached clip for this camera picture, encoding it on a miss (call from a worker thread)."""
        return self._cache.get((title, subtitle, profile))
