"""Playback position from the stream's PTS, and output PTS that never run backwards across seeks."""

from __future__ import annotations

from gateway.media.ps import AccessUnit, StreamType
from gateway.playback import PTS_WRAP, PlaybackPosition

FRAME = 3600  # 90 kHz ticks of one 25 fps frame


def unit(pts: int | None, key: bool = False, video: bool = True) -> AccessUnit:
    kind = StreamType.H264 if video else StreamType.G711A
    return AccessUnit(kind, 0xE0 if video else 0xC0, pts, pts, b"\x00\x00\x00\x01", key)


def feed(tracker: PlaybackPosition, first_pts: int, frames: int, gop: int = 25) -> list[AccessUnit]:
    return [tracker.take(unit(first_pts + i * FRAME, key=i % gop == 0)) for i in range(frames)]


def test_position_follows_the_pts_from_the_first_key_frame() -> None:
    tracker = PlaybackPosition(0.0)
    tracker.take(unit(500, key=False))  # before any key frame: no base yet
    assert tracker.position == 0.0
    out = feed(tracker, 90000 * 1000, 51)
    assert tracker.position == 2.0
    assert [u.pts for u in out] == [500 + FRAME + i * FRAME for i in range(51)]  # continues after what went out


def test_seek_re_bases_at_the_next_key_frame_and_output_stays_monotonic() -> None:
    tracker = PlaybackPosition(0.0)
    before = feed(tracker, 90000 * 5000, 50)
    tracker.seek(600.0)
    assert tracker.position == 600.0
    stale = tracker.take(unit(before[-1].pts + FRAME - 0, key=False))  # in flight from before the seek
    assert tracker.position == 600.0 and stale.pts is not None
    after = feed(tracker, 90000 * 600, 26)  # the device restarts its PTS at the new recorded time
    assert tracker.position == 601.0
    pts = [u.pts for u in (*before, stale, *after)]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), "output PTS never go backwards"
    assert after[0].pts == stale.pts + FRAME


def test_a_jump_without_seek_keeps_the_position_going() -> None:
    tracker = PlaybackPosition(0.0)
    feed(tracker, 0, 26)  # position 1.0
    feed(tracker, 90000 * 3600, 26)  # device skipped an hour gap on its own
    assert tracker.position == 2.0


def test_pts_wrap_and_audio() -> None:
    tracker = PlaybackPosition(10.0)
    start = PTS_WRAP - 2 * FRAME
    feed(tracker, start, 26)
    assert tracker.position == 11.0
    assert tracker.take(unit(None)).pts is None
    assert tracker.take(unit(123, video=False)).pts == 123
