"""REGISTER handling for devices and lower platforms (GB/T 28181 §9.1, RFC 3261 §10).

The :class:`Registrar` decides; it neither sends nor stores. Given a REGISTER,
where it came from and the time, it returns a :class:`RegisterDecision`: the
status to answer with, extra headers (challenge, Date, Expires, Contact) and,
on success, the registration fact for the application.

Policy, after WVP's registrar (docs/gb28181.md §3.4) and the issue's rules:

* The device ID is the user part of From; anything that is not a 20-digit ID
  of a device or platform type is refused with 403.
* No credentials → 401 with ``algorithm=MD5`` and ``qop="auth"`` (Dahua needs
  the algorithm; devices may answer with or without qop, both verify).
* Wrong password → 403, not another 401 (devices loop forever on 401), and the
  failure counts in the per-(device ID, source IP) throttle; while blocked,
  the REGISTER is refused without checking anything. Never per IP alone: a
  kindergarten's cameras share one NAT address.
* Expired nonce with a correct response → 401 ``stale=true``; a nonce we did
  not issue (e.g. from before a gateway restart) → a fresh 401.
* Nonces are bound to the exact client address (UDP host:port, or the TCP
  connection) they were issued to and used once per ``nc`` (sip/auth.py): a
  replayed or relayed ``Authorization`` gets a fresh 401 and counts as
  nothing, so a spoofed-source REGISTER cannot produce counted failures.
* Besides the per-(device, IP) lockout, failed authentications are limited
  per source IP and for the whole realm (:class:`RateLimit`): rotating device
  IDs from one socket guesses a handful of passwords a second, not thousands.
  Over the limit the answer is 503 with ``Retry-After``, without checking.
  The device's current registered address (the exact peer) is exempt from
  both, so failures from elsewhere never lock a registered device out.
* New device IDs (neither known nor provisioned) are challenged at a bounded
  rate per source IP and for the realm (H5); beyond it, 503 ``Retry-After``
  before any nonce is issued. The budget is spent on the challenge, so a new
  device that got a 401 is admitted when it answers correctly.
* Enrolment: in ``AUTO`` mode a well-formed ID that proves the gateway's
  device password (or its own provisioned one) is enrolled; in ``STRICT``
  mode only provisioned IDs may register.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from gateway.errors import SipError
from gateway.gb28181.auth_throttle import AuthThrottle, RateLimit
from gateway.gb28181.ids import DeviceType, GbId, is_gb_id
from gateway.gb28181.sip.auth import AuthResult, Credential, DigestServer, username_of
from gateway.gb28181.sip.message import SipRequest
from gateway.gb28181.sip.transport import Peer

# Types that may register: front-end devices (111-199) and platforms (200-211).
REGISTRABLE_TYPES = range(111, 212)
NOT_REGISTRABLE = {DeviceType.BUSINESS_GROUP.value, DeviceType.VIRTUAL_ORGANISATION.value}


class EnrolmentMode(str, Enum):
    """Who may register."""

    AUTO = "auto"
    STRICT = "strict"


class RefusalReason(str, Enum):
    """Why a REGISTER was not accepted (labels for logs and metrics)."""

    BAD_ID = "bad_id"
    NOT_PROVISIONED = "not_provisioned"
    MISSING_EXPIRES = "missing_expires"
    INTERVAL_TOO_BRIEF = "interval_too_brief"
    CHALLENGED = "challenged"
    STALE_NONCE = "stale_nonce"
    BAD_PASSWORD = "bad_password"
    USERNAME_MISMATCH = "username_mismatch"
    MALFORMED_AUTH = "malformed_auth"
    THROTTLED = "throttled"
    REPLAYED = "replayed"
    NONCE_ELSEWHERE = "nonce_address_mismatch"
    AUTH_RATE_LIMITED = "auth_rate_limited"
    NEW_DEVICE_RATE_LIMITED = "new_device_rate_limited"
    REDIRECTED = "redirected"  # 302: another gateway of the city serves the device's district (gateway/cluster.py)
    DISTRICT_NOT_SERVED = "district_not_served"


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    """Registrar settings; ``realm`` is normally the first 10 digits of the gateway ID."""

    gateway_id: str
    realm: str
    device_password: str
    mode: EnrolmentMode = EnrolmentMode.AUTO
    min_expires: int = 30
    max_expires: int = 86_400
    send_date: bool = True


@dataclass(frozen=True, slots=True)
class Registration:
    """A successful REGISTER (``expires == 0`` means unregister)."""

    device_id: str
    peer: Peer
    expires: int
    call_id: str
    contact: str | None
    user_agent: str
    gb_version: str | None


@dataclass(slots=True)
class RegisterDecision:
    """What to answer and what happened."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    registration: Registration | None = None
    refusal: RefusalReason | None = None
    device_id: str | None = None
    newly_blocked: bool = False


