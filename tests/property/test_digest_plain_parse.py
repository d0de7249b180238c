"""The regular-expression path of ``parse_auth_params`` agrees with the scanner on whatever it accepts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DigestError
from gateway.gb28181.sip import auth
from gateway.gb28181.sip.auth import parse_auth_params


def _scanner(value: str) -> tuple[str, dict[str, str]]:
    """The scanner alone (the plain path switched off, the one-entry memo bypassed)."""
    saved = auth._parse_plain
    auth._parse_plain = lambda value: None  # type: ignore[assignment]
    auth._last_parsed[0] = ("", "", {})
    try:
        return parse_auth_params(value)
    finally:
        auth._parse_plain = saved


TYPICAL = (
    'Digest username="12010100111320001001", realm="1201000000", nonce="abc.def", '
    'uri="sip:12010000002090000001@1201000000", response="0123456789abcdef0123456789abcdef", '
    'algorithm=MD5, cnonce="x1", qop=auth, nc=00000001'
)


@pytest.mark.parametrize(
    "value",
    [
        TYPICAL,
        "Digest",
        "Digest  ",
        'Digest a="", b=c,,  , d="e f"',
        'Digest a="x\\"y"',  # quoted-pair: the scanner's
        'Digest a="x", a="y"',  # duplicate: refused
        'Digest a="x"b="y"',  # no comma: refused
        'Digest a=b"c',
        "Digest,a=b",
        'Digest a = "b" , c = d',
        'DIGEST Username="u"',
    ],
)
def test_plain_path_agrees_with_scanner(value: str) -> None:
    try:
        expected: object = _scanner(value)
    except DigestError:
        expected = DigestError
    auth._last_parsed[0] = ("", "", {})
    try:
        got: object = parse_auth_params(value)
    except DigestError:
        got = DigestError
    assert got == expected


def test_memo_returns_a_fresh_dict_each_time() -> None:
    first = parse_auth_params(TYPICAL)[1]
    first["username"] = "changed"
    assert parse_auth_params(TYPICAL)[1]["username"] == "12010100111320001001"


ALPHABET = st.sampled_from(list('ab=,"\\ \t') + ["Digest ", "nonce", "x.y"])


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, max_size=24).map("".join))
def test_plain_path_agrees_with_scanner_on_noise(tail: str) -> None:
    value = "Digest " + tail
    try:
        expected: object = _scanner(value)
    except DigestError:
        expected = DigestError
    auth._last_parsed[0] = ("", "", {})
    try:
        got: object = parse_auth_params(value)
    except DigestError:
        got = DigestError
    assert got == expected
