"""The Keepalive fast path gives exactly what the full MANSCDP parser gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ManscdpError
from gateway.gb28181.manscdp import Keepalive, decode_message, decode_xml, fastpath, parse_element, serialize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "manscdp"


def full_path(body: bytes) -> tuple[object, str]:
    decoded = decode_xml(body)
    return parse_element(decoded.root), decoded.charset


def both(body: bytes) -> tuple[object, object]:
    try:
        fast = decode_message(body)
    except ManscdpError as exc:
        fast = type(exc)
    try:
        full = full_path(body)
    except ManscdpError as exc:
        full = type(exc)
    return fast, full


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.xml")), ids=lambda p: p.name)
def test_fixtures_agree(path: Path) -> None:
    fast, full = both(path.read_bytes())
    assert fast == full


@pytest.mark.parametrize("charset", ["GB2312", "UTF-8", "gbk", "GB18030"])
def test_our_keepalives_take_the_fast_path_and_agree(charset: str) -> None:
    body = serialize(Keepalive(sn=43, device_id="12010100001320000001", status="OK"), charset)
    assert fastpath._KEEPALIVE.match(body) is not None
    assert decode_message(body) == full_path(body)


@pytest.mark.parametrize("name", ["sbgb_keepalive_gb2312_single_quoted.xml", "camsim_keepalive_utf8_13digit_sn.xml"])
def test_real_device_keepalives_take_the_fast_path(name: str) -> None:
    body = (FIXTURES / name).read_bytes()
    assert fastpath._KEEPALIVE.match(body) is not None
    assert decode_message(body) == full_path(body)


_WS = st.sampled_from([b"", b" ", b"\r\n", b"\n", b"\t", b"\r\n  "])


@st.composite
def keepalive_like(draw: st.DrawFn) -> bytes:
    """Canonical Keepalives with random spacing, values and small deviations."""
    w = lambda: draw(_WS)  # noqa: E731
    prolog = draw(
        st.sampled_from(
            [
                b"",
                b'<?xml version="1.0"?>',
                b"<?xml version='1.0' encoding='GB2312'?>",
                b'<?xml version="1.0" encoding="UTF-8"?>',
                b'<?xml version="1.0" encoding="x-y"?>',
            ]
        )
    )
    sn = draw(st.sampled_from([b"0", b"1", b"43", b"1795913124140", b"-1", b"4a"]))
    device = draw(st.sampled_from([b"12010100001320000001", b"abc", b"", b"1 2", b"\xe5\x92\x8c"]))
    status = draw(st.sampled_from([b"OK", b"ON", b"offline", b"", b"O K"]))
    info = draw(st.sampled_from([b"", b"<Info/>", b"<Info></Info>", b"<Info><Status>OK</Status></Info>"]))
    tail = draw(st.sampled_from([b"", b"\x00", b"\r\n", b"<x/>"]))
    return (
        prolog
        + w()
        + b"<Notify>"
        + w()
        + b"<CmdType>Keepalive</CmdType>"
        + w()
        + b"<SN>"
        + sn
        + b"</SN>"
        + w()
        + b"<DeviceID>"
        + device
        + b"</DeviceID>"
        + w()
        + b"<Status>"
        + status
        + b"</Status>"
        + w()
        + info
        + w()
        + b"</Notify>"
        + tail
    )


@settings(max_examples=500, deadline=None)
@given(keepalive_like())
def test_fast_and_full_paths_agree_on_keepalive_variants(body: bytes) -> None:
    fast, full = both(body)
    assert fast == full


_PIECES = st.sampled_from(
    [
        b'<?xml version="1.0" encoding="GB2312"?>',
        b"<?xml version='1.0'?>",
        b'<?xml version="1.0" encoding="latin1"?>',
        b"<Notify>",
        b"</Notify>",
        b"<notify>",
        b"<CmdType>Keepalive</CmdType>",
        b"<CmdType>Catalog</CmdType>",
        b"<SN>7</SN>",
        b"<SN>x</SN>",
        b"<SN>123456789012345678901</SN>",
        b"<DeviceID>12010100001320000001</DeviceID>",
        b"<DeviceID> 1 </DeviceID>",
        b"<Status>OK</Status>",
        b"<Status>OFF</Status>",
        b"<Status></Status>",
        b"<Info/>",
        b"<Info></Info>",
        b"<Info><DeviceID>1</DeviceID></Info>",
        b"<!-- c -->",
        b"&amp;",
        b"\r\n",
        b" ",
        b"\x00",
        b"\xef\xbb\xbf",
        b"<",
        b">",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_PIECES, max_size=14))
def test_fast_and_full_paths_agree_on_generated_documents(pieces: list[bytes]) -> None:
    fast, full = both(b"".join(pieces))
    assert fast == full
