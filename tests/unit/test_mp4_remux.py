"""PS access units → MP4 without re-encoding (gateway/media/mp4_remux.py), checked with ffprobe.

The fixture PS files are real ZLMediaKit output (tests/fixtures/PROVENANCE.md); ffprobe reads
the MP4 back for codec, frame count and duration, and the bytes of every frame must be the
ones that went in (no re-encoding).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import av
import pytest

from gateway.media.mp4_remux import CLOCK, Mp4Remuxer, Mp4RemuxError, TimestampUnwrapper
from gateway.media.ps import AccessUnit, PsDemuxer, StreamType
from gateway.media.ps.model import PTS_MASK

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ps"


def _units(name: str, chunk: int = 1400) -> list[AccessUnit]:
    data = (FIXTURES / name).read_bytes()
    demuxer = PsDemuxer()
    units: list[AccessUnit] = []
    for offset in range(0, len(data), chunk):
        units.extend(demuxer.feed(data[offset : offset + chunk]))
    return units + demuxer.flush()


def _probe(path: Path) -> dict:
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-count_frames", "-print_format", "json",
            "-show_entries", "stream=codec_type,codec_name,codec_tag_string,nb_read_frames,width,height:format=duration",
            str(path),
        ],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(out.stdout)


def _remux(units: list[AccessUnit], path: Path, batch: int = 7) -> Mp4Remuxer:
    remuxer = Mp4Remuxer(path)
    for i in range(0, len(units), batch):
        remuxer.write(units[i : i + batch])
    remuxer.close()
    return remuxer


@pytest.mark.parametrize(
    ("fixture", "codec", "tag", "frames", "duration", "audio"),
    [
        ("zlm_h264_640x360_idr50.ps", "h264", "avc1", 144, 5.76, 0),
        ("zlm_h265_640x360_idr50.ps", "hevc", "hvc1", 110, 4.40, 0),
        ("zlm_h264_pcma_psm_v2.ps", "h264", "avc1", 116, 4.64, 37),
    ],
)
def test_fixture_remuxes_to_mp4_ffprobe_reads(tmp_path, fixture, codec, tag, frames, duration, audio):
    path = tmp_path / "out.mp4"
    remuxer = _remux(_units(fixture), path)
    probe = _probe(path)
    streams = probe["streams"]
    assert [s["codec_type"] for s in streams] == ["video"], "G.711 has no MP4 sample entry: audio is dropped"
    video = streams[0]
    assert (video["codec_name"], video["codec_tag_string"]) == (codec, tag)
    assert (video["width"], video["height"]) == (640, 360)
    assert int(video["nb_read_frames"]) == frames
    assert float(probe["format"]["duration"]) == pytest.approx(duration, abs=0.001)
    assert remuxer.stats.video_frames == frames and remuxer.stats.audio_dropped == audio
    assert remuxer.stats.duration == pytest.approx(duration, abs=0.001)
    head = path.read_bytes()[:64]
    assert head.index(b"moov") < 40, "faststart: moov before mdat"


def test_frames_are_passed_through_not_reencoded(tmp_path):
    units = [u for u in _units("zlm_h264_640x360_idr50.ps") if u.is_video]
    path = tmp_path / "out.mp4"
    _remux(units, path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        # MP4 holds length-prefixed NAL units; converting back to Annex-B must give the input bytes.
        assert len(packets) == len(units)
        for packet, unit in zip(packets, units, strict=True):
            assert _annexb(bytes(packet)) == _nals(unit.data)
        assert stream.time_base * CLOCK == 1, "the 90 kHz clock is kept: no rounding"
        assert [p.pts for p in packets][:3] == [0, 3600, 7200]


def _annexb(sample: bytes) -> list[bytes]:
    nals, pos = [], 0
    while pos < len(sample):
        size = int.from_bytes(sample[pos : pos + 4], "big")
        nals.append(sample[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return nals


def _nals(data: bytes) -> list[bytes]:
    parts = data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    return [p.rstrip(b"\x00") if i < len(parts) - 1 else p for i, p in enumerate(parts) if p]


def test_starts_at_first_key_frame(tmp_path):
    units = [u for u in _units("zlm_h264_640x360_idr50.ps") if u.is_video]
    first_key = next(i for i, u in enumerate(units) if u.keyframe and i > 0)
    remuxer = _remux(units[first_key - 10 :], tmp_path / "out.mp4")
    assert remuxer.stats.skipped_before_key == 10
    assert int(_probe(tmp_path / "out.mp4")["streams"][0]["nb_read_frames"]) == len(units) - first_key


def test_timestamps_across_the_33_bit_wrap(tmp_path):
    units = [u for u in _units("zlm_h265_640x360_idr50.ps") if u.is_video]
    shift = PTS_MASK + 1 - 2 * CLOCK - units[0].pts  # the wrap falls 2 s into the clip
    wrapped = [dataclasses.replace(u, pts=(u.pts + shift) & PTS_MASK, dts=(u.dts + shift) & PTS_MASK) for u in units]
    assert any(u.pts < CLOCK for u in wrapped) and any(u.pts > PTS_MASK - CLOCK for u in wrapped)
    remuxer = _remux(wrapped, tmp_path / "out.mp4")
    assert remuxer.stats.repaired_timestamps == 0
    assert float(_probe(tmp_path / "out.mp4")["format"]["duration"]) == pytest.approx(4.40, abs=0.001)


def test_missing_and_backward_timestamps_are_repaired(tmp_path):
    units = [u for u in _units("zlm_h264_640x360_idr50.ps") if u.is_video]
    broken = list(units)
    broken[5] = dataclasses.replace(units[5], pts=None, dts=None)
    broken[9] = dataclasses.replace(units[9], pts=units[8].pts, dts=units[8].dts)  # a repeated stamp
    remuxer = _remux(broken, tmp_path / "out.mp4")
    assert remuxer.stats.repaired_timestamps == 2
    probe = _probe(tmp_path / "out.mp4")
    assert int(probe["streams"][0]["nb_read_frames"]) == 144


def test_no_key_frame_means_no_file(tmp_path):
    units = [u for u in _units("zlm_h264_640x360_idr50.ps") if u.is_video and not u.keyframe][:20]
    remuxer = Mp4Remuxer(tmp_path / "out.mp4")
    remuxer.write(units)
    with pytest.raises(Mp4RemuxError, match="no decodable video key frame"):
        remuxer.close()
    assert not (tmp_path / "out.mp4").exists()
    with pytest.raises(Mp4RemuxError, match="closed"):
        remuxer.write(units)


def test_codec_switch_mid_file_is_dropped(tmp_path):
    h264 = [u for u in _units("zlm_h264_640x360_idr50.ps") if u.is_video]
    h265 = [u for u in _units("zlm_h265_640x360_idr50.ps") if u.is_video]
    remuxer = _remux(h264 + h265, tmp_path / "out.mp4")
    assert remuxer.stats.other_codec_dropped == len(h265) and remuxer.stats.codec is StreamType.H264


def test_abort_removes_the_partial_file(tmp_path):
    remuxer = Mp4Remuxer(tmp_path / "out.mp4")
    remuxer.write(_units("zlm_h264_640x360_idr50.ps")[:30])
    assert (tmp_path / "out.mp4").exists()
    remuxer.abort()
    assert not (tmp_path / "out.mp4").exists()


def test_unwrapper_follows_small_steps_and_one_wrap():
    unwrap = TimestampUnwrapper()
    assert unwrap.unwrap(PTS_MASK - 10) == PTS_MASK - 10
    assert unwrap.unwrap(5) == PTS_MASK + 6
    assert unwrap.unwrap(PTS_MASK - 5) == PTS_MASK - 5, "a late unit from before the wrap"
    assert unwrap.unwrap(20) == PTS_MASK + 21