CredentialLookup = Callable[[str], "Credential | str | None"]
"""A provisioned device's own credential (stored HA1s or a password); None: the shared device password."""


def failed_auth_limit() -> RateLimit:
    """Failed authentications: a handful a second per source IP, a bounded rate for the realm."""
    return RateLimit(per_key_rate=1.0, per_key_burst=10.0, global_rate=20.0, global_burst=200.0)


def new_device_limit() -> RateLimit:
    """New device IDs admitted: a school's worth at once per source IP, the city's growth for the realm."""
    return RateLimit(per_key_rate=5.0, per_key_burst=200.0, global_rate=50.0, global_burst=1000.0)


class Registrar:
    """Answers REGISTER requests; see the module docstring for the policy."""

    def __init__(
        self,
        config: RegistrarConfig,
        digest: DigestServer,
        throttle: AuthThrottle,
        provisioned_credential: CredentialLookup,
        is_provisioned: Callable[[str], bool],
        *,
        is_known: Callable[[str], bool] = lambda device_id: False,
        failed_auth: RateLimit | None = None,
        new_devices: RateLimit | None = None,
    ) -> None:
        self.config = config
        self.digest = digest
        self.throttle = throttle
        self._provisioned_credential = provisioned_credential
        self._is_provisioned = is_provisioned
        self._is_known = is_known
        # Not ``or``: an empty RateLimit is falsy (it has __len__), so a given one would be replaced.
        self.failed_auth = failed_auth if failed_auth is not None else failed_auth_limit()
        self.new_devices = new_devices if new_devices is not None else new_device_limit()
        #: Where a device is registered now (device access sets it): that exact peer is exempt from lockouts.
        self.current_peer: Callable[[str], Peer | None] = lambda device_id: None
        #: Several gateway processes (gateway/cluster.py): a 302/403 for a device of a district served
        #: elsewhere, decided from its ID before anything else is checked or remembered; None: handle here.
        self.redirect_for: Callable[[str], RegisterDecision | None] = lambda device_id: None

    def handle(self, request: SipRequest, peer: Peer, now: float, wall: datetime) -> RegisterDecision:
        """Decide the answer to one REGISTER."""
        device_id = (request.from_.uri.user or "").strip()
        if not _registrable(device_id):
            return RegisterDecision(403, refusal=RefusalReason.BAD_ID, device_id=device_id or None)
        if (moved := self.redirect_for(device_id)) is not None:
            return moved
        if self.config.mode is EnrolmentMode.STRICT and not self._is_provisioned(device_id):
            return RegisterDecision(403, refusal=RefusalReason.NOT_PROVISIONED, device_id=device_id)
        expires = _expires_of(request)
        if expires is None:
            return RegisterDecision(400, refusal=RefusalReason.MISSING_EXPIRES, device_id=device_id)
        if 0 < expires < self.config.min_expires:
            return RegisterDecision(
                423,
                [("Min-Expires", str(self.config.min_expires))],
                refusal=RefusalReason.INTERVAL_TOO_BRIEF,
                device_id=device_id,
            )
        at_home = self.current_peer(device_id) == peer
        new_device = not at_home and not self._is_provisioned(device_id) and not self._is_known(device_id)
        if not at_home and self.throttle.is_blocked(device_id, peer.host, now) is not None:
            return RegisterDecision(403, refusal=RefusalReason.THROTTLED, device_id=device_id)
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return self._challenge(device_id, peer, now, RefusalReason.CHALLENGED, new_device=new_device)
        if not at_home and (wait := self.failed_auth.retry_after(peer.host, now)) is not None:
            return _busy(device_id, RefusalReason.AUTH_RATE_LIMITED, wait)
        if (username_of(authorization) or "") != device_id:
            if not self.digest.issued_to(authorization, peer):
                return self._challenge(device_id, peer, now, RefusalReason.CHALLENGED, new_device=new_device)
            return self._fail(device_id, peer, now, RefusalReason.USERNAME_MISMATCH)
        credential = self._provisioned_credential(device_id) or self.config.device_password
        result = self.digest.verify(authorization, "REGISTER", credential, now, client=peer)
        if result is AuthResult.OK:
            self.throttle.record_success(device_id, peer.host)
            return self._accept(request, device_id, peer, min(expires, self.config.max_expires), wall)
        if result is AuthResult.STALE_NONCE:
            return self._challenge(device_id, peer, now, RefusalReason.STALE_NONCE, stale=True, new_device=new_device)
        if result is AuthResult.REPLAYED:
            return self._challenge(device_id, peer, now, RefusalReason.REPLAYED, new_device=new_device)
        if result is AuthResult.WRONG_CLIENT:
            return self._challenge(device_id, peer, now, RefusalReason.NONCE_ELSEWHERE, new_device=new_device)
        if result in (AuthResult.FOREIGN_NONCE, AuthResult.WRONG_REALM, AuthResult.UNSUPPORTED_ALGORITHM):
            return self._challenge(device_id, peer, now, RefusalReason.CHALLENGED, new_device=new_device)
        if result is AuthResult.MALFORMED:
            return RegisterDecision(400, refusal=RefusalReason.MALFORMED_AUTH, device_id=device_id)
        return self._fail(device_id, peer, now, RefusalReason.BAD_PASSWORD)

    def _challenge(
        self,
        device_id: str,
        peer: Peer,
        now: float,
        reason: RefusalReason,
        *,
        stale: bool = False,
        new_device: bool = False,
    ) -> RegisterDecision:
        """A 401 with a nonce bound to ``peer``; for a new ID, only within the new-ID budget (else 503).

        The budget is spent here, when the nonce is issued, and not checked again on the answer:
        a device challenged within it is admitted when it answers correctly, however many other
        new IDs came meanwhile (checking twice and spending on success cost a storm of new
        devices a wasted 401 round trip, and a 503, each time the budget ran out in between).
        """
        if new_device:
            if (wait := self.new_devices.retry_after(peer.host, now)) is not None:
                return _busy(device_id, RefusalReason.NEW_DEVICE_RATE_LIMITED, wait)
            self.new_devices.take(peer.host, now)
        header = self.digest.challenge(now, stale=stale, client=peer)
        return RegisterDecision(401, [("WWW-Authenticate", header)], refusal=reason, device_id=device_id)

    def _fail(self, device_id: str, peer: Peer, now: float, reason: RefusalReason) -> RegisterDecision:
        decision = self.throttle.record_failure(device_id, peer.host, now)
        self.failed_auth.take(peer.host, now)
        return RegisterDecision(403, refusal=reason, device_id=device_id, newly_blocked=decision.newly_blocked)

    def _accept(
        self, request: SipRequest, device_id: str, peer: Peer, expires: int, wall: datetime
    ) -> RegisterDecision:
        headers: list[tuple[str, str]] = []
        contact = request.headers.get("Contact")
        if contact is not None:
            headers.append(("Contact", contact))
        headers.append(("Expires", str(expires)))
        if self.config.send_date:
            # GB/T 28181 time sync: ISO local time with milliseconds, not RFC 1123 (docs/gb28181.md §3.5).
            headers.append(("Date", wall.strftime("%Y-%m-%dT%H:%M:%S.") + f"{wall.microsecond // 1000:03d}"))
        registration = Registration(
            device_id=device_id,
            peer=peer,
            expires=expires,
            call_id=request.call_id,
            contact=contact,
            user_agent=request.headers.get("User-Agent") or "",
            gb_version=request.headers.get("X-GB-Ver"),
        )
        return RegisterDecision(200, headers, registration=registration, device_id=device_id)


def _busy(device_id: str, reason: RefusalReason, wait: float) -> RegisterDecision:
    """503 with a whole-second ``Retry-After`` (RFC 3261 §20.33): come back later, nothing was checked."""
    seconds = max(1, min(3600, math.ceil(wait)))
    return RegisterDecision(503, [("Retry-After", str(seconds))], refusal=reason, device_id=device_id)


def _registrable(device_id: str) -> bool:
    if not is_gb_id(device_id):
        return False
    type_code = GbId.parse(device_id).type_code
    return type_code in REGISTRABLE_TYPES and type_code not in NOT_REGISTRABLE


def _expires_of(request: SipRequest) -> int | None:
    """Expires header, else the Contact's ``expires`` parameter (RFC 3261 §10.2.1.1)."""
    value = request.headers.get("Expires")
    if value is None:
        try:
            contact = request.contact
        except SipError:  # the endpoint refuses these first; never raise out of the registrar
            return None
        value = contact.params.get("expires") if contact is not None else None
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 10:
        return None
    return int(value)
