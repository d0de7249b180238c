"""PS demux re-chunk invariant (docs/design.md §7) and recovery from damaged input.

The same bytes must give the same access units, timestamps and counters however they
are cut; damaged bytes must never raise, and parsing must recover at the next pack header.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.media.ps import AccessUnit, DemuxStats, PsDemuxer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ps"
H264 = (FIXTURES / "zlm_h264_640x360_idr50.ps").read_bytes()
H265 = (FIXTURES / "zlm_h265_640x360_idr50.ps").read_bytes()
PCMA = (FIXTURES / "zlm_h264_pcma_psm_v2.ps").read_bytes()
STREAMS = {"h264": H264, "h265": H265, "h264_pcma": PCMA}
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(chunks: list[bytes]) -> tuple[list[AccessUnit], DemuxStats]:
    demuxer = PsDemuxer()
    out: list[AccessUnit] = []
    for chunk in chunks:
        out += demuxer.feed(chunk)
    return out + demuxer.flush(), demuxer.stats


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def cut_at(data: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(points)), len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def per_stream(units: list[AccessUnit]) -> dict[int, list[AccessUnit]]:
    out: dict[int, list[AccessUnit]] = {}
    for unit in units:
        out.setdefault(unit.stream_id, []).append(unit)
    return out


REFERENCE = {name: run([data]) for name, data in STREAMS.items()}


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize("size", [1, 7, 188, 1400, 65535])
def test_fixed_chunk_sizes_give_identical_units(name: str, size: int) -> None:
    assert run(cut(STREAMS[name], size)) == REFERENCE[name]


@FAST
@given(points=st.lists(st.integers(0, len(PCMA)), max_size=60))
def test_any_split_gives_identical_units(points: list[int]) -> None:
    assert run(cut_at(PCMA, points)) == REFERENCE["h264_pcma"]


def test_whole_stream_then_trailing_data() -> None:
    units, stats = run([H264 + b"\x00\x00\x01\xba\x44\x00"])  # the start of a pack that never ends
    assert units == REFERENCE["h264"][0]
    assert stats.dropped_bytes == 6


def test_stream_repeated_back_to_back() -> None:
    units, _ = run(cut(H265 + H265, 1400))
    assert units == REFERENCE["h265"][0] * 2


@FAST
@given(prefix=st.binary(min_size=1, max_size=3000).filter(lambda b: b"\x00\x00\x01\xba" not in b))
def test_garbage_prefix_is_skipped(prefix: bytes) -> None:
    units, stats = run(cut(prefix + H264, 1400))
    assert units == REFERENCE["h264"][0]
    assert stats.dropped_bytes == len(prefix) and stats.resyncs == 0


def test_garbage_between_packs_resyncs_at_the_next_pack() -> None:
    pack = [i for i in range(len(H264)) if H264.startswith(b"\x00\x00\x01\xba", i)][70]
    units, stats = run([H264[:pack] + b"\x00\x00\x01\x07garbage\x00\x00\x01" + H264[pack:]])
    reference = REFERENCE["h264"][0]
    # A packet not followed by a start code may have a wrong length: frame 69's PES is
    # dropped, and with it frame 68, still open then (more of it could have followed).
    assert units == reference[:68] + reference[70:]
    assert stats.resyncs >= 1 and stats.dropped_bytes > 0


def test_huge_pes_length_recovers_at_the_next_pack() -> None:
    data = bytearray(H264)
    pes = [i for i in range(len(data)) if data.startswith(b"\x00\x00\x01\xe0", i)][70]
    data[pes + 4 : pes + 6] = b"\xff\xff"  # claims 64 KiB, swallowing ~40 later frames
    units, stats = run(cut(bytes(data), 188))
    reference = REFERENCE["h264"][0]
    assert units == reference[:69] + reference[71:]  # frame 70 lost, and 69, still open then
    assert stats.resyncs == 1


@FAST
@given(data=st.data())
def test_truncated_stream_gives_a_prefix_of_each_stream(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(STREAMS)))
    n = data.draw(st.integers(0, len(STREAMS[name])))
    units, _ = run(cut(STREAMS[name][:n], 1400))
    reference = per_stream(REFERENCE[name][0])
    for sid, got in per_stream(units).items():
        assert got == reference[sid][: len(got)]


@FAST
@given(data=st.data())
def test_random_byte_flips_never_raise_and_recover(data: st.DataObject) -> None:
    corrupt = bytearray(H264)
    for _ in range(data.draw(st.integers(1, 12))):
        pos = data.draw(st.integers(0, len(corrupt) // 2))
        corrupt[pos] ^= data.draw(st.integers(1, 255))
    size = data.draw(st.sampled_from([1, 7, 188, 1400, 65535]))
    whole = run([bytes(corrupt)])
    assert run(cut(bytes(corrupt), size)) == whole  # damage is chunking-independent too
    video = [u for u in whole[0] if u.stream_id == 0xE0]
    assert video[-10:] == REFERENCE["h264"][0][-10:]  # the second half comes through intact
