"""RTP header codec (RFC 3550 §5.1) on real GB/T 28181 captures and on hand-made edge cases."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from pcap_reader import read_udp

from gateway.errors import GatewayError
from gateway.media.rtp import (
    RtpBuildError,
    RtpPacket,
    RtpParseError,
    RtpParseReason,
    is_rtcp,
    seq_add,
    seq_diff,
    seq_newer,
    ts_add,
    ts_diff,
    ts_newer,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rtp"

# Facts from shared/fixtures/index.json ("rtp" of each media file), written out here.
CAPTURES: dict[str, dict[str, Any]] = {
    "zlm_ps_h264_udp.pcap": dict(
        packets=291,
        ssrc=0x05F5E10B,
        pt=96,
        seq=(0, 290),
        ts=(720000, 1234800),
        src=("127.0.0.1", 30112),
        dst=("127.0.0.1", 40010),
    ),
    "sbgb_ps_h264_udp.pcap": dict(
        packets=293,
        ssrc=0x05F5E105,
        pt=96,
        seq=(0, 292),
        ts=(1780108367, 1780555371),
        src=("127.0.0.1", 38241),
        dst=("127.0.0.1", 40000),
    ),
}


def _payloads(name: str) -> list[bytes]:
    return [d.payload for d in read_udp(FIXTURES / name)]


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_every_packet_of_a_capture_parses_with_the_indexed_facts(name: str) -> None:
    facts = CAPTURES[name]
    datagrams = read_udp(FIXTURES / name)
    assert len(datagrams) == facts["packets"]
    assert {d.src for d in datagrams} == {facts["src"]}
    assert {d.dst for d in datagrams} == {facts["dst"]}
    packets = [RtpPacket.parse(d.payload) for d in datagrams]
    assert {p.ssrc for p in packets} == {facts["ssrc"]}
    assert {p.payload_type for p in packets} == {facts["pt"]}
    assert (packets[0].sequence, packets[-1].sequence) == facts["seq"]
    assert [p.sequence for p in packets] == list(range(facts["seq"][0], facts["seq"][1] + 1))
    assert (packets[0].timestamp, packets[-1].timestamp) == facts["ts"]
    # docs/gb28181.md §17.1: the plain header, first byte 0x80.
    assert all(d.payload[0] == 0x80 for d in datagrams)
    assert not any(p.padding or p.extension or p.csrcs for p in packets)


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_real_packets_serialise_back_byte_for_byte(name: str) -> None:
    for data in _payloads(name):
        assert bytes(RtpPacket.parse(data)) == data


def test_zlm_marker_ends_each_pack_and_the_next_starts_with_a_pack_header() -> None:
    # README "RTP traits": ZLMediaKit sets M on the last packet of each PS pack.
    packets = [RtpPacket.parse(d) for d in _payloads("zlm_ps_h264_udp.pcap")]
    assert packets[0].payload.startswith(b"\x00\x00\x01\xba")
    for before, after in zip(packets, packets[1:]):
        if before.marker:
            assert after.payload.startswith(b"\x00\x00\x01\xba")
            assert after.timestamp != before.timestamp


def test_notes_example_header() -> None:
    # Header layout of docs/gb28181.md §17.1: marker set, PT 96, seq 0x1A2B, ts 900000 (10 s), SSRC 200000001 (y=0200000001).
    header = bytes.fromhex("80E01A2B000DBBA00BEBC201")
    packet = RtpPacket.parse(header + b"\x00\x00\x01\xba")
    assert (packet.marker, packet.payload_type, packet.sequence) == (True, 96, 0x1A2B)
    assert (packet.timestamp, packet.ssrc, packet.payload) == (900000, 200000001, b"\x00\x00\x01\xba")
    assert bytes(RtpPacket(96, 0x1A2B, 900000, 200000001, b"", marker=True)) == header


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_every_prefix_of_a_real_packet_parses_or_raises_rtp_parse_error(name: str) -> None:
    payloads = _payloads(name)
    samples = [payloads[0], min(payloads, key=len), max(payloads, key=len)]
    for data in samples:
        for n in range(len(data) + 1):
            if n < 12:
                with pytest.raises(RtpParseError) as info:
                    RtpPacket.parse(data[:n])
                assert info.value.reason is RtpParseReason.TRUNCATED_HEADER
            else:
                # No CSRC, extension or padding: any cut after the header is a shorter payload.
                assert RtpPacket.parse(data[:n]).payload == data[12:n]


def test_every_prefix_of_a_packet_with_all_header_parts() -> None:
    full = bytes(
        RtpPacket(
            96,
            7,
            1234,
            0x05F5E105,
            b"payload!",
            csrcs=(1, 2),
            extension=True,
            extension_profile=0xBEDE,
            extension_data=b"\x10\xff\x00\x00",
            padding=4,
        )
    )
    expected = {
        range(0, 12): RtpParseReason.TRUNCATED_HEADER,
        range(12, 20): RtpParseReason.TRUNCATED_CSRC,
        range(20, 28): RtpParseReason.TRUNCATED_EXTENSION,
    }
    for n in range(len(full)):
        reason = next((r for span, r in expected.items() if n in span), None)
        with pytest.raises(RtpParseError) as info:
            RtpPacket.parse(full[:n])
        if reason is not None:
            assert info.value.reason is reason, n
        else:
            # The P bit is set, so the last byte of any cut counts the padding.
            assert info.value.reason in (RtpParseReason.ZERO_PADDING, RtpParseReason.PADDING_TOO_LARGE), n
    assert RtpPacket.parse(full).payload == b"payload!"


def test_csrc_extension_and_padding_round_trip() -> None:
    packet = RtpPacket(
        8,
        65535,
        0xFFFFFFFF,
        1,
        b"\xd5" * 160,
        marker=True,
        csrcs=(0xDEADBEEF,) * 15,
        extension=True,
        extension_profile=0x1000,
        extension_data=b"\x00" * 8,
        padding=255,
    )
    data = bytes(packet)
    assert data[0] == 0x80 | 0x20 | 0x10 | 15
    assert len(data) == 12 + 60 + 4 + 8 + 160 + 255
    assert RtpPacket.parse(data) == packet
    assert RtpPacket.parse(bytes(RtpPacket(96, 1, 2, 3, extension=True))).extension


def test_parsed_fields_of_a_hand_made_packet() -> None:
    data = b"\xa1\x60" + struct.pack("!HII", 5, 6, 7) + struct.pack("!I", 9) + b"\xab\xcd" + b"\x00\x00\x03"
    packet = RtpPacket.parse(data)
    assert packet.csrcs == (9,)
    assert packet.payload == b"\xab\xcd"
    assert packet.padding == 3
    assert not packet.marker and packet.payload_type == 96


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"\x80\x60\x00", RtpParseReason.TRUNCATED_HEADER, id="three_bytes"),
        pytest.param(b"\x40\x60" + bytes(10) + b"x", RtpParseReason.BAD_VERSION, id="version_1"),
        pytest.param(b"\x00\x60" + bytes(10) + b"x", RtpParseReason.BAD_VERSION, id="version_0"),
        pytest.param(b"\xc0\x60" + bytes(10) + b"x", RtpParseReason.BAD_VERSION, id="version_3"),
        pytest.param(b"\x82\x60" + bytes(10) + bytes(7), RtpParseReason.TRUNCATED_CSRC, id="two_csrcs_7_bytes"),
        pytest.param(b"\x90\x60" + bytes(10) + b"\xbe\xde", RtpParseReason.TRUNCATED_EXTENSION, id="ext_header_cut"),
        pytest.param(
            b"\x90\x60" + bytes(10) + b"\xbe\xde\x00\x02" + bytes(7),
            RtpParseReason.TRUNCATED_EXTENSION,
            id="ext_words_cut",
        ),
        pytest.param(b"\xa0\x60" + bytes(10) + b"abc\x00", RtpParseReason.ZERO_PADDING, id="padding_zero"),
        pytest.param(b"\xa0\x60" + bytes(10) + b"abc\x05", RtpParseReason.PADDING_TOO_LARGE, id="padding_5_of_4"),
        pytest.param(b"\xa0\x60" + bytes(9) + b"\x01", RtpParseReason.PADDING_TOO_LARGE, id="padding_header_only"),
    ],
)
def test_malformed_packets_raise_with_a_reason(data: bytes, reason: RtpParseReason) -> None:
    with pytest.raises(RtpParseError) as info:
        RtpPacket.parse(data)
    assert info.value.reason is reason
    assert info.value.size == len(data)
    assert isinstance(info.value, GatewayError) and isinstance(info.value, ValueError)


def test_padding_filling_the_whole_body_is_accepted() -> None:
    packet = RtpPacket.parse(b"\xa0\x60" + bytes(10) + b"\x00\x00\x00\x04")
    assert (packet.payload, packet.padding) == (b"", 4)


@pytest.mark.parametrize(
    "fields",
    [
        dict(payload_type=128),
        dict(sequence=65536),
        dict(sequence=-1),
        dict(timestamp=1 << 32),
        dict(ssrc=-1),
        dict(csrcs=(0,) * 16),
        dict(extension_data=b"abc", extension=True),
        dict(extension_profile=1),
        dict(padding=256),
        dict(version=1),
    ],
)
def test_building_a_packet_with_a_field_out_of_range_raises(fields: dict[str, object]) -> None:
    base: dict[str, object] = dict(payload_type=96, sequence=0, timestamp=0, ssrc=0)
    base.update(fields)
    with pytest.raises(RtpBuildError):
        RtpPacket(**base)  # type: ignore[arg-type]


def test_sequence_arithmetic_across_the_wrap() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_add(65530, 11) == 5
    assert seq_add(3, -5) == 65534
    assert seq_diff(5, 65530) == 11
    assert seq_diff(65530, 5) == -11
    assert seq_diff(7, 7) == 0
    assert seq_diff(0x8000, 0) == -0x8000  # half-way is ambiguous; RFC 1982 leaves it undefined
    assert seq_diff(0x7FFF, 0) == 0x7FFF
    assert seq_newer(0, 65535) and not seq_newer(65535, 0) and not seq_newer(4, 4)


def test_timestamp_arithmetic_across_the_wrap() -> None:
    assert ts_add(0xFFFFFFFF, 3600) == 3599
    assert ts_diff(3599, 0xFFFFFFFF) == 3600
    assert ts_diff(0xFFFFFFFF, 3599) == -3600
    assert ts_newer(10, 0xFFFFFFF0) and not ts_newer(0xFFFFFFF0, 10)


@pytest.mark.parametrize(
    ("second_byte", "rtcp"),
    [
        (200, True),
        (201, True),
        (202, True),
        (203, True),
        (192, True),
        (223, True),  # SR, RR, SDES, BYE, edges
        (0x60, False),
        (0xE0, False),
        (0x21, False),
        (0x08, False),
        (191, False),
        (224, False),
    ],
)
def test_rtcp_is_told_apart_by_the_second_byte(second_byte: int, rtcp: bool) -> None:
    assert is_rtcp(bytes((0x80, second_byte)) + bytes(6)) is rtcp


def test_short_data_is_not_rtcp() -> None:
    assert not is_rtcp(b"") and not is_rtcp(b"\x80")
