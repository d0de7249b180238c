"""H.265 → H.264 transcoder core (gateway/media/transcode.py) on a real ZLMediaKit H.265 capture."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import pytest

from gateway.errors import ConfigError
from gateway.media.ps import AccessUnit, PsDemuxer, StreamId, StreamType
from gateway.media.transcode import Backlog, HevcToH264, TranscodeSettings, output_size

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ps" / "zlm_h265_640x360_idr50.ps"


def _hevc_units() -> list[AccessUnit]:
    demuxer = PsDemuxer()
    units = demuxer.feed(FIXTURE.read_bytes()) + demuxer.flush()
    assert units and all(u.stream_type is StreamType.H265 for u in units)
    return units


def _nal_types(data: bytes) -> list[int]:
    """H.264 NAL unit types in an Annex-B access unit."""
    types, i = [], 0
    while (i := data.find(b"\x00\x00\x01", i)) >= 0:
        types.append(data[i + 3] & 0x1F)
        i += 3
    return types


def _decode_h264(units: list[AccessUnit]) -> list[av.VideoFrame]:
    decoder = av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    for unit in units:
        assert unit.stream_type is StreamType.H264
        frames.extend(decoder.decode(av.Packet(unit.data)))
    frames.extend(decoder.decode(None))
    return frames


def test_fixture_becomes_decodable_h264_frame_for_frame() -> None:
    units = _hevc_units()
    transcoder = HevcToH264()
    out = transcoder.transcode(units)
    stats = transcoder.stats
    assert stats.units_in == len(units) and stats.decode_errors == 0
    assert stats.frames_in == len(units) == stats.frames_out == len(out), "one picture in, one frame out (no delay)"
    assert all(u.stream_type is StreamType.H264 and u.stream_id == StreamId.VIDEO for u in out)
    assert [u.pts for u in out] == [u.pts for u in units], "the camera's timestamps are kept"
    assert out[0].keyframe and _nal_types(out[0].data)[:2] == [7, 8], "starts with SPS, PPS"
    frames = _decode_h264(out)
    assert len(frames) == len(units)
    assert {(f.width, f.height) for f in frames} == {(640, 360)}
    assert (stats.width, stats.height) == (640, 360)
    assert float(frames[-1].to_ndarray(format="gray").std()) > 5.0, "a picture, not a blank"


def test_key_frames_every_two_seconds_and_on_demand_with_headers() -> None:
    units = _hevc_units()  # 110 frames at 25 fps
    transcoder = HevcToH264(TranscodeSettings(gop_seconds=2.0, fps=25))
    out = transcoder.transcode(units[:30])
    transcoder.request_keyframe()  # a viewer joins at frame 30
    out += transcoder.transcode(units[30:])
    keys = [i for i, u in enumerate(out) if u.keyframe]
    assert keys == [0, 30, 80], keys  # scheduled every 50 frames, counted from the forced one
    assert transcoder.stats.keyframes_forced == 1
    for i in keys:
        assert _nal_types(out[i].data)[:2] == [7, 8] and 5 in _nal_types(out[i].data), "SPS/PPS and an IDR"
    assert all(5 not in _nal_types(u.data) for i, u in enumerate(out) if i not in keys), "no B-frame games, P only"
    assert len(_decode_h264(out[30:])) == len(units) - 30, "a viewer starting at the forced key frame decodes"


def test_large_pictures_are_scaled_down_to_the_limit() -> None:
    transcoder = HevcToH264(TranscodeSettings(max_width=320, max_height=240))
    out = transcoder.transcode(_hevc_units()[:10])
    frames = _decode_h264(out)
    assert {(f.width, f.height) for f in frames} == {(320, 180)}
    assert output_size(1920, 1080, 1280, 720) == (1280, 720)
    assert output_size(2560, 1440, 1280, 720) == (1280, 720)
    assert output_size(704, 576, 1280, 720) == (704, 576)
    assert output_size(1080, 1920, 1280, 720) == (404, 720)  # portrait: height bounds, width even


def test_audio_passes_through_in_order_and_other_video_is_skipped() -> None:
    units = _hevc_units()[:3]
    audio = AccessUnit(StreamType.G711A, 0xC0, units[1].pts, units[1].pts, b"\xd5" * 320, False)
    h264 = AccessUnit(StreamType.H264, 0xE0, 0, 0, b"\x00\x00\x00\x01\x65\x88", True)
    transcoder = HevcToH264()
    out = transcoder.transcode([units[0], audio, units[1], h264, units[2]])
    assert [u.stream_type for u in out] == [StreamType.H264, StreamType.G711A, StreamType.H264, StreamType.H264]
    assert out[1] is audio
    assert transcoder.stats.audio_units == 1 and transcoder.stats.skipped_units == 1


def test_garbage_is_counted_not_raised_and_the_next_key_frame_heals() -> None:
    units = _hevc_units()
    transcoder = HevcToH264()
    garbage = replace(units[5], data=b"\x00\x00\x00\x01" + bytes(range(256)) * 8)
    out = transcoder.transcode([*units[:5], garbage, *units[6:50]])  # the decoder drops what lost its references
    healed = transcoder.transcode(units[50:60])  # units[50] is the camera's next IDR
    assert len(out) >= 5 and len(healed) == 10
    assert len(_decode_h264(out + healed)) == len(out) + len(healed)


def test_timestamps_only_grow_across_a_camera_restart_and_a_33_bit_wrap() -> None:
    units = _hevc_units()[:60]
    wrap = 1 << 33
    shift = wrap - (units[55].pts or 0)  # the camera's clock wraps at unit 55
    clip = [replace(u, pts=((u.pts or 0) + shift) % wrap, dts=None) for u in units]
    clip[30:35] = [replace(u, pts=(u.pts or 0) - 500_000) for u in clip[30:35]]  # camera restarted: back in time
    transcoder = HevcToH264()
    pts = [u.pts for u in transcoder.transcode(clip)]
    assert len(pts) == 60 and all(p is not None and 0 <= p < wrap for p in pts)
    steps = [((b or 0) - (a or 0)) % wrap for a, b in zip(pts, pts[1:], strict=False)]
    assert all(0 < step < 1 << 32 for step in steps), "strictly growing (modulo 2^33) for x264 and RTP"
    assert steps[54] == 3600, "a wrap is not a restart: the frame interval stays"


def _video(pts: int, key: bool = False) -> AccessUnit:
    return AccessUnit(StreamType.H265, 0xE0, pts, pts, b"\x00\x00\x01\x26\x01", key)


def test_backlog_keeps_everything_while_on_time() -> None:
    backlog = Backlog(max_lag=1.0)
    backlog.add([_video(0, True), _video(1), _video(2)], now=10.0)
    assert backlog.lag(10.5) == 0.5
    assert [u.pts for u in backlog.take(10.5, 2)] == [0, 1]
    assert [u.pts for u in backlog.take(10.6, 5)] == [2]
    assert backlog.stats.dropped_units == 0 and backlog.lag(11.0) == 0.0


def test_backlog_too_late_drops_whole_gops_up_to_the_newest_key_frame() -> None:
    backlog = Backlog(max_lag=1.0)
    backlog.add([_video(i, i % 3 == 0) for i in range(8)], now=10.0)  # keys at 0, 3, 6
    batch = backlog.take(11.5, 10)
    assert [u.pts for u in batch] == [6, 7] and batch[0].keyframe
    assert backlog.stats.dropped_frames == 6 and backlog.stats.gop_drops == 1


def test_backlog_too_late_without_a_later_key_frame_skips_to_the_next_one() -> None:
    backlog = Backlog(max_lag=1.0)
    backlog.add([_video(1), _video(2)], now=10.0)
    assert backlog.take(11.5, 10) == []
    backlog.add([_video(3), _video(4)], now=11.6)  # still the same GOP: dropped as they come
    backlog.add([_video(5, True), _video(6)], now=11.7)
    assert [u.pts for u in backlog.take(11.8, 10)] == [5, 6]
    assert backlog.stats.dropped_frames == 4 and backlog.stats.gop_drops == 1


def test_backlog_late_key_frame_first_is_kept() -> None:
    backlog = Backlog(max_lag=1.0)
    backlog.add([_video(0, True), _video(1)], now=10.0)
    assert [u.pts for u in backlog.take(12.0, 10)] == [0, 1]
    assert backlog.stats.gop_drops == 0


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError):
        TranscodeSettings(max_width=10)
    with pytest.raises(ConfigError):
        TranscodeSettings(max_lag=0)
    assert TranscodeSettings().gop_frames == 50
    assert 1_000_000 < TranscodeSettings().bitrate(1280, 720) <= 2_500_000
