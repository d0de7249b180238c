"""RTP sending side: PS frames packetized (docs/gb28181.md §17.1, §20) and clip replay for simulated cameras."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.media.ps import AccessUnit, PackHeader, PsDemuxer, PsDemuxError, PsMuxer, StreamType
from gateway.media.rtp import RtpPacket, RtpReceiver
from gateway.media.rtp.sender import DEFAULT_MAX_PAYLOAD, ClipReplayer, RtpPacketizer, rewrite_pes_timestamps

H264 = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "ps" / "zlm_h264_640x360_idr50.ps"
SSRC = 200000001
SOURCE = ("127.0.0.1", 30000)


def demux(data: bytes) -> list[AccessUnit]:
    demuxer = PsDemuxer()
    return demuxer.feed(data) + demuxer.flush()


@pytest.fixture(scope="module")
def units() -> list[AccessUnit]:
    return demux(H264.read_bytes())


def remux(units: list[AccessUnit]) -> list[bytes]:
    muxer = PsMuxer(StreamType.H264)
    return [muxer.mux(unit) for unit in units]


# --- packetizer --------------------------------------------------------------------------


@pytest.mark.parametrize("max_payload", [DEFAULT_MAX_PAYLOAD, 1400, 188, 7])
def test_round_trip_through_receiver_and_demuxer(units: list[AccessUnit], max_payload: int) -> None:
    # Start near both wraps so the stream crosses 65535 -> 0 and 2**32 -> 0.
    packetizer = RtpPacketizer(SSRC, max_payload=max_payload, initial_sequence=65500, initial_timestamp=2**32 - 9000)
    receiver = RtpReceiver(expected_ssrc=SSRC, payload_types=frozenset({96}))
    demuxer = PsDemuxer()
    got: list[AccessUnit] = []
    first_pts = units[0].pts
    assert first_pts is not None
    for n, (unit, frame) in enumerate(zip(units, remux(units))):
        assert unit.pts is not None
        packets = packetizer.packetize(frame, unit.pts - first_pts)
        assert b"".join(p.payload for p in packets) == frame
        assert all(len(p.payload) <= max_payload for p in packets)
        assert [p.marker for p in packets] == [False] * (len(packets) - 1) + [True]
        assert {p.timestamp for p in packets} == {(2**32 - 9000 + unit.pts - first_pts) % 2**32}
        for p in packets:
            receiver.receive(bytes(p), SOURCE, arrival=n * 0.04)
            while (delivered := receiver.next_packet()) is not None:
                got += demuxer.feed(delivered.payload)
    got += demuxer.flush()
    assert got == units
    stats = receiver.stats
    assert (stats.lost, stats.foreign_ssrc, stats.malformed, stats.out_of_range) == (0, 0, 0, 0)


def test_sequence_numbers_wrap_and_continue_across_frames() -> None:
    packetizer = RtpPacketizer(1, max_payload=10, initial_sequence=65533)
    first = packetizer.packetize(bytes(45), 0)
    second = packetizer.packetize(bytes(10), 3600)
    assert [p.sequence for p in first] == [65533, 65534, 65535, 0, 1]
    assert [p.sequence for p in second] == [2]
    assert packetizer.next_sequence == 3


def test_timestamp_is_offset_and_wraps_at_32_bits() -> None:
    packetizer = RtpPacketizer(1, initial_timestamp=2**32 - 100)
    assert packetizer.packetize(b"x", 40)[0].timestamp == 2**32 - 60
    assert packetizer.packetize(b"x", 100)[0].timestamp == 0
    assert packetizer.packetize(b"x", 2**32 + 250)[0].timestamp == 150


def test_frame_sizes_at_the_payload_boundary() -> None:
    packetizer = RtpPacketizer(7, max_payload=100)
    assert packetizer.packetize(b"", 0) == []
    assert packetizer.next_sequence == 0
    exact = packetizer.packetize(bytes(200), 0)
    assert [len(p.payload) for p in exact] == [100, 100]
    one = packetizer.packetize(bytes(1), 0)
    assert len(one) == 1 and one[0].marker


def test_wire_header_matches_notes_example() -> None:
    # Header layout of docs/gb28181.md §17.1: 80 E0 1A 2B 00 0D BB A0 0B EB C2 01 = M set, PT 96, seq 0x1A2B, ts 900000, SSRC 200000001.
    packetizer = RtpPacketizer(SSRC, initial_sequence=0x1A2B)
    (packet,) = packetizer.packetize(b"\x00\x00\x01\xba", 900000)
    assert bytes(packet)[:12] == bytes.fromhex("80E01A2B000DBBA00BEBC201")
    assert RtpPacket.parse(bytes(packet)) == packet


def test_rebase_changes_only_what_is_given() -> None:
    packetizer = RtpPacketizer(1, initial_sequence=10, initial_timestamp=1000)
    packetizer.packetize(b"abc", 0)
    packetizer.rebase(ssrc=2)
    (packet,) = packetizer.packetize(b"abc", 5)
    assert (packet.ssrc, packet.sequence, packet.timestamp) == (2, 11, 1005)
    packetizer.rebase(sequence=500, timestamp=0)
    (packet,) = packetizer.packetize(b"abc", 5)
    assert (packet.ssrc, packet.sequence, packet.timestamp) == (2, 500, 5)
    assert packetizer.timestamp_offset == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ssrc": -1},
        {"ssrc": 2**32},
        {"ssrc": 1, "payload_type": 128},
        {"ssrc": 1, "max_payload": 0},
        {"ssrc": 1, "initial_sequence": 65536},
        {"ssrc": 1, "initial_timestamp": 2**32},
    ],
)
def test_packetizer_rejects_out_of_range_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        RtpPacketizer(**kwargs)


# --- clip replay -------------------------------------------------------------------------


def clip(count: int = 50, gop: int = 25, first_pts: int = 720000) -> list[tuple[bytes, int, bool]]:
    """A synthetic 25 fps clip: frame i is the bytes of i, key frames every ``gop``."""
    return [(i.to_bytes(2, "big"), (first_pts + 3600 * i) % 2**33, i % gop == 0) for i in range(count)]


def test_first_frame_at_zero_and_one_second_of_frames() -> None:
    replayer = ClipReplayer(clip(), 25, rewrite_pts=False)
    first = replayer.frames_due(0.0)
    assert [(f.ps_frame, f.timestamp, f.keyframe) for f in first] == [(b"\x00\x00", 0, True)]
    assert replayer.next_due_time() == pytest.approx(0.04)
    # Frames are due at 0, 0.04, ... 0.96: 25 of them before 1 s; the 26th is due at 1.0 exactly.
    assert len(first) + len(replayer.frames_due(0.999)) == 25
    assert [f.timestamp for f in replayer.frames_due(1.0)] == [90000]


def test_loops_continue_timestamps_without_gaps_or_repeats() -> None:
    frames = clip()
    replayer = ClipReplayer(frames, 25, rewrite_pts=False)
    assert replayer.loop_duration == pytest.approx(2.0)
    out = []
    t = 0.0
    while t < 3 * replayer.loop_duration - 1e-9:  # irregular polling, 13 ms apart
        out += replayer.frames_due(t)
        t += 0.013
    out += replayer.frames_due(3 * replayer.loop_duration - 0.001)
    assert [f.timestamp for f in out] == [3600 * n for n in range(150)]
    assert [f.ps_frame for f in out] == [data for data, _, _ in frames] * 3
    assert replayer.skipped == 0


def test_polling_at_next_due_time_yields_every_frame_once() -> None:
    # 29.97 fps: the due times are not exact in binary floating point.
    frames = [(bytes([i]), 3003 * i, i == 0) for i in range(30)]
    replayer = ClipReplayer(frames, 29.97, rewrite_pts=False)
    assert replayer.loop_ticks == 30 * 3003
    for n in range(300):
        due = replayer.frames_due(replayer.next_due_time())
        assert [f.timestamp for f in due] == [3003 * n]


def test_going_back_in_time_emits_nothing() -> None:
    replayer = ClipReplayer(clip(), 25, rewrite_pts=False)
    assert len(replayer.frames_due(1.0)) == 26
    assert replayer.frames_due(0.5) == []
    assert replayer.frames_due(-1.0) == []
    assert replayer.emitted == 26


def test_late_call_within_one_loop_catches_up() -> None:
    replayer = ClipReplayer(clip(), 25, rewrite_pts=False)
    replayer.frames_due(0.0)
    caught_up = replayer.frames_due(1.9)
    assert [f.timestamp for f in caught_up] == [3600 * n for n in range(1, 48)]
    assert replayer.skipped == 0


def test_more_than_one_loop_late_skips_to_a_key_frame() -> None:
    replayer = ClipReplayer(clip(), 25, rewrite_pts=False)  # 2 s loop, key frames at 0 and 1 s of each loop
    replayer.frames_due(0.0)
    due = replayer.frames_due(10.5)  # 262 frames due since the last call
    assert len(due) < 50  # no whole-loop burst
    assert due[0].keyframe and due[0].timestamp == 9 * 90000  # first key frame within one loop
    assert due[-1].timestamp == 10.48 * 90000
    assert replayer.skipped + len(due) + 1 == replayer.emitted == 263
    assert replayer.frames_due(10.52)[0].timestamp == 10.52 * 90000


def test_late_clip_without_key_frames_skips_to_the_lag_bound() -> None:
    frames = [(bytes([i]), 3600 * i, False) for i in range(10)]
    replayer = ClipReplayer(frames, 25, max_lag=0.1, rewrite_pts=False)
    due = replayer.frames_due(1.0)
    assert [f.timestamp for f in due] == [0.92 * 90000, 0.96 * 90000, 1.0 * 90000]
    assert replayer.skipped == 23


def test_real_clip_replays_with_pts_wrap_inside_the_loop(units: list[AccessUnit]) -> None:
    # Shift the fixture so its PTS wrap at 2**33 in the middle of the clip.
    frames = [(frame, (u.pts or 0) - 720000 + 2**33 - 3600 * 70, u.keyframe) for u, frame in zip(units, remux(units))]
    frames = [(data, pts % 2**33, key) for data, pts, key in frames]
    replayer = ClipReplayer(frames, 25)
    assert replayer.loop_ticks == 144 * 3600
    out = replayer.frames_due(replayer.loop_duration - 0.001) + replayer.frames_due(2 * replayer.loop_duration - 0.001)
    assert [f.timestamp for f in out] == [3600 * n for n in range(288)]
    assert sum(f.keyframe for f in out) == 6
    # PES PTS carry on into the second loop instead of jumping back (rewrite_pts).
    pts = [u.pts for u in demux(b"".join(f.ps_frame for f in out))]
    assert pts == [(units[0].pts or 0) + 3600 * n for n in range(288)]
    assert out[144].ps_frame != frames[0][0]


@pytest.mark.parametrize("delta", [0, 90000, 2**33 - 720000 + 5, -3600])
def test_rewrite_pes_timestamps_shifts_pts_dts_and_scr(units: list[AccessUnit], delta: int) -> None:
    frames = remux(units)
    moved = [rewrite_pes_timestamps(frame, delta) for frame in frames]
    assert all(len(a) == len(b) for a, b in zip(frames, moved))
    expected = [
        AccessUnit(
            u.stream_type,
            u.stream_id,
            ((u.pts or 0) + delta) % 2**33,
            ((u.dts or 0) + delta) % 2**33,
            u.data,
            u.keyframe,
        )
        for u in units
    ]
    assert demux(b"".join(moved)) == expected
    scr = [PackHeader.parse(frame[:14]).scr for frame in moved]
    assert scr == [((u.dts or 0) - 3600 + delta) % 2**33 for u in units]
    if delta == 0:
        assert moved == frames


def test_rewrite_pes_timestamps_patches_dts_when_it_differs() -> None:
    unit = AccessUnit(StreamType.H264, 0xE0, 10800, 7200, b"\x00\x00\x00\x01\x09\xf0", False)
    frame = rewrite_pes_timestamps(PsMuxer(StreamType.H264).mux(unit), 1000)
    (got,) = demux(frame)
    assert (got.pts, got.dts) == (11800, 8200)


@pytest.mark.parametrize("cut", [3, 10, 30, -1])
def test_rewrite_pes_timestamps_rejects_what_it_cannot_walk(units: list[AccessUnit], cut: int) -> None:
    frame = remux(units[:1])[0]
    with pytest.raises(PsDemuxError):
        rewrite_pes_timestamps(frame[:cut], 1)
    with pytest.raises(PsDemuxError):
        rewrite_pes_timestamps(b"garbage" + frame, 1)
    with pytest.raises(PsDemuxError):
        ClipReplayer([(b"not ps", 0, True)], 25)


@pytest.mark.parametrize(
    ("frames", "fps"),
    [
        ([], 25),
        (clip(), 0),
        (clip(), float("inf")),
        (clip(), float("nan")),
        (clip(1), 200000),
        ([(b"a", 3600, True), (b"b", 0, False)], 25),
    ],
)
def test_replayer_rejects_bad_clips(frames: list[tuple[bytes, int, bool]], fps: float) -> None:
    with pytest.raises(ConfigError):
        ClipReplayer(frames, fps, rewrite_pts=False)
