"""MANSRTSP playback control bodies (docs/gb28181.md §15.9)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.gb28181.mansrtsp import (
    MansrtspError,
    MansrtspMethod,
    MansrtspRequest,
    build_request,
    parse_request,
    parse_response,
    pause,
    resume,
    seek,
    set_scale,
    teardown,
)


def test_bodies_are_the_notes_examples_byte_for_byte() -> None:
    assert pause(3) == b"PAUSE RTSP/1.0\r\nCSeq: 3\r\nPauseTime: now\r\n"
    assert resume(4) == b"PLAY RTSP/1.0\r\nCSeq: 4\r\nRange: npt=now-\r\n"
    assert seek(5, 120) == b"PLAY RTSP/1.0\r\nCSeq: 5\r\nRange: npt=120-\r\n"
    assert set_scale(6, 2) == b"PLAY RTSP/1.0\r\nCSeq: 6\r\nScale: 2.000000\r\n"
    assert teardown(7) == b"TEARDOWN RTSP/1.0\r\nCSeq: 7\r\n"
    assert seek(8, 12.5) == b"PLAY RTSP/1.0\r\nCSeq: 8\r\nRange: npt=12.5-\r\n"


def test_parse_what_wvp_libgb_and_the_2011_profile_send() -> None:
    req = parse_request(b"PLAY MANSRTSP/1.0\r\nCSeq: 5\r\nRange: npt=120-\r\n")
    assert (req.method, req.cseq, req.range_start, req.is_seek, req.version) == (
        MansrtspMethod.PLAY,
        5,
        120.0,
        True,
        "MANSRTSP/1.0",
    )
    req = parse_request(b"PLAY RTSP/1.0\nCSeq:4\nRange: npt = now-\n")  # LF only, loose spacing
    assert req.range_start == "now" and not req.is_seek
    req = parse_request(b"play rtsp/1.0\r\ncseq: 6\r\nscale: 0.25\r\n\r\n")
    assert (req.method, req.scale) == (MansrtspMethod.PLAY, 0.25)
    req = parse_request(b"PAUSE RTSP/1.0\r\nCSeq: 3\r\nPauseTime: now\r\n")
    assert (req.method, req.pause_time) == (MansrtspMethod.PAUSE, "now")
    req = parse_request(b"PLAY RTSP/1.0\r\nCSeq: 9\r\nRange: npt=30-60\r\n")  # an end is tolerated
    assert req.range_start == 30.0


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"PLAY RTSP/2.0\r\nCSeq: 1\r\n",
        b"RECORD RTSP/1.0\r\nCSeq: 1\r\n",
        b"PLAY RTSP/1.0\r\n",  # no CSeq
        b"PLAY RTSP/1.0\r\nCSeq: -1\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 99999999999\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: 16\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: 0.1\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: nan\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: fast\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: clock=20240520T080000Z-\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: npt=-5-\r\n",
        b"PAUSE RTSP/1.0\r\nCSeq: 1\r\nRange: npt=5-\r\n",
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\nno colon here\r\n",
        "PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: 二\r\n".encode(),
        b"PLAY RTSP/1.0\r\nCSeq: 1\r\n" + b"X: " + b"a" * 2000 + b"\r\n",
    ],
)
def test_garbage_raises_the_specific_error(body: bytes) -> None:
    with pytest.raises(MansrtspError) as info:
        parse_request(body)
    assert info.value.status_hint == 400


def test_builder_refuses_out_of_range_values() -> None:
    for bad in (0.2, 9.0, float("inf")):
        with pytest.raises(MansrtspError):
            set_scale(1, bad)
    with pytest.raises(MansrtspError):
        seek(1, -1)


@given(
    cseq=st.integers(0, 10**9),
    scale=st.none() | st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, 8.0]),
    start=st.none() | st.just("now") | st.integers(0, 7 * 86400).map(float),
)
def test_play_round_trips(cseq: int, scale: float | None, start: float | str | None) -> None:
    request = MansrtspRequest(MansrtspMethod.PLAY, cseq, scale, start)
    assert parse_request(build_request(request)) == request


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_mansrtsp_error(body: bytes) -> None:
    with contextlib.suppress(MansrtspError):
        parse_request(body)


def test_status_bodies() -> None:
    answer = parse_response(b"RTSP/1.0 200 OK\r\nCSeq: 5\r\nRange: npt=120-\r\nRTP-Info: seq=10;rtptime=900\r\n")
    assert (answer.status, answer.reason, answer.cseq, answer.header("range")) == (200, "OK", 5, "npt=120-")
    assert parse_response(b"MANSRTSP/1.0 457 Invalid Range\r\n").status == 457
    for bad in (b"HTTP/1.1 200 OK\r\n", b"RTSP/1.0 OK\r\n", b"RTSP/1.0 2000 OK\r\n", b""):
        with pytest.raises(MansrtspError):
            parse_response(bad)
