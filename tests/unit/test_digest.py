"""SIP digest authentication (gateway.gb28181.sip.auth): vectors, real devices, round trips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.errors import ConfigError, DigestError, SipError
from gateway.gb28181.sip.auth import (
    Algorithm,
    AuthResult,
    DigestClient,
    DigestServer,
    UnsupportedAlgorithm,
    build_authorization,
    compute_ha1,
    compute_response,
    parse_auth_params,
    username_of,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sip"
REALM = "3402000000"
SECRET = bytes(range(32))
DEVICE = "34020000001320000001"
SERVER_URI = "sip:34020000002000000001@3402000000"
T0 = 1_790_000_000.0


def header(name: str, fixture: str) -> str:
    """The value of one header line of a captured SIP message (no SIP parser needed)."""
    raw = (FIXTURES / fixture).read_bytes().decode("ascii")
    match = re.search(rf"^{name}:[ \t]*(.*?)\r$", raw, re.M)
    assert match is not None, f"{name} missing in {fixture}"
    return match.group(1)


# --- known vectors ----------------------------------------------------------------


def test_notes_worked_example() -> None:
    """Digest vector (formulas in docs/gb28181.md §3.3): device 34020000001320000001, password 12345678."""
    assert compute_ha1(Algorithm.MD5, DEVICE, REALM, "12345678") == "8258341d7dd730ce4d3b8fd2db050320"
    args = (Algorithm.MD5, DEVICE, REALM, "12345678", "REGISTER", SERVER_URI, "9bd055")
    assert compute_response(*args, None, None, None) == "44ac5fd979560c6da6cec866a439bd48"
    assert compute_response(*args, "auth", "00000001", "0a4f113b") == "5c08f6b8a902f9b9ed0206359b0deb9f"


def test_rfc2617_section_3_5() -> None:
    response = compute_response(
        Algorithm.MD5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
        "GET",
        "/dir/index.html",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "auth",
        "00000001",
        "0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (Algorithm.SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        (Algorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1(algorithm: Algorithm, expected: str) -> None:
    response = compute_response(
        algorithm,
        "Mufasa",
        "http-auth@example.org",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "auth",
        "00000001",
        "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert response == expected


def test_algorithm_given_as_token() -> None:
    args = (DEVICE, REALM, "12345678", "REGISTER", SERVER_URI, "9bd055", None, None, None)
    assert compute_response("md5", *args) == compute_response(Algorithm.MD5, *args)
    with pytest.raises(UnsupportedAlgorithm):
        compute_response("SHA-512-256", *args)


def test_nc_is_hashed_exactly_as_given() -> None:
    """WVP re-formats nc, which breaks once the counter has hex letters (docs/gb28181.md §3.3)."""
    args = (Algorithm.MD5, DEVICE, REALM, "pw", "REGISTER", SERVER_URI, "n", "auth")
    assert compute_response(*args, "0000000a", "c") != compute_response(*args, "0000000A", "c")


def test_auth_int_hashes_the_body() -> None:
    args = (Algorithm.MD5, DEVICE, REALM, "pw", "MESSAGE", SERVER_URI, "n", "auth-int", "00000001", "c")
    assert compute_response(*args, body=b"<a/>") != compute_response(*args, body=b"<b/>")
    auth = compute_response(Algorithm.MD5, DEVICE, REALM, "pw", "MESSAGE", SERVER_URI, "n", "auth", "00000001", "c")
    assert compute_response(*args, body=b"") != auth


def test_session_algorithm_differs_and_needs_cnonce() -> None:
    args = (DEVICE, REALM, "pw", "REGISTER", SERVER_URI, "n", "auth", "00000001", "c")
    assert compute_response(Algorithm.MD5_SESS, *args) != compute_response(Algorithm.MD5, *args)
    with pytest.raises(DigestError):
        compute_response(Algorithm.SHA256_SESS, DEVICE, REALM, "pw", "REGISTER", SERVER_URI, "n", None, None, None)


def test_qop_form_needs_nc_and_cnonce() -> None:
    with pytest.raises(DigestError):
        compute_response(Algorithm.MD5, DEVICE, REALM, "pw", "REGISTER", SERVER_URI, "n", "auth", None, "c")
    with pytest.raises(DigestError):
        compute_response(Algorithm.MD5, DEVICE, REALM, "pw", "REGISTER", SERVER_URI, "n", "bogus", "1", "c")


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, Algorithm.MD5),
        ("MD5", Algorithm.MD5),
        ("md5", Algorithm.MD5),
        ("MD5-sess", Algorithm.MD5_SESS),
        ("md5-SESS", Algorithm.MD5_SESS),
        ("SHA-256", Algorithm.SHA256),
        ("sha-256-sess", Algorithm.SHA256_SESS),
    ],
)
def test_algorithm_tokens(token: str | None, expected: Algorithm) -> None:
    assert Algorithm.from_token(token) is expected


# --- real devices -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture",
    [
        "sbgb_register_digest_noqop_udp.sip",
        "sbgb_register_digest_qop_udp.sip",
        "camsim_register_digest_udp.sip",
        "camsim_register_digest_to_qop_challenge_udp.sip",
    ],
)
def test_device_responses_reproduce(fixture: str) -> None:
    scheme, params = parse_auth_params(header("Authorization", fixture))
    assert scheme == "digest"
    response = compute_response(
        Algorithm.from_token(params.get("algorithm")),
        params["username"],
        params["realm"],
        "12345678",
        "REGISTER",
        params["uri"],
        params["nonce"],
        params.get("qop"),
        params.get("nc"),
        params.get("cnonce"),
    )
    assert response == params["response"]


def test_parse_sbgb_qop_header_fields() -> None:
    scheme, params = parse_auth_params(header("Authorization", "sbgb_register_digest_qop_udp.sip"))
    assert scheme == "digest"
    assert params == {
        "username": "34020000001320000002",
        "realm": "3402000000",
        "nonce": "7fa07a832717563be8c30fd401998122",
        "uri": "sip:3402000000",
        "response": "ea4eb4facb9ec58cbe6ae3019f46f347",
        "algorithm": "MD5",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "704f83",
    }


@pytest.mark.parametrize(
    ("challenge_fixture", "register_fixture", "cnonce"),
    [
        ("platform-sbgb_401_challenge_qop_udp.sip", "sbgb_register_digest_qop_udp.sip", "704f83"),
        ("platform-sbgb_401_challenge_noqop_udp.sip", "sbgb_register_digest_noqop_udp.sip", "unused"),
        ("platform-camsim_401_challenge_noqop_udp.sip", "camsim_register_digest_udp.sip", "unused"),
    ],
)
def test_client_answers_like_the_devices(challenge_fixture: str, register_fixture: str, cnonce: str) -> None:
    """Our client, given the captured challenge, computes the captured device's response."""
    _, device = parse_auth_params(header("Authorization", register_fixture))
    ours = build_authorization(
        header("WWW-Authenticate", challenge_fixture),
        "REGISTER",
        device["uri"],
        device["username"],
        "12345678",
        cnonce,
    )
    _, params = parse_auth_params(ours)
    assert params["response"] == device["response"]
    assert params["nonce"] == device["nonce"]


