"""Device access: the gateway's GB/T 28181 core towards devices (sans-I/O).

:class:`DeviceAccess` sits on a :class:`SipEndpoint` the way ``H3Connection``
sits on ``QuicConnection``: it consumes the endpoint's events, answers
REGISTER and MESSAGE, sends DeviceInfo/Catalog/DeviceStatus queries, tracks
online state, and emits application events (:data:`AccessEvent`) for the
registry, metrics and logs. Time comes in as ``now`` (loop time); the wall
clock, needed only for the REGISTER ``Date`` header, is ``now + wall_offset``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import ManscdpError
from gateway.gb28181.access_events import (
    AccessEvent,
    AlarmNotified,
    CatalogNotified,
    CatalogReceived,
    CommandDelivered,
    DeviceInfoReceived,
    DeviceOffline,
    DeviceOnline,
    DeviceRegistered,
    DeviceRehomed,
    DeviceStatusReceived,
    DeviceUnregistered,
    ManscdpReceived,
    MessageRefused,
    QueryFailed,
    RegistrationRefused,
)
from gateway.gb28181.catalog import CatalogAssembler, CatalogCompleted
from gateway.gb28181.catalog_subscriptions import CatalogSubscriber
from gateway.gb28181.liveness import Liveness, LivenessEvent, WentOffline, WentOnline
from gateway.gb28181.manscdp import (
    AlarmNotify,
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
)
from gateway.gb28181.pacer import Pacer
from gateway.gb28181.queries import QueryBook
from gateway.gb28181.registrar import RegisterDecision, Registrar, Registration
from gateway.gb28181.requests import build_message, sip_uri
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, SipEvent, TransactionTimedOut
from gateway.gb28181.sip.message import SipRequest, make_response
from gateway.gb28181.sip.transport import Peer

log = logging.getLogger("kgw.access")
ALLOW = "REGISTER, MESSAGE, OPTIONS, ACK, BYE, CANCEL"  # what device access answers today


#: The answer to a MESSAGE from a sender that is not the registered session at its
#: registered address (docs/gb28181.md "Untrusted senders"): WVP's 404, after which
#: devices register again at once and resend what was refused.
UNTRUSTED_STATUS = 404
_ALARM_ACK = "alarm-ack"  # context of our Response MESSAGEs to alarms: their answers need no handling
_DeviceQuery = CatalogQuery | DeviceInfoQuery | DeviceStatusQuery  # what the gateway asks devices


@dataclass(frozen=True, slots=True)
class _QueryContext:
    """The context of our query MESSAGEs: whose answer failed (other cores' contexts are not ours)."""

    key: tuple[str, str, int]  # (device id, CmdType, SN), the QueryBook key


@dataclass(frozen=True, slots=True)
class _CommandContext:
    """The context of a command MESSAGE sent for another service (:meth:`DeviceAccess.send_command`)."""

    key: tuple[str, str, int]  # (device id, CmdType, SN)


CommandBody = Callable[[int, str], bytes]
"""Builds a command's MANSCDP body from its SN and the device's charset."""


@dataclass(frozen=True, slots=True)
class AccessConfig:
    """Behaviour switches of the access core."""

    gateway_id: str
    realm: str
    keepalive_interval: float = 60.0
    keepalive_missed: int = 3
    query_timeout: float = 10.0
    max_inflight_queries: int = 256  # the pacer bounds how fast they come; this, how many wait on slow devices
    query_on_register: bool = True
    # The DeviceInfo and Catalog queries of new registrations start at this many devices a
    # second (a burst of ``initial_query_burst`` at once): during a registration storm the
    # REGISTERs keep the CPU, and every device still gets asked (gateway/gb28181/pacer.py).
    initial_query_rate: float = 500.0
    initial_query_burst: int = 200
    catalog_first_chunk_timeout: float = 120.0
    # WVP waits 5 s between chunks; over UDP a lost chunk is retransmitted after up to
    # 0.5+1+2+4+4 s (Timer E), so a shorter gap commits partial catalogs needlessly.
    catalog_gap_timeout: float = 16.0
    subscribe_catalogs: bool = True  # subscribe to registered lower platforms' catalogs (type 200/209)


@dataclass(slots=True)
class DeviceSession:
    """What the core remembers about a registered device."""

    device_id: str
    peer: Peer
    call_id: str
    expires: int
    registered_at: float
    user_agent: str = ""
    charset: str = "GB2312"
    gb_version: str | None = None


class DeviceAccess:
    """The gateway's device-facing GB/T 28181 logic."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        registrar: Registrar,
        config: AccessConfig,
        *,
        wall_offset: float = 0.0,
        known_device: Callable[[str], bool] = lambda device_id: False,
    ) -> None:
        self.endpoint = endpoint
        self.registrar = registrar
        self.config = config
        self.wall_offset = wall_offset
        self.liveness = Liveness(interval=config.keepalive_interval, missed=config.keepalive_missed)
        self.catalogs = CatalogAssembler(
            first_chunk_timeout=config.catalog_first_chunk_timeout, gap_timeout=config.catalog_gap_timeout
        )
        self.sessions: dict[str, DeviceSession] = {}
        self.subscriptions = CatalogSubscriber(endpoint, config.gateway_id, config.realm)
        # Whether an unregistered sender is a device we know (its alarms are kept, not refused).
        self.known_device = known_device
        self._events: deque[AccessEvent] = deque()
        self.queries: QueryBook[_DeviceQuery] = QueryBook(
            max_inflight=config.max_inflight_queries, timeout=config.query_timeout
        )
        # Devices that answered something (a trusted MESSAGE) since they registered: only
        # they get queries beyond the initial DeviceInfo and Catalog (H5).
        self._answered: set[str] = set()
        # Newly registered devices waiting for their turn to be asked DeviceInfo and Catalog.
        self.initial_queries = Pacer(config.initial_query_rate, config.initial_query_burst)
        registrar.current_peer = self._registered_peer
        self._cseq = endpoint.ids.number(4) + 1
        self._sn = endpoint.ids.number(5) + 1

    # --- plumbing -------------------------------------------------------------

    def next_event(self) -> AccessEvent | None:
        """The next application event, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline of the core (the endpoint's are the router's to ask)."""
        candidates = [
            t
            for t in (
                self.liveness.get_timer(),
                self.catalogs.get_timer(),
                self.queries.get_timer(),
                self.subscriptions.get_timer(),
                self.initial_queries.get_timer(),
            )
            if t is not None
        ]
        return min(candidates) if candidates else None

    def handle_timer(self, now: float) -> None:
        """Run every timer of the core due at ``now``."""
        self._liveness_events(self.liveness.handle_timer(now))
        for done in self.catalogs.handle_timer(now):
            self._catalog_done(done, now)
        self._expire_queries(now)
        self.subscriptions.handle_timer(now)
        self._ask_new_devices(now)

    def route(self, event: SipEvent, now: float) -> bool:
        """Take an endpoint event: every request (device access is the router's last handler, it
        answers them all), and the answers to what it sent itself; False for anyone else's answers."""
        if self.subscriptions.route(event, now):
            return True
        if isinstance(event, RequestReceived):
            self._on_request(event, now)
            return True
        if isinstance(event.context, _CommandContext):
            self._on_command_outcome(event, event.context, now)
            return True
        if not isinstance(event.context, _QueryContext) and event.context != _ALARM_ACK:
            return False
        if isinstance(event, ResponseReceived):
            self._on_response(event, now)
        else:
            self._on_timeout(event, now)
        return True

    # --- commands ---------------------------------------------------------------

    def query_catalog(self, device_id: str, now: float) -> int | None:
        """Ask a registered device for its catalog; returns the SN or None if unknown."""
        return self._query(device_id, CatalogQuery(sn=self._next_sn(), device_id=device_id), now)

    def query_device_info(self, device_id: str, now: float) -> int | None:
        """Ask a registered device for DeviceInfo."""
        return self._query(device_id, DeviceInfoQuery(sn=self._next_sn(), device_id=device_id), now)

    def query_device_status(self, device_id: str, now: float) -> int | None:
        """Ask a registered device for DeviceStatus."""
        return self._query(device_id, DeviceStatusQuery(sn=self._next_sn(), device_id=device_id), now)

    def send_command(self, device_id: str, cmd_type: str, body: CommandBody, now: float) -> int | None:
        """Send a MANSCDP command another service built (DeviceControl, RecordInfo, Broadcast…); its SN.

        None when the device has no session. The device's answers (Response
        MESSAGEs with this SN) come back as :class:`ManscdpReceived`; a SIP refusal
        (>= 300) or a transaction timeout of the MESSAGE itself as
        :class:`QueryFailed` with ``cmd_type`` and the SN. Unlike the registry's
        queries these are not queued: a person or an upper platform is waiting.
        """
        session = self.sessions.get(device_id)
        if session is None:
            return None
        sn = self._next_sn()
        self._send_message(session, body(sn, session.charset), now, _CommandContext((device_id, cmd_type, sn)))
        return sn

    def charset_of(self, device_id: str) -> str:
        """The charset the device last wrote in (GB2312 until it said otherwise)."""
        session = self.sessions.get(device_id)
        return session.charset if session is not None else "GB2312"

    def _on_command_outcome(
        self, event: ResponseReceived | TransactionTimedOut, context: _CommandContext, now: float
    ) -> None:
        device_id, cmd_type, sn = context.key
        if isinstance(event, TransactionTimedOut):
            self._events.append(QueryFailed(device_id, cmd_type, sn, "transport_timeout"))
        elif event.response.status >= 300:
            self._events.append(QueryFailed(device_id, cmd_type, sn, f"status_{event.response.status}"))
        elif event.response.status >= 200:
            self._events.append(CommandDelivered(device_id, cmd_type, sn))

    def _registered_peer(self, device_id: str) -> Peer | None:
        session = self.sessions.get(device_id)
        return session.peer if session is not None else None

    def is_registered(self, device_id: str) -> bool:
        """Whether the device has a session (queries and calls can reach it)."""
        return device_id in self.sessions

    def restore_session(self, session: DeviceSession, *, online: bool, last_seen: float, expires_at: float) -> None:
        """Seed a device known from the store after a restart."""
        self.sessions[session.device_id] = session
        self.liveness.restore(session.device_id, online=online, last_seen=last_seen, expires_at=expires_at)

    # --- requests from devices ------------------------------------------------------

    def _on_request(self, event: RequestReceived, now: float) -> None:
        request, txn = event.request, event.transaction
        if txn is None:  # ACK for a 2xx: nothing to do in device access
            return
        if request.method == "REGISTER":
            self._on_register(request, event.peer, txn, now)
        elif request.method == "MESSAGE":
            self._on_message(request, event.peer, txn, now)
        elif request.method == "OPTIONS":
            self._answer(request, txn, 200, now, extra=[("Allow", ALLOW)])
        elif request.method == "NOTIFY":
            self._on_notify(request, event.peer, txn, now)
        elif request.method in ("BYE", "INFO", "CANCEL"):
            self._answer(request, txn, 481, now)
        else:
            self._answer(request, txn, 405, now, extra=[("Allow", ALLOW)])

    def _on_register(self, request: SipRequest, peer: Peer, txn: str, now: float) -> None:
        wall = datetime.fromtimestamp(now + self.wall_offset)
        decision = self.registrar.handle(request, peer, now, wall)
        self._answer(request, txn, decision.status, now, extra=decision.headers)
        if decision.registration is None:
            self._events.append(
                RegistrationRefused(
                    decision.device_id,
                    peer,
                    decision.status,
                    decision.refusal.value if decision.refusal else "refused",
                    decision.newly_blocked,
                )
            )
            return
        self._registered(decision, decision.registration, now)

    def _registered(self, decision: RegisterDecision, reg: Registration, now: float) -> None:
        if reg.expires == 0:
            self.sessions.pop(reg.device_id, None)
            self._answered.discard(reg.device_id)
            self.initial_queries.discard(reg.device_id)
            self.subscriptions.forget(reg.device_id)
            self._events.append(DeviceUnregistered(reg.device_id, now))
            self._liveness_events(self.liveness.unregistered(reg.device_id, now))
            return
        old = self.sessions.get(reg.device_id)
        live = old is not None and self.liveness.is_registered(reg.device_id, now)
        rehomed = old is not None and live and old.peer != reg.peer
        first = rehomed or not (old is not None and old.call_id == reg.call_id and live)
        if rehomed and old is not None:
            # Only an authenticated REGISTER moves a session; it is never silent (H1).
            self._events.append(DeviceRehomed(reg.device_id, old.peer, reg.peer, now))
        if first:
            self._answered.discard(reg.device_id)
        session = DeviceSession(
            device_id=reg.device_id,
            peer=reg.peer,
            call_id=reg.call_id,
            expires=reg.expires,
            registered_at=now,
            user_agent=reg.user_agent,
            charset=old.charset if old else "GB2312",
            gb_version=reg.gb_version,
        )
        self.sessions[reg.device_id] = session
        self._events.append(DeviceRegistered(reg.device_id, reg.peer, reg.expires, reg.user_agent, first, now))
        self._liveness_events(self.liveness.registered(reg.device_id, reg.expires, now))
        if first and self.config.query_on_register:
            self.initial_queries.add(reg.device_id)
            self._ask_new_devices(now)
        if first and self.config.subscribe_catalogs and CatalogSubscriber.wants(reg.device_id):
            self.subscriptions.subscribe(reg.device_id, reg.peer, now)

    def _on_message(self, request: SipRequest, peer: Peer, txn: str, now: float) -> None:
        device_id = request.from_.uri.user or ""
        session = self.sessions.get(device_id)
        registered = session is not None and self.liveness.is_registered(device_id, now)
        if session is None or not registered or session.peer != peer:
            # Only the registered session at the exact address (or TCP connection) it
            # authenticated from is believed (C3): anyone can write a From header.
            self._untrusted(request, peer, txn, device_id, "address_mismatch" if registered else "not_registered", now)
            return
        try:
            message, charset = decode_message(request.body)
        except ManscdpError as exc:
            self._refuse_message(request, peer, txn, device_id, exc.status_hint, type(exc).__name__, now)
            return
        session.charset = charset
        self._answered.add(device_id)
        self._liveness_events(self.liveness.heard(device_id, now))
        if isinstance(message, AlarmNotify):
            self._events.append(AlarmNotified(device_id, message, peer, txn, request, charset, True, now))
            return
        self._answer(request, txn, 200, now)
        self._dispatch_manscdp(device_id, message, peer, now)

    def _untrusted(self, request: SipRequest, peer: Peer, txn: str, device_id: str, reason: str, now: float) -> None:
        """A MESSAGE or NOTIFY not from the registered session at its address: refused, except alarms.

        Nothing of it is believed (no liveness, no catalog, no session move). An
        alarm claiming a device we know is kept all the same, marked untrusted, and
        answered :data:`UNTRUSTED_STATUS` once stored (:meth:`confirm_alarm`).
        """
        known = device_id in self.sessions or self.known_device(device_id)
        if not known:
            # A cheap byte test, no parsing, for strangers (a flood costs nothing): an
            # alarm is told apart so that its refusal is loud.
            unknown = "alarm_from_unknown_device" if b"<CmdType>Alarm<" in request.body else "not_registered"
            self._refuse_message(request, peer, txn, device_id, UNTRUSTED_STATUS, unknown, now)
            return
        try:
            message, charset = decode_message(request.body)
        except ManscdpError as exc:
            self._refuse_message(request, peer, txn, device_id, exc.status_hint, type(exc).__name__, now)
            return
        if isinstance(message, AlarmNotify):  # a known device's alarm is never turned away
            self._events.append(
                AlarmNotified(device_id, message, peer, txn, request, charset, False, now, untrusted_reason=reason)
            )
            return
        status = 481 if request.method == "NOTIFY" else UNTRUSTED_STATUS
        self._refuse_message(request, peer, txn, device_id, status, reason, now)

    def _on_notify(self, request: SipRequest, peer: Peer, txn: str, now: float) -> None:
        """A subscription NOTIFY from a registered lower platform: catalog changes or an alarm."""
        device_id = request.from_.uri.user or ""
        session = self.sessions.get(device_id)
        if session is None or not self.liveness.is_registered(device_id, now):
            self._answer(request, txn, 481, now)  # no subscription of ours can be behind it
            return
        if session.peer != peer:
            self._untrusted(request, peer, txn, device_id, "address_mismatch", now)
            return
        try:
            message, charset = decode_message(request.body)
        except ManscdpError as exc:
            self._refuse_message(request, peer, txn, device_id, exc.status_hint, type(exc).__name__, now)
            return
        self._answered.add(device_id)
        self._liveness_events(self.liveness.heard(device_id, now))
        if isinstance(message, AlarmNotify):  # an alarm subscription's NOTIFY: stored before the 200
            self._events.append(AlarmNotified(device_id, message, peer, txn, request, charset, True, now))
            return
        self._answer(request, txn, 200, now)
        if isinstance(message, CatalogResponse) and message.items:
            self._events.append(CatalogNotified(device_id, tuple(message.items), now))

    def confirm_alarm(
        self, event: AlarmNotified, now: float, *, stored: bool = True, status: int | None = None
    ) -> bool:
        """Answer an alarm once it is stored: 200 OK, then the Response MESSAGE (docs/gb28181.md §9.2).

        ``stored=False`` (the store failed) answers 500 so the device sends it
        again. An untrusted alarm (``event.untrusted_reason``) is answered
        :data:`UNTRUSTED_STATUS` (404) by default, without a Response MESSAGE:
        a real device then registers again and resends it, which proves it;
        ``status`` overrides the answer (200 sends the Response MESSAGE too).
        Returns False when the transaction is gone (the device gave up
        waiting; its retry is recognised as the same alarm).
        """
        if not stored:
            return self.endpoint.send_response(
                event.transaction,
                make_response(event.request, 500, to_tag=self.endpoint.new_tag(), extra=[("Retry-After", "1")]),
                now,
            )
        if status is None:
            status = UNTRUSTED_STATUS if event.untrusted_reason else 200
        answered = self.endpoint.send_response(
            event.transaction, make_response(event.request, status, to_tag=self.endpoint.new_tag()), now
        )
        if status != 200:
            return answered
        peer = event.peer  # the sender's own address: never a third party's
        ack = ResultResponse("Alarm", event.alarm.sn, event.alarm.device_id or event.device_id, "OK")
        self._cseq += 1
        request = build_message(
            from_id=self.config.gateway_id,
            from_domain=self.config.realm,
            from_tag=self.endpoint.new_tag(),
            to_id=event.device_id,
            to_domain=event.device_id[:10],
            request_uri=sip_uri(event.device_id, peer.host, peer.port),
            call_id=self.endpoint.new_call_id(),
            cseq=self._cseq,
            body=serialize(ack, event.charset),
        )
        self.endpoint.send_request(request, peer, now, context=_ALARM_ACK)
        return answered

    def _dispatch_manscdp(self, device_id: str, message: ManscdpMessage, peer: Peer, now: float) -> None:
        if isinstance(message, Keepalive):
            return
        if isinstance(message, CatalogResponse):
            done = self.catalogs.add(message, now)
            if done is not None:
                self._catalog_done(done, now)
        elif isinstance(message, DeviceInfoResponse):
            self._complete_query(device_id, "DeviceInfo", message.sn, now)
            self._events.append(DeviceInfoReceived(device_id, message, now))
        elif isinstance(message, DeviceStatusResponse):
            self._complete_query(device_id, "DeviceStatus", message.sn, now)
            self._events.append(DeviceStatusReceived(device_id, message, now))
        else:
            self._events.append(ManscdpReceived(device_id, message, peer, now))

    def _refuse_message(
        self, request: SipRequest, peer: Peer, txn: str, device_id: str, status: int, reason: str, now: float
    ) -> None:
        self._answer(request, txn, status, now)
        self._events.append(MessageRefused(device_id or None, peer, status, reason))

    def _answer(
        self, request: SipRequest, txn: str, status: int, now: float, *, extra: list[tuple[str, str]] | None = None
    ) -> None:
        response = make_response(request, status, to_tag=self.endpoint.new_tag(), extra=extra)
        self.endpoint.send_response(txn, response, now)

    # --- our queries ---------------------------------------------------------------

    def _next_sn(self) -> int:
        self._sn += 1
        return self._sn

    def _query(self, device_id: str, query: _DeviceQuery, now: float, *, initial: bool = False) -> int | None:
        """Queue a query (QueryBook caps how many run at once, fairly) and send what may go.

        A device that has answered nothing since it registered gets only its
        ``initial`` queries (H5): anyone can register an ID, not everyone answers.
        """
        if device_id not in self.sessions:
            return None
        proven = device_id in self._answered
        if not (proven or initial):
            return None
        catalog = isinstance(query, CatalogQuery)
        key = (device_id, str(query.cmd_type), query.sn)
        if not self.queries.submit(key, query, report_timeout=not catalog, proven=proven):
            return None
        self._send_admitted(now)
        return int(query.sn)

    def _ask_new_devices(self, now: float) -> None:
        """DeviceInfo and Catalog for the newly registered devices whose turn has come."""
        for device_id in self.initial_queries.release(now):
            self._query(device_id, DeviceInfoQuery(sn=self._next_sn(), device_id=device_id), now, initial=True)
            self._query(device_id, CatalogQuery(sn=self._next_sn(), device_id=device_id), now, initial=True)

    def _send_admitted(self, now: float) -> None:
        for key, query in self.queries.admit(now):
            device_id = key[0]
            session = self.sessions.get(device_id)
            if session is None:
                self.queries.finish(key)
                self._events.append(QueryFailed(device_id, key[1], key[2], "not_registered"))
                continue
            self._send_message(session, serialize(query, session.charset), now, _QueryContext(key))
            if isinstance(query, CatalogQuery):
                self.catalogs.expect(device_id, query.sn, now)

    def _send_message(self, session: DeviceSession, body: bytes, now: float, context: object) -> None:
        """A MESSAGE of ours to a registered device, at the address it registered from."""
        self._cseq += 1
        request = build_message(
            from_id=self.config.gateway_id,
            from_domain=self.config.realm,
            from_tag=self.endpoint.new_tag(),
            to_id=session.device_id,
            to_domain=session.device_id[:10],
            request_uri=sip_uri(session.device_id, session.peer.host, session.peer.port),
            call_id=self.endpoint.new_call_id(),
            cseq=self._cseq,
            body=body,
        )
        self.endpoint.send_request(request, session.peer, now, context=context)

    def _complete_query(self, device_id: str, cmd_type: str, sn: int, now: float) -> None:
        if self.queries.finish((device_id, cmd_type, sn)):
            self._send_admitted(now)

    def _expire_queries(self, now: float) -> None:
        for device_id, cmd_type, sn in self.queries.expire(now):
            self._events.append(QueryFailed(device_id, cmd_type, sn, "no_response"))
        self._send_admitted(now)

    def _on_response(self, event: ResponseReceived, now: float) -> None:
        if not isinstance(event.context, _QueryContext) or event.response.status < 300:
            return
        device_id, cmd_type, sn = event.context.key
        self._fail_query(device_id, cmd_type, sn, f"status_{event.response.status}", now)

    def _on_timeout(self, event: TransactionTimedOut, now: float) -> None:
        if isinstance(event.context, _QueryContext):
            device_id, cmd_type, sn = event.context.key
            self._fail_query(device_id, cmd_type, sn, "transport_timeout", now)

    def _fail_query(self, device_id: str, cmd_type: str, sn: int, reason: str, now: float) -> None:
        """Report a failed query once: only if it is still outstanding."""
        outstanding = self.queries.finish((device_id, cmd_type, sn))
        if cmd_type == "Catalog":
            outstanding = self.catalogs.cancel(device_id, sn) or outstanding
        if outstanding:
            self._events.append(QueryFailed(device_id, cmd_type, sn, reason))
            self._send_admitted(now)

    def _catalog_done(self, done: CatalogCompleted, now: float) -> None:
        self._complete_query(done.device_id, "Catalog", done.sn, now)
        if done.timed_out and not done.items:
            self._events.append(QueryFailed(done.device_id, "Catalog", done.sn, "no_response"))
            return
        self._events.append(CatalogReceived(done.device_id, done.items, done.sum_num, done.partial, now))

    def _liveness_events(self, events: list[LivenessEvent]) -> None:
        for ev in events:
            if isinstance(ev, WentOnline):
                self._events.append(DeviceOnline(ev.device_id, ev.at, ev.reason))
            elif isinstance(ev, WentOffline):
                self._events.append(DeviceOffline(ev.device_id, ev.at, ev.reason.value))
            else:  # the registration lapsed: forget the session (the registry keeps the device)
                self.sessions.pop(ev.device_id, None)
                self._answered.discard(ev.device_id)
                self.initial_queries.discard(ev.device_id)
                self.subscriptions.forget(ev.device_id)


__all__ = [
    "AccessConfig",
    "CommandBody",
    "AlarmNotified",
    "CatalogNotified",
    "AccessEvent",
    "CatalogReceived",
    "DeviceAccess",
    "DeviceInfoReceived",
    "DeviceOffline",
    "DeviceOnline",
    "DeviceRegistered",
    "DeviceRehomed",
    "DeviceSession",
    "DeviceStatusReceived",
    "DeviceUnregistered",
    "ManscdpReceived",
    "MessageRefused",
    "QueryFailed",
    "RegistrationRefused",
    "Root",
]
