"""Access units of a recording → an MP4 file, with PyAV and without re-encoding.

A download (docs/gb28181.md §15.6, ``s=Download``) arrives as the same GB PS the
live path demuxes into :class:`~gateway.media.ps.AccessUnit` values; this module
wraps their H.264/H.265 bytes into ISO BMFF. Nothing is decoded or encoded: the
codec parameters come from FFmpeg's raw-stream demuxer run over the first key
frame alone (its SPS/PPS, and VPS for H.265), which is what
``add_stream_from_template`` needs to write ``avcC``/``hvcC``; every frame is then
muxed as a packet, and FFmpeg's MP4 muxer converts Annex-B to length prefixes.

Timestamps: PS PTS/DTS are 33-bit counters of a 90 kHz clock. They are unwrapped
(a device that runs for a day crosses 2^33 ticks), rebased to the first key
frame, and written in a 1/90000 stream time base, so nothing is rounded.
Recordings are not always well-formed: a unit without a timestamp gets the last
one plus the typical frame step, and a DTS that does not advance is nudged one
tick past the previous one (the MP4 muxer refuses non-increasing DTS).

Audio: FFmpeg's ``mp4`` muxer has no sample entry for G.711 (``pcm_alaw`` /
``pcm_mulaw`` are refused, ``'mp4' format does not support 'pcm_alaw' codec``)
and mapping it would mean re-encoding to AAC, so audio units are **dropped** and
counted (:attr:`Mp4Stats.audio_dropped`); the MP4 carries video only.

CPU- and disk-bound (a few ms per second of 360p video): call it from a worker
thread, never on the event loop. Sans-I/O in the project's sense (no sockets,
clocks or threads); it only writes the file it was given.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import av
import av.container
import av.stream

from gateway.errors import GatewayError
from gateway.media.ps import AccessUnit, StreamType
from gateway.media.ps.model import PTS_MASK

__all__ = ["CLOCK", "Mp4RemuxError", "Mp4Remuxer", "Mp4Stats", "TimestampUnwrapper"]

CLOCK = 90_000  # PS timestamps tick at 90 kHz
TIME_BASE = Fraction(1, CLOCK)
DEFAULT_STEP = CLOCK // 25  # the frame step assumed before two timestamps were seen
_RAW_FORMATS = {StreamType.H264: "h264", StreamType.H265: "hevc"}
_WRAP = PTS_MASK + 1
_MAX_STEP = 10 * CLOCK  # a larger DTS jump is a gap in the recording or a reset: keep it, do not learn it


class Mp4RemuxError(GatewayError):
    """The file cannot be written (closed remuxer, FFmpeg refused the stream or the disk failed)."""


@dataclass(slots=True)
class Mp4Stats:
    """What a remuxer wrote and skipped; :attr:`duration` is the span of video written, in seconds."""

    codec: StreamType | None = None
    width: int = 0
    height: int = 0
    video_frames: int = 0
    keyframes: int = 0
    skipped_before_key: int = 0  # video units before the first usable key frame
    audio_dropped: int = 0  # G.711 and other audio: MP4 cannot carry it without re-encoding
    other_codec_dropped: int = 0  # video of another codec than the first key frame's (a mid-file switch)
    repaired_timestamps: int = 0  # units given a timestamp, or nudged so DTS increases
    first_dts: int | None = None  # unwrapped 90 kHz ticks of the first frame written
    last_dts: int | None = None
    step: int = DEFAULT_STEP  # typical frame step seen (ticks)

    @property
    def duration(self) -> float:
        """Seconds of video written: last minus first DTS plus one frame step (the last frame shows too)."""
        if self.first_dts is None or self.last_dts is None:
            return 0.0
        return (self.last_dts - self.first_dts + self.step) / CLOCK


class TimestampUnwrapper:
    """33-bit 90 kHz timestamps → a monotonic count that goes on past 2^33."""

    def __init__(self) -> None:
        self._offset = 0
        self._last: int | None = None

    def unwrap(self, value: int) -> int:
        """``value`` (0..2^33-1) as an unwrapped tick count close to the previous one."""
        value &= PTS_MASK
        if self._last is not None:
            raw_last = self._last - self._offset
            if value - raw_last < -_WRAP // 2:
                self._offset += _WRAP  # wrapped forwards
            elif value - raw_last > _WRAP // 2 and self._offset >= _WRAP:
                self._offset -= _WRAP  # a late unit from before the wrap
        self._last = value + self._offset
        return self._last


class Mp4Remuxer:
    """Writes access units into one MP4 file; :meth:`close` finishes it (and moves ``moov`` first).

    Video starts at the first key frame whose parameter sets FFmpeg can read; the
    codec is fixed by it. ``faststart`` rewrites the file at close so that ``moov``
    comes before ``mdat`` (a player can start before the whole file arrived).
    """

    def __init__(self, path: str | os.PathLike[str], *, faststart: bool = True) -> None:
        self.path = os.fspath(path)
        self.faststart = faststart
        self.stats = Mp4Stats()
        self._container: av.container.OutputContainer | None = None
        self._stream: av.stream.Stream | None = None
        self._dts = TimestampUnwrapper()
        self._pts = TimestampUnwrapper()
        self._closed = False

    @property
    def started(self) -> bool:
        """True once the first key frame opened the file."""
        return self._stream is not None

    def write(self, units: Iterable[AccessUnit]) -> None:
        """Mux these units (in arrival order). Raises :class:`Mp4RemuxError` when closed or FFmpeg fails."""
        if self._closed:
            raise Mp4RemuxError(f"{self.path}: remuxer already closed")
        for unit in units:
            if not unit.is_video:
                self.stats.audio_dropped += 1
                continue
            if self._stream is None and not self._open(unit):
                self.stats.skipped_before_key += 1
                continue
            if unit.stream_type is not self.stats.codec:
                self.stats.other_codec_dropped += 1
                continue
            self._mux(unit)

    def close(self) -> Mp4Stats:
        """Finish the file (trailer, faststart). Without any video written the file is removed and
        :class:`Mp4RemuxError` raised: an MP4 without a frame is no recording."""
        if self._closed:
            return self.stats
        self._closed = True
        container, self._container = self._container, None
        if container is None:
            _remove(self.path)
            raise Mp4RemuxError(f"{self.path}: no decodable video key frame received")
        try:
            container.close()
        except (av.FFmpegError, OSError) as exc:
            _remove(self.path)
            raise Mp4RemuxError(f"{self.path}: cannot finish the MP4: {exc}") from exc
        return self.stats

    def abort(self) -> None:
        """Give up: close whatever is open and remove the partial file."""
        self._closed = True
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(av.FFmpegError, OSError):  # the file goes anyway
                container.close()
        _remove(self.path)

    # --- internals ---------------------------------------------------------------------------------------

    def _open(self, unit: AccessUnit) -> bool:
        """Open the file with the parameters of this key frame; False when it cannot start the file."""
        raw_format = _RAW_FORMATS.get(unit.stream_type)
        if raw_format is None or not unit.keyframe:
            return False
        try:
            probe = av.open(io.BytesIO(unit.data), format=raw_format)
        except (av.FFmpegError, OSError):
            return False  # no parameter sets in this key frame: wait for the next
        try:
            template = probe.streams.video[0]
            width, height = template.codec_context.width, template.codec_context.height
            if not width or not height:
                return False
            try:
                options = {"movflags": "+faststart"} if self.faststart else {}
                container = av.open(self.path, "w", format="mp4", options=options)
            except (av.FFmpegError, OSError) as exc:
                raise Mp4RemuxError(f"{self.path}: cannot create the MP4: {exc}") from exc
            stream = container.add_stream_from_template(template)
            stream.time_base = TIME_BASE
            if unit.stream_type is StreamType.H265:
                stream.codec_context.codec_tag = "hvc1"  # what Apple players and browsers expect of HEVC in MP4
        finally:
            probe.close()
        self._container, self._stream = container, stream
        self.stats.codec, self.stats.width, self.stats.height = unit.stream_type, width, height
        return True

    def _mux(self, unit: AccessUnit) -> None:
        container, stream = self._container, self._stream
        if container is None or stream is None:  # _open set both; keeps the type checker informed
            raise Mp4RemuxError(f"{self.path}: not open")
        stats = self.stats
        dts, pts = self._timestamps(unit)
        if stats.first_dts is None:
            stats.first_dts = dts
        base = stats.first_dts
        packet = av.Packet(unit.data)
        packet.dts, packet.pts = dts - base, pts - base
        packet.time_base = TIME_BASE
        packet.stream = stream
        packet.is_keyframe = unit.keyframe
        try:
            container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise Mp4RemuxError(f"{self.path}: muxing failed: {exc}") from exc
        stats.video_frames += 1
        stats.keyframes += unit.keyframe
        stats.last_dts = dts

    def _timestamps(self, unit: AccessUnit) -> tuple[int, int]:
        """Unwrapped (dts, pts) in ticks: filled in when missing, DTS strictly increasing, PTS >= DTS."""
        stats = self.stats
        last = stats.last_dts
        repaired = False
        raw_dts = unit.dts if unit.dts is not None else unit.pts
        if raw_dts is None:
            dts = (last + stats.step) if last is not None else 0
            repaired = True
        else:
            dts = self._dts.unwrap(raw_dts)
        if last is not None:
            step = dts - last
            if 0 < step <= _MAX_STEP:
                stats.step = step if stats.video_frames < 2 else (stats.step * 7 + step) // 8
            elif step <= 0:
                dts, repaired = last + 1, True
        pts = self._pts.unwrap(unit.pts) if unit.pts is not None and unit.dts is not None else dts
        if pts < dts:
            pts, repaired = dts, True
        stats.repaired_timestamps += repaired
        return dts, pts


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
