"""The burned-in recorded time: the block code survives H.264 and PyAV decoding; GOPs per second are cached."""

from __future__ import annotations

import av
import numpy as np
import pytest

from simulators.playback_video import SecondCache, SecondKey, encode_second, render_second
from simulators.stamp import COLUMNS, ROWS, Stamp, cell_size, draw_stamp, read_stamp, stamp_bits
from simulators.video import VideoProfile

EPOCH = 1_716_163_200


def test_stamp_round_trip_on_raw_frames_of_any_size() -> None:
    for width, height in ((640, 360), (1280, 720), (320, 180)):
        img = np.full((height, width, 3), 90, dtype=np.uint8)
        draw_stamp(img, EPOCH + 7, 13)
        assert read_stamp(img) == Stamp(EPOCH + 7, 13)
        assert cell_size(width) * (COLUMNS + 2) <= width
    assert len(stamp_bits(EPOCH, 0)) == ROWS * COLUMNS


def test_no_stamp_or_a_broken_one_reads_as_none() -> None:
    assert read_stamp(np.zeros((360, 640), dtype=np.uint8)) is None
    assert read_stamp(np.full((360, 640), 255, dtype=np.uint8)) is None
    img = np.zeros((360, 640, 3), dtype=np.uint8)
    draw_stamp(img, EPOCH, 1)
    cell = cell_size(640)
    x = cell + 20 * cell  # flip one data cell (inside the epoch's bits)
    img[cell : 2 * cell, x : x + cell] = 255 - img[cell + cell // 2, x + cell // 2]
    assert read_stamp(img) is None  # the check byte catches it
    assert read_stamp(np.zeros((40, 40), dtype=np.uint8)) is None  # too small to hold a code


def test_an_encoded_second_decodes_to_its_own_time_frame_by_frame() -> None:
    profile = VideoProfile(width=320, height=180, fps=10)
    second = encode_second(SecondKey("幼儿园", "大门", profile, EPOCH + 5, gap=True))
    assert len(second.units) == 10 and second.units[0][1] and not any(k for _, k in second.units[1:])
    decoder = av.CodecContext.create("h264", "r")
    stamps = [
        read_stamp(frame.to_ndarray(format="gray"))
        for data, _ in second.units
        for frame in decoder.decode(av.Packet(data))
    ]
    stamps += [read_stamp(frame.to_ndarray(format="gray")) for frame in decoder.decode(None)]
    assert stamps == [Stamp(EPOCH + 5, n) for n in range(10)]
    key_only = encode_second(SecondKey("幼儿园", "大门", profile, EPOCH + 5, key_only=True))
    assert len(key_only.units) == 1 and key_only.units[0][1]
    assert len(render_second(SecondKey("幼儿园", "大门", profile, EPOCH))) == 10


def test_second_cache_is_a_small_lru() -> None:
    profile = VideoProfile(width=160, height=90, fps=5)
    cache = SecondCache(max_size=2)
    keys = [SecondKey("k", "c", profile, EPOCH + n) for n in range(3)]
    assert cache.peek(keys[0]) is None
    first = cache.get(keys[0])
    assert cache.get(keys[0]) is first and cache.hits == 1 and cache.misses == 1
    cache.get(keys[1])
    cache.get(keys[2])
    assert len(cache) == 2 and cache.peek(keys[0]) is None
    with pytest.raises(ValueError):
        SecondCache(0)
