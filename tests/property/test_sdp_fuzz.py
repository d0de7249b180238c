"""Fuzzing the SDP reader with h11's invariant: an SdpSession, or SdpError, nothing else (docs/design.md §7)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.gb28181.sdp import (
    RTP_AVP,
    TCP_RTP_AVP,
    Connection,
    Direction,
    MediaSessionSpec,
    SdpError,
    SdpSession,
    SessionType,
    Setup,
    answer_to_spec,
    build_sdp,
    offer_for_play,
    parse_sdp,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sdp"
BODIES = {p.name: p.read_bytes() for p in sorted(FIXTURES.glob("*.sdp"))}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OFFER = offer_for_play(origin_user="34020000001320000001", media_host="10.0.0.1", media_port=30000, ssrc="0200000001")


def _parses_or_sdp_error(body: bytes) -> SdpSession | None:
    try:
        session = parse_sdp(body)
    except SdpError as exc:
        assert exc.status_hint == 488
        return None
    assert isinstance(session, SdpSession)
    return session


def test_fixtures_exist() -> None:
    assert len(BODIES) == 8


# --- h11 trio and aiortc truncation -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BODIES))
def test_whole_with_trailing_data_and_lf(name: str) -> None:
    body = BODIES[name]
    whole = parse_sdp(body)
    assert parse_sdp(body + b"x=trailing\r\nb=AS:512\r\n\r\n") == whole
    assert parse_sdp(body.replace(b"\r\n", b"\n")) == whole
    assert parse_sdp(body.rstrip(b"\r\n")) == whole


@pytest.mark.parametrize("name", sorted(BODIES))
def test_every_truncation(name: str) -> None:
    body = BODIES[name]
    m_line_end = body.index(b"\n", body.index(b"m=")) + 1
    for n in range(len(body) + 1):
        session = _parses_or_sdp_error(body[:n])
        if n >= m_line_end:  # c= comes before m= in all of them: from here on it must parse
            assert session is not None and session.port == parse_sdp(body).port


@pytest.mark.parametrize("name", sorted(BODIES))
def test_every_single_byte_deletion(name: str) -> None:
    body = BODIES[name]
    for i in range(len(body)):
        _parses_or_sdp_error(body[:i] + body[i + 1 :])


# --- hypothesis ---------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1024))
def test_any_bytes(body: bytes) -> None:
    _parses_or_sdp_error(body)


@FUZZ
@given(st.sampled_from(sorted(BODIES)), st.data())
def test_mutated_fixtures(name: str, data: st.DataObject) -> None:
    body = bytearray(BODIES[name])
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(body)))
        op = data.draw(st.sampled_from(["insert", "replace", "delete"]))
        byte = data.draw(st.integers(0, 255))
        if op == "insert":
            body[i:i] = bytes([byte])
        elif i < len(body):
            body[i : i + 1] = b"" if op == "delete" else bytes([byte])
    session = _parses_or_sdp_error(bytes(body))
    if session is not None:
        try:
            spec = answer_to_spec(OFFER, session)
        except SdpError:
            return
        assert isinstance(spec, MediaSessionSpec)


SDP_LINE = st.builds(
    lambda k, v: f"{k}={v}",
    st.sampled_from(list("vosuctmayfbik") + ["M", "C", "A"]),
    st.text(st.sampled_from(list(" :/.0123456789INPVRTACvideoaudsetupctiv\t\u00e9\x00")), max_size=40),
)


@FUZZ
@given(st.lists(SDP_LINE, max_size=20), st.sampled_from(["\r\n", "\n", "\r"]))
def test_sdp_shaped_lines(lines: list[str], eol: str) -> None:
    _parses_or_sdp_error(eol.join(lines).encode("utf-8"))


TOKEN = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789.-_"), min_size=1, max_size=12)
ATTR_NAME = TOKEN.filter(
    lambda n: (
        n
        not in {
            "rtpmap",
            "fmtp",
            "setup",
            "connection",
            "downloadspeed",
            "filesize",
            "streamnumber",
            "stream",
            "streamprofile",
            "streammode",
            "recvonly",
            "sendonly",
            "sendrecv",
        }
    )
)
PT = st.integers(0, 127)


@st.composite
def sessions(draw: st.DrawFn) -> SdpSession:
    pts = tuple(draw(st.lists(PT, min_size=1, max_size=5)))
    tcp = draw(st.booleans())
    return SdpSession(
        origin_user=draw(TOKEN),
        origin_address=draw(st.ip_addresses().map(str)),
        session_type=draw(st.sampled_from(list(SessionType))),
        connection_address=draw(st.ip_addresses().map(str)),
        port=draw(st.integers(1, 65535)),
        payload_types=pts,
        kind=draw(st.sampled_from(["video", "audio"])),
        protocol=TCP_RTP_AVP if tcp else RTP_AVP,
        rtpmap=draw(st.dictionaries(PT, TOKEN.map(lambda t: f"{t}/90000"), max_size=4)),
        fmtp=draw(st.dictionaries(PT, TOKEN.map(lambda t: f"profile={t}"), max_size=2)),
        direction=draw(st.none() | st.sampled_from(list(Direction))),
        setup=draw(st.none() | st.sampled_from(list(Setup))),
        connection=draw(st.none() | st.sampled_from(list(Connection))),
        ssrc=draw(st.none() | st.integers(1, 2**32 - 1).map(lambda v: f"{v:010d}")),
        f_line=draw(st.none() | st.just("") | st.just("v/2/6/25/1/4096a/1/8/1")),
        uri=draw(st.none() | TOKEN.map(lambda t: f"{t}:0")),
        start_time=draw(st.integers(0, 2**33)),
        end_time=draw(st.integers(0, 2**33)),
        download_speed=draw(st.none() | st.integers(0, 16)),
        file_size=draw(st.none() | st.integers(0, 2**40)),
        stream_number=draw(st.none() | st.integers(0, 9)),
        attributes=tuple(draw(st.lists(st.tuples(ATTR_NAME, st.none() | TOKEN), max_size=4))),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_build_parse_round_trip(session: SdpSession) -> None:
    body = build_sdp(session)
    assert body.endswith(b"\r\n")
    assert parse_sdp(body) == session
