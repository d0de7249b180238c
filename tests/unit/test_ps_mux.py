"""PS muxer: the ireader/ZLMediaKit layout (docs/gb28181.md §17.3, §20), read back by ffprobe and by us."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.media.ps import (
    AccessUnit,
    PackHeader,
    ProgramStreamMap,
    PsDemuxer,
    PsDemuxError,
    PsMuxer,
    StreamType,
    SystemHeader,
    crc32_mpeg,
)
from gateway.media.ps.mux import MAX_PES_PACKET_LENGTH

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "ps"
H264 = FIXTURES / "zlm_h264_640x360_idr50.ps"
H265 = FIXTURES / "zlm_h265_640x360_idr50.ps"
PCMA = FIXTURES / "zlm_h264_pcma_psm_v2.ps"


def demux(data: bytes) -> list[AccessUnit]:
    demuxer = PsDemuxer()
    return demuxer.feed(data) + demuxer.flush()


def packets(data: bytes) -> list[bytes]:
    """Our muxer's output cut into packets (MPEG-2 pack headers, everything else by length)."""
    out, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 3] == b"\x00\x00\x01", pos
        size = (
            14 + (data[pos + 13] & 7) if data[pos + 3] == 0xBA else 6 + int.from_bytes(data[pos + 4 : pos + 6], "big")
        )
        out.append(data[pos : pos + size])
        pos += size
    return out


@dataclass(frozen=True)
class Frame:
    """A caller's own frame type: the muxer only needs these five fields."""

    data: bytes
    pts: int | None
    dts: int | None
    keyframe: bool
    is_video: bool


@pytest.mark.parametrize(("path", "codec", "name"), [(H264, StreamType.H264, "h264"), (H265, StreamType.H265, "hevc")])
def test_ffprobe_reads_our_ps(tmp_path: Path, path: Path, codec: StreamType, name: str) -> None:
    units = demux(path.read_bytes())
    muxer = PsMuxer(codec)
    out = tmp_path / "ours.ps"
    out.write_bytes(b"".join(muxer.mux(u) for u in units))
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-f",
            "mpeg",
            "-count_packets",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_packets,id",
            "-of",
            "json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    (stream,) = json.loads(result.stdout)["streams"]
    assert (stream["codec_name"], stream["width"], stream["height"]) == (name, 640, 360)
    assert int(stream["nb_read_packets"]) == len(units)
    assert stream["id"] == "0x1e0"


@pytest.mark.parametrize(("path", "codec"), [(H264, StreamType.H264), (H265, StreamType.H265)])
def test_round_trip_gives_identical_units(path: Path, codec: StreamType) -> None:
    units = demux(path.read_bytes())
    muxer = PsMuxer(codec)
    assert demux(b"".join(muxer.mux(u) for u in units)) == units


@pytest.mark.parametrize(("path", "codec"), [(H264, StreamType.H264), (H265, StreamType.H265)])
def test_same_bytes_as_zlmediakit(path: Path, codec: StreamType) -> None:
    # ZLMediaKit's PSM carries ireader's 0x71 descriptor; given the same one, every byte matches.
    data = path.read_bytes()
    psm = next(p for p in packets(data) if p[3] == 0xBC)
    muxer = PsMuxer(codec, psm_info=ProgramStreamMap.parse(psm).info)
    assert b"".join(muxer.mux(u) for u in demux(data)) == data


def test_audio_and_video_round_trip_per_stream() -> None:
    units = demux(PCMA.read_bytes())
    muxer = PsMuxer(StreamType.H264, StreamType.G711A)
    again = demux(b"".join(muxer.mux(u) for u in units))
    assert [u for u in again if u.is_video] == [u for u in units if u.is_video]
    assert [u for u in again if not u.is_video] == [u for u in units if not u.is_video]
    assert {u.stream_type for u in again if not u.is_video} == {StreamType.G711A}


def test_layout_pack_per_frame_scr_and_psm_cadence() -> None:
    units = demux(H264.read_bytes())
    muxer = PsMuxer(StreamType.H264, StreamType.G711U)
    chunks = [muxer.mux(u) for u in units]
    with_psm = [i for i, c in enumerate(chunks) if b"\x00\x00\x01\xbc" in c]
    assert with_psm == [0, 30, 50, 80, 100, 130]  # key frames at 0, 50, 100; else every 30 packs
    for unit, chunk in zip(units, chunks):
        parts = packets(chunk)
        assert parts[0][3] == 0xBA and sum(p[3] == 0xBA for p in parts) == 1
        assert unit.dts is not None and PackHeader.parse(parts[0]).scr == unit.dts - 3600
        assert PackHeader.parse(parts[0]).mux_rate == 6106
        pes = [p for p in parts if p[3] == 0xE0]
        assert len(pes) == 1 and pes[0][6] == (0x84 if unit.keyframe else 0x80) and pes[0][7:9] == b"\x80\x05"
    system, psm = packets(chunks[0])[1:3]
    assert SystemHeader.parse(system).rate_bound == 26234
    assert [s.stream_id for s in SystemHeader.parse(system).streams] == [0xE0, 0xC0]
    table = ProgramStreamMap.parse(psm)
    assert [(e.stream_type, e.stream_id) for e in table.entries] == [(0x1B, 0xE0), (0x91, 0xC0)]
    assert table.version == 2 and crc32_mpeg(psm[:-4]).to_bytes(4, "big") == psm[-4:]


def test_large_frame_is_split_at_0xff80() -> None:
    first = demux(H265.read_bytes())[0]
    big = first.data + b"\x00\x00\x01\x28\x01\x00" + bytes(range(1, 256)) * 700  # one 185 KB IDR picture
    frame = Frame(big, 900000, 900000, True, True)
    chunk = PsMuxer(StreamType.H265).mux(frame)
    pes = [p for p in packets(chunk) if p[3] == 0xE0]
    lengths = [int.from_bytes(p[4:6], "big") for p in pes]
    assert len(pes) == 3 and lengths[:2] == [MAX_PES_PACKET_LENGTH] * 2
    assert pes[0][6:9] == b"\x84\x80\x05" and all(p[6:9] == b"\x80\x00\x00" for p in pes[1:])
    (unit,) = demux(chunk)
    assert (unit.data, unit.pts, unit.keyframe, unit.stream_type) == (big, 900000, True, StreamType.H265)


def test_dts_different_from_pts_is_written() -> None:
    frame = Frame(b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x41\x9a\x00", 7200, 3600, False, True)
    chunk = PsMuxer(StreamType.H264).mux(frame)
    pes = [p for p in packets(chunk) if p[3] == 0xE0][0]
    assert pes[7:9] == b"\xc0\x0a"
    assert PackHeader.parse(chunk).scr == 0  # DTS - 3600, floored at 0 as ireader does
    (unit,) = demux(chunk)
    assert (unit.pts, unit.dts, unit.data) == (7200, 3600, frame.data)


def test_misuse_raises() -> None:
    with pytest.raises(PsDemuxError):
        PsMuxer(StreamType.G711A)
    with pytest.raises(PsDemuxError):
        PsMuxer(StreamType.H264, StreamType.H265)
    with pytest.raises(PsDemuxError):
        PsMuxer(StreamType.UNKNOWN_VIDEO)
    with pytest.raises(PsDemuxError):
        PsMuxer(StreamType.H264).mux(Frame(b"\xd5" * 160, 0, 0, True, False))