def test_client_picks_qop_from_captured_qop_challenge() -> None:
    value = build_authorization(
        header("WWW-Authenticate", "platform-camsim_401_challenge_qop_udp.sip"),
        "REGISTER",
        "sip:127.0.0.1:15060",
        "34020000001320000010",
        "12345678",
        "deadbeef",
    )
    _, params = parse_auth_params(value)
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["cnonce"] == "deadbeef"


# --- parse_auth_params ------------------------------------------------------------------


def test_parse_quoting_spaces_and_commas() -> None:
    scheme, params = parse_auth_params(
        '  DIGEST   realm = "a, \\"b\\" \\\\ c" ,, Nonce=xyz/+==,\tQOP="auth,auth-int",  '
    )
    assert scheme == "digest"
    assert params == {"realm": 'a, "b" \\ c', "nonce": "xyz/+==", "qop": "auth,auth-int"}


def test_parse_scheme_only_and_empty_quoted() -> None:
    assert parse_auth_params("Digest") == ("digest", {})
    assert parse_auth_params('Digest opaque=""') == ("digest", {"opaque": ""})


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "=x",
        'Digest realm="unterminated',
        'Digest realm="dangling\\',
        "Digest realm",
        "Digest realm=",
        "Digest realm=,nonce=1",
        'Digest realm="a" nonce="b"',
        "Digest realm=a, realm=b",
        "Digest,realm=a",
        'Digest realm="a\r\nVia: injected"',
        "Digest realm=a\x00",
        "Digest " + "x" * 9000 + "=1",
        'Digest realm="a"junk',
        "Digest réalm=a",
    ],
)
def test_parse_rejects_garbage(bad: str) -> None:
    with pytest.raises(DigestError) as info:
        parse_auth_params(bad)
    assert isinstance(info.value, SipError)
    assert info.value.status_hint == 400


