"""The recording index of a simulated NVR or IPC (sans-I/O, deterministic).

A real NVR records every camera continuously into files of a fixed length and
adds alarm recordings around each alarm its site raises; the disk keeps about a
week. :class:`RecordingIndex` reproduces that without storing anything: the
files of a camera are a pure function of a seed, the camera's ID and the time,
so every run, every process and every test sees the same recordings.

* **time** files: one per ``file_seconds`` slot (30 min by default, aligned to
  the Unix epoch, so to the half hour in UTC+8 as well), for the last
  ``days`` days up to ``now`` (the file being written ends at ``now``). About
  ``gap_chance`` of the slots lose a piece (2–15 min: a reboot, a disk hiccup),
  which splits the file in two; about ``outage_chance`` of the camera-days have
  one long outage (1–3 h of power cut) with no file at all.
* **alarm** files: from ``alarm_before`` s before to ``alarm_after`` s after
  each alarm of the kindergarten (:meth:`RecordingIndex.add_alarm`, called by
  the fleet for every alarm it presses; the linkage records every camera of the
  site) plus ``past_alarms_per_day`` (0–N) alarms per day in the past, at
  seeded times between 07:30 and 17:30 local time, so a week's timeline is not
  empty on a fresh start.
* **manual** files: only those added with :meth:`RecordingIndex.add_manual`.

Queries (:meth:`RecordingIndex.query`) take a time range in Unix epoch seconds
and a :class:`RecordKind` filter (None for all) and return :class:`Recording`
values sorted by start (then kind), clipped to nothing: a file overlapping the
range is returned whole, as NVRs list files. ``now`` is an argument (a core
reads no clock); randomness is a BLAKE2 digest of the seed and the slot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from enum import StrEnum

from gateway.errors import ConfigError

__all__ = ["IndexOptions", "RecordKind", "Recording", "RecordingIndex", "unit_hash"]

DAY = 86_400


class RecordKind(StrEnum):
    """The ``Type`` of a record file (docs/gb28181.md §12)."""

    TIME = "time"
    ALARM = "alarm"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class Recording:
    """One record file of one camera: ``[start, end)`` in Unix epoch seconds."""

    channel_id: str
    start: int
    end: int
    kind: RecordKind
    file_size: int
    file_path: str

    @property
    def duration(self) -> int:
        """Seconds of video in the file."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class IndexOptions:
    """How the simulated disk looks (defaults: a week of 30-min files at 1 Mbit/s)."""

    seed: int = 2020
    days: int = 7
    file_seconds: int = 1800
    gap_chance: float = 0.06  # of the slots lose 2-15 min
    outage_chance: float = 0.1  # of the camera-days have a 1-3 h outage
    alarm_before: int = 30
    alarm_after: int = 120
    past_alarms_per_day: int = 2  # at most this many seeded past alarms a day (0..N)
    bitrate: int = 1_000_000  # bit/s, for FileSize
    utc_offset_hours: int = 8  # local time of the site, for paths and the seeded daytime alarms

    def __post_init__(self) -> None:
        if self.days < 1 or self.file_seconds < 60 or DAY % self.file_seconds:
            raise ConfigError("recordings need days >= 1 and a file length >= 60 s that divides a day")
        if not (0 <= self.gap_chance <= 1 and 0 <= self.outage_chance <= 1):
            raise ConfigError("gap and outage chances are fractions in 0..1")
        if self.alarm_before < 0 or self.alarm_after <= 0 or self.past_alarms_per_day < 0:
            raise ConfigError("alarm window must be positive and past alarms not negative")

    @property
    def zone(self) -> tzinfo:
        """The site's zone (fixed offset: China has no daylight saving)."""
        return timezone(timedelta(hours=self.utc_offset_hours))


