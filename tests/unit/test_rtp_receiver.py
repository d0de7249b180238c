"""The sans-I/O RTP receiver: filtering, reordering, loss, duplicates, wrap-around and jitter."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pcap_reader import read_udp

from gateway.errors import ConfigError
from gateway.media.rtp import Rfc4571Framer, RtpPacket, RtpReceiver, RtpReceiverStats

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rtp"
SSRC = 0x05F5E105  # y=0100000005, as sbgb sends it
DEVICE = ("192.0.2.10", 38241)
PS = frozenset({96})


def rtp(seq: int, ts: int = 0, *, ssrc: int = SSRC, pt: int = 96, payload: bytes = b"ps") -> bytes:
    return bytes(RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload))


def drain(receiver: RtpReceiver) -> list[int]:
    out = []
    while (packet := receiver.next_packet()) is not None:
        out.append(packet.sequence)
    return out


def feed(receiver: RtpReceiver, seqs: list[int], start: float = 0.0, step: float = 0.001) -> list[int]:
    for i, seq in enumerate(seqs):
        receiver.receive(rtp(seq), DEVICE, start + i * step)
    return drain(receiver)


def accounted(stats: RtpReceiverStats, receiver: RtpReceiver) -> int:
    """Where every received packet went; must equal ``stats.received``."""
    return (
        stats.delivered
        + receiver.ready
        + receiver.buffered
        + stats.duplicates
        + stats.late
        + stats.out_of_range
        + stats.overflow
    )


# --- real captures ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ssrc", "count"), [("zlm_ps_h264_udp.pcap", 0x05F5E10B, 291), ("sbgb_ps_h264_udp.pcap", 0x05F5E105, 293)]
)
def test_a_real_udp_capture_comes_out_whole_and_in_order(name: str, ssrc: int, count: int) -> None:
    datagrams = read_udp(FIXTURES / name)
    receiver = RtpReceiver(ssrc, PS)
    for d in datagrams:
        receiver.receive(d.payload, d.src, d.time)
    assert drain(receiver) == list(range(count))
    stats = receiver.stats
    assert (stats.received, stats.delivered, stats.lost, stats.duplicates, stats.reordered) == (count, count, 0, 0, 0)
    assert stats.bytes == sum(len(d.payload) for d in datagrams)
    assert receiver.source == datagrams[0].src
    assert 0 < stats.jitter < 90000  # the GOP burst and 40 ms frames give some, but well under a second


def test_a_real_tcp_stream_through_the_framer() -> None:
    framer = Rfc4571Framer()
    receiver = RtpReceiver(None, PS)  # adopt the device's SSRC (docs/gb28181.md §15.4)
    for packet in framer.feed((FIXTURES / "zlm_ps_h264_tcp.bin").read_bytes()):
        receiver.receive(packet, DEVICE, 0.0)
    assert drain(receiver) == list(range(184))
    assert receiver.ssrc == 0x05F5E10C


# --- ordering ------------------------------------------------------------------------


def test_in_order_delivery() -> None:
    receiver = RtpReceiver(SSRC, PS)
    assert feed(receiver, list(range(100))) == list(range(100))
    stats = receiver.stats
    assert (stats.received, stats.delivered, stats.reordered, stats.lost) == (100, 100, 0, 0)


def test_shuffled_within_the_window_comes_out_sorted() -> None:
    rng = random.Random(28181)
    seqs = list(range(1, 400))
    for start in range(0, len(seqs), 16):  # displacement stays below the window of 64
        block = seqs[start : start + 16]
        rng.shuffle(block)
        seqs[start : start + 16] = block
    seqs.insert(0, 0)
    highest, expected_reordered = -1, 0
    for seq in seqs:
        expected_reordered += seq < highest
        highest = max(highest, seq)
    receiver = RtpReceiver(SSRC, PS)
    assert feed(receiver, seqs) == list(range(400))
    assert receiver.stats.reordered == expected_reordered > 0
    assert receiver.stats.lost == 0


def test_a_packet_is_held_until_the_gap_closes() -> None:
    receiver = RtpReceiver(SSRC, PS)
    assert feed(receiver, [0, 2, 3]) == [0]
    assert receiver.buffered == 2
    assert feed(receiver, [1]) == [1, 2, 3]
    assert receiver.stats.reordered == 1
    assert receiver.get_timer() is None


def test_duplicates_are_dropped_whether_delivered_or_buffered() -> None:
    receiver = RtpReceiver(SSRC, PS)
    assert feed(receiver, [0, 1, 1, 3, 3, 2, 0]) == [0, 1, 2, 3]
    assert receiver.stats.duplicates == 3
    assert receiver.stats.received == 7


def test_wrap_around_at_65535() -> None:
    receiver = RtpReceiver(SSRC, PS)
    seqs = [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5]
    assert feed(receiver, seqs) == seqs
    assert receiver.stats.lost == 0


def test_reordering_across_the_wrap() -> None:
    receiver = RtpReceiver(SSRC, PS)
    assert feed(receiver, [65534, 0, 65535, 2, 1, 3]) == [65534, 65535, 0, 1, 2, 3]
    assert receiver.stats.reordered == 2
    assert receiver.stats.lost == 0


# --- loss ----------------------------------------------------------------------------


def test_gap_declared_lost_when_the_window_is_passed() -> None:
    receiver = RtpReceiver(SSRC, PS, reorder_window=64, max_delay=10.0)
    assert feed(receiver, list(range(10))) == list(range(10))
    # 10 is missing; 11..73 fit in the window (next expected 10, 10 + 63 = 73).
    assert feed(receiver, list(range(11, 74))) == []
    assert receiver.stats.lost == 0 and receiver.buffered == 63
    assert feed(receiver, [74]) == list(range(11, 75))
    assert receiver.stats.lost == 1
    assert receiver.buffered == 0


def test_gap_declared_lost_after_max_delay_on_flush() -> None:
    receiver = RtpReceiver(SSRC, PS, max_delay=0.2)
    receiver.receive(rtp(0), DEVICE, 10.0)
    receiver.receive(rtp(2), DEVICE, 10.05)
    assert drain(receiver) == [0]
    assert receiver.get_timer() == pytest.approx(10.25)
    receiver.flush(10.2)
    assert drain(receiver) == [] and receiver.stats.lost == 0
    timer = receiver.get_timer()
    assert timer is not None
    receiver.flush(timer)
    assert drain(receiver) == [2]
    assert receiver.stats.lost == 1
    assert receiver.get_timer() is None


def test_gap_declared_lost_after_max_delay_on_receive() -> None:
    receiver = RtpReceiver(SSRC, PS, max_delay=0.2)
    receiver.receive(rtp(0), DEVICE, 0.0)
    receiver.receive(rtp(2), DEVICE, 0.01)
    receiver.receive(rtp(3), DEVICE, 0.1)
    receiver.receive(rtp(5), DEVICE, 0.15)
    assert drain(receiver) == [0]
    # The gap before 2 opened at 0.01; the one before 5 at 0.15.
    assert receiver.get_timer() == pytest.approx(0.21)
    receiver.receive(rtp(6), DEVICE, 0.3)
    assert drain(receiver) == [2, 3]
    assert receiver.get_timer() == pytest.approx(0.35)
    receiver.receive(rtp(7), DEVICE, 0.4)
    assert drain(receiver) == [5, 6, 7]
    assert receiver.stats.lost == 2


def test_a_late_packet_after_its_gap_was_skipped_is_dropped_as_late() -> None:
    receiver = RtpReceiver(SSRC, PS, max_delay=0.2)
    receiver.receive(rtp(0), DEVICE, 0.0)
    receiver.receive(rtp(2), DEVICE, 0.0)
    receiver.flush(1.0)
    receiver.receive(rtp(1), DEVICE, 1.1)
    assert drain(receiver) == [0, 2]
    stats = receiver.stats
    assert (stats.lost, stats.late, stats.duplicates) == (1, 1, 0)


def test_a_sender_restart_is_followed_after_two_packets() -> None:
    receiver = RtpReceiver(SSRC, PS)
    assert feed(receiver, [100, 101, 102]) == [100, 101, 102]
    assert feed(receiver, [40000]) == []  # one stray packet: dropped
    assert feed(receiver, [103]) == [103]
    assert feed(receiver, [50000, 50001, 50002]) == [50001, 50002]  # a restart: the next packet confirms it
    stats = receiver.stats
    assert (stats.out_of_range, stats.resyncs, stats.lost) == (2, 1, 0)
    assert stats.received == accounted(stats, receiver)


# --- filters -------------------------------------------------------------------------


def test_foreign_ssrc_is_dropped_and_counted() -> None:
    receiver = RtpReceiver(SSRC, PS)
    receiver.receive(rtp(0), DEVICE, 0.0)
    receiver.receive(rtp(1, ssrc=SSRC + 1), DEVICE, 0.0)
    receiver.receive(rtp(1), DEVICE, 0.0)
    assert drain(receiver) == [0, 1]
    assert receiver.stats.foreign_ssrc == 1


def test_first_valid_ssrc_is_adopted_when_none_was_expected() -> None:
    receiver = RtpReceiver(None, PS)
    receiver.receive(b"junk", DEVICE, 0.0)
    receiver.receive(rtp(0, ssrc=7, pt=33), DEVICE, 0.0)  # wrong PT: not valid, not adopted
    receiver.receive(rtp(0, ssrc=0x54C6FC5C), DEVICE, 0.0)
    receiver.receive(rtp(1, ssrc=SSRC), DEVICE, 0.0)
    assert receiver.ssrc == 0x54C6FC5C
    assert drain(receiver) == [0]
    stats = receiver.stats
    assert (stats.malformed, stats.bad_pt, stats.foreign_ssrc) == (1, 1, 1)


def test_packets_from_another_source_are_dropped_and_counted() -> None:
    receiver = RtpReceiver(SSRC, PS)
    receiver.receive(rtp(0), DEVICE, 0.0)
    receiver.receive(rtp(1), ("198.51.100.9", 38241), 0.0)
    receiver.receive(rtp(1), (DEVICE[0], DEVICE[1] + 1), 0.0)
    receiver.receive(rtp(1), DEVICE, 0.0)
    assert drain(receiver) == [0, 1]
    assert receiver.stats.foreign_source == 2
    assert receiver.source == DEVICE


def test_source_lock_can_be_turned_off() -> None:
    receiver = RtpReceiver(SSRC, PS, lock_source=False)
    receiver.receive(rtp(0), DEVICE, 0.0)
    receiver.receive(rtp(1), ("198.51.100.9", 5000), 0.0)  # e.g. a NAT rebinding
    assert drain(receiver) == [0, 1]


def test_unexpected_payload_type_is_dropped_and_counted() -> None:
    # docs/gb28181.md §19 item 18: PS must be PT 96; 98 would be raw H.264.
    receiver = RtpReceiver(SSRC, PS)
    receiver.receive(rtp(0, pt=98), DEVICE, 0.0)
    receiver.receive(rtp(0), DEVICE, 0.0)
    assert drain(receiver) == [0]
    assert receiver.stats.bad_pt == 1


def test_malformed_and_rtcp_datagrams_are_routed_apart() -> None:
    receiver = RtpReceiver(SSRC, PS)
    sender_report = b"\x80\xc8\x00\x06" + SSRC.to_bytes(4, "big") + bytes(20)
    receiver.receive(sender_report, DEVICE, 0.0)
    receiver.receive(b"\x40\x60" + bytes(20), DEVICE, 0.0)
    receiver.receive(b"\x80", DEVICE, 0.0)
    assert drain(receiver) == []
    assert receiver.next_rtcp() == (sender_report, DEVICE)
    assert receiver.next_rtcp() is None
    stats = receiver.stats
    assert (stats.rtcp, stats.malformed, stats.received) == (1, 2, 0)
    assert receiver.source is None  # nothing accepted yet, so nothing locked


# --- jitter --------------------------------------------------------------------------


def test_jitter_stays_zero_for_perfectly_paced_packets() -> None:
    receiver = RtpReceiver(SSRC, PS)
    for i in range(200):  # 25 fps, three packets per frame, sent back to back
        for _ in range(3):
            receiver.receive(rtp(i * 3 + _, ts=0xFFFF0000 + i * 3600), DEVICE, 5.0 + i * 0.04)
    assert receiver.stats.jitter == pytest.approx(0.0, abs=1e-6)  # across the timestamp wrap too


def test_jitter_matches_a_hand_computed_value() -> None:
    # RFC 3550 §6.4.1: D = (Rj - Ri) - (Sj - Si) in timestamp units, J += (|D| - J) / 16.
    # Frames every 3600 ticks (40 ms); arrivals at 0, 50, 80, 120 ms:
    #   D1 = 4500 - 3600 = 900    J = 900/16                   = 56.25
    #   D2 = 2700 - 3600 = -900   J = 56.25 + (900 - 56.25)/16  = 108.984375
    #   D3 = 3600 - 3600 = 0      J = 108.984375 * 15/16        = 102.1728515625
    receiver = RtpReceiver(SSRC, PS)
    for seq, arrival in enumerate([0.0, 0.05, 0.08, 0.12]):
        receiver.receive(rtp(seq, ts=seq * 3600), DEVICE, arrival)
    assert receiver.stats.jitter == pytest.approx(102.1728515625, abs=1e-6)


def test_jitter_grows_with_jittered_arrival() -> None:
    rng = random.Random(5)
    receiver = RtpReceiver(SSRC, PS)
    for i in range(100):
        receiver.receive(rtp(i, ts=i * 3600), DEVICE, i * 0.04 + rng.uniform(0, 0.02))
    assert 300 < receiver.stats.jitter < 1800  # 0..20 ms of noise: a few hundred ticks


# --- bounds --------------------------------------------------------------------------


def test_memory_is_bounded_by_the_window_and_max_ready() -> None:
    receiver = RtpReceiver(SSRC, PS, reorder_window=32, max_delay=1e9, max_ready=100)
    for seq in range(1, 5000, 2):  # every other packet missing, nobody reading
        receiver.receive(rtp(seq), DEVICE, 0.0)
        assert receiver.buffered <= 32
    stats = receiver.stats
    assert stats.overflow > 0
    assert stats.received == accounted(stats, receiver)
    assert receiver.ready == 100
    assert len(drain(receiver)) == 100


def test_packet_before_the_first_one_counts_as_late_not_duplicate() -> None:
    receiver = RtpReceiver(SSRC, PS)
    assert feed(receiver, [5, 4, 6]) == [5, 6]
    assert (receiver.stats.late, receiver.stats.duplicates) == (1, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(reorder_window=0),
        dict(reorder_window=5000),
        dict(clock_rate=0),
        dict(max_delay=-1.0),
        dict(payload_types=frozenset({128})),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, object]) -> None:
    settings: dict[str, object] = dict(expected_ssrc=SSRC, payload_types=PS)
    settings.update(kwargs)
    with pytest.raises(ConfigError):
        RtpReceiver(**settings)  # type: ignore[arg-type]