def test_username_of_is_tolerant() -> None:
    assert username_of(header("Authorization", "camsim_register_digest_udp.sip")) == "34020000001320000010"
    assert username_of('Digest username="34020000001320000001", realm="unterminated') == DEVICE
    assert username_of("Digest username=34020000001320000001 junk junk") == DEVICE
    assert username_of('Digest username="a\\"b" x') == 'a"b'
    assert username_of('Digest realm="3402000000"') is None
    assert username_of("garbage") is None
    assert username_of("") is None
    assert DigestServer.username_of('Digest username="x"') == "x"


# --- server ------------------------------------------------------------------------------


def make_server(**kwargs: object) -> DigestServer:
    return DigestServer(REALM, SECRET, **kwargs)  # type: ignore[arg-type]


def answer(server: DigestServer, now: float, password: str = "12345678", **kwargs: object) -> str:
    challenge = server.challenge(now)
    return build_authorization(
        challenge,
        "REGISTER",
        SERVER_URI,
        DEVICE,
        password,
        "0a4f113b",
        **kwargs,  # type: ignore[arg-type]
    )


def check(server: DigestServer, authorization: str, now: float = T0) -> AuthResult:
    """Verify as the registrar would, for a REGISTER with the fixtures' password."""
    return server.verify(authorization, "REGISTER", "12345678", now)


def test_challenge_format() -> None:
    challenge = make_server().challenge(T0)
    assert re.fullmatch(r'Digest realm="3402000000",nonce="[0-9a-f]{32}",algorithm=MD5,qop="auth"', challenge)
    scheme, params = parse_auth_params(make_server().challenge(T0, stale=True))
    assert scheme == "digest"
    assert params["stale"] == "true"
    assert params["algorithm"] == "MD5"


def test_challenge_without_qop_still_names_algorithm() -> None:
    _, params = parse_auth_params(make_server(offer_qop=False).challenge(T0))
    assert set(params) == {"realm", "nonce", "algorithm"}
    assert params["algorithm"] == "MD5"


def test_challenges_one_per_algorithm() -> None:
    server = make_server(algorithms=(Algorithm.SHA256, Algorithm.MD5))
    algorithms = [parse_auth_params(c)[1]["algorithm"] for c in server.challenges(T0)]
    assert algorithms == ["SHA-256", "MD5"]
    with pytest.raises(ConfigError):
        make_server().challenge(T0, algorithm=Algorithm.SHA256)


def test_nonces_are_unpredictable_and_reveal_no_clock() -> None:
    """L4: the nonce used to start with the issue time in hex; now equal clocks give unrelated nonces."""
    server = make_server()
    first, second = server.make_nonce(T0), server.make_nonce(T0)
    assert first != second
    assert make_server().make_nonce(T0 + 1000) == first  # the counter and the secret decide, not the clock
    assert DigestServer(REALM, b"other secret").make_nonce(T0) != first
    assert f"{int(T0):x}" not in first
    assert server.nonce_issued_at(first) == T0
    assert server.nonce_issued_at("9bd055") is None


def test_nonce_is_bound_to_the_client_it_was_issued_to() -> None:
    server = make_server()
    challenge = server.challenge(T0, client=("udp", "10.0.0.5", 5060))
    authorization = build_authorization(challenge, "REGISTER", SERVER_URI, DEVICE, "12345678", "c1")
    assert server.verify(authorization, "REGISTER", "12345678", T0, client=("udp", "10.0.0.6", 5060)) is (
        AuthResult.WRONG_CLIENT
    )
    assert server.issued_to(authorization, ("udp", "10.0.0.5", 5060))
    assert not server.issued_to(authorization, ("udp", "10.0.0.5", 5061))
    assert server.verify(authorization, "REGISTER", "12345678", T0, client=("udp", "10.0.0.5", 5060)) is AuthResult.OK


