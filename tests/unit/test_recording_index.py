"""The simulated NVR's recording index and the playback clock: pure, deterministic, no I/O."""

from __future__ import annotations

import pytest

from gateway.gb28181.device_recordings import DAY, IndexOptions, RecordingIndex, RecordKind
from gateway.gb28181.playback_clock import PlaybackClock, PlaybackClockError

CAM = "12010000001310000001"
NOW = 1_716_163_200 + 3 * 3600 + 17  # 2024-05-20 11:00:17 UTC+8


def test_same_seed_same_files_other_seed_other_gaps() -> None:
    a = RecordingIndex(IndexOptions(seed=1)).query(CAM, NOW - 7 * DAY, NOW, NOW)
    b = RecordingIndex(IndexOptions(seed=1)).query(CAM, NOW - 7 * DAY, NOW, NOW)
    c = RecordingIndex(IndexOptions(seed=2)).query(CAM, NOW - 7 * DAY, NOW, NOW)
    assert a == b
    assert a != c
    assert RecordingIndex(IndexOptions(seed=1)).query("12010000001310000002", NOW - DAY, NOW, NOW) != [
        r for r in a if r.start >= NOW - DAY
    ]


def test_a_week_of_half_hour_files_with_gaps_and_the_current_file_ending_now() -> None:
    index = RecordingIndex(IndexOptions(seed=7, alarm_before=30, alarm_after=120))
    files = index.query(CAM, 0, NOW + DAY, NOW, RecordKind.TIME)
    assert files == sorted(files, key=lambda r: r.start)
    assert files[0].start >= NOW - 7 * DAY and files[0].start - (NOW - 7 * DAY) <= 1800
    assert files[-1].end == NOW  # still recording
    assert all(r.duration <= 1800 and r.start // 1800 == (r.end - 1) // 1800 for r in files)  # one slot each
    covered = sum(r.duration for r in files)
    assert 0.7 * 7 * DAY < covered < 7 * DAY  # mostly recorded, but with gaps
    gaps = [b.start - a.end for a, b in zip(files, files[1:], strict=False) if b.start > a.end]
    assert len(gaps) >= 5
    assert all(r.file_size == r.duration * 1_000_000 // 8 for r in files)
    assert files[0].file_path.startswith(f"/mnt/hdd0/{CAM}/") and files[0].file_path.endswith(".mp4")


def test_alarm_files_around_each_alarm_and_type_filter() -> None:
    index = RecordingIndex(IndexOptions(seed=3, past_alarms_per_day=0))
    assert index.query(CAM, NOW - DAY, NOW, NOW, RecordKind.ALARM) == []
    index.add_alarm(NOW - 600)
    index.add_alarm(NOW - 60, channel_id="12010000001310000009")  # another camera only
    index.add_alarm(NOW + 600)  # not yet happened
    alarms = index.query(CAM, NOW - 3600, NOW, NOW, RecordKind.ALARM)
    assert [(r.start, r.end, r.kind) for r in alarms] == [(NOW - 630, NOW - 480, RecordKind.ALARM)]
    everything = index.query(CAM, NOW - 700, NOW - 500, NOW)
    assert {r.kind for r in everything} <= {RecordKind.TIME, RecordKind.ALARM}
    assert RecordKind.ALARM in {r.kind for r in everything}
    index.add_manual(CAM, NOW - 100, NOW - 50)
    assert [r.kind for r in index.query(CAM, NOW - 200, NOW, NOW, RecordKind.MANUAL)] == [RecordKind.MANUAL]
    with pytest.raises(ValueError):
        index.add_manual(CAM, 10, 10)


def test_past_alarms_fall_in_the_daytime_and_are_files() -> None:
    index = RecordingIndex(IndexOptions(seed=11, past_alarms_per_day=3))
    alarms = index.query(CAM, NOW - 7 * DAY, NOW, NOW, RecordKind.ALARM)
    assert alarms, "a week with up to 3 alarms a day has some"
    for r in alarms:
        at = r.start + 30
        local_seconds = (at + 8 * 3600) % DAY
        assert 7.5 * 3600 <= local_seconds <= 17.5 * 3600
        assert r.duration == 150


def test_nothing_older_than_the_retention_or_in_the_future() -> None:
    index = RecordingIndex()
    assert index.query(CAM, NOW - 30 * DAY, NOW - 8 * DAY, NOW) == []
    assert index.query(CAM, NOW + 10, NOW + 3600, NOW) == []
    files = index.query(CAM, NOW - 2 * DAY, NOW, NOW, RecordKind.TIME)
    assert index.recorded(CAM, files[0].start, NOW)
    gap = next(a.end for a, b in zip(files, files[1:], strict=False) if b.start > a.end)
    assert not index.recorded(CAM, gap, NOW) or index.query(CAM, gap, gap + 1, NOW, RecordKind.ALARM)


def test_clock_scale_pause_seek_and_end() -> None:
    clock = PlaybackClock(100.0)
    assert clock.position(5.0) == 0.0 and clock.time_at(100) is None  # not started
    clock.start(10.0)
    assert clock.position(20.0) == pytest.approx(10.0)
    clock.set_scale(4.0, 20.0)
    assert clock.position(25.0) == pytest.approx(30.0)
    assert clock.time_at(100.0) == pytest.approx(20.0 + 90 / 4)
    clock.pause(25.0)
    assert clock.position(1000.0) == pytest.approx(30.0) and clock.time_at(100.0) is None
    generation, jumps = clock.generation, clock.jumps
    assert jumps == 1  # the start; scale and pause changed the pace, not the position
    clock.seek(80.0, 30.0)
    assert clock.generation > generation and clock.jumps == 2 and clock.playing and clock.scale == 4.0
    assert clock.position(35.0) == 100.0 and clock.at_end(35.0)
    clock.seek(500.0, 40.0)  # clamped
    assert clock.position(40.0) == 100.0
    with pytest.raises(PlaybackClockError):
        clock.set_scale(0.0, 41.0)
    with pytest.raises(PlaybackClockError):
        clock.seek(-1.0, 41.0)
    with pytest.raises(PlaybackClockError):
        PlaybackClock(0.0)