def unit_hash(seed: int, *parts: object) -> float:
    """A deterministic number in [0, 1) from the seed and ``parts`` (stable across runs and processes)."""
    text = "|".join([str(seed), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2**64


@dataclass
class RecordingIndex:
    """The recordings of every camera of one site (an NVR's channels, or a kindergarten's IPCs)."""

    options: IndexOptions = field(default_factory=IndexOptions)
    alarms: list[int] = field(default_factory=list)
    """Alarm times (epoch s) of the whole site: every camera has an alarm file around each."""
    channel_alarms: dict[str, list[int]] = field(default_factory=dict)
    manual: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    # --- what happened ---------------------------------------------------------------------

    def add_alarm(self, at: int, channel_id: str | None = None) -> None:
        """An alarm at ``at`` (epoch s): alarm files around it, on ``channel_id`` or every camera."""
        target = self.alarms if channel_id is None else self.channel_alarms.setdefault(channel_id, [])
        target.append(int(at))
        if len(target) > 10_000:  # a steady alarm trickle over weeks: keep the newest
            del target[:-10_000]

    def add_manual(self, channel_id: str, start: int, end: int) -> None:
        """A manual recording ``[start, end)`` on one camera."""
        if end <= start:
            raise ValueError(f"manual recording must end after it starts, not {start}..{end}")
        self.manual.setdefault(channel_id, []).append((int(start), int(end)))

    # --- queries ---------------------------------------------------------------------------

    def query(self, channel_id: str, start: int, end: int, now: int, kind: RecordKind | None = None) -> list[Recording]:
        """Files of ``channel_id`` overlapping ``[start, end)`` that exist at ``now``, sorted by start.

        ``kind`` None means all kinds (``Type`` ``all``). Files are whole (not clipped to the range).
        """
        oldest = self.oldest(now)
        lo, hi = max(start, oldest), min(end, now)
        if hi <= lo:
            return []
        found: list[Recording] = []
        if kind in (None, RecordKind.TIME):
            found += self._time_files(channel_id, lo, hi, now)
        if kind in (None, RecordKind.ALARM):
            found += [r for r in self._alarm_files(channel_id, lo, hi, now) if r.start >= oldest]
        if kind in (None, RecordKind.MANUAL):
            found += [
                self._file(channel_id, s, min(e, now), RecordKind.MANUAL)
                for s, e in self.manual.get(channel_id, ())
                if s < hi and e > lo and s < now and s >= oldest
            ]
        found.sort(key=lambda r: (r.start, r.kind != RecordKind.TIME, r.end))
        return found

    def oldest(self, now: int) -> int:
        """The start of the oldest file kept at ``now`` (``days`` back, at a file boundary)."""
        size = self.options.file_seconds
        return (int(now) - self.options.days * DAY) // size * size + size

    def recorded(self, channel_id: str, at: int, now: int) -> bool:
        """Whether any file of ``channel_id`` covers the second ``at``."""
        return any(r.start <= at < r.end for r in self.query(channel_id, at, at + 1, now))

    # --- the files -------------------------------------------------------------------------

    def _time_files(self, channel_id: str, lo: int, hi: int, now: int) -> list[Recording]:
        size = self.options.file_seconds
        files: list[Recording] = []
        for slot in range(lo // size * size, hi, size):
            for piece_start, piece_end in self._pieces(channel_id, slot):
                piece_end = min(piece_end, int(now))
                if piece_end > piece_start and piece_start < hi and piece_end > lo:
                    files.append(self._file(channel_id, piece_start, piece_end, RecordKind.TIME))
        return files

    def _pieces(self, channel_id: str, slot: int) -> list[tuple[int, int]]:
        """What is left of one slot after its gap and the day's outage."""
        opts = self.options
        size = opts.file_seconds
        pieces = [(slot, slot + size)]
        if unit_hash(opts.seed, channel_id, "gap", slot) < opts.gap_chance:
            length = 120 + int(unit_hash(opts.seed, channel_id, "gaplen", slot) * 780)
            offset = int(unit_hash(opts.seed, channel_id, "gapat", slot) * max(1, size - length))
            pieces = [(slot, slot + offset), (slot + offset + length, slot + size)]
        for day in (slot // DAY - 1, slot // DAY):  # an outage may run past midnight
            outage = self._outage(channel_id, day)
            if outage is not None:
                pieces = [cut for piece in pieces for cut in _subtract(piece, outage)]
        return [(s, e) for s, e in pieces if e > s]

    def _outage(self, channel_id: str, day: int) -> tuple[int, int] | None:
        opts = self.options
        if unit_hash(opts.seed, channel_id, "outage", day) >= opts.outage_chance:
            return None
        start = day * DAY + int(unit_hash(opts.seed, channel_id, "outat", day) * DAY)
        return start, start + 3600 + int(unit_hash(opts.seed, channel_id, "outlen", day) * 7200)

    def _alarm_files(self, channel_id: str, lo: int, hi: int, now: int) -> list[Recording]:
        opts = self.options
        times = [*self.alarms, *self.channel_alarms.get(channel_id, ())]
        first_day, last_day = (lo - opts.alarm_after) // DAY, (hi + opts.alarm_before) // DAY
        times += [t for day in range(first_day, last_day + 1) for t in self.past_alarms(day)]
        files = []
        for at in sorted(set(times)):
            start, end = at - opts.alarm_before, min(at + opts.alarm_after, int(now))
            if at <= now and start < hi and end > lo and end > start:
                files.append(self._file(channel_id, start, end, RecordKind.ALARM))
        return files

    def past_alarms(self, day: int) -> list[int]:
        """The seeded alarms of the site on UTC day number ``day`` (between 07:30 and 17:30 local time)."""
        opts = self.options
        count = int(unit_hash(opts.seed, "alarms", day) * (opts.past_alarms_per_day + 1))
        local_midnight = day * DAY - opts.utc_offset_hours * 3600
        return [local_midnight + 27_000 + int(unit_hash(opts.seed, "alarm", day, n) * 36_000) for n in range(count)]

    def _file(self, channel_id: str, start: int, end: int, kind: RecordKind) -> Recording:
        local = datetime.fromtimestamp(start, self.options.zone)
        stop = datetime.fromtimestamp(end, self.options.zone)
        path = f"/mnt/hdd0/{channel_id}/{local:%Y%m%d}/{kind.value}_{local:%H%M%S}-{stop:%H%M%S}.mp4"
        return Recording(channel_id, start, end, kind, (end - start) * self.options.bitrate // 8, path)


def _subtract(piece: tuple[int, int], cut: tuple[int, int]) -> list[tuple[int, int]]:
    """``piece`` minus ``cut`` (0, 1 or 2 pieces)."""
    start, end = piece
    out = []
    if cut[0] > start:
        out.append((start, min(end, cut[0])))
    if cut[1] < end:
        out.append((max(start, cut[1]), end))
    return [(s, e) for s, e in out if e > s]