def test_nonce_is_single_use_per_nc() -> None:
    server = make_server()
    client = DigestClient(DEVICE, "12345678")
    challenge = server.challenge(T0)
    first = client.authorization(challenge, "REGISTER", SERVER_URI, "c1")
    assert check(server, first) is AuthResult.OK
    assert check(server, first) is AuthResult.REPLAYED  # the same nc again
    second = client.authorization(challenge, "REGISTER", SERVER_URI, "c2")  # nc 2
    assert check(server, second) is AuthResult.OK
    assert check(server, first) is AuthResult.REPLAYED  # a lower nc


def test_rfc2069_nonce_is_single_use() -> None:
    server = make_server(offer_qop=False)
    authorization = answer(server, T0)
    assert check(server, authorization) is AuthResult.OK
    assert check(server, authorization) is AuthResult.REPLAYED


def test_wrong_password_spends_the_nonce() -> None:
    server = make_server()
    challenge = server.challenge(T0)
    wrong = build_authorization(challenge, "REGISTER", SERVER_URI, DEVICE, "guess", "c1")
    right = build_authorization(challenge, "REGISTER", SERVER_URI, DEVICE, "12345678", "c1", nc=2)
    assert check(server, wrong) is AuthResult.BAD_PASSWORD
    assert check(server, right) is AuthResult.FOREIGN_NONCE  # every guess needs a fresh challenge


def test_nonce_table_is_bounded_and_forgets_old_nonces() -> None:
    server = make_server(max_nonces=3, nonce_ttl=10.0)
    old = answer(server, T0)
    for _ in range(3):
        server.make_nonce(T0)
    assert len(server) == 3
    assert check(server, old) is AuthResult.FOREIGN_NONCE  # evicted, oldest first
    stale = answer(server, T0)
    assert check(server, stale, T0 + 15) is AuthResult.STALE_NONCE  # between one and two lifetimes
    server.make_nonce(T0 + 25)
    assert server.nonce_issued_at(parse_auth_params(stale)[1]["nonce"]) is None  # forgotten after two


def test_round_trip_ok_with_qop() -> None:
    server = make_server()
    assert server.verify(answer(server, T0), "REGISTER", "12345678", T0 + 1) is AuthResult.OK


def test_round_trip_ok_without_qop() -> None:
    server = make_server(offer_qop=False)
    authorization = answer(server, T0)
    assert "qop" not in parse_auth_params(authorization)[1]
    assert server.verify(authorization, "REGISTER", "12345678", T0) is AuthResult.OK


def test_qop_offered_but_client_answers_rfc2069() -> None:
    """camsim ignores qop="auth"; its answer must still verify (fixtures README)."""
    server = make_server()
    _, params = parse_auth_params(server.challenge(T0))
    response = compute_response(
        Algorithm.MD5, DEVICE, REALM, "12345678", "REGISTER", "sip:127.0.0.1:15060", params["nonce"], None, None, None
    )
    authorization = (
        f'Digest username="{DEVICE}", realm="{REALM}", nonce="{params["nonce"]}", '
        f'uri="sip:127.0.0.1:15060", response="{response}", algorithm=MD5'
    )
    assert server.verify(authorization, "REGISTER", "12345678", T0) is AuthResult.OK


@pytest.mark.parametrize(
    "uri", ["sip:3402000000", SERVER_URI, "sip:127.0.0.1:15060", "sip:34020000002000000001@3402000000.spvmn.cn"]
)
def test_uri_is_used_as_sent(uri: str) -> None:
    server = make_server()
    authorization = build_authorization(server.challenge(T0), "REGISTER", uri, DEVICE, "12345678", "c1")
    assert server.verify(authorization, "REGISTER", "12345678", T0) is AuthResult.OK


def test_uppercase_response_hex_is_accepted() -> None:
    server = make_server()
    authorization = answer(server, T0)
    response = parse_auth_params(authorization)[1]["response"]
    assert check(server, authorization.replace(response, response.upper())) is AuthResult.OK


def test_wrong_password() -> None:
    server = make_server()
    assert server.verify(answer(server, T0, "wrong"), "REGISTER", "12345678", T0) is AuthResult.BAD_PASSWORD


