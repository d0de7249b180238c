"""Registering with a server, as one transition table (RFC 3261 §10.2, docs/gb28181.md §3, §16.2).

The machine has the five states fleet summaries and the HTTP API show. What
happens to it is an input: operator commands, timers, keepalive loss, and the
server's answers, which :func:`classify` turns into inputs *before* the table
(a 2xx with time granted, a challenge to answer, credentials refused, a 423
with a usable Min-Expires, any other refusal, a time-out). The table gives the
action and the next state; :class:`~gateway.gb28181.lower.client.LowerClient`
carries the action out. A pair the table lacks is a bug in the caller:
:class:`RegistrationError`, and the machine stops (docs/design.md §3).

Digest (RFC 7616, docs/gb28181.md §3.3) follows what upper platforms taught us: 401 and
407 are both answered; the last nonce is reused with ``nc`` + 1 to save a
round trip; ``stale=true`` is answered at once up to :data:`MAX_STALE_IN_ROW`
times; the same nonce again, or a fresh nonce twice in a row, means the
password is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

from gateway.errors import DigestError, SipError
from gateway.gb28181.sip.auth import Algorithm, DigestClient, parse_auth_params
from gateway.gb28181.sip.message import SipResponse

__all__ = [
    "MAX_EXPIRES",
    "MAX_STALE_IN_ROW",
    "TABLE",
    "Challenge",
    "DigestRounds",
    "RegAction",
    "RegInput",
    "RegState",
    "RegisterAttempt",
    "RegistrationError",
    "RedirectTarget",
    "RegistrationMachine",
    "Trigger",
    "classify",
    "granted_expires",
    "redirect_target",
    "seconds",
]

MAX_EXPIRES: Final = 86_400  # a 423 asking for more than a day is not satisfied
MAX_STALE_IN_ROW: Final = 3  # stale=true answers in a row before we call the server broken


class RegistrationError(SipError):
    """A (state, input) pair the registration table does not have: our misuse, not the peer's fault."""

    def __init__(self, state: RegState, inp: RegInput) -> None:
        super().__init__(f"registration: {inp.value} in state {state.value}")
        self.state = state
        self.input = inp


class RegState(StrEnum):
    """Registration states; the values are what fleet summaries and the HTTP API show."""

    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    RETRY_WAIT = "retry_wait"
    STOPPED = "stopped"


class RegInput(Enum):
    """What can happen to a registration."""

    START = "start requested"
    STOP = "stop requested"
    UNREGISTER = "stop with unregistration requested"
    RETRY_NOW = "register at once requested"
    ACCEPTED = "2xx with time granted"
    CHALLENGED = "digest challenge to answer"
    CREDENTIALS_REFUSED = "credentials refused"
    INTERVAL_TOO_BRIEF = "423 with a usable Min-Expires"
    REFUSED = "other refusal"
    TIMED_OUT = "no answer"
    REDIRECTED = "3xx naming a server we may follow"
    REFRESH_DUE = "refresh timer"
    RETRY_DUE = "retry timer"
    SERVER_LOST = "server lost or forgot us"


class RegAction(Enum):
    """What a transition does besides changing state."""

    IGNORE = "ignore"
    SEND_REGISTER = "send REGISTER"
    ANSWER_CHALLENGE = "send REGISTER with credentials"
    ADOPT_MIN_EXPIRES = "raise expires to Min-Expires and send REGISTER"
    COME_ONLINE = "arm refresh, start keepalives, report online"
    ARM_REFRESH = "arm refresh"
    WAIT_AND_RETRY = "count a failure, wait with back-off"
    WAIT_AND_RELOGIN = "wait, then register again (no failure counted)"
    REGISTER_NOW = "drop the register timer and send REGISTER now"
    FOLLOW_REDIRECT = "register with the server the 3xx named"
    SEND_UNREGISTER = "stop and send REGISTER Expires: 0"
    HALT = "stop every timer"


S, I, A = RegState, RegInput, RegAction  # noqa: E741 - short names keep the table readable
_FAILURES = (I.CREDENTIALS_REFUSED, I.REFUSED, I.TIMED_OUT)
_ANSWERS = (I.ACCEPTED, I.CHALLENGED, I.INTERVAL_TOO_BRIEF, I.REDIRECTED, *_FAILURES)


