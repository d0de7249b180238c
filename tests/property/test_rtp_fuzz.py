"""RTP parser, RFC 4571 framer and receiver fail only with our errors, never anything else (h11's invariant)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pcap_reader import read_udp

from gateway.media.rtp import (
    Rfc4571Framer,
    RtpFramingError,
    RtpPacket,
    RtpParseError,
    RtpReceiver,
    seq_add,
    seq_diff,
    seq_newer,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rtp"
_DATAGRAMS = read_udp(FIXTURES / "sbgb_ps_h264_udp.pcap")
# Seeds from the capture: the small header-only packets and the first big one.
CORPUS = sorted({d.payload for d in _DATAGRAMS}, key=len)[:8] + [_DATAGRAMS[0].payload[:64]]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SSRC = 0x05F5E105
DEVICE = ("192.0.2.10", 38241)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real packet with a few bytes overwritten and maybe cut short."""
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


def _parse_or_our_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    # Whatever parses serialises to something that parses to the same packet.
    assert RtpPacket.parse(bytes(packet)) == packet


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_rtp_parse_error(data: bytes) -> None:
    _parse_or_our_error(data)


@FUZZ
@given(mutated())
def test_mutated_real_packets_parse_or_raise_rtp_parse_error(data: bytes) -> None:
    _parse_or_our_error(data)


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=12), st.integers(1, 0xFFFF))
def test_framer_returns_packets_or_raises_rtp_framing_error(chunks: list[bytes], max_packet: int) -> None:
    framer = Rfc4571Framer(max_packet=max_packet)
    try:
        for chunk in chunks:
            for packet in framer.feed(chunk):
                assert 0 < len(packet) <= max_packet
            assert framer.buffered <= framer.max_buffered
    except RtpFramingError:
        pass


@FUZZ
@given(st.lists(st.binary(max_size=600), max_size=10), st.data())
def test_framer_output_does_not_depend_on_the_chunking(packets: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(Rfc4571Framer().frame(p) for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    out: list[bytes] = []
    fresh = Rfc4571Framer()
    for chunk in chunks:
        out += fresh.feed(chunk)
    # Zero-length frames are skipped; lengths under 0x2400 never start with "$".
    assert out == [p for p in packets if p]
    assert fresh.buffered == 0


@FUZZ
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_seq_diff_inverts_seq_add(a: int, b: int) -> None:
    assert seq_add(b, seq_diff(a, b)) == a
    assert seq_newer(a, b) == (seq_diff(a, b) > 0)


@FUZZ
@given(
    st.integers(0, 0xFFFF),
    st.lists(st.tuples(st.integers(-150, 150), st.floats(0, 0.3), st.booleans()), max_size=200),
)
def test_receiver_never_raises_and_delivers_in_order(start: int, steps: list[tuple[int, float, bool]]) -> None:
    """Random jumps, delays and garbage: packets still come out in order and are all accounted for."""
    receiver = RtpReceiver(SSRC, frozenset({96}), reorder_window=16)
    seq, now, out = start, 0.0, []
    for jump, delay, garbage in steps:
        seq, now = seq_add(seq, jump), now + delay
        data = bytes(RtpPacket(96, seq, seq * 3600 & 0xFFFFFFFF, SSRC, b"x"))
        receiver.receive(data[:5] if garbage else data, DEVICE, now)
        assert receiver.buffered <= 16
        while (packet := receiver.next_packet()) is not None:
            out.append(packet.sequence)
    stats = receiver.stats
    resynced = stats.resyncs > 0
    assert resynced or all(seq_newer(b, a) for a, b in zip(out, out[1:]))
    assert stats.received == (
        stats.delivered + receiver.buffered + stats.duplicates + stats.late + stats.out_of_range + stats.overflow
    )
    assert stats.jitter >= 0
