"""H.265 → H.264 for browsers (issue 11): the one place kgw re-encodes video.

Browsers' WebRTC has no H.265 (nor has aiortc), so an H.265 camera is decoded and
re-encoded with PyAV before it reaches :class:`~gateway.media.webrtc.FanoutVideoTrack`.
:class:`HevcToH264` is the codec pair of one camera; the owner (``gateway.transcoding``)
calls :meth:`HevcToH264.transcode` from a worker thread (PyAV releases the GIL while
it decodes and encodes) and publishes what comes out into a second
:class:`~gateway.media.relay.StreamFanout`, which every browser viewer of that camera
reads unchanged: one transcode per camera, whatever the number of viewers.

What comes out is made for late joiners and for aiortc's pass-through, which ignores
key-frame requests: x264 ``ultrafast``/``zerolatency`` (no look-ahead, no B-frames:
one frame in, one frame out), a key frame every ``gop_seconds`` and whenever
:meth:`HevcToH264.request_keyframe` asks for one (a new viewer), SPS/PPS in front of
every key frame. Pictures above ``max_width`` x ``max_height`` are scaled down (a 4K
camera need not cost a browser 4K). Audio units pass through untouched, in order, so
the output fanout can stand in for the camera's own.

:class:`Backlog` decides what a transcode that cannot keep up throws away: when the
oldest unit waiting is more than ``max_lag`` seconds old, everything before the newest
key frame goes (whole GOPs), or, with no key frame waiting, everything until the next
one. The decoder then restarts cleanly at a key frame and the viewer sees a jump
instead of a delay that only grows.

Sans-I/O like the rest of ``gateway.media``: no threads or clocks here; ``now`` and
arrival times are passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import av
from av.video.frame import PictureType, VideoFrame

from gateway.errors import ConfigError, GatewayError
from gateway.media.ps import AccessUnit, StreamId, StreamType
from gateway.media.ps.model import PTS_MASK

__all__ = [
    "Backlog",
    "HevcToH264",
    "TranscodeError",
    "TranscodeSettings",
    "TranscodeStats",
    "output_size",
]

CLOCK_RATE = 90000  # PS/RTP video ticks per second
_PTS_HALF = 1 << 32  # a jump back by more than half the 33-bit range is a wrap, not a reset


class TranscodeError(GatewayError):
    """The transcoder cannot be built (no H.265 decoder or H.264 encoder in this PyAV)."""


@dataclass(frozen=True, slots=True)
class TranscodeSettings:
    """How the H.264 for browsers is made; the defaults suit a 2-core gateway (bench/transcode.py)."""

    max_width: int = 1280
    max_height: int = 720
    fps: int = 25  # the cameras' nominal rate: key-frame interval and rate control
    gop_seconds: float = 2.0
    bits_per_pixel: float = 0.07  # per frame: 1280x720@25 → ~1.6 Mbit/s
    max_bitrate: int = 2_500_000
    min_bitrate: int = 200_000
    max_lag: float = 1.0  # s a unit may wait before whole GOPs are dropped (:class:`Backlog`)
    preset: str = "ultrafast"

    def __post_init__(self) -> None:
        if self.max_width < 64 or self.max_height < 64:
            raise ConfigError(f"transcode size limit must be at least 64x64, not {self.max_width}x{self.max_height}")
        if not 1 <= self.fps <= 120 or self.gop_seconds <= 0 or self.max_lag <= 0:
            raise ConfigError("transcode fps must be 1..120, gop_seconds and max_lag > 0")
        if not 0 < self.min_bitrate <= self.max_bitrate or self.bits_per_pixel <= 0:
            raise ConfigError("transcode bitrates must be positive, min <= max")

    @property
    def gop_frames(self) -> int:
        """Frames between scheduled key frames."""
        return max(1, round(self.gop_seconds * self.fps))

    def bitrate(self, width: int, height: int) -> int:
        """Target bit/s for a picture of this size."""
        wanted = round(width * height * self.fps * self.bits_per_pixel)
        return max(self.min_bitrate, min(self.max_bitrate, wanted))


def output_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The picture size sent to browsers: the input's, scaled down to fit, even, aspect kept."""
    scale = min(1.0, max_width / width, max_height / height)
    if scale >= 1.0:
        return width - width % 2, height - height % 2
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


