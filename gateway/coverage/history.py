"""The coverage rate per district per day, replayed from the status history (``status_event``).

The history only knows when devices went on and offline, so a past day is judged
by connectivity alone (the live status also needs drills, confirmed areas… that
have no history):

* a device *held* the day when it was online for at least ``uptime_share`` of it
  (default 90 %);
* a kindergarten was 达标 (``complete``) that day when every one of its devices
  held the day, 未接入 (``missing``) when it had no device or none was online at
  any moment of the day, else 部分接入 (``partial``).

A device's state at a moment is that of its latest event before it; before its
first event in the window, the state the latest earlier event left (``before``),
else the opposite of that first event (events are transitions), else — a device
with no event at all — its current state. Kindergartens and devices are today's:
a device installed later was offline before its first "online" event, so the
kindergarten counts as missing on those days.

Days are local calendar days (the machine's zone): :func:`day_spans`. Pure: no
I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final

__all__ = ["UPTIME_SHARE", "CoverageDay", "DaySpan", "day_spans", "replay_days"]

UPTIME_SHARE: Final = 0.9


@dataclass(frozen=True, slots=True)
class DaySpan:
    """One local calendar day: ``YYYY-MM-DD`` and its [start, end) in epoch seconds."""

    day: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class CoverageDay:
    """A ``coverage_day`` row: one district's kindergartens by status on one day."""

    day: str
    district_code: str
    complete: int = 0
    partial: int = 0
    missing: int = 0

    @property
    def total(self) -> int:
        """Kindergartens counted."""
        return self.complete + self.partial + self.missing

    @property
    def rate(self) -> float:
        """Share 达标 (0 without kindergartens)."""
        return self.complete / self.total if self.total else 0.0


def day_spans(first: date, last: date) -> list[DaySpan]:
    """The local days from ``first`` to ``last`` inclusive (DST days are 23 or 25 h long)."""
    spans: list[DaySpan] = []
    day = first
    while day <= last:
        start = datetime.combine(day, time()).timestamp()
        end = datetime.combine(day + timedelta(days=1), time()).timestamp()
        spans.append(DaySpan(day.isoformat(), start, end))
        day += timedelta(days=1)
    return spans


def _online_seconds(
    spans: Sequence[DaySpan], state: bool, events: Sequence[tuple[float, bool]]
) -> tuple[list[float], list[bool]]:
    """Per day: seconds online and whether it was online at any moment."""
    seconds = [0.0] * len(spans)
    seen = [False] * len(spans)
    i = 0
    for index, span in enumerate(spans):
        at = span.start
        while i < len(events) and events[i][0] < span.start:  # events before the window's first day
            state = events[i][1]
            i += 1
        while i < len(events) and events[i][0] < span.end:
            when, online = events[i]
            if state:
                seconds[index] += when - at
                seen[index] = True
            elif online:
                seen[index] = True
            at, state = max(at, when), online
            i += 1
        if state:
            seconds[index] += span.end - at
            seen[index] = True
    return seconds, seen


def replay_days(
    spans: Sequence[DaySpan],
    kindergartens: Mapping[str, str],
    devices: Mapping[str, str],
    current: Mapping[str, bool],
    before: Mapping[str, bool],
    events: Iterable[tuple[str, bool, float]],
    uptime_share: float = UPTIME_SHARE,
) -> list[CoverageDay]:
    """One row per (day, district) for ``spans``.

    ``kindergartens``: id -> district; ``devices``: device id -> kindergarten id;
    ``current``: device id -> online now; ``before``: device id -> state its latest
    event before the first span left; ``events``: (device id, online, at), any order.
    """
    per_device: dict[str, list[tuple[float, bool]]] = {}
    for device_id, online, at in events:
        if device_id in devices:
            per_device.setdefault(device_id, []).append((at, online))
    held: dict[str, list[bool]] = {}
    seen: dict[str, list[bool]] = {}
    for device_id in devices:
        timeline = sorted(per_device.get(device_id, ()))
        if device_id in before:
            state = before[device_id]
        elif timeline:
            state = not timeline[0][1]
        else:
            state = current.get(device_id, False)
        seconds, any_online = _online_seconds(spans, state, timeline)
        held[device_id] = [s >= uptime_share * (span.end - span.start) for s, span in zip(seconds, spans)]
        seen[device_id] = any_online
    members: dict[str, list[str]] = {kg: [] for kg in kindergartens}
    for device_id, kg in devices.items():
        if kg in members:
            members[kg].append(device_id)
    counts: dict[tuple[str, str], list[int]] = {}
    for kg, district in kindergartens.items():
        mine = members[kg]
        for index, span in enumerate(spans):
            row = counts.setdefault((span.day, district), [0, 0, 0])
            if mine and all(held[d][index] for d in mine):
                row[0] += 1
            elif not mine or not any(seen[d][index] for d in mine):
                row[2] += 1
            else:
                row[1] += 1
    return [CoverageDay(day, district, *row) for (day, district), row in sorted(counts.items())]
