"""Where a playback is in its recording, as a function of time (sans-I/O).

A device playing back ``[start, end)`` of a recording keeps one position, the
*npt* of RTSP: seconds of recorded time from ``start``. It moves at ``scale``
recorded seconds per wall second while playing (a download moves at its
``downloadspeed``), stands still while paused, and jumps on a seek
(``PLAY`` with ``Range: npt=<s>-``, docs/gb28181.md §15.9). :class:`PlaybackClock`
is that position as a piecewise-linear function of the caller's clock: an anchor
(position, time) plus the rate. The signalling side (the device feature) asks it
when the end is reached, to send ``MediaStatus`` 121; the media side asks it which
recorded frame is due now. ``generation`` changes with every jump (seek, pause,
resume, scale), so the media side re-reads the pace; ``jumps`` only with a jump of the
position (start, seek), after which it starts again from a key frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.errors import GatewayError

__all__ = ["MAX_RATE", "MAX_SCALE", "MIN_SCALE", "PlaybackClock", "PlaybackClockError"]

MIN_SCALE, MAX_SCALE = 0.25, 8.0  # what WVP's API and kgw's console offer (docs/gb28181.md §15.9)
MAX_RATE = 64.0  # a download may run faster than any playback scale


class PlaybackClockError(GatewayError, ValueError):
    """A scale or position the clock cannot take."""


@dataclass(slots=True)
class PlaybackClock:
    """The npt of one playback; every method takes ``now`` (the caller's monotonic clock)."""

    duration: float
    scale: float = 1.0
    playing: bool = False
    anchor_position: float = 0.0
    anchor_time: float = 0.0
    generation: int = 0
    jumps: int = 0

    def __post_init__(self) -> None:
        if not self.duration > 0 or not math.isfinite(self.duration):
            raise PlaybackClockError(f"playback duration must be positive, not {self.duration}")
        self._check_scale(self.scale)

    # --- reading ------------------------------------------------------------------------------

    def position(self, now: float) -> float:
        """Seconds of recorded time from the start shown at ``now`` (0..duration)."""
        if not self.playing:
            return self.anchor_position
        return min(self.duration, self.anchor_position + max(0.0, now - self.anchor_time) * self.scale)

    def at_end(self, now: float) -> bool:
        """True once the position reached the end."""
        return self.position(now) >= self.duration

    def time_at(self, position: float) -> float | None:
        """When (caller's clock) the position reaches ``position``; None while paused or if already past."""
        if not self.playing or position < self.anchor_position:
            return None
        return self.anchor_time + (min(position, self.duration) - self.anchor_position) / self.scale

    # --- control ------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin playing from the current position (the ACK arrived)."""
        self._move(now, playing=True)
        self.jumps += 1

    def pause(self, now: float) -> None:
        """``PAUSE``: hold the current position."""
        self._move(now, playing=False)

    def resume(self, now: float) -> None:
        """``PLAY`` with ``Range: npt=now-`` (or none): go on from where it stands."""
        self._move(now, playing=True)

    def seek(self, position: float, now: float) -> None:
        """``PLAY`` with ``Range: npt=<s>-``: jump to ``position`` (clamped to the range) and play."""
        if not math.isfinite(position) or position < 0:
            raise PlaybackClockError(f"seek position must be a non-negative number, not {position}")
        self._move(now, playing=True, position=min(position, self.duration))
        self.jumps += 1

    def set_scale(self, scale: float, now: float) -> None:
        """``PLAY`` with ``Scale``: go on at ``scale`` recorded seconds per second."""
        self._check_scale(scale)
        self._move(now, playing=self.playing, scale=scale)

    def _move(self, now: float, *, playing: bool, position: float | None = None, scale: float | None = None) -> None:
        self.anchor_position = self.position(now) if position is None else position
        self.anchor_time = now
        self.playing = playing
        if scale is not None:
            self.scale = scale
        self.generation += 1

    @staticmethod
    def _check_scale(scale: float) -> None:
        if not math.isfinite(scale) or not MIN_SCALE <= scale <= MAX_RATE:
            raise PlaybackClockError(f"scale must be within {MIN_SCALE}..{MAX_RATE}, not {scale}")
