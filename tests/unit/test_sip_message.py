"""SIP message codec: real captures, header forms, limits, and the h11 trio."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import MessageTooLarge, SipParseError
from gateway.gb28181.sip import (
    MAX_MESSAGE_SIZE,
    CSeq,
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    SipUri,
    StreamFramer,
    Via,
    check_mandatory,
    make_response,
    parse_head,
    parse_message,
)
from gateway.gb28181.sip.framing import FramedMessage

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sip"
SIP_FILES = sorted(FIXTURES.glob("*.sip"))


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def msg(*lines: str, body: bytes = b"", eol: str = "\r\n") -> bytes:
    return (eol.join(lines) + eol + eol).encode() + body


MINIMAL = (
    "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0",
    "Via: SIP/2.0/UDP 10.0.0.2:5060;rport;branch=z9hG4bK1",
    "From: <sip:34020000001320000001@3402000000>;tag=a",
    "To: <sip:34020000002000000001@3402000000>",
    "Call-ID: c1",
    "CSeq: 1 MESSAGE",
)


# --- real captures ------------------------------------------------------------


def test_fixture_corpus_is_present() -> None:
    assert len(SIP_FILES) >= 60


@pytest.mark.parametrize("path", SIP_FILES, ids=lambda p: p.name)
def test_every_capture_parses(path: Path) -> None:
    data = path.read_bytes()
    message = parse_message(data)
    check_mandatory(message)
    expected = SipResponse if data.startswith(b"SIP/2.0 ") else SipRequest
    assert type(message) is expected
    assert len(message.body) == int(message.headers["Content-Length"])
    assert isinstance(message.cseq, CSeq)


@pytest.mark.parametrize("path", SIP_FILES, ids=lambda p: p.name)
def test_round_trip_keeps_start_line_headers_and_body(path: Path) -> None:
    first = parse_message(path.read_bytes())
    second = parse_message(bytes(first))
    assert type(second) is type(first)
    if isinstance(first, SipRequest):
        assert isinstance(second, SipRequest)
        assert (second.method, second.uri) == (first.method, first.uri)
    else:
        assert isinstance(second, SipResponse)
        assert (second.status, second.reason) == (first.status, first.reason)

    def without_length(m: SipRequest | SipResponse) -> list[tuple[str, str]]:
        return [(n, v) for n, v in m.headers.items() if n != "Content-Length"]

    assert without_length(second) == without_length(first)
    assert second.body == first.body
    assert second.headers["Content-Length"] == str(len(first.body))


def test_sbgb_contact_with_sip_instance() -> None:
    message = parse_message(fixture("sbgb_register_initial_udp.sip"))
    contact = message.contact
    assert isinstance(contact, NameAddr)
    assert contact.uri.user == "34020000001320000002"
    assert (contact.uri.host, contact.uri.port) == ("127.0.0.1", 38506)
    assert contact.params["+sip.instance"] == '"<urn:uuid:34020000001320000002>"'


def test_sbgb_register_request_uri_has_no_user() -> None:
    message = parse_message(fixture("sbgb_register_initial_udp.sip"))
    assert isinstance(message, SipRequest)
    assert message.uri == "sip:3402000000"
    uri = SipUri.parse(message.uri)
    assert (uri.user, uri.host, uri.port) == (None, "3402000000", None)


def test_camsim_message_request_uri_is_the_platform_address() -> None:
    message = parse_message(fixture("camsim_keepalive_udp.sip"))
    assert isinstance(message, SipRequest)
    assert message.method == "MESSAGE"
    uri = SipUri.parse(message.uri)
    assert (uri.user, uri.host, uri.port) == (None, "127.0.0.1", 15060)


def test_sbgb_headers_without_space_after_colon() -> None:
    message = parse_message(fixture("sbgb_invite_100_trying_udp.sip"))
    assert isinstance(message, SipResponse)
    assert message.status == 100
    assert message.top_via.branch == "z9hG4bKcce85370"
    assert message.call_id == "44214669f4d27301@miniplat"


def test_camsim_body_with_bare_lf_and_no_trailing_crlf() -> None:
    data = fixture("camsim_keepalive_udp.sip")
    message = parse_message(data)
    assert message.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    assert not message.body.endswith(b"\r\n")
    assert data.endswith(message.body)


# --- header forms ---------------------------------------------------------------


def test_compact_header_names() -> None:
    data = msg(
        "MESSAGE sip:a@b SIP/2.0",
        "v: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1",
        "f: <sip:a@b>;tag=x",
        "t: <sip:c@b>",
        "i: cid",
        "CSeq: 1 MESSAGE",
        "m: <sip:a@10.0.0.2:5060>",
        "c: Application/MANSCDP+xml",
        "l: 3",
        body=b"abc",
    )
    message = parse_message(data)
    check_mandatory(message)
    assert message.top_via.host == "10.0.0.2"
    assert message.from_.tag == "x"
    assert message.to.uri.user == "c"
    assert message.call_id == "cid"
    assert message.contact is not None and message.contact.uri.port == 5060
    assert message.content_type == "application/manscdp+xml"
    assert message.body == b"abc"
    assert [name for name, _ in message.headers][:4] == ["Via", "From", "To", "Call-ID"]


@pytest.mark.parametrize("spelling", ["call-id", "CALL-ID", "Call-Id", "cAlL-iD"])
def test_header_names_in_any_case(spelling: str) -> None:
    data = msg(MINIMAL[0], *[line for line in MINIMAL[1:] if not line.startswith("Call-ID")], f"{spelling}: xyz")
    message = parse_message(data)
    assert message.call_id == "xyz"
    assert message.headers.get("CALL-ID") == "xyz"


def test_folded_header_lines_are_joined() -> None:
    data = msg(*MINIMAL, "Subject: 34020000001310000001:0100000001,", "\t 34020000002000000001:0")
    message = parse_message(data)
    assert message.headers["Subject"] == "34020000001310000001:0100000001, 34020000002000000001:0"


def test_several_via_fields_and_comma_separated_vias() -> None:
    data = msg(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/TCP 10.0.0.2;branch=z9hG4bKb",
        "Via: SIP/2.0/UDP 10.0.0.3:5070;branch=z9hG4bKc;received=1.2.3.4",
        *MINIMAL[2:5],
        "CSeq: 1 MESSAGE",
    )
    message = parse_message(data)
    vias = message.vias
    assert [(v.transport, v.host, v.port, v.branch) for v in vias] == [
        ("UDP", "10.0.0.1", 5060, "z9hG4bKa"),
        ("TCP", "10.0.0.2", None, "z9hG4bKb"),
        ("UDP", "10.0.0.3", 5070, "z9hG4bKc"),
    ]
    assert message.top_via.branch == "z9hG4bKa"
    assert vias[2].params["received"] == "1.2.3.4"


def test_via_with_whitespace_around_slashes() -> None:
    via = Via.parse("SIP / 2.0 / UDP\t10.0.0.1:5060 ;branch=z9hG4bKx ; rport")
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "10.0.0.1", 5060, "z9hG4bKx")
    assert "rport" in via.params


def test_bare_lf_line_ends() -> None:
    message = parse_message(msg(*MINIMAL, "Content-Length: 4", body=b"a\nb\n", eol="\n"))
    check_mandatory(message)
    assert message.call_id == "c1"
    assert message.body == b"a\nb\n"


def test_bare_lf_head_with_crlfcrlf_in_body() -> None:
    # This used to split at the body's CRLFCRLF and read the body's start as headers.
    body = b"x\r\n\r\ny"
    message = parse_message(msg(*MINIMAL, f"Content-Length: {len(body)}", body=body, eol="\n"))
    assert message.body == body
    assert message.headers.get("Content-Length") == str(len(body))


def test_leading_crlfs_are_ignored() -> None:
    message = parse_message(b"\r\n\r\n" + msg(*MINIMAL, "Content-Length: 0"))
    assert isinstance(message, SipRequest)
    assert message.method == "MESSAGE"


def test_body_without_content_length_runs_to_the_end() -> None:
    message = parse_message(msg(*MINIMAL, body=b"<Notify/>"))
    assert message.body == b"<Notify/>"


def test_content_length_smaller_than_body_cuts_it() -> None:
    message = parse_message(msg(*MINIMAL, "Content-Length: 3", body=b"abcdef"))
    assert message.body == b"abc"


def test_content_length_larger_than_body_is_an_error() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(msg(*MINIMAL, "Content-Length: 10", body=b"abc"))
    assert info.value.status_hint == 400
    assert not isinstance(info.value, MessageTooLarge)


@pytest.mark.parametrize("value", ["abc", "-1", "+3", "1234567890", "\u00b2", "\u0663"])
def test_bad_content_length(value: str) -> None:
    # Unicode digits used to pass str.isdigit() and then fail int() with a bare ValueError.
    with pytest.raises(SipParseError):
        parse_message(msg(*MINIMAL, f"Content-Length: {value}", body=b"abc"))


def test_oversized_message() -> None:
    data = msg(*MINIMAL, body=b"x" * MAX_MESSAGE_SIZE)
    with pytest.raises(MessageTooLarge) as info:
        parse_message(data)
    assert info.value.status_hint == 513


def test_too_many_header_fields() -> None:
    with pytest.raises(MessageTooLarge):
        parse_message(msg(*MINIMAL, *[f"X-H{i}: v" for i in range(200)]))


def test_overlong_header_line() -> None:
    with pytest.raises(MessageTooLarge):
        parse_message(msg(*MINIMAL, "Subject: " + "a" * 10_000))


@pytest.mark.parametrize(
    "line",
    [
        "MESSAGE sip:a@b SIP/3.0",
        "MESSAGE sip:a@b",
        "MESSAGE  sip:a@b SIP/2.0",
        "MESSAGE sip:a@b SIP/2.0 extra",
        "MESSAGE nocolon SIP/2.0",
        "MESS(AGE sip:a@b SIP/2.0",
        "",
        "hello",
    ],
)
def test_bad_request_lines(line: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(msg(line, *MINIMAL[1:]))
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    "line",
    [
        "SIP/2.0 20 OK",
        "SIP/2.0 2000 OK",
        "SIP/2.0 099 X",
        "SIP/2.0 700 X",
        "SIP/2.0 abc OK",
        "SIP/1.0 200 OK",
        "SIP/2.0 \u00b2\u00b2\u00b2 OK",
    ],
)
def test_bad_status_lines(line: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(msg(line, *MINIMAL[1:]))


def test_status_line_without_reason() -> None:
    message = parse_message(msg("SIP/2.0 200", *MINIMAL[1:]))
    assert isinstance(message, SipResponse)
    assert (message.status, message.reason) == (200, "")


@pytest.mark.parametrize("line", ["NoColonHere", ": value", "Bad Name: value", "X(y): z"])
def test_header_line_without_colon_or_with_bad_name(line: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(msg(*MINIMAL, line))


# --- structured headers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "user", "host", "port"),
    [
        ("sip:34020000001320000001@3402000000", "34020000001320000001", "3402000000", None),
        ("sip:3402000000", None, "3402000000", None),
        ("sip:127.0.0.1:15060", None, "127.0.0.1", 15060),
        ("SIP:u:pw@[::1]:5070;transport=tcp?x=y", "u", "[::1]", 5070),
    ],
)
def test_sip_uri_forms(text: str, user: str | None, host: str, port: int | None) -> None:
    uri = SipUri.parse(text)
    assert (uri.user, uri.host, uri.port) == (user, host, port)


@pytest.mark.parametrize(
    "text", ["tel:123", "sip:", "sip:a@", "sip:h:0", "sip:h:65536", "sip:h:\u00b2", "sip:h:" + "1" * 5000, "sip:[::1"]
)
def test_bad_sip_uris(text: str) -> None:
    # '\u00b2' and a 5000-digit port used to escape as a bare ValueError from int().
    with pytest.raises(SipParseError):
        SipUri.parse(text)


def test_name_addr_forms() -> None:
    quoted = NameAddr.parse('"Cam, <1>" <sip:a@b>;tag=t1')
    assert (quoted.display, quoted.uri.user, quoted.tag) == ("Cam, <1>", "a", "t1")
    bare = NameAddr.parse("sip:a@b;tag=t2")
    assert (bare.display, bare.tag) == (None, "t2")
    assert NameAddr.parse(str(quoted)) == quoted


@pytest.mark.parametrize("text", ["1 MESSAGE x", "MESSAGE", "2147483648 MESSAGE", "\u00b2 MESSAGE", "-1 MESSAGE"])
def test_bad_cseq(text: str) -> None:
    with pytest.raises(SipParseError):
        CSeq.parse(text)


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_empty_via_value(value: str) -> None:
    # This used to raise IndexError from top_via.
    message = parse_message(msg(MINIMAL[0], f"Via: {value}", *MINIMAL[2:]))
    with pytest.raises(SipParseError):
        _ = message.top_via
    with pytest.raises(SipParseError):
        check_mandatory(message)


def test_empty_contact_value() -> None:
    # This used to raise IndexError.
    message = parse_message(msg(*MINIMAL, "Contact: "))
    with pytest.raises(SipParseError):
        _ = message.contact


def test_contact_star_is_none() -> None:
    assert parse_message(msg(*MINIMAL, "Contact: *")).contact is None


@pytest.mark.parametrize(
    ("drop", "replace"),
    [
        ("Via", None),
        ("From", None),
        ("To", None),
        ("Call-ID", None),
        ("CSeq", None),
        ("CSeq", "CSeq: 1 REGISTER"),
        ("Via", "Via: SIP/2.0/UDP 10.0.0.2:5060"),
    ],
)
def test_check_mandatory(drop: str, replace: str | None) -> None:
    lines = [line for line in MINIMAL if not line.startswith(drop + ":")]
    if replace is not None:
        lines.append(replace)
    with pytest.raises(SipParseError):
        check_mandatory(parse_message(msg(*lines)))


def test_headers_multimap() -> None:
    headers = Headers([("via", "a"), ("v", "b"), ("To", "t")])
    assert headers.get_all("VIA") == ["a", "b"]
    headers.set("Via", "c")
    assert headers.items() == [("Via", "c"), ("To", "t")]
    headers.prepend("Via", "z")
    headers.remove("To")
    assert headers.items() == [("Via", "z"), ("Via", "c")]
    assert "to" not in headers and "via" in headers
    with pytest.raises(KeyError):
        _ = headers["To"]


def test_make_response_copies_dialog_headers_and_adds_to_tag() -> None:
    request = parse_message(fixture("sbgb_keepalive_udp.sip"))
    assert isinstance(request, SipRequest)
    response = make_response(request, 200, to_tag="tt")
    assert (response.status, response.reason) == (200, "OK")
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    assert response.to.tag == "tt"
    assert make_response(request, 100, to_tag="tt").to.tag is None
    assert parse_message(bytes(response)).headers.get("Content-Length") == "0"


def test_parse_head_ignores_content_length() -> None:
    head = msg(*MINIMAL, "Content-Length: 99999")
    with pytest.raises(SipParseError):
        parse_message(head)
    message = parse_head(head)
    assert isinstance(message, SipRequest)
    assert message.body == b""


# --- the h11 trio and the aiortc truncation loop ------------------------------------

TRIO = ["sbgb_register_initial_udp.sip", "camsim_catalog_response_udp.sip", "sbgb_invite_200_sdp_udp.sip"]


@pytest.mark.parametrize("name", TRIO)
def test_whole(name: str) -> None:
    data = fixture(name)
    assert bytes(parse_message(data)) == bytes(parse_message(bytes(parse_message(data))))


@pytest.mark.parametrize("name", TRIO)
def test_one_byte_at_a_time_through_the_framer(name: str) -> None:
    data = fixture(name)
    framer = StreamFramer()
    out: list[object] = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
    assert out == [FramedMessage(data)]
    assert framer.buffered == 0
    assert bytes(parse_message(data)) == bytes(parse_message(out[0].data))  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", TRIO)
def test_with_trailing_data(name: str) -> None:
    data = fixture(name)
    trailing = b"REGISTER sip:x SIP/2.0\r\nVia: half"
    assert parse_message(data + trailing).body == parse_message(data).body
    framer = StreamFramer()
    assert framer.feed(data + trailing) == [FramedMessage(data)]
    assert framer.buffered == len(trailing)


@pytest.mark.parametrize("path", SIP_FILES, ids=lambda p: p.name)
def test_every_truncation_parses_or_raises_sip_parse_error(path: Path) -> None:
    data = path.read_bytes()
    for n in range(len(data) + 1):
        try:
            message = parse_message(data[:n])
        except SipParseError:
            continue
        assert isinstance(message, (SipRequest, SipResponse))
