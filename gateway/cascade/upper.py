"""The gateway as a lower platform towards upper platforms (GB/T 28181 cascade, notes §16), sans-I/O.

An :class:`UpperLink` presents the gateway to one upper platform (district,
municipal, police) as one big device (notes §16.1): it REGISTERs with digest
and refreshes, sends keepalives and notices when the upper is gone, answers
the upper's Catalog / DeviceInfo / DeviceStatus queries from the channel
subset that upper may see, accepts catalog SUBSCRIBEs and pushes catalog
NOTIFYs in their dialogs, and forwards alarms upward. Calls (INVITE and
friends) are handed to :attr:`UpperLink.on_call` untouched.

Every link shares the gateway's :class:`SipEndpoint` (one socket towards
devices and uppers alike). :class:`CascadeHost` holds the links and claims the
endpoint events that belong to an upper (:meth:`CascadeHost.route`) before the
device-access core sees them, the way its ``media_router`` claims live calls.

Time comes in as ``now``; nothing here reads a clock, draws random numbers
(the endpoint's id source does) or touches a socket.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from gateway.errors import ConfigError, DigestError, ManscdpError, SipError
from gateway.gb28181.dialog import Dialog
from gateway.gb28181.ids import GbId, is_gb_id
from gateway.gb28181.manscdp import (
    AlarmNotify,
    CatalogItem,
    CatalogQuery,
    CatalogResponse,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    Keepalive,
    ManscdpMessage,
    ResultResponse,
    Root,
    decode_message,
    serialize,
    split_catalog,
)
from gateway.gb28181.requests import MANSCDP_CONTENT_TYPE, build_message, build_register, sip_uri
from gateway.gb28181.sip.auth import Algorithm, DigestClient, parse_auth_params
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, SipEvent, TransactionTimedOut
from gateway.gb28181.sip.headers import SipUri
from gateway.gb28181.sip.message import SipRequest, SipResponse, make_response
from gateway.gb28181.sip.transport import Peer, Transport

__all__ = [
    "AlarmAnswered",
    "CascadeHost",
    "CatalogSent",
    "PlatformInfo",
    "SubscriptionChanged",
    "UpperEvent",
    "UpperLink",
    "UpperOffline",
    "UpperOnline",
    "UpperPlatformConfig",
    "UpperState",
]

log = logging.getLogger("kgw.cascade")

REFRESH_RATIO: Final = 0.8  # re-REGISTER at 80 % of the granted expiry, as the device agent does
MIN_EXPIRES: Final = 30  # most registrars refuse less (WVP, our own registrar: 423)
MAX_EXPIRES: Final = 86_400
MAX_SUBSCRIPTION_EXPIRES: Final = 86_400  # a longer SUBSCRIBE is granted this much
MAX_STALE_IN_ROW: Final = 3  # stale=true answers in a row before we call the upper broken
MAX_PUSHES: Final = 8  # catalog pushes in flight per link; a flood of queries cannot pile up chunks
TIMEOUT_STATUS: Final = 408  # what a transaction time-out is reported as
CALL_METHODS: Final = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "INFO"})
ALLOW: Final = "MESSAGE, SUBSCRIBE, OPTIONS, INVITE, ACK, BYE, CANCEL, INFO"

_TRANSPORTS: Final = frozenset(t.value for t in Transport)
_CTL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_HOST_RE: Final = re.compile(r"[A-Za-z0-9.\-:\[\]]+")


# --- configuration ----------------------------------------------------------------------


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpperPlatformConfig:
    """One upper platform we register with (notes §16.1, WVP's "上级平台").

    ``domain`` defaults to the first 10 digits of ``server_id``; ``username``
    (digest user) to our own local ID, which the link fills in. Times are seconds.
    """

    name: str
    server_id: str
    domain: str = ""
    host: str
    port: int = 5060
    transport: str = "UDP"
    password: str
    username: str = ""
    expires: int = 3600
    keepalive_interval: float = 60.0
    keepalive_missed: int = 3
    catalog_per_message: int = 8
    register_retry_min: float = 2.0
    register_retry_max: float = 60.0

    def __post_init__(self) -> None:
        # Frozen: the derived defaults are written once, here.
        if not self.domain and isinstance(self.server_id, str):
            object.__setattr__(self, "domain", self.server_id[:10])
        if isinstance(self.transport, str):
            object.__setattr__(self, "transport", self.transport.strip().upper())

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value that cannot work."""
        label = f"upper platform {self.name!r:.40}"
        if not isinstance(self.name, str) or not self.name.strip() or _CTL_RE.search(self.name):
            raise ConfigError("an upper platform needs a name (printable text)")
        if not is_gb_id(self.server_id):
            raise ConfigError(f"{label}: server_id must be 20 digits, got {self.server_id!r:.40}")
        if not isinstance(self.domain, str) or not self.domain or not _HOST_RE.fullmatch(self.domain):
            raise ConfigError(f"{label}: bad SIP domain {self.domain!r:.40}")
        if not isinstance(self.host, str) or not self.host or not _HOST_RE.fullmatch(self.host):
            raise ConfigError(f"{label}: bad host {self.host!r:.60}")
        if not _int(self.port) or not 0 < self.port < 65536:
            raise ConfigError(f"{label}: port must be 1-65535, got {self.port!r}")
        if self.transport not in _TRANSPORTS:
            raise ConfigError(f"{label}: transport must be UDP or TCP, got {self.transport!r:.20}")
        for field_name in ("password", "username"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or _CTL_RE.search(value):
                raise ConfigError(f"{label}: {field_name} must be text without control characters")
        if not _int(self.expires) or not MIN_EXPIRES <= self.expires <= MAX_EXPIRES:
            raise ConfigError(f"{label}: expires must be {MIN_EXPIRES}-{MAX_EXPIRES} s, got {self.expires!r}")
        if not _finite(self.keepalive_interval) or self.keepalive_interval < 1.0:
            raise ConfigError(f"{label}: keepalive_interval must be at least 1 s")
        if not _int(self.keepalive_missed) or self.keepalive_missed < 1:
            raise ConfigError(f"{label}: keepalive_missed must be an int >= 1")
        if not _int(self.catalog_per_message) or not 1 <= self.catalog_per_message <= 64:
            raise ConfigError(f"{label}: catalog_per_message must be 1-64 (WVP uses 1, 2, 4 or 8)")
        if not _finite(self.register_retry_min) or self.register_retry_min <= 0:
            raise ConfigError(f"{label}: register_retry_min must be a positive number of seconds")
        if not _finite(self.register_retry_max) or self.register_retry_max < self.register_retry_min:
            raise ConfigError(f"{label}: register_retry_max must be >= register_retry_min")

    @property
    def peer(self) -> Peer:
        """Where the upper is reached (the I/O layer may swap in a TCP connection)."""
        return Peer(Transport(self.transport), self.host, self.port)


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """What a DeviceInfo answer says about the gateway itself (WVP: ``WVP-28181-PRO``/``platform``, notes §16.5)."""

    name: str = "kgw"
    manufacturer: str = "kgw"
    model: str = "gateway"
    firmware: str = "0.1.0"


class UpperState(StrEnum):
    """Registration state of one upper link."""

    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    RETRY_WAIT = "retry_wait"
    STOPPED = "stopped"


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpperOnline:
    """The upper accepted our registration (first 200, or the first after an outage)."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class UpperOffline:
    """We lost the upper: registration refused or timed out, keepalives failing, or stopped."""

    name: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class AlarmAnswered:
    """The final answer to an alarm sent with :meth:`UpperLink.send_alarm` (408 for a time-out)."""

    name: str
    key: object
    status: int


@dataclass(frozen=True, slots=True)
class CatalogSent:
    """A catalog push (Response to a query, or a subscription NOTIFY) ended.

    ``messages`` counts the chunks sent; fewer than needed for ``items`` means
    the upper refused one (the push stops there, as WVP's does).
    """

    name: str
    sn: int
    items: int
    messages: int


@dataclass(frozen=True, slots=True)
class SubscriptionChanged:
    """A catalog subscription was accepted (True) or the last one ended (False)."""

    name: str
    active: bool


UpperEvent = UpperOnline | UpperOffline | AlarmAnswered | CatalogSent | SubscriptionChanged


# --- internal records -------------------------------------------------------------------------


class _Kind(StrEnum):
    """What a request we sent was, so its answer finds its handler."""

    REGISTER = "register"
    KEEPALIVE = "keepalive"
    CATALOG = "catalog"
    NOTIFY = "notify"
    ALARM = "alarm"
    REPLY = "reply"  # Response MESSAGEs to the upper's queries: their answers need nothing


class _Timer(StrEnum):
    REGISTER = "register"
    KEEPALIVE = "keepalive"


@dataclass(frozen=True, slots=True, eq=False)
class _Ctx:
    """The endpoint context of every request a link sends: how :class:`CascadeHost` recognises answers."""

    link: UpperLink
    kind: _Kind
    ref: object = None


@dataclass(frozen=True, slots=True)
class _RegisterAttempt:
    expires: int
    nonce: str | None  # the nonce our credentials used; None = sent without credentials


@dataclass(frozen=True, slots=True)
class _Challenge:
    credentials_header: str  # Authorization (after 401) or Proxy-Authorization (after 407)
    value: str
    nonce: str
    stale: bool


@dataclass(slots=True)
class _Subscription:
    """One catalog subscription dialog from the upper (notes §14)."""

    dialog: Dialog
    event: str | None  # the Event header to echo (Monibuca sends none)
    expires_at: float
    sn: int
    pushing: bool = False  # a NOTIFY push is under way in this dialog
    pending: list[CatalogItem] = field(default_factory=list)  # changes waiting for it to end


@dataclass(slots=True)
class _Push:
    """Catalog chunks still to send, one after another's answer (WVP's pacing, notes §6.2)."""

    id: int
    sn: int
    items: int
    chunks: deque[CatalogResponse]
    subscription: _Subscription | None  # None: Response MESSAGEs to a query; else NOTIFYs in its dialog
    messages: int = 0


# --- one upper platform ------------------------------------------------------------------------------


class UpperLink:
    """The gateway as lower platform towards one upper, on a shared endpoint.

    ``catalog`` returns the items this upper may see, in sending order (built by
    the sharing policy); ``channel_status`` says whether a shared channel is online
    (None: not shared with this upper). ``peer`` may be replaced by the I/O layer
    (e.g. with an open TCP connection) before :meth:`start`.
    """

    def __init__(
        self,
        config: UpperPlatformConfig,
        local_id: str,
        local_domain: str,
        endpoint: SipEndpoint,
        *,
        catalog: Callable[[], Sequence[CatalogItem]],
        channel_status: Callable[[str], bool | None],
        device_info: PlatformInfo | None = None,
    ) -> None:
        config.validate()
        if not is_gb_id(local_id):
            raise ConfigError(f"our local ID must be 20 digits, got {local_id!r:.40}")
        if not isinstance(local_domain, str) or not _HOST_RE.fullmatch(local_domain):
            raise ConfigError(f"bad local SIP domain {local_domain!r:.40}")
        self.config = config
        self.name = config.name
        self.local_id = local_id
        self.local_domain = local_domain
        self.endpoint = endpoint
        self.device_info = device_info or PlatformInfo()
        self.peer = config.peer
        # Takes INVITE/ACK/BYE/CANCEL/INFO from the upper (the live relay); True when consumed.
        self.on_call: Callable[[RequestReceived, float], bool] | None = None
        self._catalog = catalog
        self._channel_status = channel_status

        self.state = UpperState.IDLE
        self.registered_at: float | None = None
        self.last_error: str | None = None
        self.keepalive_failures = 0
        self.consecutive_register_failures = 0

        self._digest = DigestClient(config.username or local_id, config.password)
        self._request_uri = sip_uri(config.server_id, config.host, config.port)
        self._call_id = endpoint.new_call_id()  # one Call-ID for all our REGISTERs (RFC 3261 §10.2)
        self._from_tag = endpoint.new_tag()
        self._cseq = 0
        self._sn = endpoint.ids.number(5)
        self._expires = config.expires  # raised when the upper answers 423 Min-Expires
        self._challenge: _Challenge | None = None
        self._register_txn: str | None = None
        self._rejections = 0  # 401s in a row that refused credentials
        self._stale_in_row = 0
        self._session = 0  # bumped when going online; late keepalive answers of an old session are ignored
        self._keepalive_seq = 0
        self._unanswered: set[int] = set()  # keepalives sent and not answered yet
        self._timers: dict[_Timer, float] = {}
        self._subscriptions: dict[str, _Subscription] = {}  # by Call-ID
        self._pushes: dict[int, _Push] = {}
        self._push_seq = 0
        self._charset = "GB2312"  # the upper's, from its last MESSAGE
        self._events: deque[UpperEvent] = deque()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin registering (again, after :meth:`stop`); no-op while running."""
        if self.state not in (UpperState.IDLE, UpperState.STOPPED):
            return
        self.state = UpperState.IDLE
        self.consecutive_register_failures = 0
        self._rejections = self._stale_in_row = 0
        self._send_register(now, self._expires)

    def retry_now(self, now: float) -> None:
        """Register again at once (the I/O layer opened a new TCP connection to the upper)."""
        if self.state in (UpperState.IDLE, UpperState.STOPPED):
            return
        self._timers.pop(_Timer.REGISTER, None)
        self._send_register(now, self._expires)

    def stop(self, now: float, unregister: bool = True) -> None:
        """Stop every timer, drop subscriptions and pushes; send REGISTER Expires: 0 if registered."""
        if self.state is UpperState.STOPPED:
            return
        was_registered = self.state is UpperState.REGISTERED
        self.state = UpperState.STOPPED
        self._timers.clear()
        self._pushes.clear()
        self._register_txn = None
        if unregister and was_registered:
            self._send_register(now, 0)
        if self._subscriptions:
            self._subscriptions.clear()
            self._events.append(SubscriptionChanged(self.name, False))
        if was_registered:
            self.registered_at = None
            self._events.append(UpperOffline(self.name, now, "stopped"))

    @property
    def registered(self) -> bool:
        """True while the upper accepts us (alarms may be sent)."""
        return self.state is UpperState.REGISTERED

    @property
    def unregistering(self) -> bool:
        """True while our REGISTER with Expires: 0 waits for its final answer (or time-out)."""
        return self.state is UpperState.STOPPED and self._register_txn is not None

    def get_timer(self) -> float | None:
        """This link's earliest deadline (the endpoint's own timers are not included)."""
        deadlines = [*self._timers.values(), *(s.expires_at for s in self._subscriptions.values())]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run due timers: (re-)REGISTER, keepalive, subscription expiry."""
        for timer, at in list(self._timers.items()):
            if at > now or self._timers.get(timer) != at:
                continue
            del self._timers[timer]
            if timer is _Timer.REGISTER:
                self._send_register(now, self._expires)
            else:
                self._keepalive(now)
        self._expire_subscriptions(now)

    def next_event(self) -> UpperEvent | None:
        """The next application event, or None."""
        return self._events.popleft() if self._events else None

    def status(self) -> dict[str, Any]:
        """A snapshot for the HTTP API and metrics (times are loop time)."""
        return {
            "name": self.name,
            "server_id": self.config.server_id,
            "host": self.config.host,
            "port": self.config.port,
            "transport": self.config.transport,
            "state": self.state.value,
            "registered_at": self.registered_at,
            "last_error": self.last_error,
            "keepalive_failures": self.keepalive_failures,
            "consecutive_register_failures": self.consecutive_register_failures,
            "subscriptions": len(self._subscriptions),
            "retry_at": self._timers.get(_Timer.REGISTER) if self.state is UpperState.RETRY_WAIT else None,
        }

    # --- alarms and catalog changes upward ----------------------------------------------------

    def send_alarm(self, notify: AlarmNotify, now: float, key: object) -> bool:
        """Send ``Notify/Alarm`` upward; False when not registered (the caller's outbox retries later).

        ``notify.device_id`` must already be the channel ID as this upper knows it.
        The final answer comes back as :class:`AlarmAnswered` with ``key``.
        """
        if self.state is not UpperState.REGISTERED:
            return False
        self._send_message(serialize(notify, self._charset), now, _Kind.ALARM, key)
        return True

    def notify_catalog(self, items: Sequence[CatalogItem], now: float) -> int:
        """Push catalog changes (items carry their own ``Event``) to every live subscription.

        Returns the number of subscriptions notified (0 without any, or for no items).
        """
        if not items:
            return 0
        live = [s for s in self._subscriptions.values() if s.expires_at > now]
        for subscription in live:
            if subscription.pushing:  # one NOTIFY push per dialog at a time: queue, never drop
                subscription.pending.extend(items)
            else:
                self._start_push(self._next_sn(), list(items), now, subscription)
        return len(live)

    @property
    def subscriptions(self) -> int:
        """Live catalog subscriptions."""
        return len(self._subscriptions)

    # --- endpoint events (CascadeHost calls these) ----------------------------------------------

    def handle_request(self, event: RequestReceived, now: float) -> None:
        """A request from this upper."""
        request, txn = event.request, event.transaction
        try:
            if request.method in CALL_METHODS:
                self._on_call_request(event, now)
                return
            if txn is None:
                return
            if self.state in (UpperState.IDLE, UpperState.STOPPED):
                self._answer(request, txn, 403, now)  # this upper is switched off
            elif request.method == "MESSAGE":
                self._on_message(request, txn, now)
            elif request.method == "SUBSCRIBE":
                self._on_subscribe(request, txn, now)
            elif request.method == "OPTIONS":
                self._answer(request, txn, 200, now, extra=[("Allow", ALLOW)])
            else:
                self._answer(request, txn, 405, now, extra=[("Allow", ALLOW)])
        except SipError as exc:  # a header we needed does not parse
            if txn is not None:
                self._answer(request, txn, exc.status_hint, now)

    def handle_response(self, event: ResponseReceived, now: float) -> None:
        """A response to something this link sent."""
        ctx = event.context
        if not isinstance(ctx, _Ctx):
            return
        status = event.response.status
        if ctx.kind is _Kind.REGISTER:
            if isinstance(ctx.ref, _RegisterAttempt):
                self._on_register_answer(event.transaction, ctx.ref, event.response, now)
            return
        if status < 200:
            return
        if ctx.kind is _Kind.KEEPALIVE:
            self._on_keepalive_answer(ctx.ref, status, now)
        elif ctx.kind in (_Kind.CATALOG, _Kind.NOTIFY):
            self._on_push_answer(ctx.ref, status, now)
        elif ctx.kind is _Kind.ALARM:
            self._events.append(AlarmAnswered(self.name, ctx.ref, status))

    def handle_timeout(self, event: TransactionTimedOut, now: float) -> None:
        """A request of this link got no final answer (Timer B/F, or the TCP connection broke)."""
        ctx = event.context
        if not isinstance(ctx, _Ctx):
            return
        if ctx.kind is _Kind.REGISTER:
            if event.transaction == self._register_txn and isinstance(ctx.ref, _RegisterAttempt):
                self._register_txn = None
                self._register_failed(now, "REGISTER timed out", ctx.ref)
        elif ctx.kind is _Kind.KEEPALIVE:
            self._on_keepalive_answer(ctx.ref, TIMEOUT_STATUS, now)
        elif ctx.kind in (_Kind.CATALOG, _Kind.NOTIFY):
            self._on_push_answer(ctx.ref, TIMEOUT_STATUS, now)
        elif ctx.kind is _Kind.ALARM:
            self._events.append(AlarmAnswered(self.name, ctx.ref, TIMEOUT_STATUS))

    # --- registration ----------------------------------------------------------------------------

    def _send_register(
        self, now: float, expires: int, credentials: tuple[str, str] | None = None, nonce: str | None = None
    ) -> None:
        if self.state is UpperState.STOPPED and expires > 0:
            return  # a stopped link may still send its unregistration, nothing else
        if credentials is None and self._challenge is not None:
            # Re-use the last nonce (nc + 1) and save a round trip; a stale one gets 401 stale=true.
            try:
                credentials = (self._challenge.credentials_header, self._authorize(self._challenge.value))
                nonce = self._challenge.nonce
            except DigestError:
                self._challenge = None
        self._cseq += 1
        request = build_register(
            device_id=self.local_id,
            domain=self.local_domain,
            server_id=self.config.server_id,
            contact_host=self.endpoint.local_host,
            contact_port=self.endpoint.local_port,
            from_tag=self._from_tag,
            call_id=self._call_id,
            cseq=self._cseq,
            expires=expires,
            user_agent=self.endpoint.user_agent,
        )
        # Notes §16.2: the Request-URI names the upper's ID at its address; From/To stay ours.
        request.uri = self._request_uri
        if credentials is not None:
            request.headers.add(*credentials)
        if expires > 0 and self.state is not UpperState.REGISTERED:
            self.state = UpperState.REGISTERING  # a refresh keeps us REGISTERED meanwhile
        context = _Ctx(self, _Kind.REGISTER, _RegisterAttempt(expires, nonce if credentials else None))
        self._register_txn = self.endpoint.send_request(request, self.peer, now, context=context)

    def _authorize(self, challenge: str) -> str:
        return self._digest.authorization(challenge, "REGISTER", self._request_uri, cnonce=self.endpoint.ids.token(8))

    def _on_register_answer(
        self, txn: str | None, attempt: _RegisterAttempt, response: SipResponse, now: float
    ) -> None:
        if txn is None or txn != self._register_txn:
            return  # the answer to an attempt we already gave up on
        status = response.status
        if status < 200:
            return
        self._register_txn = None
        if status in (401, 407):
            self._on_challenge(response, attempt, now)
            return
        if attempt.expires == 0:
            return  # the unregistration is done (or refused: nothing more to do while stopped)
        if self.state is UpperState.STOPPED:
            return
        if 200 <= status < 300:
            self._registered(response, now)
        elif status == 423 and self._raise_expires(response):
            self._send_register(now, self._expires)
        else:
            self._register_failed(now, f"REGISTER {status} {response.reason}".strip(), attempt)

    def _on_challenge(self, response: SipResponse, attempt: _RegisterAttempt, now: float) -> None:
        """Answer 401/407 with digest; a refusal of our credentials is a wrong password."""
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        challenge = _pick_challenge(
            response.headers.get_all(header), "Authorization" if response.status == 401 else "Proxy-Authorization"
        )
        if challenge is None:
            self._register_failed(now, f"REGISTER {response.status} without a usable digest challenge", attempt)
            return
        if attempt.nonce is not None:  # the request carried credentials and they were refused
            if challenge.stale:
                # Password right, nonce expired (RFC 2617 §3.2.1): answer the new nonce at once.
                self._stale_in_row += 1
                if self._stale_in_row > MAX_STALE_IN_ROW:
                    self._register_failed(now, "REGISTER: every nonce is stale", attempt)
                    return
            else:
                self._rejections += 1
                # The same nonce again means the password is wrong. A fresh nonce once is a
                # registrar that forgot us (restart) or does not send stale=true; twice is a refusal.
                if challenge.nonce == attempt.nonce or self._rejections >= 2:
                    log.warning("upper %s refused our credentials (wrong password?)", self.name)
                    self._register_failed(now, f"REGISTER {response.status}: wrong password", attempt)
                    return
        try:
            authorization = self._authorize(challenge.value)
        except DigestError as exc:
            self._register_failed(now, f"REGISTER: unusable challenge ({exc.reason})", attempt)
            return
        self._challenge = challenge
        self._send_register(now, attempt.expires, (challenge.credentials_header, authorization), challenge.nonce)

    def _raise_expires(self, response: SipResponse) -> bool:
        """Adopt a 423's Min-Expires when it is sane; False when the 423 cannot be satisfied."""
        value = (response.headers.get("Min-Expires") or "").strip()
        if not value.isascii() or not value.isdigit() or len(value) > 6:
            return False
        wanted = int(value)
        if not self._expires < wanted <= MAX_EXPIRES:
            return False
        self._expires = wanted
        return True

    def _registered(self, response: SipResponse, now: float) -> None:
        granted = _granted_expires(response)
        if granted == 0:
            self._register_failed(now, "REGISTER 200 granted no time", _RegisterAttempt(self._expires, None))
            return
        granted = granted if granted is not None else self._expires
        self._rejections = self._stale_in_row = 0
        self.consecutive_register_failures = 0
        self.keepalive_failures = 0  # the upper knows us: whatever failed before is over
        self._timers[_Timer.REGISTER] = now + granted * REFRESH_RATIO
        if self.state is UpperState.REGISTERED:
            return  # a refresh
        self.state = UpperState.REGISTERED
        self.registered_at = now
        self._session += 1
        self._unanswered.clear()
        log.info("registered with upper %s (%s)", self.name, self.config.server_id)
        self._events.append(UpperOnline(self.name, now))
        self._keepalive(now)  # the first at once: some uppers show us online only after one

    def _register_failed(self, now: float, reason: str, attempt: _RegisterAttempt) -> None:
        """Wait, then register again: register_retry_min doubling up to register_retry_max."""
        self.last_error = reason
        self._challenge = None  # start the next round afresh
        self._rejections = self._stale_in_row = 0
        if attempt.expires == 0 or self.state is UpperState.STOPPED:
            return
        self.consecutive_register_failures += 1
        exponent = min(self.consecutive_register_failures - 1, 32)
        delay = min(self.config.register_retry_max, self.config.register_retry_min * 2**exponent)
        self._retry_later(now, delay, reason)

    def _retry_later(self, now: float, delay: float, reason: str) -> None:
        was_registered = self.state is UpperState.REGISTERED
        self.state = UpperState.RETRY_WAIT
        self._register_txn = None
        self._timers.pop(_Timer.KEEPALIVE, None)
        self._timers[_Timer.REGISTER] = now + delay
        if was_registered:
            self.registered_at = None
            log.warning("upper %s offline: %s", self.name, reason)
            self._events.append(UpperOffline(self.name, now, reason))

    # --- keepalive ----------------------------------------------------------------------------------

    def _keepalive(self, now: float) -> None:
        if self.state is not UpperState.REGISTERED:
            return
        if self._unanswered:
            # Still no answer a whole interval later: a missed keepalive. Waiting for the
            # transaction's own time-out (32 s over UDP) would take minutes to notice a
            # restarted upper; a late 200 still clears the count.
            self._unanswered.clear()
            self._keepalive_failed("no answer within the keepalive interval", now)
            if self.state is not UpperState.REGISTERED:
                return
        self._timers[_Timer.KEEPALIVE] = now + self.config.keepalive_interval
        body = serialize(Keepalive(sn=self._next_sn(), device_id=self.local_id, status="OK"), self._charset)
        self._keepalive_seq += 1
        self._unanswered.add(self._keepalive_seq)
        self._send_message(body, now, _Kind.KEEPALIVE, (self._session, self._keepalive_seq))

    def _on_keepalive_answer(self, ref: object, status: int, now: float) -> None:
        session, seq = ref if isinstance(ref, tuple) else (ref, None)
        if self.state is not UpperState.REGISTERED or session != self._session:
            return
        counted = seq not in self._unanswered  # already counted as missed when the next one went out
        self._unanswered.discard(seq)
        if 200 <= status < 300:
            self.keepalive_failures = 0
            return
        if not counted:
            self._keepalive_failed(f"keepalive {status}", now)

    def _keepalive_failed(self, error: str, now: float) -> None:
        self.keepalive_failures += 1
        self.last_error = error
        if self.keepalive_failures >= self.config.keepalive_missed:
            # The upper is gone or restarted and forgot us (WVP: 3 failures, notes §16.2).
            # Register again so that a restarted upper gets us back without an operator.
            reason = f"{self.keepalive_failures} keepalives failed (last: {error})"
            self._retry_later(now, self.config.register_retry_min, reason)

    # --- requests from the upper -------------------------------------------------------------------------

    def _on_message(self, request: SipRequest, txn: str, now: float) -> None:
        """200 at once to every readable MESSAGE (uppers drop lowers that do not answer, notes §16.2)."""
        if not request.body.strip():
            self._answer(request, txn, 400, now)
            return
        try:
            message, charset = decode_message(request.body)
        except ManscdpError as exc:
            self._answer(request, txn, exc.status_hint, now)  # 400, or 415 for a root that is not MANSCDP
            return
        self._charset = charset
        self._answer(request, txn, 200, now)
        if isinstance(message, CatalogQuery):
            self._start_push(message.sn, list(self._catalog()), now, None)
        elif isinstance(message, DeviceInfoQuery):
            self._reply(self._device_info(message), now)
        elif isinstance(message, DeviceStatusQuery):
            self._reply(self._device_status(message), now)
        # Keepalive from the upper, its Response/Alarm to our alarms, anything else: the 200 is all.

    def _device_info(self, query: DeviceInfoQuery) -> DeviceInfoResponse:
        if query.device_id == self.local_id:
            info = self.device_info
            channels = sum(1 for item in self._catalog() if _is_channel(item.device_id))
            return DeviceInfoResponse(
                sn=query.sn,
                device_id=self.local_id,
                device_name=info.name,
                result="OK",
                manufacturer=info.manufacturer,
                model=info.model,
                firmware=info.firmware,
                channel=channels,
            )
        item = next((i for i in self._catalog() if i.device_id == query.device_id), None)
        if item is None or not _is_channel(item.device_id):
            return DeviceInfoResponse(sn=query.sn, device_id=query.device_id, result="ERROR")
        return DeviceInfoResponse(
            sn=query.sn,
            device_id=item.device_id,
            device_name=item.name,
            result="OK",
            manufacturer=item.manufacturer,
            model=item.model,
        )

    def _device_status(self, query: DeviceStatusQuery) -> DeviceStatusResponse:
        online = True if query.device_id == self.local_id else self._channel_status(query.device_id)
        if online is None:
            # Not shared with this upper: 200 to the MESSAGE (every MESSAGE is answered 200),
            # Result ERROR in the Response -- the upper learns "no" without a failed transaction.
            return DeviceStatusResponse(sn=query.sn, device_id=query.device_id, result="ERROR")
        return DeviceStatusResponse(
            sn=query.sn,
            device_id=query.device_id,
            result="OK",
            online="ONLINE" if online else "OFFLINE",
            status="OK",
        )

    def _on_subscribe(self, request: SipRequest, txn: str, now: float) -> None:
        """Catalog SUBSCRIBE (notes §14.1-14.2): 200 with Expires; Expires: 0 ends it."""
        expires = _expires_header(request)
        if expires is None:
            self._answer(request, txn, 400, now)  # WVP refuses a SUBSCRIBE without Expires too
            return
        granted = min(expires, MAX_SUBSCRIPTION_EXPIRES)
        if request.to.tag:  # inside an existing dialog: refresh or unsubscribe
            self._resubscribe(request, txn, granted, now)
            return
        try:
            message, charset = decode_message(request.body)
        except ManscdpError as exc:
            self._answer(request, txn, exc.status_hint, now)
            return
        if not isinstance(message, CatalogQuery):
            self._answer(request, txn, 489, now)  # Bad Event: only catalog subscriptions for now
            return
        self._charset = charset
        if granted == 0:
            # Unsubscribing outside the dialog (uppers that forget our To tag): there is
            # one catalog subscription per upper, so this one is meant.
            self._answer(request, txn, 200, now, extra=[("Expires", "0")])
            for subscription in list(self._subscriptions.values()):
                self._drop_subscription(subscription)
            return
        tag = self.endpoint.new_tag()
        dialog = Dialog.from_uas(request, tag)  # DialogError (400) without Contact
        # One catalog subscription per upper: an upper that re-subscribes with a new dialog
        # instead of refreshing (WVP does, notes §14.1) must not get every NOTIFY twice.
        self._subscriptions.clear()
        subscription = _Subscription(dialog, request.headers.get("Event"), now + granted, message.sn)
        self._subscriptions[dialog.call_id] = subscription
        body = serialize(ResultResponse("Catalog", message.sn, self.local_id, "OK"), self._charset)
        extra = [("Expires", str(granted)), ("Contact", self._contact()), ("Content-Type", MANSCDP_CONTENT_TYPE)]
        self._answer(request, txn, 200, now, to_tag=tag, extra=extra, body=body)
        self._events.append(SubscriptionChanged(self.name, True))

    def _resubscribe(self, request: SipRequest, txn: str, granted: int, now: float) -> None:
        subscription = self._subscriptions.get(request.call_id)
        if subscription is None or not subscription.dialog.matches(request) or subscription.expires_at <= now:
            self._answer(request, txn, 481, now)
            return
        subscription.dialog.accept_remote(request)  # DialogError (500) for an old CSeq
        if granted == 0:
            del self._subscriptions[request.call_id]
            self._answer(request, txn, 200, now, extra=[("Expires", "0")])
            if not self._subscriptions:
                self._events.append(SubscriptionChanged(self.name, False))
            return
        subscription.expires_at = now + granted
        self._answer(request, txn, 200, now, extra=[("Expires", str(granted)), ("Contact", self._contact())])

    def _drop_subscription(self, subscription: _Subscription) -> None:
        if self._subscriptions.get(subscription.dialog.call_id) is subscription:
            del self._subscriptions[subscription.dialog.call_id]
            if not self._subscriptions:
                self._events.append(SubscriptionChanged(self.name, False))

    def _expire_subscriptions(self, now: float) -> None:
        gone = [key for key, s in self._subscriptions.items() if s.expires_at <= now]
        for key in gone:
            del self._subscriptions[key]
        if gone and not self._subscriptions:
            self._events.append(SubscriptionChanged(self.name, False))

    def _on_call_request(self, event: RequestReceived, now: float) -> None:
        """Calls go to :attr:`on_call`; unclaimed ones get 404 (not shared), 488 (no relay) or 481."""
        if self.on_call is not None and self.on_call(event, now):
            return
        request = event.request
        if event.transaction is None or request.method == "ACK":
            return
        status = 481
        if request.method == "INVITE":
            target = _target_id(request)
            shared = target == self.local_id or (target is not None and self._channel_status(target) is not None)
            status = 488 if shared else 404
        self._answer(request, event.transaction, status, now)

    # --- catalog pushes -----------------------------------------------------------------------------------

    def _start_push(self, sn: int, items: list[CatalogItem], now: float, subscription: _Subscription | None) -> None:
        if subscription is None and any(p.sn == sn and p.subscription is None for p in self._pushes.values()):
            return  # the same query again while we are still answering it
        queries = [p for p in self._pushes.values() if p.subscription is None]
        if subscription is None and len(queries) >= MAX_PUSHES:
            self._finish_push(queries[0])  # the oldest answer to a query gives way (NOTIFYs never do)
        if subscription is not None:
            subscription.pushing = True
        root = Root.RESPONSE if subscription is None else Root.NOTIFY
        chunks = split_catalog(sn, self.local_id, items, self.config.catalog_per_message, root)
        self._push_seq += 1
        push = _Push(self._push_seq, sn, len(items), deque(chunks), subscription)
        self._pushes[push.id] = push
        self._send_next_chunk(push, now)

    def _send_next_chunk(self, push: _Push, now: float) -> None:
        subscription = push.subscription
        alive = subscription is None or (
            self._subscriptions.get(subscription.dialog.call_id) is subscription and subscription.expires_at > now
        )
        if not push.chunks or not alive:
            self._finish_push(push, now)
            return
        body = serialize(push.chunks.popleft(), self._charset)
        push.messages += 1
        if subscription is None:
            self._send_message(body, now, _Kind.CATALOG, push.id)
        else:
            self._send_notify(subscription, body, now, push.id)

    def _on_push_answer(self, push_id: object, status: int, now: float) -> None:
        push = self._pushes.get(push_id) if isinstance(push_id, int) else None
        if push is None:
            return
        if 200 <= status < 300 or status == TIMEOUT_STATUS:
            self._send_next_chunk(push, now)  # a lost chunk does not stop the rest (WVP)
            return
        subscription = push.subscription
        if status == 481 and subscription is not None:  # the upper forgot the dialog (restart)
            self._drop_subscription(subscription)
        self._finish_push(push, now)  # any other refusal stops the push, as WVP's does

    def _finish_push(self, push: _Push, now: float | None = None) -> None:
        if self._pushes.pop(push.id, None) is not None:
            self._events.append(CatalogSent(self.name, push.sn, push.items, push.messages))
        subscription = push.subscription
        if subscription is None:
            return
        subscription.pushing = False
        alive = self._subscriptions.get(subscription.dialog.call_id) is subscription
        if subscription.pending and alive and now is not None:
            items, subscription.pending = subscription.pending, []
            self._start_push(self._next_sn(), items, now, subscription)

    def _send_notify(self, subscription: _Subscription, body: bytes, now: float, push_id: int) -> None:
        """NOTIFY in the subscription dialog (notes §14.3): Event echoed, Subscription-State with the time left."""
        request = subscription.dialog.new_request("NOTIFY", body, MANSCDP_CONTENT_TYPE)
        if subscription.event is not None:
            request.headers.add("Event", subscription.event)
        remaining = max(0, int(subscription.expires_at - now))
        request.headers.add("Subscription-State", f"active;expires={remaining}")
        request.headers.add("Contact", self._contact())
        self.endpoint.send_request(request, self.peer, now, context=_Ctx(self, _Kind.NOTIFY, push_id))

    # --- sending helpers ---------------------------------------------------------------------------------------

    def _reply(self, message: ManscdpMessage, now: float) -> None:
        self._send_message(serialize(message, self._charset), now, _Kind.REPLY)

    def _send_message(self, body: bytes, now: float, kind: _Kind, ref: object = None) -> str:
        self._cseq += 1
        request = build_message(
            from_id=self.local_id,
            from_domain=self.local_domain,
            from_tag=self.endpoint.new_tag(),
            to_id=self.config.server_id,
            to_domain=self.config.domain,
            request_uri=self._request_uri,
            call_id=self.endpoint.new_call_id(),
            cseq=self._cseq,
            body=body,
        )
        return self.endpoint.send_request(request, self.peer, now, context=_Ctx(self, kind, ref))

    def _answer(
        self,
        request: SipRequest,
        txn: str,
        status: int,
        now: float,
        *,
        to_tag: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        response = make_response(request, status, to_tag=to_tag or self.endpoint.new_tag(), extra=extra, body=body)
        self.endpoint.send_response(txn, response, now)

    def _contact(self) -> str:
        return f"<{sip_uri(self.local_id, self.endpoint.local_host, self.endpoint.local_port)}>"

    def _next_sn(self) -> int:
        self._sn += 1
        return self._sn


# --- several uppers on one endpoint ----------------------------------------------------------------------------


class CascadeHost:
    """The upper links of one gateway, all on its (shared) endpoint.

    The device-access core offers every endpoint event to :meth:`route` first;
    what belongs to an upper is handled here and never reaches device access.
    The endpoint's own timers stay with the endpoint's owner.
    """

    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        self._links: dict[str, UpperLink] = {}

    def add(self, link: UpperLink) -> UpperLink:
        """Attach a link (not started); names must be unique and the endpoint the shared one."""
        if link.endpoint is not self.endpoint:
            raise ConfigError(f"upper link {link.name!r} is not on this host's endpoint")
        if link.name in self._links:
            raise ConfigError(f"two upper platforms are named {link.name!r}")
        self._links[link.name] = link
        return link

    def remove(self, name: str, now: float, *, unregister: bool = True) -> UpperLink:
        """Stop and detach a link; answers to what it sent are still routed to it."""
        link = self._links.pop(name)
        link.stop(now, unregister)
        return link

    def link(self, name: str) -> UpperLink:
        """The link called ``name``; KeyError when there is none."""
        return self._links[name]

    @property
    def links(self) -> tuple[UpperLink, ...]:
        """Every attached link, in the order added."""
        return tuple(self._links.values())

    def start_all(self, now: float) -> None:
        """Start every link."""
        for link in self._links.values():
            link.start(now)

    def stop_all(self, now: float, *, unregister: bool = True) -> None:
        """Stop every link (unregistering those registered)."""
        for link in self._links.values():
            link.stop(now, unregister)

    def route(self, event: SipEvent, now: float) -> bool:
        """Handle ``event`` if it belongs to an upper; False leaves it to the device side.

        Requests belong to a link by the From user (the upper's server ID) or by
        coming from the upper's configured host:port; responses and time-outs by
        the context their request was sent with.
        """
        if isinstance(event, RequestReceived):
            link = self.link_for(event.request, event.peer)
            if link is None:
                return False
            link.handle_request(event, now)
            return True
        context = event.context
        if not isinstance(context, _Ctx):
            return False
        if isinstance(event, ResponseReceived):
            context.link.handle_response(event, now)
        else:
            context.link.handle_timeout(event, now)
        return True

    def link_for(self, request: SipRequest, peer: Peer) -> UpperLink | None:
        """The link a request from ``peer`` belongs to, or None (then it is a device's)."""
        try:
            user = request.from_.uri.user
        except SipError:
            user = None
        by_id = [link for link in self._links.values() if user is not None and link.config.server_id == user]
        if by_id:
            # Two uppers with one ID (misconfiguration, or one upper at two addresses): prefer the address.
            return next((link for link in by_id if link.config.host == peer.host), by_id[0])
        return next(
            (link for link in self._links.values() if (link.config.host, link.config.port) == (peer.host, peer.port)),
            None,
        )

    def get_timer(self) -> float | None:
        """The earliest deadline of any link."""
        deadlines = [t for t in (link.get_timer() for link in self._links.values()) if t is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run every link's due timers."""
        for link in list(self._links.values()):
            deadline = link.get_timer()
            if deadline is not None and deadline <= now:
                link.handle_timer(now)

    def next_event(self) -> UpperEvent | None:
        """The next event of any link, or None."""
        for link in self._links.values():
            event = link.next_event()
            if event is not None:
                return event
        return None

    def status(self) -> list[dict[str, Any]]:
        """:meth:`UpperLink.status` of every link."""
        return [link.status() for link in self._links.values()]


# --- helpers ----------------------------------------------------------------------------------------------------


def _pick_challenge(values: Iterable[str], credentials_header: str) -> _Challenge | None:
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
        return _Challenge(credentials_header, value, nonce, stale)
    return None


def _digits(value: str | None, max_len: int = 10) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > max_len:
        return None
    return int(value)


def _granted_expires(response: SipResponse) -> int | None:
    """What the registrar granted: Expires, else the Contact's ``expires`` (RFC 3261 §10.2.4)."""
    granted = _digits(response.headers.get("Expires"))
    if granted is not None:
        return granted
    try:
        contact = response.contact
    except SipError:
        return None
    raw = contact.params.get("expires") if contact is not None else None
    return _digits(raw)


def _expires_header(request: SipRequest) -> int | None:
    return _digits(request.headers.get("Expires"))


def _is_channel(device_id: str) -> bool:
    """A shared channel, not a tree node: 20 digits and not a platform-class type (200-299, 215/216 groups)."""
    return is_gb_id(device_id) and not GbId(device_id).is_platform


def _target_id(request: SipRequest) -> str | None:
    """The ID a request is for: the Request-URI user, else the To user."""
    try:
        return SipUri.parse(request.uri).user or request.to.uri.user
    except SipError:
        return None
