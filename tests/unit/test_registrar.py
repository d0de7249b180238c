"""Registrar: the REGISTER policy (challenge, digest forms, throttle, IDs, Expires, enrolment)."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from gb_harness import GATEWAY_ID, IPC_ID, NVR_ID, PASSWORD, REALM, make_registrar

from gateway.gb28181.auth_throttle import AuthThrottle
from gateway.gb28181.registrar import EnrolmentMode, RefusalReason, RegisterDecision, Registrar, Registration
from gateway.gb28181.requests import build_register, register_uri
from gateway.gb28181.sip.auth import DigestServer, build_authorization, parse_auth_params
from gateway.gb28181.sip.message import SipRequest
from gateway.gb28181.sip.transport import Peer, Transport

PEER = Peer(Transport.UDP, "10.0.0.2", 5061)
WALL = datetime(2024, 5, 20, 10, 15, 30, 123456)
DATE_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}")
URI = register_uri(GATEWAY_ID, REALM)


def register(
    device_id: str = IPC_ID,
    *,
    expires: int | None = 3600,
    authorization: str | None = None,
    cseq: int = 1,
    call_id: str = "call-1@10.0.0.2",
) -> SipRequest:
    request = build_register(
        device_id=device_id,
        domain=REALM,
        server_id=GATEWAY_ID,
        contact_host="10.0.0.2",
        contact_port=5061,
        from_tag="ftag",
        call_id=call_id,
        cseq=cseq,
        expires=expires if expires is not None else 3600,
        authorization=authorization,
        user_agent="IP Camera",
    )
    if expires is None:
        request.headers.remove("Expires")
    return request


def header(decision: RegisterDecision, name: str) -> str | None:
    values = [v for n, v in decision.headers if n.lower() == name.lower()]
    assert len(values) <= 1
    return values[0] if values else None


def challenge_of(registrar: Registrar, device_id: str = IPC_ID, now: float = 0.0, peer: Peer = PEER) -> str:
    decision = registrar.handle(register(device_id), peer, now, WALL)
    assert decision.status == 401
    value = header(decision, "WWW-Authenticate")
    assert value is not None
    return value


def answer(
    challenge: str,
    device_id: str = IPC_ID,
    password: str = PASSWORD,
    *,
    username: str | None = None,
    qop: bool = True,
) -> str:
    if not qop:
        challenge = challenge.replace(',qop="auth"', "")
        assert "qop" not in challenge
    return build_authorization(challenge, "REGISTER", URI, username or device_id, password, cnonce="0a4f113b")


def authed(
    registrar: Registrar,
    device_id: str = IPC_ID,
    password: str = PASSWORD,
    *,
    now: float = 0.0,
    expires: int | None = 3600,
    qop: bool = True,
    peer: Peer = PEER,
) -> RegisterDecision:
    """Challenge, then answer with ``password``, both at ``now``."""
    auth = answer(challenge_of(registrar, device_id, now, peer), device_id, password, qop=qop)
    return registrar.handle(register(device_id, expires=expires, authorization=auth, cseq=2), peer, now, WALL)


# --- challenge ---------------------------------------------------------------------


def test_no_authorization_is_challenged_with_md5_and_qop() -> None:
    decision = make_registrar().handle(register(), PEER, 0.0, WALL)

    assert decision.status == 401
    assert decision.refusal is RefusalReason.CHALLENGED
    assert decision.registration is None
    assert decision.device_id == IPC_ID
    scheme, params = parse_auth_params(header(decision, "WWW-Authenticate") or "")
    assert scheme == "digest"
    assert params["algorithm"] == "MD5"
    assert params["qop"] == "auth"
    assert params["realm"] == REALM
    assert "stale" not in params


# --- success -------------------------------------------------------------------------


@pytest.mark.parametrize("qop", [True, False], ids=["qop_auth", "rfc2069_no_qop"])
def test_correct_digest_registers(qop: bool) -> None:
    registrar = make_registrar()
    auth = answer(challenge_of(registrar), qop=qop)
    assert ("qop=auth" in auth) is qop
    request = register(authorization=auth, cseq=2)

    decision = registrar.handle(request, PEER, 0.0, WALL)

    assert decision.status == 200
    assert decision.refusal is None
    assert header(decision, "Expires") == "3600"
    assert header(decision, "Contact") == request.headers.get("Contact")
    date = header(decision, "Date")
    assert date is not None and DATE_RE.fullmatch(date)
    assert date == "2024-05-20T10:15:30.123"
    reg = decision.registration
    assert isinstance(reg, Registration)
    assert (reg.device_id, reg.peer, reg.expires, reg.call_id) == (IPC_ID, PEER, 3600, "call-1@10.0.0.2")
    assert reg.user_agent == "IP Camera"


def test_expires_above_maximum_is_capped() -> None:
    decision = authed(make_registrar(), expires=999_999)
    assert decision.status == 200
    assert header(decision, "Expires") == "86400"
    assert decision.registration is not None and decision.registration.expires == 86_400


def test_expires_zero_is_an_authenticated_unregistration() -> None:
    decision = authed(make_registrar(), expires=0)
    assert decision.status == 200
    assert decision.registration is not None
    assert decision.registration.expires == 0


def test_expires_from_contact_parameter_when_header_missing() -> None:
    registrar = make_registrar()
    auth = answer(challenge_of(registrar))
    request = register(expires=None, authorization=auth, cseq=2)
    request.headers.set("Contact", "<sip:12010000001320000001@10.0.0.2:5061>;expires=600")
    decision = registrar.handle(request, PEER, 0.0, WALL)
    assert decision.status == 200
    assert decision.registration is not None and decision.registration.expires == 600


# --- refusals ------------------------------------------------------------------------


def test_wrong_password_is_403_not_another_401() -> None:
    decision = authed(make_registrar(), password="wrong")
    assert decision.status == 403
    assert decision.refusal is RefusalReason.BAD_PASSWORD
    assert header(decision, "WWW-Authenticate") is None
    assert decision.registration is None


def test_throttle_blocks_the_failing_device_not_its_neighbours() -> None:
    registrar = make_registrar(throttle=AuthThrottle())
    challenge = challenge_of(registrar)
    decisions = [
        registrar.handle(
            register(authorization=answer(challenge_of(registrar), password="wrong"), cseq=2 + i), PEER, 1.0, WALL
        )
        for i in range(3)
    ]  # a wrong password spends its nonce: each guess answers a fresh challenge
    assert [d.status for d in decisions] == [403, 403, 403]
    assert [d.refusal for d in decisions] == [RefusalReason.BAD_PASSWORD] * 3
    assert [d.newly_blocked for d in decisions] == [False, False, True]

    # the 4th attempt, with the RIGHT password, is refused without being checked
    good = answer(challenge)
    fourth = registrar.handle(register(authorization=good, cseq=9), PEER, 2.0, WALL)
    assert fourth.status == 403
    assert fourth.refusal is RefusalReason.THROTTLED
    assert fourth.registration is None

    # another camera behind the same NAT address is not affected
    neighbour = authed(registrar, NVR_ID, now=2.0)
    assert neighbour.status == 200
    # nor is the same ID from another address
    elsewhere = authed(registrar, now=2.0, peer=Peer(Transport.UDP, "10.9.9.9", 5060))
    assert elsewhere.status == 200

    # once the block (5 s) is over, the right password works again
    after = registrar.handle(
        register(authorization=answer(challenge_of(registrar, now=10.0)), cseq=10), PEER, 10.0, WALL
    )
    assert after.status == 200


def test_stale_nonce_with_right_password_gets_stale_challenge() -> None:
    registrar = make_registrar()  # nonce_ttl 300 s
    auth = answer(challenge_of(registrar, now=0.0))
    decision = registrar.handle(register(authorization=auth, cseq=2), PEER, 301.0, WALL)

    assert decision.status == 401
    assert decision.refusal is RefusalReason.STALE_NONCE
    _, params = parse_auth_params(header(decision, "WWW-Authenticate") or "")
    assert params["stale"] == "true"
    assert params["nonce"] != parse_auth_params(auth)[1]["nonce"]


def test_foreign_nonce_gets_fresh_challenge() -> None:
    registrar = make_registrar()
    # a nonce signed with another secret (e.g. before a gateway restart)
    other = DigestServer(REALM, b"x" * 32).challenge(0.0)
    decision = registrar.handle(register(authorization=answer(other), cseq=2), PEER, 0.0, WALL)

    assert decision.status == 401
    assert decision.refusal is RefusalReason.CHALLENGED
    _, params = parse_auth_params(header(decision, "WWW-Authenticate") or "")
    assert "stale" not in params
    assert decision.newly_blocked is False


def test_foreign_nonce_does_not_count_as_a_failure() -> None:
    registrar = make_registrar()
    other = DigestServer(REALM, b"x" * 32).challenge(0.0)
    for i in range(5):
        assert registrar.handle(register(authorization=answer(other), cseq=2 + i), PEER, 0.0, WALL).status == 401
    assert authed(registrar).status == 200


@pytest.mark.parametrize(
    "device_id",
    [
        "1201000000132000001",  # 19 digits
        "120100000013200000011",  # 21 digits
        "1201000000132000000a",  # not digits
        "12010000002160000001",  # type 216: virtual organisation
        "12010000002150000001",  # type 215: business group
        "12010000003000000001",  # type 300: centre user
        "",
    ],
    ids=["19_digits", "21_digits", "non_digit", "type_216", "type_215", "type_300", "empty"],
)
def test_unregistrable_ids_are_refused_403(device_id: str) -> None:
    request = register(IPC_ID)
    request.headers.set("From", f"<sip:{device_id}@{REALM}>;tag=ftag")
    decision = make_registrar().handle(request, PEER, 0.0, WALL)
    assert decision.status == 403
    assert decision.refusal is RefusalReason.BAD_ID
    assert header(decision, "WWW-Authenticate") is None


@pytest.mark.parametrize("device_id", ["12010000001110000001", "12010000002000000001", "12010000002110000001"])
def test_device_and_platform_types_may_register(device_id: str) -> None:
    assert authed(make_registrar(), device_id).status == 200


def test_missing_expires_is_400() -> None:
    decision = make_registrar().handle(register(expires=None), PEER, 0.0, WALL)
    assert decision.status == 400
    assert decision.refusal is RefusalReason.MISSING_EXPIRES


def test_brief_expires_is_423_with_min_expires() -> None:
    decision = make_registrar().handle(register(expires=10), PEER, 0.0, WALL)
    assert decision.status == 423
    assert decision.refusal is RefusalReason.INTERVAL_TOO_BRIEF
    assert header(decision, "Min-Expires") == "30"


def test_username_different_from_from_user_is_403() -> None:
    registrar = make_registrar()
    auth = answer(challenge_of(registrar), username=NVR_ID)  # valid digest for another ID
    decision = registrar.handle(register(IPC_ID, authorization=auth, cseq=2), PEER, 0.0, WALL)
    assert decision.status == 403
    assert decision.refusal is RefusalReason.USERNAME_MISMATCH
    assert decision.registration is None


def test_malformed_authorization_is_400() -> None:
    registrar = make_registrar()
    decision = registrar.handle(register(authorization=f'Digest username="{IPC_ID}",realm="x'), PEER, 0.0, WALL)
    assert decision.status == 400
    assert decision.refusal is RefusalReason.MALFORMED_AUTH


# --- enrolment ---------------------------------------------------------------------------


def test_strict_mode_refuses_unprovisioned_id() -> None:
    registrar = make_registrar(mode=EnrolmentMode.STRICT, provisioned={NVR_ID: "nvr-secret"})
    decision = registrar.handle(register(IPC_ID), PEER, 0.0, WALL)
    assert decision.status == 403
    assert decision.refusal is RefusalReason.NOT_PROVISIONED


def test_strict_mode_accepts_provisioned_id_with_its_own_password() -> None:
    registrar = make_registrar(mode=EnrolmentMode.STRICT, provisioned={NVR_ID: "nvr-secret"})
    assert authed(registrar, NVR_ID, "nvr-secret").status == 200
    # its own password replaces the gateway-wide one
    refused = authed(registrar, NVR_ID, PASSWORD)
    assert refused.status == 403
    assert refused.refusal is RefusalReason.BAD_PASSWORD


def test_auto_mode_enrols_unknown_id_with_gateway_password() -> None:
    registrar = make_registrar(mode=EnrolmentMode.AUTO, provisioned={NVR_ID: "nvr-secret"})
    assert authed(registrar, IPC_ID, PASSWORD).status == 200
    assert authed(registrar, NVR_ID, "nvr-secret").status == 200


def test_no_date_header_when_disabled() -> None:
    from gateway.gb28181.registrar import RegistrarConfig

    registrar = Registrar(
        RegistrarConfig(gateway_id=GATEWAY_ID, realm=REALM, device_password=PASSWORD, send_date=False),
        DigestServer(REALM, b"k" * 32),
        AuthThrottle(),
        {}.get,
        lambda _id: False,
    )
    decision = authed(registrar)
    assert decision.status == 200
    assert header(decision, "Date") is None


# --- new-ID limit ------------------------------------------------------------------


def test_a_new_device_challenged_within_the_new_id_budget_is_admitted_on_its_answer() -> None:
    """The budget is spent when a new ID is challenged, so its answer is never refused afterwards.

    Before: the limit was checked at the challenge *and* at the answer but spent only on success,
    so under a storm of new IDs a device could get its 401, answer it, and then get 503 (its
    nonce wasted, another 401 round trip after Retry-After): 8,490 challenges for 767 devices
    online in the storm benchmark. Now each new ID over the budget gets 503 before any nonce.
    """
    from gateway.gb28181.auth_throttle import RateLimit
    from gateway.gb28181.registrar import RegistrarConfig

    registrar = Registrar(
        RegistrarConfig(gateway_id=GATEWAY_ID, realm=REALM, device_password=PASSWORD),
        DigestServer(REALM, b"k" * 32),
        AuthThrottle(),
        {}.get,
        lambda _id: False,
        new_devices=RateLimit(per_key_rate=0.01, per_key_burst=2.0, global_rate=0.01, global_burst=100.0),
    )
    ids = [f"1201000000132000{i:04d}" for i in range(1, 4)]
    first = [registrar.handle(register(d), PEER, 0.0, WALL) for d in ids]
    assert [d.status for d in first] == [401, 401, 503]
    assert first[2].refusal is RefusalReason.NEW_DEVICE_RATE_LIMITED and header(first[2], "Retry-After")
    for device_id, decision in zip(ids[:2], first[:2], strict=True):
        auth = answer(header(decision, "WWW-Authenticate") or "", device_id)
        assert registrar.handle(register(device_id, authorization=auth, cseq=2), PEER, 0.0, WALL).status == 200
