"""Sending side of PS over RTP: packetize PS frames, and replay a pre-encoded clip.

:class:`RtpPacketizer` cuts one PS frame (pack header + PES of one access unit) into
RTP packets the way ZLMediaKit's ``CommonRtpEncoder`` does (docs/gb28181.md §17.1): every packet
of the frame carries the same 90 kHz timestamp (made explicit by the 2022 edition),
the marker bit is set on the last packet of the frame, sequence numbers run on across
frames modulo 2**16. ZLM's default video MTU of 1400 leaves 1388 payload bytes after
the 12-byte header (docs/gb28181.md §20); that is our default too.

:class:`ClipReplayer` is "encode once, replay": a simulated camera muxes a short clip to
PS once and then streams it in a loop, so hundreds of cameras cost little CPU. It only
does the arithmetic of *which frames are due by when*; the caller passes the elapsed
time and owns the timer (sans-I/O, docs/design.md §1-2).

Both are sans-I/O: no clock, no randomness. SSRC and the sequence/timestamp origins
are passed in (docs/design.md §2: they come from the injected ``IdSource``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import NamedTuple

from gateway.errors import ConfigError
from gateway.media.ps.headers import PackHeader, decode_timestamp, encode_timestamp, read_pack_header_size
from gateway.media.ps.model import PsDemuxError, StreamId
from gateway.media.rtp.packet import RtpPacket

__all__ = [
    "CLOCK_RATE",
    "DEFAULT_MAX_PAYLOAD",
    "ClipReplayer",
    "ReplayFrame",
    "RtpPacketizer",
    "rewrite_pes_timestamps",
]

CLOCK_RATE = 90000  # docs/gb28181.md §17.1: PS and video use a 90 kHz RTP clock
DEFAULT_MAX_PAYLOAD = 1388  # docs/gb28181.md §20: ZLM videoMtuSize 1400 minus the 12-byte RTP header
PS_PAYLOAD_TYPE = 96  # docs/gb28181.md §17.1: ZLM's ps_pt
_PTS_MASK = (1 << 33) - 1  # PES PTS are 33-bit counters
_MAX_CLIP_TICKS = 1 << 31  # a longer span means a PTS went backwards across the 33-bit wrap
# A caller that sleeps until next_due_time() and passes the same float back must get
# that frame, even when seconds * 90000 lands a hair below the integer tick.
_TICK_EPSILON = 1e-6


class RtpPacketizer:
    """One outgoing RTP stream of PS frames; stateful, sans-I/O.

    ``initial_timestamp`` is added (modulo 2**32) to every ``timestamp_90k`` passed to
    :meth:`packetize`, so callers can stamp frames from 0 while the wire timestamps start
    at a random origin (RFC 3550 §5.1). ``initial_sequence`` is the first sequence number.
    """

    def __init__(
        self,
        ssrc: int,
        payload_type: int = PS_PAYLOAD_TYPE,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        initial_sequence: int = 0,
        initial_timestamp: int = 0,
    ) -> None:
        if not 0 <= payload_type <= 0x7F:
            raise ConfigError(f"payload_type must be 0..127, not {payload_type}")
        if max_payload < 1:
            raise ConfigError(f"max_payload must be positive, not {max_payload}")
        self.payload_type = payload_type
        self.max_payload = max_payload
        self._ssrc = 0
        self._sequence = 0
        self._ts_offset = 0
        self.rebase(ssrc=ssrc, sequence=initial_sequence, timestamp=initial_timestamp)

    @property
    def ssrc(self) -> int:
        """The SSRC written into every packet."""
        return self._ssrc

    @property
    def next_sequence(self) -> int:
        """The sequence number the next packet will carry."""
        return self._sequence

    @property
    def timestamp_offset(self) -> int:
        """What is added (mod 2**32) to the caller's 90 kHz timestamps."""
        return self._ts_offset

    def rebase(self, *, ssrc: int | None = None, sequence: int | None = None, timestamp: int | None = None) -> None:
        """Change identity: new SSRC, next sequence number and/or timestamp offset.

        A relay shares one source stream among consumers and re-stamps it for each one
        with that consumer's SSRC (the ``y=`` of its SDP) and origins. Arguments left
        ``None`` keep their current value.
        """
        if ssrc is not None:
            if not 0 <= ssrc <= 0xFFFFFFFF:
                raise ConfigError(f"ssrc must be a 32-bit value, not {ssrc}")
            self._ssrc = ssrc
        if sequence is not None:
            if not 0 <= sequence <= 0xFFFF:
                raise ConfigError(f"sequence must be a 16-bit value, not {sequence}")
            self._sequence = sequence
        if timestamp is not None:
            if not 0 <= timestamp <= 0xFFFFFFFF:
                raise ConfigError(f"timestamp must be a 32-bit value, not {timestamp}")
            self._ts_offset = timestamp

    def packetize(self, ps_frame: bytes | bytearray | memoryview, timestamp_90k: int) -> list[RtpPacket]:
        """Split one PS frame into RTP packets of at most ``max_payload`` bytes.

        All packets share the timestamp (``timestamp_90k`` plus the offset, mod 2**32);
        the last one has the marker bit. An empty frame gives no packets.
        """
        data = bytes(ps_frame)
        timestamp = (timestamp_90k + self._ts_offset) & 0xFFFFFFFF
        size = self.max_payload
        starts = range(0, len(data), size)
        last = len(starts) - 1
        packets = []
        for n, pos in enumerate(starts):
            packets.append(
                RtpPacket(
                    payload_type=self.payload_type,
                    sequence=(self._sequence + n) & 0xFFFF,
                    timestamp=timestamp,
                    ssrc=self._ssrc,
                    payload=data[pos : pos + size],
                    marker=n == last,
                )
            )
        self._sequence = (self._sequence + len(packets)) & 0xFFFF
        return packets


