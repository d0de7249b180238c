"""Digest verification against stored HA1s (gateway.gb28181.sip.auth.Credential), every algorithm and form."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.gb28181.sip.auth import (
    Algorithm,
    AuthResult,
    Credential,
    DigestServer,
    build_authorization,
    compute_ha1,
)

REALM = "3402000000"
DEVICE = "34020000001320000001"
URI = "sip:34020000002000000001@3402000000"
T0 = 1_790_000_000.0
PASSWORD = "its-own-pw-1"
ALL = (Algorithm.MD5, Algorithm.MD5_SESS, Algorithm.SHA256, Algorithm.SHA256_SESS)


def _answer(server: DigestServer, algorithm: Algorithm, password: str, *, qop: bool) -> str:
    challenge = server.challenge(T0, algorithm=algorithm)
    if not qop:  # an RFC 2069 device ignores the offered qop
        challenge = challenge.replace(',qop="auth"', "")
    return build_authorization(challenge, "REGISTER", URI, DEVICE, password, "0a4f113b")


@pytest.mark.parametrize("qop", [True, False], ids=["qop", "rfc2069"])
@pytest.mark.parametrize("algorithm", ALL, ids=[a.value for a in ALL])
def test_stored_ha1_verifies_the_right_password_only(algorithm: Algorithm, qop: bool) -> None:
    server = DigestServer(REALM, bytes(32), algorithms=ALL)
    stored = Credential.hashed(DEVICE, REALM, PASSWORD)
    assert stored.password is None
    assert server.verify(_answer(server, algorithm, PASSWORD, qop=qop), "REGISTER", stored, T0) is AuthResult.OK
    wrong = _answer(server, algorithm, PASSWORD + "x", qop=qop)
    assert server.verify(wrong, "REGISTER", stored, T0) is AuthResult.BAD_PASSWORD


@pytest.mark.parametrize("algorithm", ALL, ids=[a.value for a in ALL])
def test_ha1_and_password_credentials_agree(algorithm: Algorithm) -> None:
    """The same answer verifies against the password and against its HA1s (one code path)."""
    server = DigestServer(REALM, bytes(32), algorithms=ALL)
    for credential in (Credential(PASSWORD), PASSWORD, Credential.hashed(DEVICE, REALM, PASSWORD)):
        assert server.verify(_answer(server, algorithm, PASSWORD, qop=True), "REGISTER", credential, T0) is (
            AuthResult.OK
        )


def test_ha1_of_another_realm_or_user_verifies_nothing() -> None:
    server = DigestServer(REALM, bytes(32), algorithms=(Algorithm.MD5, Algorithm.SHA256))
    for stored in (Credential.hashed(DEVICE, "1201000000", PASSWORD), Credential.hashed("x", REALM, PASSWORD)):
        answer = _answer(server, Algorithm.MD5, PASSWORD, qop=True)
        assert server.verify(answer, "REGISTER", stored, T0) is AuthResult.BAD_PASSWORD


def test_missing_ha1_for_the_algorithm_fails_like_a_wrong_password() -> None:
    server = DigestServer(REALM, bytes(32), algorithms=(Algorithm.MD5, Algorithm.SHA256))
    md5_only = Credential(ha1_md5=compute_ha1(Algorithm.MD5, DEVICE, REALM, PASSWORD))
    assert server.verify(_answer(server, Algorithm.MD5, PASSWORD, qop=True), "REGISTER", md5_only, T0) is AuthResult.OK
    sha = _answer(server, Algorithm.SHA256, PASSWORD, qop=True)
    assert server.verify(sha, "REGISTER", md5_only, T0) is AuthResult.BAD_PASSWORD
    assert server.verify(sha, "REGISTER", md5_only, T0) is AuthResult.FOREIGN_NONCE, "the failure spent the nonce"


def test_stored_ha1_keeps_nonce_rules() -> None:
    """Replay and address binding are unchanged with an HA1 credential."""
    server = DigestServer(REALM, bytes(32))
    stored = Credential.hashed(DEVICE, REALM, PASSWORD)
    home, other = ("udp", "10.0.0.5", 5060), ("udp", "10.0.0.6", 5060)
    challenge = server.challenge(T0, client=home)
    answer = build_authorization(challenge, "REGISTER", URI, DEVICE, PASSWORD, "c1")
    assert server.verify(answer, "REGISTER", stored, T0, client=other) is AuthResult.WRONG_CLIENT
    assert server.verify(answer, "REGISTER", stored, T0, client=home) is AuthResult.OK
    assert server.verify(answer, "REGISTER", stored, T0, client=home) is AuthResult.REPLAYED


@pytest.mark.parametrize(
    "kwargs",
    [
        {"password": "pw", "ha1_md5": "0" * 32},
        {"ha1_md5": "0" * 31},
        {"ha1_sha256": "0" * 32},
        {"ha1_md5": "g" * 32},
    ],
)
def test_malformed_credentials_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Credential(**kwargs)
