"""RFC 4571 framing of RTP over TCP, fed the real captured streams three ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError, GatewayError
from gateway.media.rtp import Rfc4571Framer, RtpBuildError, RtpFramingError, RtpFramingReason, RtpPacket

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rtp"

# Facts from shared/fixtures/index.json for the .bin streams (seq/ts ranges read once from the files).
STREAMS: dict[str, dict[str, Any]] = {
    "zlm_ps_h264_tcp": dict(frames=184, ssrc=0x05F5E10C, pt=96, seq=(0, 183), segments=12),
    "sbgb_ps_h264_tcp": dict(frames=236, ssrc=0x05F5E106, pt=96, seq=(0, 235), segments=240),
}


def _stream(name: str) -> bytes:
    return (FIXTURES / f"{name}.bin").read_bytes()


def _segments(name: str) -> list[bytes]:
    data = _stream(name)
    sizes = [int(line) for line in (FIXTURES / f"{name}.segments.txt").read_text().split()]
    assert sum(sizes) == len(data)
    out, pos = [], 0
    for size in sizes:
        out.append(data[pos : pos + size])
        pos += size
    return out


def _feed(chunks: list[bytes], framer: Rfc4571Framer | None = None) -> list[bytes]:
    framer = framer or Rfc4571Framer()
    out: list[bytes] = []
    for chunk in chunks:
        out += framer.feed(chunk)
        assert framer.buffered <= framer.max_buffered
    assert framer.buffered == 0
    return out


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_real_segmentation_one_byte_and_all_at_once_give_the_same_packets(name: str) -> None:
    facts = STREAMS[name]
    data = _stream(name)
    segments = _segments(name)
    assert len(segments) == facts["segments"]
    whole = _feed([data])
    assert _feed(segments) == whole
    assert _feed([data[i : i + 1] for i in range(len(data))]) == whole
    assert len(whole) == facts["frames"]
    packets = [RtpPacket.parse(p) for p in whole]
    assert {p.ssrc for p in packets} == {facts["ssrc"]}
    assert {p.payload_type for p in packets} == {facts["pt"]}
    assert [p.sequence for p in packets] == list(range(facts["seq"][0], facts["seq"][1] + 1))
    assert all(bytes(p) == raw for p, raw in zip(packets, whole))


@pytest.mark.parametrize("name", sorted(STREAMS))
@pytest.mark.parametrize("size", [7, 188, 1400, 65535])
def test_rechunked_streams_give_the_same_packets(name: str, size: int) -> None:
    data = _stream(name)
    assert _feed([data[i : i + size] for i in range(0, len(data), size)]) == _feed([data])


def test_sbgb_sends_the_length_prefix_in_its_own_segment() -> None:
    # README "RTP traits": the 2-byte length, the RTP header and the payload are separate writes.
    segments = _segments("sbgb_ps_h264_tcp")
    framer = Rfc4571Framer()
    assert framer.feed(segments[0]) == [] and framer.buffered == 2
    assert framer.feed(segments[1]) == [] and framer.buffered == 14


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_framing_the_packets_again_rebuilds_the_stream(name: str) -> None:
    framer = Rfc4571Framer()
    data = _stream(name)
    assert b"".join(framer.frame(p) for p in framer.feed(data)) == data


def test_trailing_partial_frame_stays_buffered() -> None:
    data = _stream("zlm_ps_h264_tcp")
    framer = Rfc4571Framer()
    packets = framer.feed(data + data[:100])
    assert len(packets) == 184
    assert framer.buffered == 100
    assert framer.feed(data[100:]) == packets


def test_zero_length_frames_are_skipped() -> None:
    framer = Rfc4571Framer()
    assert framer.feed(b"\x00\x00\x00\x03abc\x00\x00\x00\x01z\x00\x00") == [b"abc", b"z"]
    assert framer.skipped_empty == 3


def test_frame_longer_than_max_packet_raises_and_stays_broken() -> None:
    framer = Rfc4571Framer(max_packet=1500)
    assert framer.feed(b"\x00\x02ok") == [b"ok"]
    with pytest.raises(RtpFramingError) as info:
        framer.feed(b"\x05\xdd" + bytes(10))
    assert info.value.reason is RtpFramingReason.PACKET_TOO_LARGE
    assert info.value.offset == 4
    assert isinstance(info.value, GatewayError) and isinstance(info.value, ValueError)
    with pytest.raises(RtpFramingError):
        framer.feed(b"more")


def test_frame_of_exactly_max_packet_is_accepted() -> None:
    framer = Rfc4571Framer(max_packet=1500)
    assert framer.feed(b"\x05\xdc" + bytes(1500)) == [bytes(1500)]


def test_interleaved_dollar_framing_is_named_in_the_error() -> None:
    # RFC 2326 §10.12: "$", channel 0, length 0x0010, then an RTP packet.
    rtsp_frame = b"$\x00\x00\x10" + b"\x80\x60" + bytes(14)
    framer = Rfc4571Framer()
    assert framer.feed(rtsp_frame[:2]) == []  # two bytes cannot tell yet
    with pytest.raises(RtpFramingError) as info:
        framer.feed(rtsp_frame[2:])
    assert info.value.reason is RtpFramingReason.INTERLEAVED_FRAMING
    assert info.value.offset == 0


def test_interleaved_error_wins_over_the_length_check() -> None:
    with pytest.raises(RtpFramingError) as info:
        Rfc4571Framer(max_packet=1500).feed(b"$\x01\x00\x10\x80")
    assert info.value.reason is RtpFramingReason.INTERLEAVED_FRAMING


def test_a_real_rfc4571_frame_of_0x24xx_bytes_is_not_mistaken_for_interleaving() -> None:
    packet = bytes(RtpPacket(96, 0, 0, 1, bytes(0x2400 - 12)))
    framer = Rfc4571Framer()
    assert framer.feed(framer.frame(packet)) == [packet]


def test_dollar_later_in_the_stream_is_just_a_length() -> None:
    framer = Rfc4571Framer()
    packet = bytes(RtpPacket(96, 1, 0, 1, bytes(0x2410 - 12)))
    assert framer.feed(b"\x00\x01x" + framer.frame(packet)) == [b"x", packet]


def test_buffer_never_exceeds_one_frame() -> None:
    framer = Rfc4571Framer(max_packet=100)
    assert framer.max_buffered == 101
    framer.feed(b"\x00\x64" + bytes(99))
    assert framer.buffered == 101
    assert framer.feed(b"\x00") == [bytes(100)]


def test_frame_refuses_a_packet_over_max_packet() -> None:
    with pytest.raises(RtpBuildError):
        Rfc4571Framer(max_packet=10).frame(bytes(11))
    assert Rfc4571Framer().frame(b"\x80\x60") == b"\x00\x02\x80\x60"


@pytest.mark.parametrize("max_packet", [0, 65536, -1])
def test_max_packet_out_of_range_is_a_config_error(max_packet: int) -> None:
    with pytest.raises(ConfigError):
        Rfc4571Framer(max_packet=max_packet)