class ReplayFrame(NamedTuple):
    """One frame handed out by :class:`ClipReplayer`: PS bytes, new 90 kHz timestamp, key frame."""

    ps_frame: bytes
    timestamp: int
    keyframe: bool


class ClipReplayer:
    """Replay one loop of pre-muxed PS frames forever, with rewritten timestamps.

    ``frames`` is one loop of the clip as ``(ps_frame, pts_90k, keyframe)`` in sending
    order, with presentation times that do not decrease (simulated cameras send no
    B-frames; a 33-bit PTS wrap inside the clip is handled). Frame ``i`` of loop ``k`` is
    due ``(pts_i - pts_0) / 90000 + k * loop_duration`` seconds after the start, where
    ``loop_duration = last pts - first pts + 1 / fps``. Its new timestamp is that due
    time in 90 kHz ticks, from 0 and increasing without bound across loops: hand it to
    :meth:`RtpPacketizer.packetize`, which adds the random origin and wraps at 2**32.

    With ``rewrite_pts`` (the default) the PES PTS/DTS and pack SCR inside the PS bytes
    are shifted by ``k * loop_ticks`` too (:func:`rewrite_pes_timestamps`, a copy and a
    few header patches per frame), so they keep increasing across loops like a real
    camera's. Without it they repeat every loop: a demuxer downstream must then take its
    timing from the RTP timestamps or tolerate PTS jumps.

    :meth:`frames_due` never returns a frame twice and never goes back. If the caller is
    more than ``max_lag`` seconds late (default: one loop), the frames older than that
    are skipped (counted in :attr:`skipped`), and so are the ones up to the next key
    frame, so the stream resumes decodable instead of bursting a backlog.
    """

    def __init__(
        self,
        frames: Sequence[tuple[bytes, int, bool]],
        fps: float,
        *,
        max_lag: float | None = None,
        rewrite_pts: bool = True,
    ) -> None:
        if not frames:
            raise ConfigError("a clip needs at least one frame")
        if not 0 < fps <= CLOCK_RATE:
            raise ConfigError(f"fps must be in (0, {CLOCK_RATE}], not {fps}")
        first = frames[0][1]
        self._offsets = [(pts - first) & _PTS_MASK for _, pts, _ in frames]
        if any(b < a for a, b in zip(self._offsets, self._offsets[1:])) or self._offsets[-1] > _MAX_CLIP_TICKS:
            raise ConfigError("clip presentation times must not decrease")
        self._frames = [ReplayFrame(bytes(data), 0, key) for data, _, key in frames]
        self._rewrite = rewrite_pts
        if rewrite_pts:
            for frame in self._frames:
                rewrite_pes_timestamps(frame.ps_frame, 0)  # a clip we cannot walk fails here, not mid-stream
        self.frame_interval = round(CLOCK_RATE / fps)
        self.loop_ticks = self._offsets[-1] + self.frame_interval
        self._max_lag = self.loop_ticks if max_lag is None else math.ceil(max_lag * CLOCK_RATE)
        if self._max_lag < 0:
            raise ConfigError(f"max_lag must not be negative, not {max_lag}")
        self._keys = [i for i, f in enumerate(self._frames) if f.keyframe]
        self._next = 0  # index of the next frame over all loops: loop = n // len, frame = n % len
        self.skipped = 0
        """Frames never sent because the caller fell more than ``max_lag`` behind."""

    @property
    def loop_duration(self) -> float:
        """Seconds one loop of the clip lasts."""
        return self.loop_ticks / CLOCK_RATE

    @property
    def emitted(self) -> int:
        """Frames handed out or skipped so far."""
        return self._next

    def next_due_time(self) -> float:
        """Elapsed seconds at which the next frame is due (arm the timer for this)."""
        return self._due(self._next) / CLOCK_RATE

    def frames_due(self, elapsed_seconds: float) -> list[ReplayFrame]:
        """The frames due by ``elapsed_seconds`` after the start, not returned before."""
        now = math.floor(elapsed_seconds * CLOCK_RATE + _TICK_EPSILON)
        if self._due(self._next) < now - self._max_lag:
            self._skip_to(self._first_due_after(now - self._max_lag))
        out = []
        while (due := self._due(self._next)) <= now:
            loop, i = divmod(self._next, len(self._frames))
            frame = self._frames[i]._replace(timestamp=due)
            if self._rewrite and loop:
                frame = frame._replace(ps_frame=rewrite_pes_timestamps(frame.ps_frame, loop * self.loop_ticks))
            out.append(frame)
            self._next += 1
        return out

    def _due(self, n: int) -> int:
        """Due time, in 90 kHz ticks from the start, of frame ``n`` (counted over all loops)."""
        loop, i = divmod(n, len(self._frames))
        return loop * self.loop_ticks + self._offsets[i]

    def _first_due_after(self, ticks: int) -> int:
        """The first frame index whose due time is later than ``ticks``."""
        loop, rest = divmod(ticks, self.loop_ticks)
        return loop * len(self._frames) + bisect_right(self._offsets, rest)

    def _skip_to(self, target: int) -> None:
        """Drop frames before ``target``, then on to the next key frame (if the clip has any)."""
        if self._keys:
            loop, i = divmod(target, len(self._frames))
            pos = bisect_right(self._keys, i - 1)
            target = loop * len(self._frames) + (
                self._keys[pos] if pos < len(self._keys) else len(self._frames) + self._keys[0]
            )
        self.skipped += target - self._next
        self._next = target