@dataclass(slots=True)
class TranscodeStats:
    """Counters of one transcode; they only grow."""

    units_in: int = 0  # H.265 access units given to the decoder
    frames_in: int = 0  # pictures decoded
    frames_out: int = 0  # H.264 access units encoded
    bytes_out: int = 0
    keyframes_out: int = 0
    keyframes_forced: int = 0  # key frames made for a new viewer
    audio_units: int = 0  # passed through
    skipped_units: int = 0  # video that is not H.265 (a camera switching codec): not sent
    decode_errors: int = 0
    dropped_units: int = 0  # thrown away by :class:`Backlog` (video and audio)
    dropped_frames: int = 0  # the video among them
    gop_drops: int = 0  # times the backlog was cut at a key frame (or emptied until the next one)
    width: int = 0  # the output picture, once known
    height: int = 0


class HevcToH264:
    """Decode one camera's H.265 and encode H.264 for browsers (call from one thread at a time)."""

    def __init__(self, settings: TranscodeSettings | None = None, stats: TranscodeStats | None = None) -> None:
        self.settings = settings or TranscodeSettings()
        self.stats = stats or TranscodeStats()
        try:
            self._decoder = av.CodecContext.create("hevc", "r")
        except (av.error.FFmpegError, ValueError) as exc:
            raise TranscodeError(f"no H.265 decoder in this PyAV build: {exc}") from exc
        # One thread per transcode: predictable cost per camera (bench/transcode.py measures one core),
        # and no frame-threading delay (frame threads hold back one picture each).
        self._decoder.thread_count = 1
        self._encoder: av.VideoCodecContext | None = None
        self._input_size: tuple[int, int] | None = None
        self._force_key = False
        self._last_pts: int | None = None  # of the last frame encoded, on our own unwrapped timeline
        self._offset = 0  # added to camera PTS so that ours only grow (wraps, resets)

    def request_keyframe(self) -> None:
        """Make the next encoded picture a key frame (IDR with SPS/PPS): a viewer just joined."""
        self._force_key = True

    def transcode(self, units: Iterable[AccessUnit]) -> list[AccessUnit]:
        """H.264 access units (and passed-through audio) for these units, in order."""
        out: list[AccessUnit] = []
        for unit in units:
            if not unit.is_video:
                self.stats.audio_units += 1
                out.append(unit)
            elif unit.stream_type is StreamType.H265:
                out.extend(self._transcode_video(unit))
            else:
                self.stats.skipped_units += 1
        return out

    def _transcode_video(self, unit: AccessUnit) -> list[AccessUnit]:
        self.stats.units_in += 1
        packet = av.Packet(unit.data)
        packet.pts = unit.pts
        packet.dts = unit.dts
        try:
            frames = self._decoder.decode(packet)
        except av.error.FFmpegError:  # corrupt or missing references: skip, the next key frame heals it
            self.stats.decode_errors += 1
            return []
        out: list[AccessUnit] = []
        for frame in frames:
            self.stats.frames_in += 1
            out.extend(self._encode(frame))
        return out

    def _encode(self, frame: VideoFrame) -> list[AccessUnit]:
        encoder = self._encoder_for(frame.width, frame.height)
        pts = self._timeline(frame.pts)
        picture = frame.reformat(encoder.width, encoder.height, "yuv420p")
        picture.pts = pts
        picture.time_base = encoder.time_base
        if self._force_key:
            self._force_key = False
            picture.pict_type = PictureType.I
            self.stats.keyframes_forced += 1
        else:
            picture.pict_type = PictureType.NONE
        try:
            packets = encoder.encode(picture)
        except av.error.FFmpegError:
            self.stats.decode_errors += 1
            return []
        out = []
        for packet in packets:
            data = bytes(packet)
            pts_out = (packet.pts if packet.pts is not None else pts) & PTS_MASK
            out.append(AccessUnit(StreamType.H264, StreamId.VIDEO, pts_out, pts_out, data, packet.is_keyframe))
            self.stats.frames_out += 1
            self.stats.bytes_out += len(data)
            self.stats.keyframes_out += packet.is_keyframe
        return out

    def _timeline(self, pts: int | None) -> int:
        """Strictly growing PTS for x264 from the camera's (missing, wrapping or reset) ones."""
        step = CLOCK_RATE // self.settings.fps
        if pts is None:
            ours = step if self._last_pts is None else self._last_pts + step
        else:
            ours = pts + self._offset
            if self._last_pts is not None and ours <= self._last_pts:
                back = self._last_pts - ours
                # A 33-bit wrap moves on by one period; anything else (camera restarted) continues a frame later.
                self._offset += PTS_MASK + 1 if back > _PTS_HALF else back + step
                ours = pts + self._offset
        self._last_pts = ours
        return ours

    def _encoder_for(self, width: int, height: int) -> av.VideoCodecContext:
        """The encoder for this input size (a camera that changes resolution gets a new one)."""
        if self._encoder is not None and self._input_size == (width, height):
            return self._encoder
        s = self.settings
        out_w, out_h = output_size(width, height, s.max_width, s.max_height)
        try:
            encoder = av.CodecContext.create("libx264", "w")
        except (av.error.FFmpegError, ValueError) as exc:
            raise TranscodeError(f"no libx264 encoder in this PyAV build: {exc}") from exc
        assert isinstance(encoder, av.VideoCodecContext)
        encoder.width, encoder.height, encoder.pix_fmt = out_w, out_h, "yuv420p"
        encoder.time_base = Fraction(1, CLOCK_RATE)
        encoder.framerate = Fraction(s.fps)
        encoder.gop_size = s.gop_frames
        encoder.max_b_frames = 0
        encoder.bit_rate = s.bitrate(out_w, out_h)
        encoder.thread_count = 1
        encoder.options = {
            "preset": s.preset,
            "tune": "zerolatency",
            "forced-idr": "1",  # a forced key frame is an IDR a new viewer can start on
            # SPS/PPS before every key frame; key frames only on schedule or on demand.
            "x264-params": "repeat-headers=1:scenecut=0:bframes=0",
        }
        encoder.open()
        self._encoder, self._input_size = encoder, (width, height)
        self._force_key = False  # a new encoder starts with a key frame anyway
        self.stats.width, self.stats.height = out_w, out_h
        return encoder