def test_wrong_method() -> None:
    server = make_server()
    assert server.verify(answer(server, T0), "MESSAGE", "12345678", T0) is AuthResult.BAD_PASSWORD


def test_expired_nonce_is_stale() -> None:
    server = make_server(nonce_ttl=300.0)
    assert server.verify(answer(server, T0), "REGISTER", "12345678", T0 + 299) is AuthResult.OK
    assert server.verify(answer(server, T0), "REGISTER", "12345678", T0 + 301) is AuthResult.STALE_NONCE
    # an expired nonce with a wrong password is still a wrong password
    assert server.verify(answer(server, T0, "x"), "REGISTER", "12345678", T0 + 301) is AuthResult.BAD_PASSWORD


def test_nonce_from_the_future_is_stale() -> None:
    server = make_server()
    assert server.verify(answer(server, T0 + 100), "REGISTER", "12345678", T0) is AuthResult.STALE_NONCE


def test_tampered_nonce_is_foreign() -> None:
    server = make_server()
    authorization = answer(server, T0)
    nonce = parse_auth_params(authorization)[1]["nonce"]
    flipped = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    assert nonce.upper() != nonce
    for forged in (flipped, "9bd055", nonce.upper()):
        assert check(server, authorization.replace(nonce, forged)) is AuthResult.FOREIGN_NONCE


def test_nonce_of_another_server_is_foreign() -> None:
    other = DigestServer(REALM, b"restarted with a new secret")
    assert make_server().verify(answer(other, T0), "REGISTER", "12345678", T0) is AuthResult.FOREIGN_NONCE


def test_wrong_realm() -> None:
    server = make_server()
    authorization = answer(server, T0).replace('realm="3402000000"', 'realm="1201010000"')
    assert server.verify(authorization, "REGISTER", "12345678", T0) is AuthResult.WRONG_REALM


def test_unsupported_algorithm() -> None:
    server = make_server()
    authorization = answer(server, T0)
    sha512 = authorization.replace("algorithm=MD5", "algorithm=SHA-512")
    assert check(server, sha512) is AuthResult.UNSUPPORTED_ALGORITHM
    sha = make_server(algorithms=(Algorithm.SHA256,))
    challenge = sha.challenge(T0, algorithm=Algorithm.SHA256)
    sha_answer = build_authorization(challenge, "REGISTER", SERVER_URI, DEVICE, "12345678", "c")
    assert sha.verify(sha_answer, "REGISTER", "12345678", T0) is AuthResult.OK
    assert server.verify(sha_answer, "REGISTER", "12345678", T0) is AuthResult.UNSUPPORTED_ALGORITHM


def test_missing_algorithm_means_md5() -> None:
    server = make_server()
    authorization = answer(server, T0).replace(",algorithm=MD5", "")
    assert server.verify(authorization, "REGISTER", "12345678", T0) is AuthResult.OK


@pytest.mark.parametrize("field", ["username", "realm", "nonce", "uri", "response", "nc", "cnonce"])
def test_missing_field_is_malformed(field: str) -> None:
    server = make_server()
    authorization = re.sub(rf'(?<=[ ,]){field}=("[^"]*"|[^,]*),?', "", answer(server, T0))
    assert field not in parse_auth_params(authorization)[1]
    assert server.verify(authorization, "REGISTER", "12345678", T0) is AuthResult.MALFORMED


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        'Digest username="x", realm="unterminated',
        f'Digest username="{DEVICE}",realm="{REALM}",nonce="n",uri="u",response="not-hex"',
        f'Digest username="{DEVICE}",realm="{REALM}",nonce="n",uri="u",response="00",qop=auth-conf,nc=1,cnonce=c',
    ],
)
def test_malformed(bad: str) -> None:
    assert make_server().verify(bad, "REGISTER", "12345678", T0) is AuthResult.MALFORMED