def _running(state: RegState) -> dict[tuple[RegState, RegInput], tuple[RegAction, RegState]]:
    """Entries every state with a registration under way or granted shares."""
    return {
        (state, I.START): (A.IGNORE, state),
        (state, I.STOP): (A.HALT, S.STOPPED),
        (state, I.UNREGISTER): (A.HALT, S.STOPPED),
        # "At once" means now, not at the next timer tick: the caller (a new TCP connection) sends nothing else.
        (state, I.RETRY_NOW): (A.REGISTER_NOW, S.REGISTERED if state is S.REGISTERED else S.REGISTERING),
        (state, I.SERVER_LOST): (A.WAIT_AND_RELOGIN, S.RETRY_WAIT),
    }


TABLE: Final[dict[tuple[RegState, RegInput], tuple[RegAction, RegState]]] = {
    (S.IDLE, I.START): (A.SEND_REGISTER, S.REGISTERING),
    (S.IDLE, I.STOP): (A.HALT, S.STOPPED),
    (S.IDLE, I.UNREGISTER): (A.HALT, S.STOPPED),
    (S.IDLE, I.RETRY_NOW): (A.IGNORE, S.IDLE),
    # A device that was never started but hears "who are you?" to an alarm registers (docs/gb28181.md §9.2).
    (S.IDLE, I.SERVER_LOST): (A.WAIT_AND_RELOGIN, S.RETRY_WAIT),
    **_running(S.REGISTERING),
    (S.REGISTERING, I.ACCEPTED): (A.COME_ONLINE, S.REGISTERED),
    (S.REGISTERING, I.CHALLENGED): (A.ANSWER_CHALLENGE, S.REGISTERING),
    (S.REGISTERING, I.INTERVAL_TOO_BRIEF): (A.ADOPT_MIN_EXPIRES, S.REGISTERING),
    # GB/T 28181-2022 §9.1.2.3: the registrar names the server to register with (a city's other gateway).
    (S.REGISTERING, I.REDIRECTED): (A.FOLLOW_REDIRECT, S.REGISTERING),
    **{(S.REGISTERING, i): (A.WAIT_AND_RETRY, S.RETRY_WAIT) for i in _FAILURES},
    (S.REGISTERING, I.RETRY_DUE): (A.SEND_REGISTER, S.REGISTERING),
    **_running(S.REGISTERED),
    (S.REGISTERED, I.UNREGISTER): (A.SEND_UNREGISTER, S.STOPPED),
    # A refresh keeps us registered meanwhile (RFC 3261 §10.2.4: the binding lasts until it expires).
    (S.REGISTERED, I.REFRESH_DUE): (A.SEND_REGISTER, S.REGISTERED),
    (S.REGISTERED, I.ACCEPTED): (A.ARM_REFRESH, S.REGISTERED),
    (S.REGISTERED, I.CHALLENGED): (A.ANSWER_CHALLENGE, S.REGISTERED),
    (S.REGISTERED, I.INTERVAL_TOO_BRIEF): (A.ADOPT_MIN_EXPIRES, S.REGISTERED),
    # A refresh redirected: this server no longer has us; registering elsewhere is a new registration.
    (S.REGISTERED, I.REDIRECTED): (A.FOLLOW_REDIRECT, S.REGISTERING),
    **{(S.REGISTERED, i): (A.WAIT_AND_RETRY, S.RETRY_WAIT) for i in _FAILURES},
    **_running(S.RETRY_WAIT),
    (S.RETRY_WAIT, I.RETRY_DUE): (A.SEND_REGISTER, S.REGISTERING),
    (S.STOPPED, I.START): (A.SEND_REGISTER, S.REGISTERING),
    (S.STOPPED, I.STOP): (A.IGNORE, S.STOPPED),
    (S.STOPPED, I.UNREGISTER): (A.IGNORE, S.STOPPED),
    (S.STOPPED, I.RETRY_NOW): (A.IGNORE, S.STOPPED),
    (S.STOPPED, I.SERVER_LOST): (A.IGNORE, S.STOPPED),
    # Only the unregistration is in flight while stopped: answer its challenge, nothing else.
    **{(S.STOPPED, i): (A.IGNORE, S.STOPPED) for i in _ANSWERS if i is not I.CHALLENGED},
    (S.STOPPED, I.CHALLENGED): (A.ANSWER_CHALLENGE, S.STOPPED),
}
"""``(state, input) -> (action, next state)``. Missing on purpose: answers and timers in states
that cannot have them (IDLE and RETRY_WAIT have no attempt in flight, STOPPED no timer)."""


