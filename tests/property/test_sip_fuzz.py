"""The SIP codec, framer and endpoint fail only with SipParseError, never anything else (h11's invariant)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import SipParseError
from gateway.gb28181.sip import (
    FramedMessage,
    KeepalivePing,
    Peer,
    SeededIds,
    SipEndpoint,
    SipRequest,
    SipResponse,
    StreamFramer,
    Transport,
    check_mandatory,
    parse_message,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sip"
CORPUS = [path.read_bytes() for path in sorted(FIXTURES.glob("*.sip"))]
PEER = Peer(Transport.UDP, "198.51.100.4", 5060)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated_fixture(draw: st.DrawFn) -> bytes:
    """A captured message with random byte flips, insertions, deletions and a cut."""
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(0, 8))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\r\n",
                        b"\n",
                        b" ",
                        b",",
                        b";",
                        b":",
                        b"<",
                        b">",
                        b"\xc2\xb2",
                        b"\x00",
                        b"\r\n ",
                        b'"',
                        b"@",
                        b"/",
                        b"9" * 12,
                    ]
                )
            )
        else:
            del data[pos : pos + draw(st.integers(1, 16))]
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)


# Lines that steer generated messages into the header parsers' corners.
LINE_PIECES = st.sampled_from(
    [
        "MESSAGE sip:a@b SIP/2.0",
        "SIP/2.0 200 OK",
        "ACK sip:a@b SIP/2.0",
        "INVITE sip:3402000000 SIP/2.0",
        "Via: ",
        "v: ",
        "From: ",
        "f: ",
        "To: ",
        "t: ",
        "Call-ID: ",
        "i: ",
        "CSeq: ",
        "Contact: ",
        "m: ",
        "Content-Length: ",
        "l: ",
        "SIP/2.0/UDP ",
        "SIP / 2.0 / TCP ",
        "10.0.0.1",
        ":5060",
        ":99999",
        ":\u00b2",
        ";branch=z9hG4bK1",
        ";rport",
        ";tag=x",
        "<sip:",
        "sip:",
        "34020000001320000001@",
        "3402000000",
        ">",
        '"',
        ",",
        ";",
        " ",
        "\t",
        "@",
        "[::1]",
        "[",
        "1 MESSAGE",
        "2147483648 INVITE",
        "\u00b2",
        "\u0663",
        "*",
        "\r\n",
        "\n",
        "\r\n ",
        "\r\n\r\n",
    ]
)
SIP_LIKE = st.lists(LINE_PIECES, max_size=40).map(lambda parts: "".join(parts).encode())
INPUTS = st.one_of(st.binary(max_size=600), mutated_fixture(), SIP_LIKE)


def touch_everything(message: SipRequest | SipResponse) -> None:
    """Every accessor either works or raises SipParseError."""
    for accessor in ("call_id", "cseq", "vias", "top_via", "from_", "to", "contact", "content_type"):
        with contextlib.suppress(SipParseError):
            getattr(message, accessor)
    with contextlib.suppress(SipParseError):
        check_mandatory(message)
    bytes(message)


@FUZZ
@given(data=INPUTS)
def test_parse_message_returns_a_message_or_raises_sip_parse_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    assert isinstance(message, (SipRequest, SipResponse))
    touch_everything(message)


@FUZZ
@given(data=INPUTS)
def test_serialised_message_parses_again(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    again = parse_message(bytes(message), max_size=2**20)
    assert type(again) is type(message)
    assert again.body == message.body


@FUZZ
@given(datagrams=st.lists(INPUTS, min_size=1, max_size=4))
def test_endpoint_receive_never_raises(datagrams: list[bytes]) -> None:
    ep = SipEndpoint(SeededIds("fuzz"))
    for i, data in enumerate(datagrams):
        ep.receive(data, PEER, float(i))
    ep.handle_timer(100.0)
    for out, peer in ep.data_to_send():
        assert peer == PEER
        assert isinstance(parse_message(out, max_size=2**20), SipResponse)
    while (event := ep.next_event()) is not None:
        assert event.peer == PEER


@FUZZ
@given(
    stream=st.one_of(
        st.binary(max_size=2000), st.lists(st.sampled_from(CORPUS + [b"\r\n", b"\r\n\r\n"])).map(b"".join)
    ),
    data=st.data(),
)
def test_framer_raises_only_sip_parse_errors(stream: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    framer = StreamFramer()
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    try:
        for piece in pieces:
            for item in framer.feed(piece):
                assert isinstance(item, (FramedMessage, KeepalivePing))
    except SipParseError:
        return
    assert framer.buffered <= len(stream)


@FUZZ
@given(messages=st.lists(st.sampled_from(CORPUS), min_size=1, max_size=5), data=st.data())
def test_framer_rechunking_gives_the_same_messages(messages: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    framer = StreamFramer()
    out: list[FramedMessage | KeepalivePing] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += framer.feed(stream[a:b])
    assert out == [FramedMessage(m) for m in messages]
