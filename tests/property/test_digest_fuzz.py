"""Digest parsing and verification never fail with anything but DigestError / an AuthResult."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import DigestError
from gateway.gb28181.sip.auth import (
    AuthResult,
    DigestServer,
    build_authorization,
    parse_auth_params,
    username_of,
)

REALM = "3402000000"
SECRET = b"\x01" * 32
NOW = 1_790_000_000.0
SERVER = DigestServer(REALM, SECRET)
VALID = build_authorization(
    SERVER.challenge(NOW), "REGISTER", "sip:3402000000", "34020000001320000002", "12345678", "704f83"
)

# Fragments that steer generated text into the parser's interesting corners.
FRAGMENTS = st.sampled_from(
    [
        "Digest ",
        "digest",
        " ",
        "\t",
        ",",
        "=",
        '"',
        "\\",
        "\r\n",
        "\x00",
        "é",
        "١",
        "username",
        "realm",
        "nonce",
        "uri",
        "response",
        "qop",
        "nc",
        "cnonce",
        "algorithm",
        "opaque",
        "auth",
        "auth-int",
        "MD5",
        "md5-sess",
        "SHA-256",
        "SHA-512",
        "00000001",
        REALM,
        "34020000001320000002",
        "sip:3402000000",
        "0" * 44,
        "\ud800",
    ]
)
STRUCTURED = st.lists(st.one_of(FRAGMENTS, st.text(max_size=8)), max_size=40).map("".join)
ANY_TEXT = st.one_of(st.text(max_size=300), STRUCTURED)


@settings(max_examples=400, deadline=None)
@given(ANY_TEXT)
def test_parse_raises_only_digest_error(value: str) -> None:
    try:
        scheme, params = parse_auth_params(value)
    except DigestError:
        return
    assert isinstance(scheme, str) and scheme == scheme.lower()
    assert all(isinstance(k, str) and k == k.lower() and isinstance(v, str) for k, v in params.items())


@settings(max_examples=400, deadline=None)
@given(ANY_TEXT, st.text(max_size=20), st.binary(max_size=16))
def test_verify_always_returns_a_result(value: str, password: str, body: bytes) -> None:
    assert isinstance(SERVER.verify(value, "REGISTER", password, NOW, body), AuthResult)
    assert username_of(value) is None or isinstance(username_of(value), str)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID)), ANY_TEXT)
def test_verify_mutated_valid_credentials(cut: int, insert: str) -> None:
    """Splicing junk into a genuine header yields a result, and only an untouched one is OK."""
    server = DigestServer(REALM, SECRET)  # a fresh server: its nonces are single-use per nc
    valid = build_authorization(
        server.challenge(NOW), "REGISTER", "sip:3402000000", "34020000001320000002", "12345678", "704f83"
    )
    mutated = valid[:cut] + insert + valid[cut:]
    result = server.verify(mutated, "REGISTER", "12345678", NOW)
    assert isinstance(result, AuthResult)
    if insert == "":
        assert result is AuthResult.OK


# Printable text without control characters (which we refuse to put on the wire).
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)


@settings(max_examples=300, deadline=None)
@given(SAFE_TEXT, SAFE_TEXT, SAFE_TEXT, SAFE_TEXT.filter(bool), st.booleans(), st.integers(1, 2**32 - 1))
def test_round_trip_any_credentials(
    username: str, password: str, uri: str, cnonce: str, offer_qop: bool, nc: int
) -> None:
    server = DigestServer(REALM, SECRET, offer_qop=offer_qop)
    authorization = build_authorization(server.challenge(NOW), "REGISTER", uri, username, password, cnonce, nc)
    _, params = parse_auth_params(authorization)
    assert (params["username"], params["uri"]) == (username, uri)
    assert server.verify(authorization, "REGISTER", password, NOW) is AuthResult.OK
    assert username_of(authorization) == username
    if password:
        assert server.verify(authorization, "REGISTER", password + "x", NOW) is AuthResult.BAD_PASSWORD
