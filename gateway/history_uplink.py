"""Playbacks and downloads take their share of a kindergarten's uplink (issue 11).

A recording played back or downloaded crosses the kindergarten's line exactly as a
live stream does, so :class:`~gateway.playback.PlaybackService` and
:class:`~gateway.downloads.DownloadService` reserve it in the same
:class:`~gateway.uplink.UplinkBudget` as live view. The estimate is the main stream's
(recordings are the main stream) times how fast the device is asked to send:

* a playback at scale 1 reserves one main stream; a scale change updates the
  estimate to main × scale (a device sends faster at 2×, slower at 0.5×; never
  refused, like :meth:`~gateway.uplink.Reservation.update`);
* a download reserves main × its ``downloadspeed``. When that does not fit, the next
  lower speed that fits is asked for instead (as live view falls back to the
  sub-stream); only when even the slowest does not fit is it refused.

Once a session has run ``measure_after`` seconds its measured RTP rate replaces the
estimate (as for live view). A refusal is :class:`~gateway.uplink.UplinkExceeded`,
whose message (zh-CN and English) names what uses the line; the services turn it into
their own 503.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.gb28181.stream_number import MAIN
from gateway.media.rtp import RtpReceiver
from gateway.uplink import Reservation, UplinkBudget

__all__ = ["HistoryUplink", "Placement", "rate_meter", "speeds_from"]


class Placement(Protocol):
    """Where a channel's streams go up (the live service's stream planner has these)."""

    def kindergarten_of(self, channel_id: str) -> str | None: ...
    def label(self, channel_id: str, number: int) -> str: ...


@dataclass(frozen=True, slots=True)
class HistoryUplink:
    """Reserves a kindergarten's uplink for playbacks and downloads."""

    budget: UplinkBudget
    placement: Placement

    def estimate(self, factor: float) -> int:
        """kbit/s of the main stream sent ``factor`` times as fast (at least 1)."""
        return max(1, round(self.budget.main_kbps * factor))

    def reserve(self, channel_id: str, kind: str, factors: Sequence[float]) -> tuple[Reservation | None, float]:
        """Reserve at the first of ``factors`` (fastest first) that fits; the reservation and its factor.

        None (and the first factor) when the channel belongs to no known kindergarten.
        Raises :class:`~gateway.uplink.UplinkExceeded` for the first factor when none fits.
        """
        if not factors:
            raise ValueError("no factor to reserve at")
        kindergarten = self.placement.kindergarten_of(channel_id)
        if kindergarten is None:
            return None, factors[0]
        budget = self.budget
        label = self.placement.label(channel_id, MAIN)
        for factor in factors:
            kbps = self.estimate(factor)
            if budget.fits(kindergarten, kbps):
                what = f"{kind} {label}" if len(factors) == 1 and factor == 1 else f"{kind} {label} ×{factor:g}"
                return budget.reserve(kindergarten, kbps, what, kind=kind, channel_id=channel_id), factor
        budget.refused += 1
        raise budget.exceeded(kindergarten, self.estimate(factors[0]))


def speeds_from(wanted: int, speeds: Sequence[int] = (1, 2, 4, 8)) -> list[int]:
    """``wanted`` and the slower ``speeds``, fastest first: what a download may fall back to."""
    return sorted({wanted, *(s for s in speeds if s < wanted)}, reverse=True)


def rate_meter(
    receiver: RtpReceiver, opened_at: float, clock: Callable[[], float], after: float
) -> Callable[[], float | None]:
    """A reservation's ``measure``: the RTP rate since ``opened_at`` (kbit/s) once ``after`` s have passed."""

    def measure() -> float | None:
        elapsed = clock() - opened_at
        if after <= 0 or elapsed < after or receiver.stats.bytes == 0:
            return None
        return receiver.stats.bytes * 8 / 1000 / elapsed

    return measure
