"""GB/T 28181 SDP: real offers and answers, composed examples in the shape of docs/gb28181.md §15.6, SSRC rules, answer rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.errors import InvalidDeviceId, SipError
from gateway.gb28181.sdp import (
    RTP_AVP,
    TCP_RTP_AVP,
    Connection,
    Direction,
    MediaSessionSpec,
    MediaTransport,
    SdpBuildError,
    SdpError,
    SdpSession,
    SessionType,
    Setup,
    answer_to_spec,
    build_sdp,
    make_ssrc,
    offer_for_play,
    offer_transport,
    parse_sdp,
    spec_from_offer,
    ssrc_to_int,
    ssrc_to_str,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sdp"
CHANNEL = "34020000001320000001"


def _fixture(name: str) -> SdpSession:
    return parse_sdp((FIXTURES / name).read_bytes())


def _crlf(text: str) -> bytes:
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n"


# Composed (not captures), in the shape of docs/gb28181.md §15.6: live offer, its answer, playback offer over TCP-passive.
LIVE_OFFER = _crlf("""
v=0
o=34020000001320000001 0 0 IN IP4 192.168.1.10
s=Play
c=IN IP4 192.168.1.10
t=0 0
m=video 30002 RTP/AVP 96 97 98 99
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:97 MPEG4/90000
a=rtpmap:98 H264/90000
a=rtpmap:99 H265/90000
y=0200000001
""")
LIVE_ANSWER = _crlf("""
v=0
o=34020000001320000001 0 0 IN IP4 192.168.1.64
s=Play
c=IN IP4 192.168.1.64
t=0 0
m=video 15060 RTP/AVP 96
a=sendonly
a=rtpmap:96 PS/90000
a=filesize:0
y=0200000001
f=
""")
PLAYBACK_OFFER = _crlf("""
v=0
o=34020000001320000001 0 0 IN IP4 192.168.1.10
s=Playback
u=34020000001320000001:0
c=IN IP4 192.168.1.10
t=1716163200 1716166800
m=video 30004 TCP/RTP/AVP 96 97 98 99
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:97 MPEG4/90000
a=rtpmap:98 H264/90000
a=rtpmap:99 H265/90000
a=setup:passive
a=connection:new
y=1200000002
""")


# --- the real bodies ------------------------------------------------------------------------

# name: (port, protocol, direction, setup, y=, payload types, file size)
REAL = {
    "platform_offer_udp_to_sbgb.sdp": (40000, RTP_AVP, Direction.RECVONLY, None, "0100000005", (96, 97, 98), None),
    "platform_offer_tcp_passive_setup.sdp": (
        40001,
        TCP_RTP_AVP,
        Direction.RECVONLY,
        Setup.PASSIVE,
        "0100000006",
        (96, 97, 98),
        None,
    ),
    "platform_offer_tcp_active_setup.sdp": (
        40002,
        TCP_RTP_AVP,
        Direction.RECVONLY,
        Setup.ACTIVE,
        "0100000007",
        (96, 97, 98),
        None,
    ),
    "platform_offer_udp_to_camsim.sdp": (40003, RTP_AVP, Direction.RECVONLY, None, "0100000008", (96, 97, 98), None),
    "sbgb_answer_udp_filesize.sdp": (40000, RTP_AVP, Direction.SENDONLY, None, "0100000005", (96,), 0),
    "sbgb_answer_tcp_active_setup.sdp": (40001, TCP_RTP_AVP, Direction.SENDONLY, Setup.ACTIVE, "0100000006", (96,), 0),
    "sbgb_answer_tcp_active_setup_to_active_offer.sdp": (
        40002,
        TCP_RTP_AVP,
        Direction.SENDONLY,
        Setup.ACTIVE,
        "0100000007",
        (96,),
        0,
    ),
    # camsim: a=recvonly in an answer and its device ID in y=: parsed, y= unusable, no error.
    "camsim_answer_udp_recvonly_y_device_id.sdp": (40003, RTP_AVP, Direction.RECVONLY, None, None, (96, 98, 97), None),
}
NAMES = sorted(REAL)


def test_every_fixture_is_listed() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.sdp")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_real_bodies_parse(name: str) -> None:
    port, protocol, direction, setup, ssrc, pts, file_size = REAL[name]
    s = _fixture(name)
    assert (s.port, s.protocol, s.direction, s.setup, s.ssrc, s.payload_types, s.file_size) == (
        port,
        protocol,
        direction,
        setup,
        ssrc,
        pts,
        file_size,
    )
    assert s.ssrc_valid is (ssrc is not None)
    assert (s.kind, s.session_type, s.connection_address, s.origin_address) == (
        "video",
        SessionType.PLAY,
        *["127.0.0.1"] * 2,
    )
    assert (s.start_time, s.end_time, s.uri, s.f_line, s.stream_number) == (0, 0, None, None, None)
    assert s.rtpmap[96] == "PS/90000"
    assert set(s.rtpmap) == set(pts)
    assert s.connection is (Connection.NEW if protocol == TCP_RTP_AVP else None)
    assert s.attributes == ()


def test_real_body_details() -> None:
    camsim = _fixture("camsim_answer_udp_recvonly_y_device_id.sdp")
    assert camsim.ssrc_raw == "34020000001320000010"
    assert camsim.ssrc_int is None
    assert dict(camsim.rtpmap) == {96: "PS/90000", 98: "H264/90000", 97: "MPEG4/90000"}
    offer = _fixture("platform_offer_udp_to_sbgb.sdp")
    assert (offer.origin_user, offer.ssrc_int, offer.is_tcp) == ("34020000002000000001", 100000005, False)
    assert _fixture("sbgb_answer_udp_filesize.sdp").origin_user == "34020000001320000002"


@pytest.mark.parametrize("name", NAMES)
def test_real_bodies_round_trip(name: str) -> None:
    s = _fixture(name)
    assert parse_sdp(build_sdp(s)) == s


@pytest.mark.parametrize(
    "name",
    [
        "platform_offer_udp_to_sbgb.sdp",
        "platform_offer_tcp_passive_setup.sdp",
        "platform_offer_tcp_active_setup.sdp",
        "platform_offer_udp_to_camsim.sdp",
        "sbgb_answer_udp_filesize.sdp",
    ],
)
def test_bodies_in_our_line_order_rebuild_byte_exact(name: str) -> None:
    body = (FIXTURES / name).read_bytes()
    assert build_sdp(parse_sdp(body)) == body


# --- composed examples (shape of docs/gb28181.md §15.6) ----------------------------------------------------------


def test_live_offer_byte_exact() -> None:
    offer = offer_for_play(
        origin_user=CHANNEL, media_host="192.168.1.10", media_port=30002, ssrc=make_ssrc("3402000000", 1)
    )
    assert build_sdp(offer) == LIVE_OFFER
    assert len(LIVE_OFFER) == 247  # the example's Content-Length
    assert parse_sdp(LIVE_OFFER) == offer


def test_live_answer_parses_and_rebuilds_byte_exact() -> None:
    answer = parse_sdp(LIVE_ANSWER)
    assert (answer.connection_address, answer.port, answer.direction) == ("192.168.1.64", 15060, Direction.SENDONLY)
    assert (answer.file_size, answer.ssrc, answer.f_line) == (0, "0200000001", "")
    assert build_sdp(answer) == LIVE_ANSWER
    assert len(LIVE_ANSWER) == 183


def test_playback_offer_is_the_live_offer_with_history_fields() -> None:
    live = offer_for_play(
        origin_user=CHANNEL,
        media_host="192.168.1.10",
        media_port=30004,
        ssrc=make_ssrc("3402000000", 2, history=True),
        transport=MediaTransport.TCP_PASSIVE,
    )
    playback = dataclasses.replace(
        live, session_type=SessionType.PLAYBACK, uri=f"{CHANNEL}:0", start_time=1716163200, end_time=1716166800
    )
    assert build_sdp(playback) == PLAYBACK_OFFER
    assert parse_sdp(PLAYBACK_OFFER) == playback
    assert SessionType.PLAYBACK.history and not SessionType.PLAY.history


def test_download_offer_carries_downloadspeed() -> None:
    playback = parse_sdp(PLAYBACK_OFFER)
    download = dataclasses.replace(playback, session_type=SessionType.DOWNLOAD, download_speed=4)
    body = build_sdp(download)
    assert b"s=Download\r\n" in body and b"a=downloadspeed:4\r\n" in body
    assert parse_sdp(body).download_speed == 4


@pytest.mark.parametrize("transport", list(MediaTransport))
def test_offer_for_play_transport_lines(transport: MediaTransport) -> None:
    offer = offer_for_play(
        origin_user=CHANNEL, media_host="10.0.0.1", media_port=30000, ssrc="0200000001", transport=transport
    )
    body = build_sdp(offer)
    tcp = transport is not MediaTransport.UDP
    assert (b"TCP/RTP/AVP" in body, b"a=connection:new\r\n" in body) == (tcp, tcp)
    assert (b"a=setup:passive\r\n" in body) is (transport is MediaTransport.TCP_PASSIVE)
    assert (b"a=setup:active\r\n" in body) is (transport is MediaTransport.TCP_ACTIVE)
    assert offer_transport(parse_sdp(body)) is transport


def test_offer_for_play_options() -> None:
    offer = offer_for_play(
        origin_user=CHANNEL,
        media_host="10.0.0.1",
        media_port=1,
        ssrc="630886",
        origin_address="10.0.0.2",
        stream_number=1,
    )
    assert (offer.origin_address, offer.ssrc, offer.stream_number) == ("10.0.0.2", "0000630886", 1)
    assert b"a=streamnumber:1\r\n" in build_sdp(offer)
    for bad in ("0000000000", "abc", "12345678901"):
        with pytest.raises(SdpBuildError):
            offer_for_play(origin_user=CHANNEL, media_host="10.0.0.1", media_port=1, ssrc=bad)


# --- parsing rules ----------------------------------------------------------------------------


def test_lf_only_and_no_final_newline() -> None:
    expected = parse_sdp(LIVE_OFFER)
    assert parse_sdp(LIVE_OFFER.replace(b"\r\n", b"\n")) == expected
    assert parse_sdp(LIVE_OFFER.rstrip(b"\r\n")) == expected
    assert parse_sdp(LIVE_OFFER.replace(b"\r\n", b"\r")) == expected


def test_tokens_are_case_insensitive() -> None:
    body = b"V=0\ns=PLAYBACK\nc=in ip4 10.0.0.9\nM=video 9000 tcp/rtp/avp 96\na=SETUP:Active\na=Connection:NEW\na=SendOnly\n"
    s = parse_sdp(body)
    assert (s.session_type, s.connection_address, s.protocol) == (SessionType.PLAYBACK, "10.0.0.9", TCP_RTP_AVP)
    assert (s.setup, s.connection, s.direction) == (Setup.ACTIVE, Connection.NEW, Direction.SENDONLY)
    assert parse_sdp(b"c=IN IP4 1.2.3.4\nm=video 1 RTP/AVP/TCP 96\n").protocol == TCP_RTP_AVP


def test_unknown_lines_and_attributes_are_tolerated_and_kept_in_order() -> None:
    body = LIVE_ANSWER.replace(
        b"a=filesize:0\r\n",
        b"a=username:34020000001320000001\r\nb=AS:2048\r\nnonsense\r\na=password:x:y\r\na=flag\r\ni=info\r\n",
    )
    s = parse_sdp(body)
    assert s.attributes == (("username", "34020000001320000001"), ("password", "x:y"), ("flag", None))
    assert s.file_size is None and s.ssrc == "0200000001"
    assert parse_sdp(build_sdp(s)) == s


@pytest.mark.parametrize(
    ("line", "number"),
    [
        (b"a=streamnumber:1", 1),
        (b"a=stream:0", 0),
        (b"a=streamprofile:2", 2),
        (b"a=streamMode:MAIN", 0),
        (b"a=streamMode:SUB", 1),
        (b"a=streamnumber:x", None),
    ],
)
def test_stream_number_variants(line: bytes, number: int | None) -> None:
    s = parse_sdp(LIVE_OFFER + line + b"\r\n")
    assert s.stream_number == number
    assert (len(s.attributes) == 1) is (number is None)


@pytest.mark.parametrize(
    ("y_line", "ssrc"),
    [
        (b"y=0200000001", "0200000001"),
        (b"y=630886", "0000630886"),  # SRS wrote 6 digits; the camera echoed them padded
        (b"y=4294967295", "4294967295"),
        (b"y=4294967296", None),
        (b"y=0000000000", None),
        (b"y=34020000001320000010", None),
        (b"y=02000x0001", None),
        (b"y=", None),
        (b"", None),
    ],
)
def test_y_line_is_optional_and_never_raises(y_line: bytes, ssrc: str | None) -> None:
    s = parse_sdp(LIVE_OFFER.replace(b"y=0200000001", y_line))
    assert (s.ssrc, s.ssrc_valid) == (ssrc, ssrc is not None)


def test_f_line_u_line_times_and_fmtp() -> None:
    body = PLAYBACK_OFFER + b"a=fmtp:126 profile-level-id=42e01e\r\nf=v/2/6/25/1/4096a/1/8/1\r\n"
    s = parse_sdp(body)
    assert (s.uri, s.start_time, s.end_time) == (f"{CHANNEL}:0", 1716163200, 1716166800)
    assert (dict(s.fmtp), s.f_line) == ({126: "profile-level-id=42e01e"}, "v/2/6/25/1/4096a/1/8/1")


def test_media_level_c_wins_and_later_media_sections_are_skipped() -> None:
    body = b"c=IN IP4 1.1.1.1\nm=video 1000 RTP/AVP 96\nc=IN IP4 2.2.2.2\na=sendonly\nm=audio 2000 RTP/AVP 8\nc=IN IP4 3.3.3.3\na=recvonly\ny=0100000001\n"
    s = parse_sdp(body)
    assert (s.kind, s.port, s.connection_address, s.direction, s.ssrc) == (
        "video",
        1000,
        "2.2.2.2",
        Direction.SENDONLY,
        "0100000001",
    )


def test_unknown_session_name_is_kept_verbatim() -> None:
    s = parse_sdp(LIVE_OFFER.replace(b"s=Play", b"s=EmbeddedSDK"))
    assert s.session_type == "EmbeddedSDK"
    assert b"s=EmbeddedSDK\r\n" in build_sdp(s)


@pytest.mark.parametrize(
    "body",
    [
        LIVE_OFFER.replace(b"m=video 30002 RTP/AVP 96 97 98 99\r\n", b""),  # no m=
        LIVE_OFFER.replace(b"c=IN IP4 192.168.1.10\r\n", b""),  # no c=
        LIVE_OFFER.replace(b"c=IN IP4 192.168.1.10", b"c=IN IP4"),
        LIVE_OFFER.replace(b"c=IN IP4 192.168.1.10", b"c=XX IP4 192.168.1.10"),
        LIVE_OFFER.replace(b"30002 RTP/AVP 96 97 98 99", b"30002 RTP/AVP"),
        LIVE_OFFER.replace(b"30002", b"0"),
        LIVE_OFFER.replace(b"30002", b"70000"),
        LIVE_OFFER.replace(b"30002", b"port"),
        LIVE_OFFER.replace(b"30002", "３０００２".encode()),  # full-width digits are not digits here
        LIVE_OFFER.replace(b"RTP/AVP", b"UDP/TLS/RTP/SAVP"),
        LIVE_OFFER.replace(b"96 97 98 99", b"96 200"),
        LIVE_OFFER.replace(b"96 97 98 99", b"96 PS"),
        LIVE_OFFER.replace(b"t=0 0", b"t=now"),
        b"",
        b"v=0\r\n" * 5000,  # over MAX_SDP_SIZE
    ],
)
def test_unusable_bodies_raise_sdp_error_488(body: bytes) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(body)
    assert info.value.status_hint == 488
    assert isinstance(info.value, SipError) and isinstance(info.value, ValueError)


# --- building ---------------------------------------------------------------------------------


def test_build_always_ends_with_crlf_and_pads_y() -> None:
    s = dataclasses.replace(parse_sdp(LIVE_OFFER.rstrip(b"\r\n")), ssrc="630886")
    body = build_sdp(s)
    assert body.endswith(b"\r\ny=0000630886\r\n")
    assert b"\n" not in body.replace(b"\r\n", b"")


@pytest.mark.parametrize(
    "change",
    [{"uri": "x\r\na=setup:active"}, {"origin_user": "a\nb"}, {"attributes": (("x", "1\r\n"),)}, {"ssrc": "12ab"}],
)
def test_build_refuses_line_injection_and_bad_ssrc(change: dict[str, object]) -> None:
    with pytest.raises(SdpBuildError):
        build_sdp(dataclasses.replace(parse_sdp(LIVE_OFFER), **change))  # type: ignore[arg-type]


def test_session_is_frozen_including_its_maps() -> None:
    s = parse_sdp(LIVE_OFFER)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.rtpmap[100] = "x"  # type: ignore[index]


def test_ipv6_addresses() -> None:
    s = dataclasses.replace(parse_sdp(LIVE_OFFER), connection_address="2001:db8::1", origin_address="2001:db8::1")
    body = build_sdp(s)
    assert b"c=IN IP6 2001:db8::1\r\n" in body
    assert parse_sdp(body) == s


# --- SSRC (docs/gb28181.md §15.4) -----------------------------------------------------------------------


def test_make_ssrc_vectors() -> None:
    assert make_ssrc("3402000000", 1) == "0200000001"
    assert make_ssrc("3402000000", 1, history=True) == "1200000001"
    assert make_ssrc("3402000000", 10001) == "0200000001"  # digits 7-10 are sequence % 10000
    assert make_ssrc("1201010011", 9999) == "0101009999"
    assert make_ssrc("3402000000.spvmn.cn", 2) == "0200000002"


def test_make_ssrc_refuses_bad_domains_and_all_zeros() -> None:
    for bad in ("34020", "abcdefghij", ""):
        with pytest.raises(InvalidDeviceId):
            make_ssrc(bad, 1)
    with pytest.raises(SdpBuildError):
        make_ssrc("1230000000", 20000)  # would be 0000000000 (docs/gb28181.md §19 item 2)
    assert make_ssrc("1230000000", 20000, history=True) == "1000000000"


def test_ssrc_int_conversions() -> None:
    assert ssrc_to_int("0200000001") == 200000001 == 0x0BEBC201
    assert ssrc_to_int("1200000001") == 0x47868C01
    assert ssrc_to_str(200000001) == "0200000001"
    for bad in ("", "abc", "12345678901", "4294967296"):
        with pytest.raises(SdpError):
            ssrc_to_int(bad)
    for value in (-1, 2**32):
        with pytest.raises(SdpBuildError):
            ssrc_to_str(value)


# --- answer_to_spec -----------------------------------------------------------------------------


def test_udp_offer_and_answer() -> None:
    spec = answer_to_spec(_fixture("platform_offer_udp_to_sbgb.sdp"), _fixture("sbgb_answer_udp_filesize.sdp"))
    assert spec == MediaSessionSpec(
        ssrc=100000005,
        transport=MediaTransport.UDP,
        remote_host="127.0.0.1",
        remote_port=40000,
        payload_types=(96,),
        stream_number=None,
        session_type=SessionType.PLAY,
        local_host="127.0.0.1",
        local_port=40000,
        encodings=((96, "PS/90000"),),
    )
    assert spec.ssrc_text == "0100000005"
    hash(spec)


def test_tcp_passive_offer_device_connects_to_us() -> None:
    spec = answer_to_spec(
        _fixture("platform_offer_tcp_passive_setup.sdp"), _fixture("sbgb_answer_tcp_active_setup.sdp")
    )
    assert (spec.transport, spec.ssrc, spec.local_port) == (MediaTransport.TCP_PASSIVE, 100000006, 40001)


def test_tcp_active_offer_connects_to_the_answer_address() -> None:
    offer = offer_for_play(
        origin_user=CHANNEL,
        media_host="192.168.1.10",
        media_port=30004,
        ssrc="0200000003",
        transport=MediaTransport.TCP_ACTIVE,
    )
    answer = parse_sdp(
        LIVE_ANSWER.replace(b"15060 RTP/AVP", b"15062 TCP/RTP/AVP").replace(b"y=", b"a=setup:passive\r\ny=")
    )
    spec = answer_to_spec(offer, answer)
    assert (spec.transport, spec.remote_host, spec.remote_port) == (MediaTransport.TCP_ACTIVE, "192.168.1.64", 15062)
    assert (spec.local_host, spec.local_port) == ("192.168.1.10", 30004)


def test_tcp_active_offer_answered_with_setup_active_keeps_the_offered_mode() -> None:
    # sbgb answers a=setup:active even to an active offer (fixtures README, sbgb traits)
    offer = _fixture("platform_offer_tcp_active_setup.sdp")
    spec = answer_to_spec(offer, _fixture("sbgb_answer_tcp_active_setup_to_active_offer.sdp"))
    assert (spec.transport, spec.remote_host, spec.remote_port, spec.ssrc) == (
        MediaTransport.TCP_ACTIVE,
        "127.0.0.1",
        40002,
        100000007,
    )


def test_answer_without_y_keeps_the_offered_ssrc() -> None:
    answer = parse_sdp(LIVE_ANSWER.replace(b"y=0200000001\r\n", b""))
    assert answer_to_spec(parse_sdp(LIVE_OFFER), answer).ssrc == 200000001


def test_answer_with_unusable_y_keeps_the_offered_ssrc() -> None:
    spec = answer_to_spec(
        _fixture("platform_offer_udp_to_camsim.sdp"), _fixture("camsim_answer_udp_recvonly_y_device_id.sdp")
    )
    assert spec.ssrc == 100000008
    assert spec.payload_types == (96, 98, 97)
    assert spec.encodings == ((96, "PS/90000"), (98, "H264/90000"), (97, "MPEG4/90000"))


def test_answer_with_a_different_y_is_adopted() -> None:
    answer = parse_sdp(LIVE_ANSWER.replace(b"y=0200000001", b"y=0200000777"))
    assert answer_to_spec(parse_sdp(LIVE_OFFER), answer).ssrc == 200000777


def test_udp_answer_with_setup_active_stays_udp() -> None:
    answer = parse_sdp(LIVE_ANSWER + b"a=setup:active\r\n")
    assert answer.setup is Setup.ACTIVE
    assert answer_to_spec(parse_sdp(LIVE_OFFER), answer).transport is MediaTransport.UDP


def test_tcp_offer_answered_with_rtp_avp_falls_back_to_udp() -> None:
    spec = answer_to_spec(parse_sdp(PLAYBACK_OFFER), parse_sdp(LIVE_ANSWER + b"a=setup:active\r\n"))
    assert (spec.transport, spec.session_type) == (MediaTransport.UDP, SessionType.PLAYBACK)


def test_udp_offer_answered_with_tcp_is_refused() -> None:
    with pytest.raises(SdpError) as info:
        answer_to_spec(parse_sdp(LIVE_OFFER), _fixture("sbgb_answer_tcp_active_setup.sdp"))
    assert info.value.status_hint == 488


def test_offer_as_spec_or_as_session_gives_the_same_result() -> None:
    offer = parse_sdp(PLAYBACK_OFFER)
    answer = parse_sdp(LIVE_ANSWER.replace(b"RTP/AVP", b"TCP/RTP/AVP").replace(b"y=0200000001", b"y=1200000002"))
    spec = spec_from_offer(offer)
    assert (spec.remote_host, spec.remote_port, spec.transport) == ("", 0, MediaTransport.TCP_PASSIVE)
    assert answer_to_spec(spec, answer) == answer_to_spec(offer, answer)


def test_stream_number_comes_from_the_offer_else_the_answer() -> None:
    offer = offer_for_play(origin_user=CHANNEL, media_host="10.0.0.1", media_port=1, ssrc="1", stream_number=1)
    answer = parse_sdp(LIVE_ANSWER + b"a=streamprofile:0\r\n")
    assert answer_to_spec(offer, answer).stream_number == 1
    assert answer_to_spec(parse_sdp(LIVE_OFFER), answer).stream_number == 0


def test_answer_without_rtpmap_takes_names_from_the_offer() -> None:
    answer = parse_sdp(LIVE_ANSWER.replace(b"a=rtpmap:96 PS/90000\r\n", b"").replace(b"RTP/AVP 96", b"RTP/AVP 96 100"))
    assert answer_to_spec(parse_sdp(LIVE_OFFER), answer).encodings == ((96, "PS/90000"),)


@pytest.mark.parametrize(
    "offer",
    [
        LIVE_OFFER.replace(b"y=0200000001\r\n", b""),
        LIVE_OFFER.replace(b"s=Play", b"s=Live"),
    ],
)
def test_offer_without_ssrc_or_known_session_cannot_make_a_spec(offer: bytes) -> None:
    with pytest.raises(SdpError):
        answer_to_spec(parse_sdp(offer), parse_sdp(LIVE_ANSWER))
