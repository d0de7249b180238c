"""PS demuxer: captured ZLMediaKit streams and FFmpeg's PSM-less PS, checked against ffprobe.

Also the real-world quirks of docs/gb28181.md §17.4 (truncated Hikvision pack headers, stuffing,
private streams, unbounded video PES, broken or changing PSMs) and the buffer caps.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.errors import GatewayError
from gateway.media.ps import (
    AccessUnit,
    PackHeader,
    PesHeader,
    ProgramStreamMap,
    PsDemuxer,
    PsDemuxError,
    PsmEntry,
    StreamType,
    SystemHeader,
    SystemHeaderStream,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "ps"
H264 = FIXTURES / "zlm_h264_640x360_idr50.ps"
H265 = FIXTURES / "zlm_h265_640x360_idr50.ps"
PCMA = FIXTURES / "zlm_h264_pcma_psm_v2.ps"


def _require_ffmpeg() -> None:
    """ffmpeg/ffprobe are the independent PS writer/reader: scripts/setup.sh installs them."""
    if shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg/ffprobe not installed: run scripts/setup.sh", pytrace=False)


needs_ffmpeg = pytest.mark.usefixtures("ffmpeg_installed")


@pytest.fixture
def ffmpeg_installed() -> None:
    _require_ffmpeg()


def demux(data: bytes, demuxer: PsDemuxer | None = None) -> list[AccessUnit]:
    demuxer = demuxer or PsDemuxer()
    return demuxer.feed(data) + demuxer.flush()


def video(units: list[AccessUnit]) -> list[AccessUnit]:
    return [u for u in units if u.is_video]


def ffprobe_video_packets(path: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-f",
            "mpeg",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts,size,flags",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    packets: list[dict[str, object]] = json.loads(result.stdout)["packets"]
    return packets


def split_packets(data: bytes) -> list[bytes]:
    """Cut a ZLMediaKit PS file into its packets (MPEG-2 pack headers, everything else by length)."""
    out, pos = [], 0
    while pos < len(data):
        assert data[pos : pos + 3] == b"\x00\x00\x01"
        if data[pos + 3] == 0xBA:
            size = 14 + (data[pos + 13] & 7)
        else:
            size = 6 + int.from_bytes(data[pos + 4 : pos + 6], "big")
        out.append(data[pos : pos + size])
        pos += size
    return out


def without_psm(data: bytes) -> bytes:
    return b"".join(p for p in split_packets(data) if p[3] not in (0xBB, 0xBC))


# --- captured streams against ffprobe --------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize(
    ("path", "codec", "frames"),
    [(H264, StreamType.H264, 144), (H265, StreamType.H265, 110), (PCMA, StreamType.H264, 116)],
    ids=["zlm-h264", "zlm-h265", "zlm-h264-pcma"],
)
def test_fixture_frames_match_ffprobe(path: Path, codec: StreamType, frames: int) -> None:
    demuxer = PsDemuxer()
    units = video(demux(path.read_bytes(), demuxer))
    packets = ffprobe_video_packets(path)
    assert len(units) == len(packets) == frames
    assert {u.stream_type for u in units} == {codec}
    assert [i for i, u in enumerate(units) if u.keyframe] == [
        i for i, p in enumerate(packets) if "K" in str(p["flags"])
    ]
    assert [u.pts for u in units] == [int(str(p["pts"])) for p in packets]
    if codec is StreamType.H264:
        assert [len(u.data) for u in units] == [int(str(p["size"])) for p in packets]
    else:  # FFmpeg's HEVC parser gives a 4-byte start code's leading zero to the previous frame
        assert sum(len(u.data) for u in units) == sum(int(str(p["size"])) for p in packets)
    assert demuxer.stats.resyncs == demuxer.stats.dropped_bytes == demuxer.stats.oversized == 0


def test_fixture_units_are_whole_annex_b_frames() -> None:
    units = demux(H264.read_bytes())
    assert units[0].data.startswith(b"\x00\x00\x00\x01\x09")  # ZLMediaKit's AUD
    assert [i for i, u in enumerate(units) if u.keyframe] == [0, 50, 100]
    assert units[0].pts == units[0].dts == 720000
    assert all(b.pts is not None and a.pts is not None and b.pts - a.pts == 3600 for a, b in zip(units, units[1:]))
    assert all(u.stream_id == 0xE0 and u.is_video for u in units)


def test_pcma_audio_units() -> None:
    demuxer = PsDemuxer()
    units = demux(PCMA.read_bytes(), demuxer)
    audio = [u for u in units if not u.is_video]
    assert len(audio) == 37
    assert {(u.stream_type, u.stream_id, len(u.data), u.keyframe) for u in audio} == {
        (StreamType.G711A, 0xC0, 1024, True)
    }
    steps = {b.pts - a.pts for a, b in zip(audio, audio[1:]) if a.pts is not None and b.pts is not None}
    assert steps and all(11000 < s < 12000 for s in steps)  # 1024 samples at 8 kHz ~ 11520 ticks
    assert demuxer.stream_types == {0xC0: StreamType.G711A, 0xE0: StreamType.H264}


# --- FFmpeg's PS: MPEG-1 packs, no PSM, 2 KiB packs cutting through frames ----------------


@pytest.fixture(scope="module")
def ffmpeg_ps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _require_ffmpeg()
    out = {}
    for name, codec in (
        ("h264", ["-c:v", "libx264"]),
        ("h265", ["-c:v", "libx265", "-x265-params", "log-level=error"]),
    ):
        path = tmp_path_factory.mktemp("ffmpeg") / f"{name}.ps"
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=25",
                "-t",
                "2",
                *codec,
                "-g",
                "25",
                "-bf",
                "0",
                "-f",
                "mpeg",
                str(path),
            ],
            check=True,
            timeout=60,
        )
        out[name] = path
    return out


@needs_ffmpeg
@pytest.mark.parametrize(
    ("name", "codec", "stream_id"), [("h264", StreamType.H264, 0xE2), ("h265", StreamType.H265, 0xE0)]
)
def test_ffmpeg_ps_without_psm_matches_ffprobe(
    ffmpeg_ps: dict[str, Path], name: str, codec: StreamType, stream_id: int
) -> None:
    path = ffmpeg_ps[name]
    data = path.read_bytes()
    assert data[4] >> 4 == 0x2 and b"\x00\x00\x01\xbc" not in data  # MPEG-1 pack header, no PSM
    demuxer = PsDemuxer()
    units = demux(data, demuxer)
    packets = ffprobe_video_packets(path)
    assert len(units) == len(packets) == 50
    assert {(u.stream_type, u.stream_id) for u in units} == {(codec, stream_id)}
    assert [i for i, u in enumerate(units) if u.keyframe] == [
        i for i, p in enumerate(packets) if "K" in str(p["flags"])
    ]
    # A PES timestamp belongs to the first frame starting in that PES; the others have none.
    assert [u.pts for u in units] == [int(str(p["pts"])) if "pts" in p else None for p in packets]
    assert demuxer.stats.psm_updates == 0 and demuxer.stats.resyncs == 0
    assert demuxer.stats.pes < len(units)  # several frames share one 2 KiB pack


# --- guessing without a PSM, and PSM changes ------------------------------------------------


def test_h265_without_psm_is_recognised_from_nal_headers() -> None:
    reference = demux(H265.read_bytes())
    assert demux(without_psm(H265.read_bytes())) == reference


def test_audio_without_psm_is_unknown_audio() -> None:
    reference = demux(PCMA.read_bytes())
    guessed = demux(without_psm(PCMA.read_bytes()))
    assert video(guessed) == video(reference)
    audio = [u for u in guessed if not u.is_video]
    assert {u.stream_type for u in audio} == {StreamType.UNKNOWN_AUDIO}
    assert [u.data for u in audio] == [u.data for u in reference if not u.is_video]


def test_changed_psm_switches_the_codec() -> None:
    # Both ZLMediaKit files say PSM version 1; the changed table alone must rebuild the map.
    demuxer = PsDemuxer()
    units = demux(H264.read_bytes() + H265.read_bytes(), demuxer)
    assert [u.stream_type for u in units] == [StreamType.H264] * 144 + [StreamType.H265] * 110
    assert units == demux(H264.read_bytes()) + demux(H265.read_bytes())
    assert demuxer.stats.psm_updates == 2


def test_broken_es_info_length_trusts_the_map_length() -> None:
    broken = bytearray(bytes(ProgramStreamMap(1, (PsmEntry(0x24, 0xE0),))))
    broken[14:16] = b"\xff\xff"  # elementary_stream_info_length far past the map
    assert ProgramStreamMap.parse(bytes(broken)).entries == (PsmEntry(0x24, 0xE0),)
    packets = [bytes(broken) if p[3] == 0xBC else p for p in split_packets(H265.read_bytes())]
    assert demux(b"".join(packets)) == demux(H265.read_bytes())


def test_psm_with_a_bad_crc_is_used() -> None:
    packets = [p[:-4] + b"\x00\x00\x00\x00" if p[3] == 0xBC else p for p in split_packets(H265.read_bytes())]
    units = demux(b"".join(packets))
    assert units == demux(H265.read_bytes()) and units[0].stream_type is StreamType.H265


# --- vendor quirks ------------------------------------------------------------------------


def test_truncated_hikvision_pack_headers_are_skipped() -> None:
    packets = split_packets(H264.read_bytes())
    hik = b"".join(b"\x00\x00\x01\xba" + p if p[3] == 0xE0 else p for p in packets)
    demuxer = PsDemuxer()
    assert demux(hik, demuxer) == demux(H264.read_bytes())
    assert demuxer.stats.packs == 2 * 144 and demuxer.stats.resyncs == 0


def test_pack_header_stuffing_is_skipped() -> None:
    def stuffed(packet: bytes) -> bytes:
        if packet[3] != 0xBA:
            return packet
        header = PackHeader.parse(packet)
        return bytes(PackHeader(header.scr, header.mux_rate, stuffing=6))

    data = b"".join(stuffed(p) for p in split_packets(H264.read_bytes()))
    assert b"\xfe\xff\xff\xff\xff\xff\xff" in data  # the 20-byte Hikvision/Tiandy pack header
    assert demux(data) == demux(H264.read_bytes())


def test_private_padding_and_end_code_are_skipped() -> None:
    extra = (
        b"\x00\x00\x01\xbd\x00\x08"
        + b"HIK-PRIV"  # Hikvision analytics on private stream 1
        + b"\x00\x00\x01\xbe\x00\x04"
        + b"\xff" * 4
        + b"\x00\x00\x01\xbf\x00\x02\x00\x01"
        + b"\x00\x00\x01\xf0\x00\x00"
    )
    packets = split_packets(H264.read_bytes())
    data = b"".join(p + extra if p[3] == 0xE0 else p for p in packets) + b"\x00\x00\x01\xb9"
    demuxer = PsDemuxer()
    assert demux(data, demuxer) == demux(H264.read_bytes())
    assert demuxer.stats.skipped_packets >= 4 * 144 and demuxer.stats.resyncs == 0


def test_unbounded_video_pes_runs_to_the_next_start_code() -> None:
    packets = split_packets(H264.read_bytes())
    data = b"".join(p[:4] + b"\x00\x00" + p[6:] if p[3] == 0xE0 else p for p in packets)
    assert demux(data) == demux(H264.read_bytes())


def test_unbounded_pes_larger_than_64k() -> None:
    first, second = demux(H264.read_bytes())[:2]
    # 204 KB more IDR slice (first_mb_in_slice != 0: the same picture), no zero bytes in it
    big = first.data + b"\x00\x00\x01\x65\x40" + bytes(range(1, 256)) * 800
    pes = bytes(PesHeader(0xE0, 0, 0, first.pts, None, True)) + big
    tail = bytes(PesHeader(0xE0, 0, 0, second.pts, None)) + second.data
    data = bytes(PackHeader(0)) + pes + bytes(PackHeader(0)) + tail
    units = demux(data)
    assert [u.data for u in units] == [big, second.data] and units[0].keyframe


# --- caps and misuse ----------------------------------------------------------------------------


def test_oversized_units_are_dropped_and_counted() -> None:
    reference = demux(H264.read_bytes())
    cap = 3000
    demuxer = PsDemuxer(max_unit_size=cap, max_buffered=4 * cap)
    units = demux(H264.read_bytes(), demuxer)
    assert units == [u for u in reference if len(u.data) <= cap]
    assert demuxer.stats.oversized == sum(len(u.data) > cap for u in reference) > 0


def test_misuse_raises_ps_demux_error() -> None:
    with pytest.raises(PsDemuxError) as info:
        PsDemuxer().feed("00 00 01 ba")  # type: ignore[arg-type]
    assert isinstance(info.value, GatewayError) and isinstance(info.value, ValueError)
    with pytest.raises(PsDemuxError):
        PsDemuxer(max_unit_size=0)


# --- header codecs: composed examples (layouts in docs/gb28181.md §17.3) --------------------------------------


def test_composed_example_headers() -> None:
    assert bytes(PackHeader(896400)) == bytes.fromhex("000001BA4400DD6C8401005F6BF8")
    assert PackHeader.parse(bytes.fromhex("000001BA4400DD6C8401005F6BF8")) == PackHeader(896400, 6106)
    system = SystemHeader(
        (SystemHeaderStream(0xE0, 1, 400), SystemHeaderStream(0xC0, 0, 32)), audio_bound=1, video_bound=1
    )
    assert bytes(system) == bytes.fromhex("000001BB000C80CCF504217FE0E190C0C020")
    assert SystemHeader.parse(bytes(system)) == system
    psm = ProgramStreamMap(0, (PsmEntry(0x1B, 0xE0), PsmEntry(0x90, 0xC0)))
    assert bytes(psm) == bytes.fromhex("000001BC0012C001000000081BE0000090C00000ABBBA5F6")  # CRC-32/MPEG-2 included
    assert ProgramStreamMap.parse(bytes(psm)) == psm
    assert bytes(PesHeader(0xE0, 0x10, 14, 900000, None, True)) == bytes.fromhex(
        "000001E0001084800521003777 41".replace(" ", "")
    )


def test_pts_and_dts_are_both_read() -> None:
    header = bytes(PesHeader(0xE0, 0, 0, pts=7200, dts=3600))
    assert header[7] == 0xC0 and header[8] == 10
    frame = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x65\x88\x84"
    data = bytes(PackHeader(0)) + header[:4] + (len(header) - 6 + len(frame)).to_bytes(2, "big") + header[6:] + frame
    (unit,) = demux(data)
    assert (unit.pts, unit.dts, unit.keyframe, unit.data) == (7200, 3600, True, frame)
