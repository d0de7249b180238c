"""Issue 12: the relay's per-packet fast paths give exactly what the general paths give.

Two shortcuts make a relayed packet cheaper: :class:`RtpReceiver` queues the next
in-order datagram of its locked source as it came (no :class:`RtpPacket` built), and
:class:`PsDemuxer` only appends while a PES split over many RTP packets is incomplete.
Each test runs the real captures (tests/fixtures/rtp, tests/fixtures/ps), damaged in the
ways networks and devices damage them, through the fast path and through the general
one, and asks for the same payloads, the same counters and byte-identical access units;
a counter on the shortcut proves it really ran.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pcap_reader import read_udp

from gateway.live import feed_rtp
from gateway.media.ps import AccessUnit, PsDemuxer
from gateway.media.relay import StreamFanout
from gateway.media.rtp import RtpPacket, RtpPacketizer, RtpReceiver

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PS = frozenset({96})
DEVICE = ("192.0.2.10", 38241)
OTHER = ("192.0.2.99", 38241)
CAPTURES = [("zlm_ps_h264_udp.pcap", 0x05F5E10B), ("sbgb_ps_h264_udp.pcap", 0x05F5E105)]
STREAM_SSRC = 0x1234ABCD
PS_FILES = ["zlm_h264_640x360_idr50.ps", "zlm_h265_640x360_idr50.ps", "zlm_h264_pcma_psm_v2.ps"]


class CountingReceiver(RtpReceiver):
    """The receiver under test, counting how often the fast path took a packet."""

    fast_taken = 0

    def _receive_next(self, data: bytes, arrival: float) -> None:
        self.fast_taken += 1
        super()._receive_next(data, arrival)


class GeneralReceiver(RtpReceiver):
    """The reference: the fast path can never run (its source is never set)."""

    @property  # type: ignore[override]
    def _fast_source(self) -> None:
        return None

    @_fast_source.setter
    def _fast_source(self, value: object) -> None:
        pass


def capture(name: str) -> list[tuple[bytes, tuple[str, int], float]]:
    return [(d.payload, d.src, d.time) for d in read_udp(FIXTURES / "rtp" / name)]


def with_seq(data: bytes, seq: int) -> bytes:
    return data[:2] + (seq & 0xFFFF).to_bytes(2, "big") + data[4:]


def damaged(
    packets: list[tuple[bytes, tuple[str, int], float]], seed: int
) -> list[tuple[bytes, tuple[str, int], float]]:
    """Loss, duplicates, reordering, malformed and foreign datagrams, RTCP, padded and extended headers."""
    rng = random.Random(seed)
    out: list[tuple[bytes, tuple[str, int], float]] = []
    for data, src, t in packets:
        roll = rng.random()
        if roll < 0.03:
            continue  # lost
        if roll < 0.06:
            out.append((data, src, t))  # duplicated
        elif roll < 0.08:
            out.append((data[:7], src, t))  # truncated header
        elif roll < 0.10:
            out.append((bytes([0x40]) + data[1:], src, t))  # RTP version 1
        elif roll < 0.12:
            out.append((data, OTHER, t))  # a forger's copy from another host
        elif roll < 0.14:
            out.append((data[:8] + b"\x00\x00\x00\x01" + data[12:], src, t))  # foreign SSRC
        elif roll < 0.16:
            out.append((bytes([0x80, 200]) + bytes(26), src, t))  # RTCP SR on the RTP port
        elif roll < 0.18:  # the same packet with padding: not the plain header, general path
            packet = RtpPacket.parse(data)
            data = bytes(RtpPacket(packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc,
                                   packet.payload, packet.marker, padding=4))  # fmt: skip
        elif roll < 0.20:  # with a header extension
            packet = RtpPacket.parse(data)
            data = bytes(RtpPacket(packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc,
                                   packet.payload, packet.marker, extension=True, extension_profile=0xBEDE,
                                   extension_data=b"\x10\xff\x00\x00"))  # fmt: skip
        out.append((data, src, t))
    for _ in range(len(out) // 20):  # swap neighbours within the reorder window
        i = rng.randrange(len(out) - 3)
        j = i + rng.randrange(1, 3)
        out[i], out[j] = out[j], out[i]
    return out


def run_both(
    packets: list[tuple[bytes, tuple[str, int], float]], ssrc: int | None, *, packet_api: bool = False
) -> tuple[CountingReceiver, list[RtpPacket | bytes], list[RtpPacket | bytes]]:
    fast, general = CountingReceiver(ssrc, PS), GeneralReceiver(ssrc, PS)
    got_fast: list[RtpPacket | bytes] = []
    got_general: list[RtpPacket | bytes] = []
    for data, src, t in packets:
        fast.receive(data, src, t)
        general.receive(data, src, t)
        if packet_api:
            while (p := fast.next_packet()) is not None:
                got_fast.append(p)
        else:
            while (b := fast.next_payload()) is not None:
                got_fast.append(b)
        while (q := general.next_packet()) is not None:
            got_general.append(q if packet_api else q.payload)
    fast.flush(1e9)
    general.flush(1e9)
    while (b := fast.next_payload()) is not None:
        got_fast.append(b)
    while (q := general.next_packet()) is not None:
        got_general.append(q.payload)
    assert fast.stats == general.stats
    return fast, got_fast, got_general


@pytest.mark.parametrize(("name", "ssrc"), CAPTURES)
def test_a_clean_capture_takes_the_fast_path_with_the_same_payloads(name: str, ssrc: int) -> None:
    packets = capture(name)
    fast, got_fast, got_general = run_both(packets, ssrc)
    assert got_fast == got_general
    assert len(got_fast) == len(packets)
    assert fast.fast_taken == len(packets) - 1  # all but the first, which locks the source


@pytest.mark.parametrize(("name", "ssrc"), CAPTURES)
@pytest.mark.parametrize("seed", range(6))
def test_a_damaged_capture_gives_the_same_payloads_and_counters(name: str, ssrc: int, seed: int) -> None:
    fast, got_fast, got_general = run_both(damaged(capture(name), seed), ssrc)
    assert got_fast == got_general
    stats = fast.stats
    assert stats.lost > 0 and stats.duplicates > 0 and stats.malformed > 0 and stats.rtcp > 0
    assert stats.foreign_ssrc > 0 and stats.foreign_address == 0 and stats.foreign_source > 0
    assert 0 < fast.fast_taken < stats.received


@pytest.mark.parametrize(("name", "ssrc"), CAPTURES)
def test_next_packet_after_the_fast_path_is_the_parsed_packet(name: str, ssrc: int) -> None:
    fast, got_fast, got_general = run_both(damaged(capture(name), 7), ssrc, packet_api=True)
    assert got_fast == got_general
    assert fast.fast_taken > 0
    assert all(isinstance(p, RtpPacket) for p in got_fast)


def test_the_fast_path_follows_the_sequence_across_the_wrap_and_a_restart() -> None:
    packets = capture("zlm_ps_h264_udp.pcap")
    rewritten = [(with_seq(d, 65500 + i), s, t) for i, (d, s, t) in enumerate(packets[:150])]
    rewritten += [(with_seq(d, 20000 + i), s, t) for i, (d, s, t) in enumerate(packets[150:])]  # sender restart
    fast, got_fast, got_general = run_both(rewritten, None)
    assert got_fast == got_general
    assert len(got_fast) == len(packets) - 1  # the first packet after the jump is dropped until confirmed
    assert fast.stats.resyncs == 1 and fast.stats.out_of_range == 1
    assert fast.fast_taken > len(packets) - 10


def test_arming_again_makes_the_locked_source_prove_itself_again() -> None:
    packets = capture("sbgb_ps_h264_udp.pcap")
    src = packets[0][1]
    fast, general = CountingReceiver(None, PS, armed=False), GeneralReceiver(None, PS, armed=False)
    for receiver in (fast, general):
        receiver.arm(frozenset(), frozenset({src[0]}))
    for data, s, t in packets[:100]:
        fast.receive(data, s, t)
        general.receive(data, s, t)
    for receiver in (fast, general):
        receiver.arm(frozenset(), frozenset({"192.0.2.200"}))  # the answer no longer names that host
    for data, s, t in packets[100:]:
        fast.receive(data, s, t)
        general.receive(data, s, t)
    assert fast.stats == general.stats
    assert fast.stats.foreign_address == len(packets) - 100


# --- the whole relay path: RTP -> receiver -> demuxer -> fanout ---------------------------------------


def rtp_stream(ps_name: str, payload_size: int = 1400) -> list[bytes]:
    """A PS fixture cut into RTP packets the way a camera sends it (one RTP timestamp per pack)."""
    data = (FIXTURES / "ps" / ps_name).read_bytes()
    packetizer = RtpPacketizer(STREAM_SSRC, max_payload=payload_size, initial_sequence=65000)
    packs = [p for p in data.split(b"\x00\x00\x01\xba") if p]
    return [
        bytes(pkt) for i, pack in enumerate(packs) for pkt in packetizer.packetize(b"\x00\x00\x01\xba" + pack, i * 3600)
    ]


class Collect:
    """A fanout stand-in that records when each unit came out (a unit published later is a regression too)."""

    def __init__(self) -> None:
        self.units: list[tuple[float, AccessUnit]] = []

    def publish(self, unit: AccessUnit, now: float) -> None:
        self.units.append((now, unit))


def relay_old_way(packets: list[tuple[bytes, tuple[str, int], float]]) -> list[tuple[float, AccessUnit]]:
    """What the relay did before issue 12: parsed packets, whole-buffer parse on every feed."""
    receiver, demuxer, out = GeneralReceiver(STREAM_SSRC, PS), PsDemuxer(), Collect()
    for data, src, t in packets:
        receiver.receive(data, src, t)
        while (packet := receiver.next_packet()) is not None:
            demuxer._need = 0  # never skip the parse
            for unit in demuxer.feed(packet.payload):
                out.publish(unit, t)
    receiver.flush(1e9)
    while (packet := receiver.next_packet()) is not None:
        out.units.extend((1e9, u) for u in demuxer.feed(packet.payload))
    out.units.extend((1e9, u) for u in demuxer.flush())
    return out.units


def relay_new_way(
    packets: list[tuple[bytes, tuple[str, int], float]],
) -> tuple[list[tuple[float, AccessUnit]], int, int]:
    receiver, demuxer, out = CountingReceiver(STREAM_SSRC, PS), PsDemuxer(), Collect()
    parses = 0
    original = demuxer._parse

    def counting_parse(units: list[AccessUnit], final: bool) -> None:
        nonlocal parses
        parses += 1
        original(units, final)

    demuxer._parse = counting_parse  # type: ignore[method-assign]
    for data, src, t in packets:
        feed_rtp(receiver, demuxer, out, data, src, t)
    receiver.flush(1e9)
    while (payload := receiver.next_payload()) is not None:
        out.units.extend((1e9, u) for u in demuxer.feed(payload))
    out.units.extend((1e9, u) for u in demuxer.flush())
    return out.units, receiver.fast_taken, parses


@pytest.mark.parametrize("ps_name", PS_FILES)
@pytest.mark.parametrize("payload_size", [1400, 300])
def test_relayed_units_are_byte_identical_to_the_old_path(ps_name: str, payload_size: int) -> None:
    packets = [(d, DEVICE, i * 0.001) for i, d in enumerate(rtp_stream(ps_name, payload_size))]
    old = relay_old_way(packets)
    new, fast_taken, parses = relay_new_way(packets)
    assert len(old) > 100
    assert new == old
    assert fast_taken == len(packets) - 1
    assert parses < len(packets)  # incomplete PES only appended
    whole = PsDemuxer()
    assert whole.feed((FIXTURES / "ps" / ps_name).read_bytes()) + whole.flush() == [u for _, u in old]


@pytest.mark.parametrize("ps_name", PS_FILES)
@pytest.mark.parametrize("seed", range(4))
def test_relayed_units_of_a_damaged_stream_are_byte_identical_to_the_old_path(ps_name: str, seed: int) -> None:
    packets = damaged([(d, DEVICE, i * 0.001) for i, d in enumerate(rtp_stream(ps_name))], seed)
    old = relay_old_way(packets)
    new, fast_taken, _ = relay_new_way(packets)
    assert new == old
    assert old and fast_taken > 0


def test_a_corrupted_payload_resyncs_the_same_way() -> None:
    rng = random.Random(3)
    packets = []
    for i, d in enumerate(rtp_stream("zlm_h264_640x360_idr50.ps")):
        if rng.random() < 0.05:
            cut = rng.randrange(12, len(d))
            d = d[:cut] + bytes(rng.randrange(256) for _ in range(8)) + d[cut + 8 :]
        packets.append((d, DEVICE, i * 0.001))
    old = relay_old_way(packets)
    new, _, _ = relay_new_way(packets)
    assert new == old


def test_a_fanout_consumer_gets_the_same_units() -> None:
    packets = [(d, DEVICE, i * 0.04) for i, d in enumerate(rtp_stream("zlm_h264_pcma_psm_v2.ps"))]
    receiver, demuxer, fanout = RtpReceiver(None, PS), PsDemuxer(), StreamFanout("c", max_queue_units=10_000)
    fanout.attach("viewer", 0.0)
    for data, src, t in packets:
        feed_rtp(receiver, demuxer, fanout, data, src, t)
    units = fanout.pull("viewer")
    old = relay_old_way(packets)
    assert units and units == [u for _, u in old[: len(units)]]
    assert units[0].keyframe