def test_server_config_is_validated() -> None:
    for kwargs in (
        {"realm": "", "secret": SECRET},
        {"realm": REALM, "secret": b""},
        {"realm": REALM, "secret": "text"},
        {"realm": "a\r\nb", "secret": SECRET},
    ):
        with pytest.raises(ConfigError):
            DigestServer(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        make_server(nonce_ttl=0)
    with pytest.raises(ConfigError):
        make_server(algorithms=())
    with pytest.raises(ConfigError):
        make_server().make_nonce(float("nan"))
    with pytest.raises(ConfigError):
        make_server(max_nonces=0)


# --- client ------------------------------------------------------------------------------


def test_client_output_format() -> None:
    value = build_authorization(
        'Digest realm="3402000000",nonce="9bd055",qop="auth",algorithm=MD5',
        "REGISTER",
        SERVER_URI,
        DEVICE,
        "12345678",
        "0a4f113b",
    )
    assert value == (
        f'Digest username="{DEVICE}",realm="3402000000",nonce="9bd055",uri="{SERVER_URI}",'
        'response="5c08f6b8a902f9b9ed0206359b0deb9f",algorithm=MD5,qop=auth,nc=00000001,cnonce="0a4f113b"'
    )


def test_client_no_qop_no_algorithm_is_rfc2069_md5() -> None:
    challenge = 'Digest realm="3402000000", nonce="9bd055"'
    value = build_authorization(challenge, "REGISTER", SERVER_URI, DEVICE, "12345678", "c")
    _, params = parse_auth_params(value)
    assert params["response"] == "44ac5fd979560c6da6cec866a439bd48"
    assert params["algorithm"] == "MD5"
    assert not {"qop", "nc", "cnonce"} & set(params)


def test_client_picks_auth_from_auth_and_auth_int() -> None:
    """media-server#90: qop="auth,auth-int" without algorithm → MD5 and auth."""
    challenge = 'Digest realm="r",nonce="n",qop="auth-int, auth"'
    value = build_authorization(challenge, "REGISTER", "sip:r", "u", "p", "c", nc=10)
    _, params = parse_auth_params(value)
    assert (params["qop"], params["nc"], params["algorithm"]) == ("auth", "0000000a", "MD5")
    challenge = 'Digest realm="r",nonce="n",qop="auth-int"'
    only_int = build_authorization(challenge, "MESSAGE", "sip:r", "u", "p", "c", body=b"x")
    assert parse_auth_params(only_int)[1]["qop"] == "auth-int"


def test_client_sha256_and_opaque() -> None:
    challenge = 'Digest realm="r",nonce="n",algorithm=SHA-256,qop="auth",opaque="o \\"q\\""'
    value = build_authorization(challenge, "REGISTER", "sip:r", "u", "p", "c")
    _, params = parse_auth_params(value)
    assert params["algorithm"] == "SHA-256"
    assert len(params["response"]) == 64
    assert params["opaque"] == 'o "q"'


@pytest.mark.parametrize(
    ("challenge", "error"),
    [
        ('Basic realm="r"', DigestError),
        ('Digest nonce="n"', DigestError),
        ('Digest realm="r"', DigestError),
        ('Digest realm="r",nonce="n",qop="auth-conf"', DigestError),
        ('Digest realm="r",nonce="n",algorithm=SHA-512', UnsupportedAlgorithm),
        ('Digest realm="r", nonce="n', DigestError),
    ],
)
def test_client_rejects_unusable_challenges(challenge: str, error: type[DigestError]) -> None:
    with pytest.raises(error):
        build_authorization(challenge, "REGISTER", "sip:r", "u", "p", "c")


def test_client_refuses_header_injection() -> None:
    with pytest.raises(DigestError):
        build_authorization('Digest realm="r",nonce="n"', "REGISTER", "sip:r\r\nVia: x", "u", "p", "c")


def test_digest_client_counts_nc_per_nonce() -> None:
    server = make_server()
    client = DigestClient(DEVICE, "12345678")
    challenge = server.challenge(T0)
    first = client.authorization(challenge, "REGISTER", SERVER_URI, "c1")
    second = client.authorization(challenge, "REGISTER", SERVER_URI, "c2")
    assert parse_auth_params(first)[1]["nc"] == "00000001"
    assert parse_auth_params(second)[1]["nc"] == "00000002"
    for value in (first, second):
        assert server.verify(value, "REGISTER", "12345678", T0) is AuthResult.OK
    fresh = client.authorization(server.challenge(T0 + 10), "REGISTER", SERVER_URI, "c3")
    assert parse_auth_params(fresh)[1]["nc"] == "00000001"