class RegistrationMachine:
    """The table walk: the current state and one :meth:`fire` per input."""

    def __init__(self, state: RegState = RegState.IDLE) -> None:
        self.state = state

    def fire(self, inp: RegInput) -> RegAction:
        """Apply ``inp``; a pair the table lacks stops the machine and raises :class:`RegistrationError`."""
        transition = TABLE.get((self.state, inp))
        if transition is None:
            error = RegistrationError(self.state, inp)
            self.state = RegState.STOPPED
            raise error
        action, self.state = transition
        return action


@dataclass(frozen=True, slots=True)
class RegisterAttempt:
    """One REGISTER we sent: the expiry asked and the nonce its credentials used (None: none sent)."""

    expires: int
    nonce: str | None


@dataclass(frozen=True, slots=True)
class Challenge:
    """A digest challenge we can answer, and the header our credentials go in."""

    credentials_header: str  # Authorization (after 401) or Proxy-Authorization (after 407)
    value: str
    nonce: str
    stale: bool


@dataclass(frozen=True, slots=True)
class RedirectTarget:
    """Where a 3xx told us to register (its Contact): the server's ID and address. A claim, to be checked."""

    server_id: str
    host: str
    port: int

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Trigger:
    """An input with what its action needs: why, the status seen, credentials or an expiry."""

    input: RegInput
    reason: str = ""
    status: int | None = None
    expires: int | None = None  # granted (ACCEPTED) or Min-Expires (INTERVAL_TOO_BRIEF)
    credentials: tuple[str, str] | None = None  # (header, value) for CHALLENGED
    nonce: str | None = None
    attempt: RegisterAttempt | None = None
    delay: float | None = None  # SERVER_LOST: how long to wait before registering again
    redirect: RedirectTarget | None = None  # REDIRECTED: the server named by the 3xx's Contact


class DigestRounds:
    """The digest side of registering: the challenge we answer and when a refusal means a wrong password."""

    def __init__(self, username: str, password: str, uri: str, cnonce: Callable[[], str]) -> None:
        self._client = DigestClient(username, password)
        self._uri = uri
        self._cnonce = cnonce
        self.challenge: Challenge | None = None
        self.rejections = 0  # fresh-nonce 401s in a row that refused our credentials
        self.stale_in_row = 0

    def reset(self) -> None:
        """Start the next round afresh (after a failure): no nonce to reuse, no counts."""
        self.challenge = None
        self.rejections = self.stale_in_row = 0

    def settled(self) -> None:
        """The server accepted us: the counts of this round are over, the nonce stays for reuse."""
        self.rejections = self.stale_in_row = 0

    def reuse(self) -> tuple[str, str, str] | None:
        """Credentials for the last nonce with ``nc`` + 1 (header, value, nonce), or None.

        Saves the 401 round trip on a refresh; a nonce the server no longer
        likes comes back as 401 stale=true (RFC 7616 §3.3).
        """
        challenge = self.challenge
        if challenge is None:
            return None
        try:
            return challenge.credentials_header, self._authorize(challenge.value), challenge.nonce
        except DigestError:
            self.challenge = None
            return None

    def answer(self, response: SipResponse, attempt: RegisterAttempt) -> Trigger:
        """Classify a 401/407: a challenge to answer (with credentials ready), or a refusal."""
        status = response.status
        header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        credentials_header = "Authorization" if status == 401 else "Proxy-Authorization"
        challenge = pick_challenge(response.headers.get_all(header), credentials_header)
        if challenge is None:
            return Trigger(I.REFUSED, f"REGISTER {status} without a usable digest challenge", status)
        if attempt.nonce is not None:  # the request carried credentials and they were refused
            if challenge.stale:
                # Password right, nonce expired (RFC 7616 §3.3): answer the new nonce at once.
                self.stale_in_row += 1
                if self.stale_in_row > MAX_STALE_IN_ROW:
                    return Trigger(I.REFUSED, "REGISTER: every nonce is stale", status)
            else:
                self.rejections += 1
                # The same nonce again means the password is wrong. A fresh nonce once is a
                # registrar that forgot us (restart) or does not send stale=true; twice is a refusal.
                if challenge.nonce == attempt.nonce or self.rejections >= 2:
                    return Trigger(I.CREDENTIALS_REFUSED, f"REGISTER {status}: wrong password", status)
        try:
            value = self._authorize(challenge.value)
        except DigestError as exc:
            return Trigger(I.REFUSED, f"REGISTER: unusable challenge ({exc.reason})", status)
        self.challenge = challenge
        return Trigger(I.CHALLENGED, status=status, credentials=(credentials_header, value), nonce=challenge.nonce)

    def _authorize(self, challenge: str) -> str:
        return self._client.authorization(challenge, "REGISTER", self._uri, cnonce=self._cnonce())


