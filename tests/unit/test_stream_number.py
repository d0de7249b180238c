"""Offers asking for a sub-stream in each spelling (docs/gb28181.md §15.3), and who gets which spelling."""

from __future__ import annotations

import pytest

from gateway.gb28181.sdp import build_sdp, offer_for_play, parse_sdp
from gateway.gb28181.stream_number import (
    MAIN,
    SUB,
    StreamStyle,
    answered_stream,
    choose_style,
    parse_style,
    with_stream,
)

DEVICE = "12010100001180000001"


def _offer() -> bytes:
    return build_sdp(offer_for_play(origin_user=DEVICE, media_host="10.0.0.1", media_port=30000, ssrc="0100000001"))


@pytest.mark.parametrize(
    ("style", "line"),
    [
        (StreamStyle.STREAMNUMBER, b"a=streamnumber:1"),
        (StreamStyle.STREAM, b"a=stream:1"),
        (StreamStyle.STREAMPROFILE, b"a=streamprofile:1"),
        (StreamStyle.STREAMMODE, b"a=streamMode:SUB"),
    ],
)
def test_a_sub_offer_has_exactly_one_stream_line_in_the_devices_spelling(style: StreamStyle, line: bytes) -> None:
    live = offer_for_play(origin_user=DEVICE, media_host="10.0.0.1", media_port=30000, ssrc="0100000001")
    body = build_sdp(with_stream(live, SUB, style))

    lines = body.split(b"\r\n")
    assert [x for x in lines if b"stream" in x.lower()] == [line]
    assert lines.index(line) < lines.index(b"y=0100000001"), "attributes come before y="
    assert body.endswith(b"\r\n")
    assert parse_sdp(body).stream_number == 1, "every spelling reads back as stream 1"
    assert body.replace(line + b"\r\n", b"") == _offer(), "nothing else changes"


def test_a_main_offer_is_the_plain_live_offer() -> None:
    live = offer_for_play(origin_user=DEVICE, media_host="10.0.0.1", media_port=30000, ssrc="0100000001")
    for style in StreamStyle:
        assert build_sdp(with_stream(live, MAIN, style)) == _offer()


def test_stream_mode_spells_main_too_and_knows_no_third_stream() -> None:
    live = offer_for_play(origin_user=DEVICE, media_host="10.0.0.1", media_port=30000, ssrc="0100000001")
    assert b"a=stream:2\r\n" in build_sdp(with_stream(live, 2, StreamStyle.STREAM))
    with pytest.raises(ValueError, match="MAIN and SUB"):
        with_stream(live, 2, StreamStyle.STREAMMODE)


@pytest.mark.parametrize(
    ("manufacturer", "gb_version", "style"),
    [
        ("Dahua", None, StreamStyle.STREAMPROFILE),
        ("浙江大华技术股份有限公司", "2.0", StreamStyle.STREAMPROFILE),
        ("TP-LINK", None, StreamStyle.STREAMMODE),
        ("MERCURY", None, StreamStyle.STREAMMODE),
        ("Hikvision", None, StreamStyle.STREAMNUMBER),
        ("", None, StreamStyle.STREAMNUMBER),
        ("Dahua", "3.0", StreamStyle.STREAMNUMBER),  # a 2022 device takes the standard form
        ("TP-LINK", "3.0", StreamStyle.STREAMNUMBER),
    ],
)
def test_the_spelling_follows_the_version_then_the_manufacturer(
    manufacturer: str, gb_version: str | None, style: StreamStyle
) -> None:
    assert choose_style(device_id=DEVICE, manufacturer=manufacturer, gb_version=gb_version) is style


def test_configured_overrides_win_device_first_then_manufacturer() -> None:
    overrides = {"hikvision": StreamStyle.STREAM, DEVICE: StreamStyle.STREAMMODE}
    assert choose_style(device_id=DEVICE, manufacturer="Hikvision", overrides=overrides) is StreamStyle.STREAMMODE
    other = "12010100001180000002"
    assert choose_style(device_id=other, manufacturer="HIKVISION", overrides=overrides) is StreamStyle.STREAM
    assert choose_style(device_id=other, manufacturer="Dahua", gb_version="3.0", overrides=overrides) is (
        StreamStyle.STREAMNUMBER
    )
    assert choose_style(device_id=other, default=StreamStyle.STREAM) is StreamStyle.STREAM


def test_style_names_from_configuration() -> None:
    assert parse_style("2022") is StreamStyle.STREAMNUMBER
    assert parse_style("streammode") is StreamStyle.STREAMMODE
    assert parse_style(" StreamProfile ") is StreamStyle.STREAMPROFILE
    with pytest.raises(ValueError, match="stream number style"):
        parse_style("substream")


@pytest.mark.parametrize(
    ("answer_line", "stated"),
    [(b"", None), (b"a=streamnumber:0\r\n", 0), (b"a=streamMode:MAIN\r\n", 0), (b"a=streamprofile:1\r\n", 1)],
)
def test_what_an_answer_states(answer_line: bytes, stated: int | None) -> None:
    body = (
        b"v=0\r\no=cam 0 0 IN IP4 10.0.0.2\r\ns=Play\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
        b"m=video 40000 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\n" + answer_line + b"y=0100000001\r\n"
    )
    assert parse_sdp(body).stream_number == stated
    assert answered_stream(SUB, parse_sdp(body).stream_number) == (SUB if stated is None else stated)