@dataclass(slots=True)
class _Waiting:
    arrived: float
    unit: AccessUnit


@dataclass
class Backlog:
    """Units waiting for the transcoder, with the GOP-dropping rule (see the module doc).

    The owner :meth:`add`\\ s units as they arrive (with the time), and :meth:`take`\\ s a
    batch when the transcoder is free; :meth:`take` applies the rule first.
    """

    max_lag: float
    stats: TranscodeStats = field(default_factory=TranscodeStats)
    _waiting: deque[_Waiting] = field(default_factory=deque)
    _skipping: bool = False  # dropped a GOP's tail: nothing until the next key frame

    def add(self, units: Sequence[AccessUnit], now: float) -> None:
        """Units pulled from the camera's fanout at `now`."""
        for unit in units:
            if self._skipping and not (unit.is_video and unit.keyframe):
                self._drop(unit)
                continue
            self._skipping = False
            self._waiting.append(_Waiting(now, unit))

    def lag(self, now: float) -> float:
        """Seconds the oldest waiting unit has waited (0 when none waits)."""
        return now - self._waiting[0].arrived if self._waiting else 0.0

    def __len__(self) -> int:
        return len(self._waiting)

    def take(self, now: float, max_units: int) -> list[AccessUnit]:
        """Up to `max_units` units to transcode now, oldest first, after dropping what is too late."""
        if self.lag(now) > self.max_lag:
            self._cut()
        count = min(max_units, len(self._waiting))
        return [self._waiting.popleft().unit for _ in range(count)]

    def _cut(self) -> None:
        """Drop whole GOPs: everything before the newest waiting key frame, or all of it until the next."""
        keys = [i for i, w in enumerate(self._waiting) if w.unit.is_video and w.unit.keyframe]
        if keys == [0]:
            return  # the only key frame waiting is the oldest unit: nothing older to drop, start there
        if keys:
            newest = keys[-1]
        else:  # the current GOP's tail: drop what waits and what comes until the next key frame
            newest = len(self._waiting)
            self._skipping = True
        self.stats.gop_drops += 1
        for _ in range(newest):
            self._drop(self._waiting.popleft().unit)

    def _drop(self, unit: AccessUnit) -> None:
        self.stats.dropped_units += 1
        self.stats.dropped_frames += unit.is_video