def rewrite_pes_timestamps(ps_frame: bytes, delta: int) -> bytes:
    """A copy of ``ps_frame`` with every PES PTS/DTS and pack SCR moved by ``delta`` ticks (mod 2**33).

    Walks the packets as our muxer (or ZLM) writes them; MPEG-1 headers pass unchanged.
    Raises :class:`PsDemuxError` on bytes it cannot walk (a local error: the clip is ours).
    """
    out = bytearray(ps_frame)
    pos = 0
    while pos < len(out):
        if len(out) - pos < 6 or out[pos : pos + 3] != b"\x00\x00\x01" or out[pos + 3] < StreamId.END:
            raise PsDemuxError(f"no PS start code at byte {pos} of a {len(out)}-byte frame")
        sid = out[pos + 3]
        if sid == StreamId.END:
            pos += 4
        elif sid == StreamId.PACK:
            size = read_pack_header_size(out, pos)
            if size <= 0:
                raise PsDemuxError(f"bad pack header at byte {pos}")
            if size >= 14 and out[pos + 4] & 0xC0 == 0x40:
                old = PackHeader.parse(out[pos : pos + 14])
                new = PackHeader(old.scr + delta, old.mux_rate, old.scr_ext)  # & PTS_MASK on write
                out[pos : pos + 13] = bytes(new)[:13]  # byte 13 keeps the stuffing length
            pos += size
        else:
            length = out[pos + 4] << 8 | out[pos + 5]
            if 0xC0 <= sid <= 0xEF and len(out) - pos >= 9 and out[pos + 6] & 0xC0 == 0x80:
                _shift_pes_timestamps(out, pos, delta)
            if not length:  # unbounded video PES: the rest of the frame is its payload
                break
            pos += 6 + length
    if pos > len(out):
        raise PsDemuxError(f"the last packet runs {pos - len(out)} bytes past the frame")
    return bytes(out)


def _shift_pes_timestamps(out: bytearray, pos: int, delta: int) -> None:
    """Patch the 5-byte PTS and DTS fields of the MPEG-2 PES header at ``out[pos]`` in place."""
    flags = out[pos + 7] >> 6
    for present, field in ((flags >= 2, pos + 9), (flags == 3, pos + 14)):
        if present:
            if field + 5 > min(len(out), pos + 9 + out[pos + 8]):
                raise PsDemuxError(f"PES timestamps at byte {pos} run past the header")
            ts = decode_timestamp(out, field)
            out[field : field + 5] = encode_timestamp(out[field] >> 4, ts + delta)