def classify(response: SipResponse, attempt: RegisterAttempt, rounds: DigestRounds, expires: int) -> Trigger | None:
    """The input a final answer to ``attempt`` is; None for a provisional one."""
    status = response.status
    if status < 200:
        return None
    if status in (401, 407):
        return rounds.answer(response, attempt)
    if 200 <= status < 300:
        granted = granted_expires(response)
        if granted == 0 and attempt.expires > 0:
            return Trigger(I.REFUSED, "REGISTER 200 granted no time", status)
        return Trigger(I.ACCEPTED, status=status, expires=granted if granted is not None else expires)
    if status in (301, 302):
        target = redirect_target(response)
        if target is None:
            return Trigger(I.REFUSED, f"REGISTER {status} without a usable Contact", status)
        return Trigger(I.REDIRECTED, status=status, redirect=target)
    if status == 423:
        wanted = seconds(response.headers.get("Min-Expires"), max_len=6)
        if wanted is not None and expires < wanted <= MAX_EXPIRES:
            return Trigger(I.INTERVAL_TOO_BRIEF, status=status, expires=wanted)
    return Trigger(I.REFUSED, f"REGISTER {status} {response.reason}".strip(), status)


def redirect_target(response: SipResponse) -> RedirectTarget | None:
    """The 3xx's Contact as ``sip:<20-digit ID>@HOST:PORT``, or None when it is anything else."""
    try:
        contact = response.contact
    except SipError:
        return None
    if contact is None:
        return None
    uri = contact.uri
    user = uri.user or ""
    port = uri.port
    if len(user) != 20 or not user.isascii() or not user.isdigit() or not uri.host or port is None:
        return None
    if not 0 < port < 65536:
        return None
    return RedirectTarget(user, uri.host, port)


def pick_challenge(values: Iterable[str], credentials_header: str) -> Challenge | None:
    """The first digest challenge we can answer (RFC 7616 §3.7 lists the preferred first)."""
    for value in values:
        try:
            scheme, params = parse_auth_params(value)
            Algorithm.from_token(params.get("algorithm"))
        except DigestError:
            continue
        nonce = params.get("nonce")
        if scheme != "digest" or not nonce or "realm" not in params:
            continue
        stale = (params.get("stale") or "").strip().lower() == "true"
        return Challenge(credentials_header, value, nonce, stale)
    return None


def seconds(value: str | None, max_len: int = 10) -> int | None:
    """A delta-seconds header value (RFC 3261 §25.1), or None when absent or not plain digits."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > max_len:
        return None
    return int(value)


def granted_expires(response: SipResponse) -> int | None:
    """What the registrar granted: Expires, else the Contact's ``expires`` (RFC 3261 §10.2.4)."""
    granted = seconds(response.headers.get("Expires"))
    if granted is not None:
        return granted
    try:
        contact = response.contact
    except SipError:
        return None
    return seconds(contact.params.get("expires")) if contact is not None else None
