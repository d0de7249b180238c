"""The lower side of GB/T 28181 as one sans-I/O core, for devices and lower platforms alike.

:class:`LowerClient` registers with a server (digest, refresh, retry; docs/gb28181.md §3,
§16.2), keeps alive (docs/gb28181.md §4), answers Catalog / DeviceInfo / DeviceStatus
queries (docs/gb28181.md §6-8), pushes catalogs in chunks as Response MESSAGEs or
subscription NOTIFYs (docs/gb28181.md §6.2, §14) and sends MESSAGEs for its role (e.g.
alarms, docs/gb28181.md §9.1). It composes :mod:`~gateway.gb28181.lower.registration`,
:mod:`~gateway.gb28181.lower.keepalive`,
:mod:`~gateway.gb28181.lower.subscriptions` and
:mod:`~gateway.gb28181.lower.catalog_push`.

The role (a simulated device, the gateway towards an upper platform) is a
:class:`LowerRole`: it says what the catalog is, how DeviceInfo / DeviceStatus
are answered, what to do with calls and other MESSAGEs, and hears every
:data:`~gateway.gb28181.lower.events.LowerEvent`. What differs in behaviour
between roles is data in a :class:`~gateway.gb28181.lower.policy.LowerPolicy`.

Time comes in as ``now``; ids come from the endpoint's id source; nothing here
reads a clock, draws random numbers or touches a socket.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from enum import StrEnum
from typing import assert_never

from gateway.errors import ManscdpError, SipError
from gateway.gb28181.lower.catalog_push import CatalogPusher, Push
from gateway.gb28181.lower.events import (
    Challenged,
    KeepaliveFailed,
    KeepaliveSent,
    MessageAnswered,
    MessageReceived,
    MessageTimedOut,
    Redirected,
    Registered,
    RegisterFailed,
    WentOffline,
)
from gateway.gb28181.lower.keepalive import KeepaliveOutcome, KeepaliveRef, KeepaliveResult, Keepalives
from gateway.gb28181.lower.policy import LowerIdentity, LowerPolicy
from gateway.gb28181.lower.registration import (
    DigestRounds,
    RegAction,
    RegInput,
    RegisterAttempt,
    RegistrationError,
    RegistrationMachine,
    RegState,
    Trigger,
    classify,
)
from gateway.gb28181.lower.role import CALL_METHODS, LowerRole
from gateway.gb28181.lower.sending import RequestSender, SendContext, Sent
from gateway.gb28181.lower.subscriptions import SubscriptionBook
from gateway.gb28181.manscdp import (
    CatalogItem,
    CatalogQuery,
    CatalogResponse,
    DeviceInfoQuery,
    DeviceStatusQuery,
    Keepalive,
    ManscdpMessage,
    decode_message,
    serialize,
)
from gateway.gb28181.requests import register_uri
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, TransactionTimedOut
from gateway.gb28181.sip.message import SipRequest, make_response
from gateway.gb28181.sip.transport import Peer

__all__ = ["CALL_METHODS", "LowerClient", "LowerRole", "SendContext", "Sent"]


class _Timer(StrEnum):
    REGISTER = "register"
    KEEPALIVE = "keepalive"


class LowerClient:
    """One registration with one server, on a (possibly shared) endpoint.

    ``peer`` is where the server is reached; the I/O layer may replace it (e.g.
    with an open TCP connection). ``on_deadline`` is set by a host that wants
    to hear whenever a new timer is armed.
    """

    def __init__(
        self, identity: LowerIdentity, policy: LowerPolicy, endpoint: SipEndpoint, peer: Peer, role: LowerRole
    ) -> None:
        self.identity = identity
        self.policy = policy
        self.endpoint = endpoint
        self.role = role
        self._sender = RequestSender(self, identity, endpoint, peer)
        self._home = (identity, peer)  # where a failure at a redirected server sends us back to
        self._redirects = 0  # redirects followed since the last success
        self._away = False  # registering with a server a redirect named, not the home one
        self.on_deadline: Callable[[LowerClient, float], None] | None = None
        self.last_error: str | None = None
        self.consecutive_register_failures = 0
        self.expires = policy.expires  # raised when the server answers 423 Min-Expires
        self._sn = endpoint.ids.number(5) if policy.random_sn_start else 0
        self._charset = "GB2312"  # the server's, from its last MESSAGE (docs/gb28181.md §5.3)
        self._machine = RegistrationMachine()
        self._rounds = self._digest_rounds(identity)
        self._register_txn: str | None = None
        self._keepalives = Keepalives(
            missed=policy.keepalive_missed,
            unanswered_is_missed=policy.unanswered_is_missed,
            forgotten=policy.forgotten_statuses,
        )
        self._timers: dict[_Timer, float] = {}
        self._role_timers: dict[Hashable, float] = {}
        self.subscriptions = SubscriptionBook(identity.name, identity.local_id, role.on_event)
        self._pusher = CatalogPusher(
            identity.name,
            identity.local_id,
            policy.catalog_per_message,
            self.subscriptions,
            self._send_chunk,
            role.on_event,
            self.next_sn,
        )

    # --- state ------------------------------------------------------------------------------

    @property
    def peer(self) -> Peer:
        """Where the server is reached; the I/O layer may replace it (e.g. with an open TCP connection)."""
        return self._sender.peer

    @peer.setter
    def peer(self, peer: Peer) -> None:
        self._sender.peer = peer

    @property
    def state(self) -> RegState:
        """The registration state."""
        return self._machine.state

    @property
    def registered(self) -> bool:
        """True while the server accepts our registration."""
        return self._machine.state is RegState.REGISTERED

    @property
    def keepalive_failures(self) -> int:
        """Keepalive failures in a row since the last success or registration."""
        return self._keepalives.failures

    @property
    def retry_at(self) -> float | None:
        """When the next registration attempt goes out while waiting to retry."""
        return self._timers.get(_Timer.REGISTER) if self.state is RegState.RETRY_WAIT else None

    @property
    def unregistering(self) -> bool:
        """True while our REGISTER with Expires: 0 waits for its final answer (or time-out)."""
        return self.state is RegState.STOPPED and self._register_txn is not None

    @property
    def charset(self) -> str:
        """The charset our MANSCDP bodies use: the server's, from its last readable MESSAGE."""
        return self._charset

    # --- commands -----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin registering (again, after :meth:`stop`); no-op while running."""
        if self.state in (RegState.IDLE, RegState.STOPPED):
            self.consecutive_register_failures = 0
            self._rounds.settled()
        self._fire(Trigger(RegInput.START), now)

    def stop(self, now: float, unregister: bool = True) -> None:
        """Stop every timer, push and subscription; send REGISTER Expires: 0 first if registered and asked."""
        self._fire(Trigger(RegInput.UNREGISTER if unregister else RegInput.STOP, "stopped"), now)

    def retry_now(self, now: float) -> None:
        """Register again at once (the I/O layer opened a new connection to the server)."""
        self._fire(Trigger(RegInput.RETRY_NOW), now)

    def register_again(self, now: float, delay: float, reason: str) -> None:
        """The server forgot us (it said so to a MESSAGE): register again after ``delay``."""
        self._fire(Trigger(RegInput.SERVER_LOST, reason, delay=delay), now)

    def send_keepalive_now(self, now: float) -> None:
        """Send a keepalive at once (tests, and after resuming) if registered."""
        self._keepalive_due(now)

    def send_message(self, body: bytes, now: float, key: object) -> str:
        """Send a MANSCDP MESSAGE; its final answer is reported as :class:`MessageAnswered` with ``key``."""
        return self._sender.message(body, now, Sent.KEYED, key)

    def reply(self, message: ManscdpMessage, now: float) -> None:
        """Send a Response MESSAGE (an answer to a query) in the server's charset."""
        self._sender.message(serialize(message, self._charset), now, Sent.REPLY)

    def notify_catalog(self, items: Sequence[CatalogItem], now: float) -> int:
        """Push catalog changes to every live subscription (docs/gb28181.md §14.3); how many were notified."""
        return self._pusher.notify(items, now)

    def answer(
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
        """Answer a request of the server (a fresh To tag unless given)."""
        response = make_response(request, status, to_tag=to_tag or self.endpoint.new_tag(), extra=extra, body=body)
        self.endpoint.send_response(txn, response, now)

    def next_sn(self) -> int:
        """A fresh MANSCDP SN for a request of ours (docs/gb28181.md §5.2)."""
        self._sn += 1
        return self._sn

    def set_timer(self, key: Hashable, at: float) -> None:
        """Arm a role timer; :meth:`LowerRole.on_timer` hears it. Stopping clears it."""
        self._role_timers[key] = at
        self._deadline(at)

    def cancel_timer(self, key: Hashable) -> None:
        """Disarm a role timer (no-op when not armed)."""
        self._role_timers.pop(key, None)

    # --- timers --------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """This client's earliest deadline (the endpoint's own timers are not included)."""
        deadlines = [*self._timers.values(), *self._role_timers.values()]
        expiry = self.subscriptions.next_expiry()
        if expiry is not None:
            deadlines.append(expiry)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run due timers: (re-)REGISTER, keepalive, the role's, subscription expiry."""
        for timer, at in list(self._timers.items()):
            if at > now or self._timers.get(timer) != at:
                continue
            del self._timers[timer]
            if timer is _Timer.REGISTER:
                registered = self.state is RegState.REGISTERED
                self._fire(Trigger(RegInput.REFRESH_DUE if registered else RegInput.RETRY_DUE), now)
            else:
                self._keepalive_due(now)
        for key, at in list(self._role_timers.items()):
            if at <= now and self._role_timers.get(key) == at:
                del self._role_timers[key]
                self.role.on_timer(key, now)
        self.subscriptions.expire(now)

    # --- endpoint events -----------------------------------------------------------------------

    def handle_request(self, event: RequestReceived, now: float) -> None:
        """A request from the server (or addressed to us)."""
        request, txn = event.request, event.transaction
        if self.role.is_muted(now):
            return  # a dead device answers nothing; the server's transaction times out
        try:
            if request.method in CALL_METHODS:
                self.role.handle_call(event, now)
            elif txn is None:
                return
            elif self.policy.refuse_when_off is not None and self.state in (RegState.IDLE, RegState.STOPPED):
                self.answer(request, txn, self.policy.refuse_when_off, now)  # this link is switched off
            elif request.method not in self.policy.methods:
                self.answer(request, txn, 405, now, extra=self._allow())
            elif request.method == "MESSAGE":
                self._on_message(request, txn, now)
            elif request.method == "SUBSCRIBE":
                self._on_subscribe(request, txn, now)
            else:  # OPTIONS (RFC 3261 §11.2)
                self.answer(request, txn, 200, now, extra=self._allow())
        except SipError as exc:  # a header we needed does not parse
            if txn is not None:
                self.answer(request, txn, exc.status_hint, now)

    def handle_response(self, event: ResponseReceived, now: float) -> None:
        """A response to something this client sent."""
        ctx = event.context
        if not isinstance(ctx, SendContext) or ctx.client is not self:
            return
        status = event.response.status
        if ctx.kind is Sent.REGISTER:
            current = event.transaction is not None and event.transaction == self._register_txn
            if current and status >= 200 and isinstance(ctx.ref, RegisterAttempt):
                self._register_txn = None
                if status in (401, 407):
                    self.role.on_event(Challenged(self.identity.name, now, status))
                trigger = classify(event.response, ctx.ref, self._rounds, self.expires)
                if trigger is not None:
                    self._fire(trigger, now, ctx.ref)
            return
        if status >= 200:
            self._on_final(ctx, status, now)

    def handle_timeout(self, event: TransactionTimedOut, now: float) -> None:
        """A request of this client got no final answer (Timer B/F, or the TCP connection broke)."""
        ctx = event.context
        if not isinstance(ctx, SendContext) or ctx.client is not self:
            return
        if ctx.kind is Sent.REGISTER:
            if event.transaction == self._register_txn and isinstance(ctx.ref, RegisterAttempt):
                self._register_txn = None
                self._fire(Trigger(RegInput.TIMED_OUT, "REGISTER timed out"), now, ctx.ref)
            return
        self._on_final(ctx, None, now)

    def _on_final(self, ctx: SendContext, status: int | None, now: float) -> None:
        """A final answer (``status`` None: timed out) to a request other than REGISTER."""
        name = self.identity.name
        match ctx.kind:
            case Sent.KEEPALIVE:
                if self.registered and isinstance(ctx.ref, KeepaliveRef):
                    self._after_keepalive(self._keepalives.answered(ctx.ref, status), status, now)
            case Sent.CATALOG | Sent.NOTIFY:
                self._pusher.on_answer(ctx.ref, status, now)
            case Sent.KEYED:
                if status is None:
                    self.role.on_event(MessageTimedOut(name, now, ctx.ref))
                else:
                    self.role.on_event(MessageAnswered(name, now, ctx.ref, status))
            case Sent.REPLY | Sent.REGISTER:
                pass
            case _:
                assert_never(ctx.kind)

    # --- registration ----------------------------------------------------------------------------

    def _fire(self, trigger: Trigger, now: float, attempt: RegisterAttempt | None = None) -> None:
        was_registered = self.registered
        try:
            action = self._machine.fire(trigger.input)
        except RegistrationError:
            self._halt()  # the machine stopped: so do its timers and pushes
            raise
        match action:
            case RegAction.IGNORE:
                pass
            case RegAction.SEND_REGISTER:
                self._send_register(now, self.expires)
            case RegAction.ANSWER_CHALLENGE:
                expires = attempt.expires if attempt is not None else self.expires
                self._send_register(now, expires, trigger.credentials, trigger.nonce)
            case RegAction.ADOPT_MIN_EXPIRES:
                self.expires = trigger.expires or self.expires
                self._send_register(now, self.expires)
            case RegAction.COME_ONLINE | RegAction.ARM_REFRESH:
                self._accepted(trigger, now, first=action is RegAction.COME_ONLINE)
            case RegAction.WAIT_AND_RETRY:
                self._failed(trigger, now, was_registered)
            case RegAction.WAIT_AND_RELOGIN:
                delay = trigger.delay if trigger.delay is not None else self.policy.relogin_delay
                self._wait(now, delay, trigger.reason, was_registered)
            case RegAction.FOLLOW_REDIRECT:
                self._follow(trigger, now, attempt, was_registered)
            case RegAction.REGISTER_NOW:
                self._timers.pop(_Timer.REGISTER, None)
                self._send_register(now, self.expires)
            case RegAction.SEND_UNREGISTER | RegAction.HALT:
                self._halt()
                if action is RegAction.SEND_UNREGISTER:
                    self._send_register(now, 0)
                self.subscriptions.drop_all()
                if was_registered:
                    self.role.on_event(WentOffline(self.identity.name, now, trigger.reason or "stopped"))
            case _:
                assert_never(action)

    def _send_register(
        self, now: float, expires: int, credentials: tuple[str, str] | None = None, nonce: str | None = None
    ) -> None:
        if credentials is None and (reused := self._rounds.reuse()) is not None:
            # Re-use the last nonce (nc + 1) and save a round trip; a stale one gets 401 stale=true.
            credentials, nonce = reused[:2], reused[2]
        ref = RegisterAttempt(expires, nonce if credentials else None)
        user_agent = self.policy.user_agent or self.endpoint.user_agent
        self._register_txn = self._sender.register(now, expires, user_agent, credentials, ref)

    def _digest_rounds(self, identity: LowerIdentity) -> DigestRounds:
        endpoint, size = self.endpoint, self.policy.cnonce_bytes
        return DigestRounds(identity.username, identity.password, identity.server_uri, lambda: endpoint.ids.token(size))

    def _follow(self, trigger: Trigger, now: float, attempt: RegisterAttempt | None, was_registered: bool) -> None:
        """Register with the server a 302 named, if it is inside the city and the hops are few; else fail."""
        target = trigger.redirect
        if was_registered:
            self._timers.pop(_Timer.KEEPALIVE, None)
            self.role.on_event(WentOffline(self.identity.name, now, "redirected"))
        if target is None or not self.policy.may_follow(target.host, target.port):
            where = target.address if target is not None else "?"
            self._refuse_redirect(f"REGISTER {trigger.status}: redirect to {where} is outside the city", trigger, now)
            return
        self._redirects += 1
        if self._redirects > self.policy.max_redirects:
            self._refuse_redirect(f"REGISTER {trigger.status}: too many redirects in a row", trigger, now)
            return
        domain = self.identity.server_domain
        identity = replace(self.identity, server_id=target.server_id, server_uri=register_uri(target.server_id, domain))
        self._retarget(identity, replace(self.peer, host=target.host, port=target.port, conn_id=None))
        self._away = True
        self.role.on_event(Redirected(self.identity.name, now, target.server_id, target.host, target.port))
        expires = attempt.expires if attempt is not None else self.expires
        self._send_register(now, expires)

    def _refuse_redirect(self, reason: str, trigger: Trigger, now: float) -> None:
        """A redirect we do not follow is a failed attempt (wait, then try the home server again)."""
        self._fire(Trigger(RegInput.REFUSED, reason, trigger.status), now)

    def _retarget(self, identity: LowerIdentity, peer: Peer) -> None:
        """Register (and send everything else) to another server from now on."""
        self.identity = identity
        self._sender.identity = identity
        self._sender.peer = peer
        self._rounds = self._digest_rounds(identity)

    def _accepted(self, trigger: Trigger, now: float, *, first: bool) -> None:
        granted = trigger.expires if trigger.expires is not None else self.expires
        self._redirects = 0
        self._rounds.settled()
        self.consecutive_register_failures = 0
        self._keepalives.failures = 0  # the server knows us: whatever failed before is over
        self._arm(_Timer.REGISTER, now + granted * self.policy.refresh_ratio)
        self.role.on_event(Registered(self.identity.name, now, granted, first))
        if first:
            self._keepalives.begin_session()
            self._keepalive_due(now)  # the first at once: some servers show us online only after one

    def _failed(self, trigger: Trigger, now: float, was_registered: bool) -> None:
        """Wait, then register again: the policy's back-off after the failures in a row."""
        self.last_error = trigger.reason
        self._rounds.reset()  # start the next round afresh
        self._redirects = 0
        if self._away:  # the redirected server failed us: ask the home server again
            self._away = False
            self._retarget(*self._home)
        self.consecutive_register_failures += 1
        delay = self.policy.retry_wait(self.consecutive_register_failures, trigger.status)
        self._wait(now, delay, trigger.reason, was_registered)
        name = self.identity.name
        self.role.on_event(RegisterFailed(name, now, trigger.status, trigger.reason, now + delay))

    def _wait(self, now: float, delay: float, reason: str, was_registered: bool) -> None:
        self._register_txn = None  # an answer to the attempt in flight no longer counts
        self._timers.pop(_Timer.KEEPALIVE, None)
        self._arm(_Timer.REGISTER, now + delay)
        if was_registered:
            self.role.on_event(WentOffline(self.identity.name, now, reason))

    def _halt(self) -> None:
        self._register_txn = None
        self._timers.clear()
        self._role_timers.clear()
        self._pusher.clear()

    # --- keepalive -------------------------------------------------------------------------------

    def _keepalive_due(self, now: float) -> None:
        if not self.registered:
            return
        self._after_keepalive(self._keepalives.interval_passed(), None, now)
        if not self.registered:
            return
        self._arm(_Timer.KEEPALIVE, now + self.policy.keepalive_interval)
        if self.role.is_muted(now):
            return
        body = serialize(Keepalive(sn=self.next_sn(), device_id=self.identity.local_id, status="OK"), self._charset)
        ref = self._keepalives.sending()
        body = self.role.keepalive_body(body, self._keepalives.sent)
        self.role.on_event(KeepaliveSent(self.identity.name, now))
        self._sender.message(body, now, Sent.KEEPALIVE, ref)

    def _after_keepalive(self, result: KeepaliveResult, status: int | None, now: float) -> None:
        if result.outcome is KeepaliveOutcome.FINE:
            return
        self.last_error = result.error
        self.role.on_event(KeepaliveFailed(self.identity.name, now, status, result.error))
        if result.outcome in (KeepaliveOutcome.LOST, KeepaliveOutcome.FORGOTTEN):
            # Register again so that a restarted server gets us back without an operator.
            self._fire(Trigger(RegInput.SERVER_LOST, result.reason, status, delay=self.policy.relogin_delay), now)

    # --- requests from the server ------------------------------------------------------------------

    def _on_message(self, request: SipRequest, txn: str, now: float) -> None:
        """200 at once to every readable MESSAGE (servers drop lowers that do not answer, docs/gb28181.md §16.2)."""
        if not request.body.strip():
            self.answer(request, txn, 400, now)
            return
        try:
            message, charset = decode_message(request.body)
        except ManscdpError as exc:
            self.answer(request, txn, exc.status_hint, now)  # 400, or 415 for a root that is not MANSCDP
            return
        self._charset = charset
        query = isinstance(message, CatalogQuery | DeviceInfoQuery | DeviceStatusQuery)
        status = 200 if query else self.role.message_status(message)
        self.answer(request, txn, status, now)
        if status >= 300:
            return
        self.role.on_event(MessageReceived(self.identity.name, now, message))
        if isinstance(message, CatalogQuery):
            self._pusher.answer_query(message.sn, self.role.catalog_items(), now)
        elif isinstance(message, DeviceInfoQuery):
            self._reply_if(self.role.answer_device_info(message), now)
        elif isinstance(message, DeviceStatusQuery):
            self._reply_if(self.role.answer_device_status(message), now)
        else:
            self.role.on_message(message, now)

    def _reply_if(self, message: ManscdpMessage | None, now: float) -> None:
        if message is not None:
            self.reply(message, now)

    def _on_subscribe(self, request: SipRequest, txn: str, now: float) -> None:
        answer = self.subscriptions.on_subscribe(request, now, self.endpoint.new_tag, self._sender.contact())
        if answer.charset is not None:
            self._charset = answer.charset
        self.answer(request, txn, answer.status, now, to_tag=answer.to_tag, extra=answer.extra, body=answer.body)
        expiry = self.subscriptions.next_expiry()
        if expiry is not None:
            self._deadline(expiry)

    def _allow(self) -> list[tuple[str, str]] | None:
        return [("Allow", self.policy.allow)] if self.policy.allow else None

    # --- sending ------------------------------------------------------------------------------------

    def _send_chunk(self, chunk: CatalogResponse, push: Push, now: float) -> None:
        body = serialize(chunk, self._charset)
        if push.subscription is None:
            self._sender.message(body, now, Sent.CATALOG, push.id)
        else:
            self._sender.notify(push.subscription, body, now, push.id)

    def _arm(self, timer: _Timer, at: float) -> None:
        self._timers[timer] = at
        self._deadline(at)

    def _deadline(self, at: float) -> None:
        if self.on_deadline is not None:
            self.on_deadline(self, at)
