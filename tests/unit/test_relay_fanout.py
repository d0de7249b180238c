"""Relay fan-out (issue 3): GOP cache for late joiners, slow consumers skipped, one fanout per channel."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from gateway.errors import ConfigError, GatewayError
from gateway.media.ps import AccessUnit, PsDemuxer, StreamType
from gateway.media.relay import (
    ConsumerAlreadyAttached,
    ConsumerState,
    FanoutRegistry,
    RelayError,
    StreamFanout,
    UnknownConsumer,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ps"
H264 = FIXTURES / "zlm_h264_640x360_idr50.ps"  # 144 video units, IDR at 0, 50, 100
H264_PCMA = FIXTURES / "zlm_h264_pcma_psm_v2.ps"  # H.264 with interleaved G.711A


@cache
def demux(path: Path) -> tuple[AccessUnit, ...]:
    demuxer = PsDemuxer()
    return tuple(demuxer.feed(path.read_bytes()) + demuxer.flush())


def video(n: int, *, key: bool = False, size: int = 1000) -> AccessUnit:
    return AccessUnit(StreamType.H264, 0xE0, n * 3600, n * 3600, bytes(size), key)


def audio(n: int, size: int = 160) -> AccessUnit:
    return AccessUnit(StreamType.G711A, 0xC0, n * 3600, n * 3600, bytes(size), False)


def synthetic(count: int, gop: int = 25, size: int = 1000) -> list[AccessUnit]:
    """A 25 fps video stream with a key frame every `gop` frames, starting with one."""
    return [video(i, key=i % gop == 0, size=size) for i in range(count)]


def publish_all(fanout: StreamFanout, units: list[AccessUnit] | tuple[AccessUnit, ...], start: int = 0) -> None:
    for i, unit in enumerate(units, start):
        fanout.publish(unit, i / 25)


def is_key(unit: AccessUnit) -> bool:
    return unit.is_video and unit.keyframe


# --- GOP cache and late joiners -------------------------------------------------------


def test_fixture_has_the_expected_key_frames() -> None:
    units = demux(H264)
    assert [i for i, u in enumerate(units) if is_key(u)] == [0, 50, 100]


def test_late_joiner_gets_key_frame_first_then_units_in_order() -> None:
    units = demux(H264)
    fanout = StreamFanout("ch")
    publish_all(fanout, units[:70])
    assert fanout.stats().gop_cache_units == 20
    fanout.attach("late", now=3.0)
    assert fanout.state("late") is ConsumerState.LIVE
    first = fanout.pull("late")
    assert first[0] is units[50] and is_key(first[0])
    assert first == list(units[50:70])
    publish_all(fanout, units[70:], start=70)
    assert fanout.pull("late") == list(units[70:])


def test_late_joiner_gets_interleaved_audio_of_the_cached_gop() -> None:
    units = demux(H264_PCMA)
    keys = [i for i, u in enumerate(units) if is_key(u)]
    fanout = StreamFanout("ch")
    assert keys == [0, 65, 131]
    publish_all(fanout, units[:90])
    fanout.attach("late", now=4.0)
    got = fanout.pull("late")
    assert got == list(units[65:90]) and is_key(got[0])
    assert sum(not u.is_video for u in got) == 6
    publish_all(fanout, units[90:], start=90)
    assert got + fanout.pull("late") == list(units[65:])


def test_two_consumers_get_identical_sequences() -> None:
    units = demux(H264_PCMA)
    fanout = StreamFanout("ch")
    fanout.attach("a", now=0.0)
    fanout.attach("b", now=0.0)
    got_a: list[AccessUnit] = []
    got_b: list[AccessUnit] = []
    for i, unit in enumerate(units):
        fanout.publish(unit, i / 25)
        got_a += fanout.pull("a", max_units=1)
        if i % 7 == 0:
            got_b += fanout.pull("b")
    got_a += fanout.pull("a")
    got_b += fanout.pull("b")
    assert got_a == got_b == list(units)  # the fixture starts with a key frame
    assert fanout.consumer_stats("a").delivered_units == len(units)


def test_attach_before_any_key_frame_delivers_nothing_until_the_first() -> None:
    fanout = StreamFanout("ch")
    early = [video(1), audio(1), video(2), audio(2)]
    publish_all(fanout, early)
    fanout.attach("c", now=0.2)
    assert fanout.state("c") is ConsumerState.WAITING_KEYFRAME
    assert not fanout.has_keyframe
    publish_all(fanout, [video(3), audio(3)])
    assert fanout.pull("c") == []
    rest = [video(4, key=True), audio(4), video(5)]
    publish_all(fanout, rest)
    assert fanout.pull("c") == rest
    assert fanout.state("c") is ConsumerState.LIVE
    assert fanout.consumer_stats("c").dropped_units == 0  # not joined yet: nothing counted


# --- slow consumers -----------------------------------------------------------------


def test_stuck_consumer_is_skipped_to_next_key_frame_while_fast_one_loses_nothing() -> None:
    units = synthetic(170, gop=25)  # the stuck queue overflows at 30, 80 and 130; resumes at 150
    fanout = StreamFanout("ch", max_queue_units=30)
    fanout.attach("fast", now=0.0)
    fanout.attach("stuck", now=0.0)
    got: list[AccessUnit] = []
    for i, unit in enumerate(units[:40]):
        fanout.publish(unit, i / 25)
        got += fanout.pull("fast")
    assert fanout.state("stuck") is ConsumerState.SKIPPING  # overflowed at unit 30, no key since
    stats = fanout.consumer_stats("stuck")
    assert (stats.skips, stats.dropped_units, stats.queued_units) == (1, 40, 0)
    assert fanout.pull("stuck") == []
    for i, unit in enumerate(units[40:], 40):
        fanout.publish(unit, i / 25)
        got += fanout.pull("fast")
    assert got == units
    assert fanout.consumer_stats("fast").skips == 0
    assert fanout.pull("stuck") == units[150:]
    assert fanout.consumer_stats("stuck").skips == 3


def test_overflow_on_a_key_frame_restarts_there() -> None:
    fanout = StreamFanout("ch", max_queue_units=25)
    units = synthetic(26, gop=25)  # the 26th unit is a key frame and the one that overflows
    fanout.attach("c", now=0.0)
    publish_all(fanout, units)
    assert fanout.state("c") is ConsumerState.LIVE
    assert fanout.pull("c") == [units[25]]
    stats = fanout.consumer_stats("c")
    assert (stats.skips, stats.dropped_units, stats.dropped_bytes) == (1, 25, 25 * 1000)


def test_queue_bounds_hold_over_10000_units_with_a_stuck_consumer() -> None:
    fanout = StreamFanout("ch", max_queue_units=120, max_queue_bytes=50_000, gop_cache_max_bytes=200_000)
    fanout.attach("stuck", now=0.0)
    fanout.attach("fast", now=0.0)
    for i in range(10_000):
        unit = video(i, key=i % 50 == 0, size=500 + (i * 37) % 1500) if i % 3 != 1 else audio(i)
        fanout.publish(unit, i / 25)
        fanout.pull("fast")
        stuck = fanout.consumer_stats("stuck")
        assert stuck.queued_units <= 120 and stuck.queued_bytes <= 50_000
        assert fanout.stats().gop_cache_bytes <= 200_000
    stuck = fanout.consumer_stats("stuck")
    stats = fanout.stats()
    assert stuck.skips > 0
    assert stuck.dropped_units + stuck.queued_units == stats.units  # nothing lost unaccounted
    assert stuck.dropped_bytes + stuck.queued_bytes == stats.bytes
    assert fanout.consumer_stats("fast").delivered_units == stats.units


def test_late_joiner_may_hold_a_gop_larger_than_the_queue_bound() -> None:
    fanout = StreamFanout("ch", max_queue_units=10)
    units = synthetic(40, gop=100)
    publish_all(fanout, units)
    fanout.attach("late", now=2.0)
    fanout.publish(video(40), 2.0)
    assert fanout.state("late") is ConsumerState.LIVE
    assert len(fanout.pull("late", max_units=35)) == 35  # caught up below the bound
    publish_all(fanout, [video(i) for i in range(41, 56)])  # 6 + 15 > 10: the normal bound again
    assert fanout.state("late") is ConsumerState.SKIPPING


# --- GOP cache cap ------------------------------------------------------------------


def test_gop_over_the_byte_cap_stops_caching_until_next_key_frame() -> None:
    fanout = StreamFanout("ch", gop_cache_max_bytes=10_000)
    publish_all(fanout, synthetic(12, gop=100))  # 12 kB > 10 kB
    stats = fanout.stats()
    assert (stats.gop_cache_units, stats.gop_cache_bytes, stats.gop_cache_overflows) == (0, 0, 1)
    fanout.attach("late", now=1.0)
    assert fanout.state("late") is ConsumerState.WAITING_KEYFRAME
    fanout.publish(video(12), 1.0)
    assert fanout.stats().gop_cache_units == 0  # still off: no deltas without their key frame
    fanout.publish(video(13, key=True), 1.1)
    assert fanout.stats().gop_cache_units == 1
    assert [u.pts for u in fanout.pull("late")] == [13 * 3600]


# --- lifecycle, errors ----------------------------------------------------------------


def test_detach_last_consumer_sets_idle_since_and_attach_clears_it() -> None:
    fanout = StreamFanout("ch")
    assert fanout.idle_since is None
    fanout.attach("a", now=1.0)
    fanout.attach("b", now=2.0)
    assert fanout.consumers == ("a", "b") and fanout.consumer_count == 2
    fanout.detach("a", now=3.0)
    assert fanout.idle_since is None
    fanout.detach("b", now=4.0)
    assert fanout.idle_since == 4.0 and fanout.consumer_count == 0
    fanout.attach("c", now=5.0)
    assert fanout.idle_since is None


def test_misuse_raises_relay_errors() -> None:
    fanout = StreamFanout("ch")
    fanout.attach("a", now=0.0)
    with pytest.raises(ConsumerAlreadyAttached):
        fanout.attach("a", now=0.0)
    for call in (lambda: fanout.pull("x"), lambda: fanout.detach("x", 0.0), lambda: fanout.state("x")):
        with pytest.raises(UnknownConsumer) as info:
            call()
        assert isinstance(info.value, RelayError) and isinstance(info.value, GatewayError)
    with pytest.raises(RelayError):
        fanout.pull("a", max_units=-1)
    with pytest.raises(ConfigError):
        StreamFanout("ch", max_queue_units=0)


# --- stats ----------------------------------------------------------------------------


def test_fps_and_bitrate_of_a_25_fps_stream() -> None:
    fanout = StreamFanout("ch", rate_window=2.0)
    publish_all(fanout, synthetic(250, size=1000))
    stats = fanout.stats()
    assert stats.fps == pytest.approx(25, rel=0.02)
    assert stats.bitrate == pytest.approx(25 * 8000, rel=0.02)
    assert (stats.units, stats.bytes, stats.keyframes) == (250, 250_000, 10)
    assert fanout.stats(now=249 / 25 + 1.0).fps < 20  # upstream stalled: the estimate decays
    assert fanout.stats(now=249 / 25 + 10.0).fps == 0.0


def test_fps_counts_video_only_but_bitrate_counts_audio() -> None:
    fanout = StreamFanout("ch")
    for i in range(100):
        fanout.publish(video(i, key=i == 0), i / 25)
        fanout.publish(audio(i, size=200), i / 25 + 0.01)
    stats = fanout.stats()
    assert stats.fps == pytest.approx(25, rel=0.05)
    assert stats.bitrate == pytest.approx(25 * 8 * 1200, rel=0.05)


# --- registry -------------------------------------------------------------------------


def test_registry_opens_upstream_exactly_once_per_channel() -> None:
    registry = FanoutRegistry(max_queue_units=10)
    assert registry.attach("ch1", "a", now=0.0) is True
    assert registry.attach("ch1", "b", now=0.0) is False
    assert registry.attach("ch2", "a", now=0.0) is True
    fanout = registry.get("ch1")
    assert fanout is registry.get_or_create("ch1") and fanout is not None
    assert fanout.max_queue_units == 10 and fanout.consumer_count == 2
    assert sorted(registry.channels()) == ["ch1", "ch2"]
    registry.detach("ch1", "a", now=1.0)
    registry.detach("ch1", "b", now=2.0)
    assert fanout.idle_since == 2.0
    assert registry.attach("ch1", "c", now=3.0) is False  # lingering: upstream still open
    assert registry.remove("ch1") is fanout and registry.get("ch1") is None
    assert registry.attach("ch1", "d", now=4.0) is True  # upstream was torn down: open again
    assert registry.get("ch1") is not fanout
    assert registry.remove("nope") is None
    with pytest.raises(UnknownConsumer):
        registry.detach("nope", "a", now=5.0)
