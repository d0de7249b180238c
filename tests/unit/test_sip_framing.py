"""Content-Length framing of SIP over TCP (RFC 3261 §18.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import MessageTooLarge, SipParseError
from gateway.gb28181.sip import FramedMessage, KeepalivePing, SipFramingError, StreamFramer, parse_message
from gateway.gb28181.sip.framing import MAX_HEADER_BLOCK

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sip"

# sbgb_tcp_noqop: the DeviceInfo and Catalog MESSAGEs arrived in one TCP segment.
INFO = (FIXTURES / "sbgb_deviceinfo_unsolicited_tcp.sip").read_bytes()
CATALOG = (FIXTURES / "sbgb_catalog_unsolicited_tcp.sip").read_bytes()
KEEPALIVE = (FIXTURES / "sbgb_keepalive_tcp.sip").read_bytes()


def feed_all(framer: StreamFramer, chunks: list[bytes]) -> list[FramedMessage | KeepalivePing]:
    out: list[FramedMessage | KeepalivePing] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


def test_several_messages_in_one_read() -> None:
    framer = StreamFramer()
    assert framer.feed(KEEPALIVE + INFO + CATALOG) == [
        FramedMessage(KEEPALIVE),
        FramedMessage(INFO),
        FramedMessage(CATALOG),
    ]
    assert framer.buffered == 0


def test_every_split_point_of_two_messages() -> None:
    stream = INFO + CATALOG
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        out = feed_all(framer, [stream[:cut], stream[cut:]])
        assert out == [FramedMessage(INFO), FramedMessage(CATALOG)], cut
        assert framer.buffered == 0


def test_one_message_across_many_reads() -> None:
    framer = StreamFramer()
    chunks = [CATALOG[i : i + 7] for i in range(0, len(CATALOG), 7)]
    out = feed_all(framer, chunks)
    assert out == [FramedMessage(CATALOG)]
    assert parse_message(CATALOG).body == parse_message(out[0].data).body  # type: ignore[union-attr]


def test_crlf_keepalives_between_messages_are_absorbed() -> None:
    framer = StreamFramer()
    out = feed_all(framer, [b"\r\n", INFO, b"\r\n", CATALOG, b"\r\n"])
    assert out == [FramedMessage(INFO), FramedMessage(CATALOG)]


def test_double_crlf_ping() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KeepalivePing()]
    assert framer.buffered == 0
    assert framer.feed(b"\r\n\r\n" + INFO) == [KeepalivePing(), FramedMessage(INFO)]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_ping_split_across_reads(cut: int) -> None:
    # A ping split as b"\r\n\r" + b"\n" used to be swallowed without a KeepalivePing.
    framer = StreamFramer()
    ping = b"\r\n\r\n"
    assert framer.feed(ping[:cut]) == []
    assert framer.feed(ping[cut:]) == [KeepalivePing()]


def test_two_pings_in_one_read() -> None:
    assert StreamFramer().feed(b"\r\n\r\n\r\n\r\n") == [KeepalivePing(), KeepalivePing()]


def test_a_flood_of_line_breaks_stays_bounded() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\n" * 100_000) == []
    assert framer.buffered <= 3


def test_missing_content_length() -> None:
    data = INFO.replace(b"Content-Length: ", b"X-Length: ")
    with pytest.raises(SipFramingError) as info:
        StreamFramer().feed(data)
    assert isinstance(info.value, SipParseError)


def test_compact_content_length() -> None:
    data = INFO.replace(b"Content-Length: ", b"l: ")
    assert StreamFramer().feed(data) == [FramedMessage(data)]


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1234567890"])
def test_bad_content_length(value: bytes) -> None:
    head, _, _ = INFO.partition(b"\r\n\r\n")
    data = head.replace(b"Content-Length: 279", b"Content-Length: " + value) + b"\r\n\r\n"
    with pytest.raises(SipFramingError):
        StreamFramer().feed(data)


def test_huge_content_length() -> None:
    head, _, _ = INFO.partition(b"\r\n\r\n")
    data = head.replace(b"Content-Length: 279", b"Content-Length: 999999") + b"\r\n\r\n"
    with pytest.raises(MessageTooLarge) as info:
        StreamFramer().feed(data)
    assert info.value.status_hint == 513


def test_header_block_without_end_over_the_cap() -> None:
    framer = StreamFramer()
    assert framer.feed(b"MESSAGE sip:a@b SIP/2.0\r\n") == []
    with pytest.raises(SipFramingError):
        for _ in range(MAX_HEADER_BLOCK // 100 + 2):
            framer.feed(b"X-Filler: " + b"a" * 88 + b"\r\n")


def test_header_block_with_end_over_the_cap() -> None:
    data = b"MESSAGE sip:a@b SIP/2.0\r\nX: " + b"a" * MAX_HEADER_BLOCK + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(SipFramingError):
        StreamFramer().feed(data)


def test_bare_lf_head_is_framed_like_the_parser_reads_it() -> None:
    # The framer used to look only for CRLFCRLF, so it disagreed with
    # parse_message about where a bare-LF head ends.
    body = b"x\r\n\r\ny"
    data = b"MESSAGE sip:a@b SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nContent-Length: 6\n\n" + body
    framer = StreamFramer()
    assert framer.feed(data + INFO) == [FramedMessage(data), FramedMessage(INFO)]
    assert parse_message(data).body == body
