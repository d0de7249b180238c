"""JPEG snapshots from the fixture's access units (gateway.media.snapshot)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from gateway.errors import GatewayError
from gateway.media.ps import AccessUnit, PsDemuxer
from gateway.media.snapshot import SnapshotError, snapshot_jpeg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ps"


def _units(name: str) -> list[AccessUnit]:
    demuxer = PsDemuxer()
    return [u for u in demuxer.feed((FIXTURES / name).read_bytes()) + demuxer.flush() if u.is_video]


def _first_gop(units: list[AccessUnit]) -> list[AccessUnit]:
    second_key = next(i for i, u in enumerate(units) if u.keyframe and i > 0)
    return units[:second_key]


@pytest.mark.parametrize("name", ["zlm_h264_640x360_idr50.ps", "zlm_h265_640x360_idr50.ps"])
def test_first_gop_gives_a_640x360_jpeg(name: str) -> None:
    jpeg = snapshot_jpeg(_first_gop(_units(name)))
    assert jpeg[:2] == b"\xff\xd8"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (360, 640, 3)


def test_key_frame_alone_is_enough() -> None:
    key = _units("zlm_h264_640x360_idr50.ps")[0]
    assert key.keyframe
    image = cv2.imdecode(np.frombuffer(snapshot_jpeg([key], quality=50), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (360, 640, 3)


def test_broken_latest_key_frame_falls_back_to_an_earlier_one() -> None:
    units = _units("zlm_h264_640x360_idr50.ps")
    keys = [i for i, u in enumerate(units) if u.keyframe]
    broken = replace(units[keys[1]], data=b"\x00\x00\x00\x01\x65" + b"\xff" * 16)
    jpeg = snapshot_jpeg([*units[: keys[1]], broken])
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)


def test_no_key_frame_raises() -> None:
    deltas = [u for u in _first_gop(_units("zlm_h264_640x360_idr50.ps")) if not u.keyframe]
    with pytest.raises(SnapshotError) as info:
        snapshot_jpeg(deltas)
    assert isinstance(info.value, GatewayError)
    with pytest.raises(SnapshotError):
        snapshot_jpeg([])


def test_undecodable_key_frame_raises() -> None:
    key = _units("zlm_h264_640x360_idr50.ps")[0]
    with pytest.raises(SnapshotError):
        snapshot_jpeg([replace(key, data=b"\x00\x00\x00\x01\x65garbage")])


def test_bad_quality_raises() -> None:
    with pytest.raises(SnapshotError):
        snapshot_jpeg(_units("zlm_h264_640x360_idr50.ps")[:1], quality=101)
