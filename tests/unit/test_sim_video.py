"""Simulated-camera video: test card -> H.264/H.265 (PyAV) -> GB/T 28181 PS, encoded once per profile."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from gateway.errors import ConfigError
from gateway.media.ps import PsDemuxer, StreamType
from simulators.video import ClipCache, EncodedClip, VideoProfile, encode_clip, render_frames

TITLE = "和平区第三幼儿园"
CAMERA = "和平区第三幼儿园·大门口"
SMALL = VideoProfile(width=320, height=180, fps=25, seconds=2.0, codec="h264", bitrate=400_000)
SMALL_HEVC = VideoProfile(width=320, height=180, fps=25, seconds=1.0, codec="hevc", bitrate=400_000)
# NAL unit types that must precede every key frame: H.264 SPS/PPS, H.265 VPS/SPS/PPS.
PARAMETER_SETS = {"h264": {7, 8}, "hevc": {32, 33, 34}}


@pytest.fixture(scope="module")
def h264_clip() -> EncodedClip:
    return encode_clip(TITLE, CAMERA, SMALL)


@pytest.fixture(scope="module")
def hevc_clip() -> EncodedClip:
    return encode_clip(TITLE, CAMERA, SMALL_HEVC)


def nal_types(data: bytes, codec: str) -> set[int]:
    """NAL unit types in an Annex-B buffer."""
    out, pos = set(), data.find(b"\x00\x00\x01")
    while pos >= 0 and pos + 3 < len(data):
        b = data[pos + 3]
        out.add(b & 0x1F if codec == "h264" else (b >> 1) & 0x3F)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return out


def decode(clip: EncodedClip) -> list[np.ndarray]:
    ctx = av.CodecContext.create(clip.profile.codec, "r")
    images = []
    for unit in clip.access_units:
        for packet in ctx.parse(unit.data):
            images += [f.to_ndarray(format="gray") for f in ctx.decode(packet)]
    for packet in ctx.parse(b""):
        images += [f.to_ndarray(format="gray") for f in ctx.decode(packet)]
    images += [f.to_ndarray(format="gray") for f in ctx.decode(None)]
    return images


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-count_frames", str(path)],
        capture_output=True,
        check=True,
        timeout=20,
    )
    return json.loads(out.stdout)


def check_clip(clip: EncodedClip, count: int) -> None:
    profile = clip.profile
    assert len(clip.frames) == len(clip.access_units) == count
    keys = [i for i, (_, _, key) in enumerate(clip.frames) if key]
    assert keys == list(range(0, count, profile.fps))
    assert [pts for _, pts, _ in clip.frames] == [i * 3600 for i in range(count)]
    for unit in clip.access_units:
        if unit.keyframe:
            assert PARAMETER_SETS[profile.codec] <= nal_types(unit.data, profile.codec)
    images = decode(clip)
    assert len(images) == count
    assert images[0].shape == (profile.height, profile.width)
    assert images[0].std() > 20  # a test card, not a flat field
    if count > profile.fps:
        diff = np.abs(images[0].astype(int) - images[profile.fps].astype(int))
        assert (diff > 40).sum() > 100  # the ball moved and the clock changed


def test_h264_clip_frames_and_decode(h264_clip: EncodedClip) -> None:
    check_clip(h264_clip, 50)


def test_hevc_clip_frames_and_decode(hevc_clip: EncodedClip) -> None:
    check_clip(hevc_clip, 25)
    assert hevc_clip.access_units[0].stream_type is StreamType.H265


@pytest.mark.parametrize(("fixture", "codec", "count"), [("h264_clip", "h264", 50), ("hevc_clip", "hevc", 25)])
def test_ffprobe_reads_ps(fixture: str, codec: str, count: int, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    clip: EncodedClip = request.getfixturevalue(fixture)
    path = tmp_path / f"clip_{codec}.ps"
    path.write_bytes(b"".join(ps for ps, _, _ in clip.frames))
    (stream,) = ffprobe(path)["streams"]
    assert stream["codec_name"] == codec
    assert (stream["width"], stream["height"]) == (320, 180)
    assert int(stream["nb_read_frames"]) == count


def test_our_demuxer_round_trips(h264_clip: EncodedClip) -> None:
    demuxer = PsDemuxer()
    units = demuxer.feed(b"".join(ps for ps, _, _ in h264_clip.frames)) + demuxer.flush()
    assert [u.data for u in units] == [u.data for u in h264_clip.access_units]
    assert [u.pts for u in units] == [pts for _, pts, _ in h264_clip.frames]
    assert all(u.stream_type is StreamType.H264 for u in units)


def test_render_frames_fallback_without_font() -> None:
    profile = VideoProfile(width=160, height=90, seconds=0.2)
    with_font = list(render_frames(TITLE, CAMERA, profile))
    ascii_only = list(render_frames(TITLE, CAMERA, profile, font_path="/nonexistent/font.ttc"))
    assert len(with_font) == len(ascii_only) == 5
    assert with_font[0].shape == (90, 160, 3) and with_font[0].dtype == np.uint8
    assert not np.array_equal(with_font[0], ascii_only[0])


def test_feeds_differ_by_title() -> None:
    profile = VideoProfile(width=160, height=90, seconds=0.04)
    a = next(render_frames(TITLE, CAMERA, profile))
    b = next(render_frames("南开区阳光幼儿园", CAMERA, profile))
    assert not np.array_equal(a, b)


def test_clip_cache_reuses_and_evicts() -> None:
    cache = ClipCache(max_size=2)
    profile = VideoProfile(width=160, height=90, seconds=0.2)
    first = cache.get(TITLE, CAMERA, profile)
    assert cache.get(TITLE, CAMERA, profile) is first
    other = cache.get(TITLE, "和平区第三幼儿园·操场", profile)
    assert other is not first and other.frames != first.frames
    assert (cache.hits, cache.misses, len(cache)) == (1, 2, 2)
    cache.get(TITLE, "和平区第三幼儿园·教室", profile)  # evicts the least recently used (first)
    assert len(cache) == 2
    assert cache.get(TITLE, CAMERA, profile) is not first


@pytest.mark.parametrize(
    "kwargs", [{"width": 321}, {"height": 32}, {"fps": 0}, {"seconds": 0.0}, {"codec": "vp8"}, {"bitrate": 0}]
)
def test_profile_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        VideoProfile(**kwargs)


def test_encode_time_of_default_clip() -> None:
    clip = encode_clip(TITLE, CAMERA, VideoProfile())
    print(f"\n4-s 640x360@25 h264 clip: {clip.encode_seconds:.3f} s, {sum(len(f) for f, _, _ in clip.frames)} bytes")
    assert len(clip.frames) == 100
    assert clip.encode_seconds < 5.0
