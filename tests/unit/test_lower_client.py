"""LowerClient: the lower side's core under the device policy and the upper-link policy, in memory.

The server is a bare :class:`SipEndpoint` with the real :class:`DigestServer`
and scripted answers; the role is a recorder. Everything runs on a fake clock
with seeded ids, so each test decides exactly how the server behaves.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, is_dataclass, replace

import pytest

from gateway.cascade.upper import UpperPlatformConfig, upper_policy
from gateway.gb28181.device_agent import AgentTiming, DeviceProfile, device_policy
from gateway.gb28181.lower import (
    MAX_PUSHES,
    CatalogSent,
    Challenged,
    KeepaliveFailed,
    KeepaliveSent,
    LowerClient,
    LowerEvent,
    LowerHost,
    LowerIdentity,
    LowerPolicy,
    MessageAnswered,
    MessageReceived,
    MessageTimedOut,
    Registered,
    RegisterFailed,
    RegState,
    SubscriptionChanged,
    WentOffline,
)
from gateway.gb28181.lower import events as lower_events
from gateway.gb28181.manscdp import (
    CatalogItem,
    CatalogQuery,
    CatalogResponse,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    Keepalive,
    ManscdpMessage,
    decode_message,
    serialize,
)
from gateway.gb28181.requests import MANSCDP_CONTENT_TYPE, build_message, sip_uri, target_id
from gateway.gb28181.sip.auth import AuthResult, DigestServer, parse_auth_params
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.idsource import SeededIds
from gateway.gb28181.sip.message import SipRequest, SipResponse, make_response
from gateway.gb28181.sip.testing import FakeClock
from gateway.gb28181.sip.transport import Peer, Transport

SERVER_ID = "12010000002000000001"
DOMAIN = "1201000000"
LOCAL_ID = "12010000001180000001"
PASSWORD = "12345678"
LOCAL = Peer(Transport.UDP, "10.0.0.2", 5061)
SERVER = Peer(Transport.UDP, "10.0.0.1", 5060)
TIMER_F = 32.0

DEVICE = device_policy(AgentTiming(), DeviceProfile(LOCAL_ID, PASSWORD, "nvr"))
UPPER = upper_policy(UpperPlatformConfig(name="up", server_id=SERVER_ID, host=SERVER.host, password=PASSWORD))


def items(n: int) -> list[CatalogItem]:
    return [CatalogItem(device_id=f"12010000001310{i:06d}", name=f"cam-{i}", status="ON") for i in range(1, n + 1)]


@dataclass
class Role:
    """A LowerRole that records what the core tells it."""

    catalog: list[CatalogItem] = field(default_factory=lambda: items(10))
    muted: bool = False
    events: list[LowerEvent] = field(default_factory=list)
    messages: list[ManscdpMessage] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    timers: list[Hashable] = field(default_factory=list)

    def catalog_items(self) -> Sequence[CatalogItem]:
        return self.catalog

    def answer_device_info(self, query: DeviceInfoQuery) -> DeviceInfoResponse | None:
        return DeviceInfoResponse(sn=query.sn, device_id=LOCAL_ID, result="OK")

    def answer_device_status(self, query: DeviceStatusQuery) -> DeviceStatusResponse | None:
        return None  # a role may stay silent

    def message_status(self, message: ManscdpMessage) -> int:
        """Every message is accepted."""
        return 200

    def on_message(self, message: ManscdpMessage, now: float) -> None:
        self.messages.append(message)

    def handle_call(self, event: RequestReceived, now: float) -> None:
        self.calls.append(event.request.method)

    def is_muted(self, now: float) -> bool:
        return self.muted

    def keepalive_body(self, body: bytes, number: int) -> bytes:
        return body

    def on_timer(self, key: Hashable, now: float) -> None:
        self.timers.append(key)

    def on_event(self, event: LowerEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


@dataclass
class Server:
    """A registrar with digest and scripted MESSAGE/NOTIFY answers."""

    clock: FakeClock
    endpoint: SipEndpoint
    digest: DigestServer
    password: str = PASSWORD
    register_answer: Callable[[SipRequest], tuple[int, list[tuple[str, str]]] | None] | None = None
    answer: Callable[[SipRequest], int | None] = lambda _r: 200  # noqa: E731
    requests: list[tuple[float, SipRequest]] = field(default_factory=list)
    finals: dict[object, SipResponse] = field(default_factory=dict)  # final answers to its own requests

    def process(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, ResponseReceived) and event.response.status >= 200:
                self.finals[event.context] = event.response
            if not isinstance(event, RequestReceived) or event.transaction is None:
                continue
            request = event.request
            self.requests.append((self.clock.now, request))
            scripted = self.register_answer(request) if self.register_answer and request.method == "REGISTER" else None
            if scripted is not None:
                status, headers = scripted
            elif request.method == "REGISTER":
                status, headers = self._digest(request)
            else:
                maybe = self.answer(request)
                if maybe is None:
                    continue
                status, headers = maybe, []
            response = make_response(request, status, to_tag=self.endpoint.new_tag(), extra=headers)
            self.endpoint.send_response(event.transaction, response, self.clock.now)

    def _digest(self, request: SipRequest) -> tuple[int, list[tuple[str, str]]]:
        now = self.clock.now
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return 401, [("WWW-Authenticate", self.digest.challenge(now))]
        result = self.digest.verify(authorization, "REGISTER", self.password, now)
        if result is AuthResult.OK:
            return 200, [("Expires", request.headers.get("Expires") or "3600")]
        if result is AuthResult.STALE_NONCE:
            return 401, [("WWW-Authenticate", self.digest.challenge(now, stale=True))]
        return 401, [("WWW-Authenticate", self.digest.challenge(now))]

    def of_method(self, method: str) -> list[tuple[float, SipRequest]]:
        return [(at, r) for at, r in self.requests if r.method == method]

    def bodies(self, kind: type) -> list[ManscdpMessage]:
        out = []
        for _, request in self.of_method("MESSAGE") + self.of_method("NOTIFY"):
            message, _ = decode_message(request.body)
            if isinstance(message, kind):
                out.append(message)
        return out


@dataclass
class Rig:
    clock: FakeClock
    local: SipEndpoint
    host: LowerHost
    client: LowerClient
    role: Role
    server: Server

    def deliver(self) -> None:
        while True:
            moved = 0
            for data, _ in self.local.data_to_send():
                moved += 1
                self.server.endpoint.receive(data, LOCAL, self.clock.now)
            self.server.process()
            for data, _ in self.server.endpoint.data_to_send():
                moved += 1
                self.local.receive(data, SERVER, self.clock.now)
            while (event := self.local.next_event()) is not None:
                self.host.route(event, self.clock.now)
            if moved == 0:
                return

    def pump(self, until: float | None = None) -> None:
        self.deliver()
        if until is None:
            return
        endpoints = (self.local, self.server.endpoint)
        while True:
            timers = [t for t in (*(e.get_timer() for e in endpoints), self.host.get_timer()) if t is not None]
            if not timers or min(timers) > until:
                break
            self.clock.now = max(min(timers), self.clock.now)
            for endpoint in endpoints:
                endpoint.handle_timer(self.clock.now)
            self.host.handle_timer(self.clock.now)
            self.deliver()
        self.clock.now = max(self.clock.now, until)

    def query(self, body: bytes) -> None:
        ep = self.server.endpoint
        request = build_message(
            from_id=SERVER_ID,
            from_domain=DOMAIN,
            from_tag=ep.new_tag(),
            to_id=LOCAL_ID,
            to_domain=DOMAIN,
            request_uri=sip_uri(LOCAL_ID, LOCAL.host, LOCAL.port),
            call_id=ep.new_call_id(),
            cseq=1,
            body=body,
        )
        ep.send_request(request, LOCAL, self.clock.now)


def make_rig(policy: LowerPolicy, *, nonce_ttl: float = 300.0) -> Rig:
    clock = FakeClock()
    local = SipEndpoint(SeededIds("lower"), local_host=LOCAL.host, local_port=LOCAL.port)
    server = Server(
        clock,
        SipEndpoint(SeededIds("server"), local_host=SERVER.host, local_port=SERVER.port),
        DigestServer(DOMAIN, b"s" * 32, nonce_ttl=nonce_ttl),
    )
    identity = LowerIdentity(
        name="me",
        local_id=LOCAL_ID,
        local_domain=DOMAIN,
        server_id=SERVER_ID,
        server_domain=DOMAIN,
        server_uri=sip_uri(SERVER_ID, DOMAIN),
        username=LOCAL_ID,
        password=PASSWORD,
    )
    role = Role()
    client = LowerClient(identity, policy, local, SERVER, role)
    clients = {LOCAL_ID: client}
    host = LowerHost(local, lambda event: clients.get(target_id(event.request) or ""))
    host.add(client)
    return Rig(clock, local, host, client, role, server)


def registered(policy: LowerPolicy, **kw: float) -> Rig:
    rig = make_rig(policy, **kw)
    rig.client.start(0.0)
    rig.pump()
    assert rig.client.state is RegState.REGISTERED
    return rig


def register_times(rig: Rig, *, with_auth: bool | None = None) -> list[float]:
    return [
        at
        for at, r in rig.server.of_method("REGISTER")
        if with_auth is None or (r.headers.get("Authorization") is not None) == with_auth
    ]


# --- registration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [DEVICE, UPPER], ids=["device", "upper"])
def test_registers_with_digest_and_comes_online_once(policy: LowerPolicy) -> None:
    rig = registered(policy)

    first, second = (r for _, r in rig.server.of_method("REGISTER"))
    assert first.headers.get("Authorization") is None and second.headers.get("Authorization") is not None
    assert first.call_id == second.call_id and first.from_.tag == second.from_.tag
    assert (
        second.uri
        == f"sip:{SERVER_ID}@{DOMAIN}"
        == parse_auth_params(second.headers.get("Authorization") or "")[1].get("uri")
    )
    assert rig.role.of(Challenged) == [Challenged("me", 0.0, 401)]
    assert rig.role.of(Registered) == [Registered("me", 0.0, 3600, True)]
    assert len(rig.role.of(KeepaliveSent)) == 1  # the first keepalive at once
    user_agent = "kgw-sim" if policy is DEVICE else rig.local.user_agent
    assert first.headers.get("User-Agent") == user_agent


@pytest.mark.parametrize("policy", [DEVICE, UPPER], ids=["device", "upper"])
def test_refresh_reuses_the_nonce_and_stays_registered(policy: LowerPolicy) -> None:
    rig = registered(policy, nonce_ttl=10_000.0)
    rig.pump(until=2_881.0)

    assert register_times(rig) == [0.0, 0.0, 2_880.0]
    refresh = rig.server.of_method("REGISTER")[-1][1]
    assert parse_auth_params(refresh.headers.get("Authorization") or "")[1]["nc"] == "00000002"
    assert [e.first for e in rig.role.of(Registered)] == [True, False]
    assert rig.role.of(WentOffline) == []


def test_device_policy_retries_at_a_fixed_delay_and_waits_30_s_after_403() -> None:
    rig = make_rig(DEVICE)
    rig.server.register_answer = lambda _r: (503, [])
    rig.client.start(0.0)
    rig.pump(until=16.0)
    assert register_times(rig) == [0.0, 5.0, 10.0, 15.0]
    assert [(e.status, e.retry_at) for e in rig.role.of(RegisterFailed)][:2] == [(503, 5.0), (503, 10.0)]

    rig.server.register_answer = lambda _r: (403, [])
    rig.pump(until=100.0)
    assert register_times(rig)[4:] == [20.0, 50.0, 80.0]


def test_upper_policy_doubles_the_wait_up_to_the_cap() -> None:
    rig = make_rig(UPPER)
    rig.server.register_answer = lambda _r: (503, [])
    rig.client.start(0.0)
    rig.pump(until=200.0)

    assert register_times(rig) == [0.0, 2.0, 6.0, 14.0, 30.0, 62.0, 122.0, 182.0]
    assert rig.client.consecutive_register_failures == 8
    assert rig.client.last_error == "REGISTER 503 Service Unavailable"


@pytest.mark.parametrize("policy", [DEVICE, UPPER], ids=["device", "upper"])
def test_the_same_nonce_again_is_a_wrong_password(policy: LowerPolicy) -> None:
    rig = make_rig(policy)
    rig.server.password = "not-ours"
    rig.client.start(0.0)
    rig.pump()

    assert rig.client.state is RegState.RETRY_WAIT
    [failed] = rig.role.of(RegisterFailed)
    assert (failed.status, failed.reason) == (401, "REGISTER 401: wrong password")
    assert rig.client.retry_at == policy.retry_delay


def test_407_is_answered_with_proxy_authorization() -> None:
    rig = make_rig(UPPER)

    def proxy(request: SipRequest) -> tuple[int, list[tuple[str, str]]]:
        if request.headers.get("Proxy-Authorization") is None:
            return 407, [("Proxy-Authenticate", rig.server.digest.challenge(rig.clock.now))]
        return 200, [("Expires", "600")]

    rig.server.register_answer = proxy
    rig.client.start(0.0)
    rig.pump()

    assert rig.client.registered and rig.role.of(Challenged) == [Challenged("me", 0.0, 407)]
    assert rig.server.of_method("REGISTER")[-1][1].headers.get("Authorization") is None
    assert rig.role.of(Registered)[0].expires == 600


def test_423_min_expires_is_adopted_and_contact_expires_is_the_grant() -> None:
    rig = make_rig(DEVICE)

    def registrar(request: SipRequest) -> tuple[int, list[tuple[str, str]]]:
        if request.headers.get("Expires") != "7200":
            return 423, [("Min-Expires", "7200")]
        return 200, [("Contact", f"<sip:{LOCAL_ID}@10.0.0.2:5061>;expires=100")]

    rig.server.register_answer = registrar
    rig.client.start(0.0)
    rig.pump(until=81.0)

    assert rig.client.expires == 7200
    assert [e.expires for e in rig.role.of(Registered)] == [100, 100]  # refreshed at 0.8 × 100 s
    assert register_times(rig) == [0.0, 0.0, 80.0]


def test_a_stale_nonce_is_answered_at_once_a_limited_number_of_times() -> None:
    rig = make_rig(UPPER)
    stale = rig.server.digest.challenge(0.0, stale=True)
    rig.server.register_answer = lambda r: (401, [("WWW-Authenticate", stale)])
    rig.client.start(0.0)
    rig.pump()

    assert len(register_times(rig)) == 5  # without credentials, then 1 + 3 stale answers
    assert rig.role.of(RegisterFailed)[0].reason == "REGISTER: every nonce is stale"


def test_stop_unregisters_once_and_start_again_works() -> None:
    rig = registered(UPPER)
    rig.client.stop(10.0)
    rig.pump(until=500.0)

    assert rig.server.of_method("REGISTER")[-1][1].headers.get("Expires") == "0"
    assert rig.role.of(WentOffline) == [WentOffline("me", 10.0, "stopped")]
    assert rig.client.get_timer() is None and rig.client.state is RegState.STOPPED

    rig.client.start(rig.clock.now)
    rig.pump()
    assert rig.client.registered


# --- keepalive loss under both policies ------------------------------------------------------------------


def keepalives_unanswered(request: SipRequest) -> int | None:
    return None if b"Keepalive" in request.body else 200


def test_upper_policy_three_failed_keepalives_take_it_offline_and_it_registers_again() -> None:
    rig = registered(UPPER)  # the keepalive at 0 s was answered
    rig.server.answer = keepalives_unanswered
    rig.pump(until=180.0 + TIMER_F - 1)
    assert rig.client.registered and rig.client.keepalive_failures == 2  # those of 60 and 120 s timed out

    rig.pump(until=180.0 + TIMER_F)
    [offline] = rig.role.of(WentOffline)
    assert (offline.at, offline.reason) == (212.0, "3 keepalives failed (last: keepalive 408)")
    assert [f.status for f in rig.role.of(KeepaliveFailed)] == [None, None, None]
    rig.pump(until=214.0)
    assert rig.client.registered and register_times(rig)[-1] == 214.0  # after register_retry_min


def test_upper_policy_a_keepalive_unanswered_by_the_next_one_is_missed() -> None:
    config = UpperPlatformConfig(name="up", server_id=SERVER_ID, host=SERVER.host, password=PASSWORD)
    rig = registered(upper_policy(replace(config, keepalive_interval=5.0)))
    rig.server.answer = keepalives_unanswered
    rig.pump(until=19.9)
    assert rig.client.registered
    rig.pump(until=20.0)
    [offline] = rig.role.of(WentOffline)
    assert offline.reason == "3 keepalives failed (last: no answer within the keepalive interval)"


def test_device_policy_only_counts_keepalive_failures() -> None:
    rig = registered(DEVICE)  # the keepalive at 0 s was answered
    rig.server.answer = lambda r: 500 if b"Keepalive" in r.body else 200
    rig.pump(until=600.0)

    assert rig.client.registered and rig.role.of(WentOffline) == []
    failures = rig.role.of(KeepaliveFailed)
    assert len(failures) == 10 and all(f.status == 500 for f in failures)  # 60, 120 … 600
    assert register_times(rig) == [0.0, 0.0]


def test_device_policy_a_forgetting_server_gets_a_new_registration_soon() -> None:
    rig = registered(DEVICE)
    answers = iter([404])
    rig.server.answer = lambda r: next(answers, 200) if b"Keepalive" in r.body else 200
    rig.pump(until=61.0)
    assert [(e.at, e.reason) for e in rig.role.of(WentOffline)] == [(60.0, "the server forgot us (keepalive 404)")]
    assert rig.client.state is RegState.RETRY_WAIT and rig.client.retry_at == 65.0

    rig.pump(until=66.0)
    assert rig.client.registered and register_times(rig)[2:] == [65.0]  # the nonce is reused (nc+1)
    assert [e.first for e in rig.role.of(Registered)] == [True, True]


def test_a_muted_role_sends_no_keepalive_and_answers_nothing() -> None:
    rig = registered(DEVICE)
    rig.role.muted = True
    sent = len(rig.role.of(KeepaliveSent))
    rig.query(serialize(DeviceInfoQuery(sn=9, device_id=LOCAL_ID)))
    rig.pump(until=130.0)

    assert len(rig.role.of(KeepaliveSent)) == sent
    assert rig.role.of(MessageReceived) == [] and rig.client.registered


# --- queries, pushes and queueing ------------------------------------------------------------------------------


def test_catalog_query_is_pushed_in_chunks_one_after_the_other() -> None:
    rig = registered(DEVICE)
    rig.server.answer = lambda r: None if b"<SumNum>" in r.body else 200
    rig.query(serialize(CatalogQuery(sn=7, device_id=LOCAL_ID)))
    rig.pump()
    assert len(rig.server.bodies(CatalogResponse)) == 1  # the next waits for this one's answer

    rig.pump(until=rig.clock.now + TIMER_F + 1)
    assert len(rig.server.bodies(CatalogResponse)) == 2  # a time-out does not stop the push
    rig.server.answer = lambda r: 400 if b"<SumNum>" in r.body else 200
    rig.pump(until=rig.clock.now + TIMER_F + 1)
    assert rig.role.of(CatalogSent) == [CatalogSent("me", 7, 10, 3)]
    assert [len(c.items) for c in rig.server.bodies(CatalogResponse)] == [4, 4, 2]


def test_a_refused_chunk_stops_the_push() -> None:
    rig = registered(UPPER)
    rig.server.answer = lambda r: 500 if b"<SumNum>" in r.body else 200
    rig.query(serialize(CatalogQuery(sn=8, device_id=LOCAL_ID)))
    rig.pump()

    assert rig.role.of(CatalogSent) == [CatalogSent("me", 8, 10, 1)]


def test_at_most_max_pushes_query_answers_are_in_flight() -> None:
    rig = registered(DEVICE)
    rig.server.answer = lambda r: None if b"<SumNum>" in r.body else 200
    for sn in range(1, MAX_PUSHES + 3):
        rig.query(serialize(CatalogQuery(sn=sn, device_id=LOCAL_ID)))
    rig.query(serialize(CatalogQuery(sn=MAX_PUSHES + 2, device_id=LOCAL_ID)))  # a repeat while answering it
    rig.pump()

    first_chunks = rig.server.bodies(CatalogResponse)
    assert sorted(c.sn for c in first_chunks) == list(range(1, MAX_PUSHES + 3))
    assert [e.sn for e in rig.role.of(CatalogSent)] == [1, 2]  # the oldest gave way


def test_queries_are_answered_and_other_messages_reach_the_role() -> None:
    rig = registered(DEVICE)
    rig.query(serialize(DeviceInfoQuery(sn=11, device_id=LOCAL_ID)))
    rig.query(serialize(DeviceStatusQuery(sn=12, device_id=LOCAL_ID)))
    rig.query(serialize(Keepalive(sn=13, device_id=SERVER_ID, status="OK")))
    rig.pump()

    assert [m.sn for m in rig.server.bodies(DeviceInfoResponse)] == [11]
    assert rig.server.bodies(DeviceStatusResponse) == []  # the role answered None
    assert [m.sn for m in rig.role.messages] == [13]
    assert [e.message.sn for e in rig.role.of(MessageReceived)] == [11, 12, 13]


def subscribe(rig: Rig, context: str = "sub") -> SipResponse | None:
    """A catalog SUBSCRIBE from the server; the final answer it got."""
    headers = Headers(
        [
            ("From", f"<sip:{SERVER_ID}@{DOMAIN}>;tag=sub"),
            ("To", f"<sip:{LOCAL_ID}@{DOMAIN}>"),
            ("Call-ID", f"{context}@10.0.0.1"),
            ("CSeq", "1 SUBSCRIBE"),
            ("Max-Forwards", "70"),
            ("Contact", f"<sip:{SERVER_ID}@{SERVER.host}:{SERVER.port}>"),
            ("Event", "Catalog"),
            ("Expires", "3600"),
            ("Content-Type", MANSCDP_CONTENT_TYPE),
        ]
    )
    body = serialize(CatalogQuery(sn=5, device_id=LOCAL_ID))
    request = SipRequest(headers=headers, body=body, method="SUBSCRIBE", uri=sip_uri(LOCAL_ID, LOCAL.host, LOCAL.port))
    rig.server.endpoint.send_request(request, LOCAL, rig.clock.now, context=context)
    rig.pump()
    return rig.server.finals.get(context)


def test_device_policy_refuses_subscribe_and_upper_policy_accepts_it() -> None:
    device = registered(DEVICE)
    answer = subscribe(device)
    assert answer is not None and answer.status == 405 and answer.headers.get("Allow") is None
    assert device.role.of(SubscriptionChanged) == []

    upper = registered(UPPER)
    answer = subscribe(upper)
    assert answer is not None and answer.status == 200 and answer.headers.get("Expires") == "3600"
    assert upper.role.of(SubscriptionChanged) == [SubscriptionChanged("me", True)]


def notified_ids(rig: Rig) -> list[str]:
    return [item.device_id for _, r in rig.server.of_method("NOTIFY") for item in decode_message(r.body)[0].items]


def test_changes_during_a_notify_push_are_queued_in_order_never_dropped() -> None:
    rig = registered(UPPER)
    subscribe(rig)
    rig.server.answer = lambda r: None if r.method == "NOTIFY" else 200  # hold the first push open
    changes = items(30)
    assert rig.client.notify_catalog(changes[:10], rig.clock.now) == 1
    for n in range(10, 30, 5):
        rig.client.notify_catalog(changes[n : n + 5], rig.clock.now)
    rig.pump()
    assert notified_ids(rig) == [c.device_id for c in changes[:8]]  # one chunk (8) in flight

    rig.server.answer = lambda _r: 200
    rig.pump(until=rig.clock.now + TIMER_F + 1)  # the held NOTIFY times out; the push goes on
    assert notified_ids(rig) == [c.device_id for c in changes]
    assert [e.items for e in rig.role.of(CatalogSent)] == [10, 20]  # the queued changes: one push


def test_notify_answered_481_drops_the_subscription() -> None:
    rig = registered(UPPER)
    subscribe(rig)
    rig.server.answer = lambda r: 481 if r.method == "NOTIFY" else 200
    rig.client.notify_catalog(items(2), rig.clock.now)
    rig.pump()

    assert len(rig.client.subscriptions) == 0
    assert rig.role.of(SubscriptionChanged)[-1] == SubscriptionChanged("me", False)
    assert rig.client.notify_catalog(items(2), rig.clock.now) == 0


def test_a_new_subscribe_dialog_replaces_the_old_one() -> None:
    rig = registered(UPPER)
    subscribe(rig, "one")
    subscribe(rig, "two")
    rig.client.notify_catalog(items(1), rig.clock.now)
    rig.pump()

    assert len(rig.client.subscriptions) == 1
    assert [r.call_id for _, r in rig.server.of_method("NOTIFY")] == ["two@10.0.0.1"]


# --- keyed messages, calls, host ---------------------------------------------------------------------------------


def test_keyed_messages_report_their_answer_or_time_out() -> None:
    rig = registered(DEVICE)
    rig.server.answer = lambda r: None if b"<SN>99</SN>" in r.body else 202
    rig.client.send_message(serialize(Keepalive(sn=98, device_id=LOCAL_ID, status="OK")), rig.clock.now, "a")
    rig.client.send_message(serialize(Keepalive(sn=99, device_id=LOCAL_ID, status="OK")), rig.clock.now, "b")
    rig.pump(until=rig.clock.now + TIMER_F + 1)

    assert [(e.key, e.status) for e in rig.role.of(MessageAnswered)] == [("a", 202)]
    assert [e.key for e in rig.role.of(MessageTimedOut)] == ["b"]


def test_calls_go_to_the_role_and_requests_for_nobody_are_not_routed() -> None:
    rig = registered(DEVICE)
    ep = rig.server.endpoint
    for target in (LOCAL_ID, "12010000001329999999"):
        headers = Headers(
            [
                ("From", f"<sip:{SERVER_ID}@{DOMAIN}>;tag=i"),
                ("To", f"<sip:{target}@{DOMAIN}>"),
                ("Call-ID", f"call-{target}"),
                ("CSeq", "1 INVITE"),
                ("Max-Forwards", "70"),
                ("Contact", f"<sip:{SERVER_ID}@{SERVER.host}:{SERVER.port}>"),
            ]
        )
        ep.send_request(SipRequest(headers=headers, body=b"", method="INVITE", uri=sip_uri(target, DOMAIN)), LOCAL, 0)
    for data, _ in ep.data_to_send():
        rig.local.receive(data, SERVER, rig.clock.now)
    routed = [rig.host.route(event, rig.clock.now) for event in _drain(rig.local)]

    assert routed == [True, False]
    assert rig.role.calls == ["INVITE"]


def test_host_wakes_for_the_earliest_client_deadline() -> None:
    rig = registered(DEVICE)
    assert rig.host.get_timer() == min(60.0, 2880.0)  # the next keepalive
    rig.client.set_timer("mine", 1.5)
    assert rig.host.get_timer() == 1.5
    rig.host.handle_timer(1.5)
    assert rig.role.timers == ["mine"] and rig.host.get_timer() == 60.0


def test_events_are_frozen_slotted_and_named_in_the_past_tense() -> None:
    for name in lower_events.__all__:
        if name == "LowerEvent":
            continue
        cls = getattr(lower_events, name)
        assert is_dataclass(cls) and cls.__dataclass_params__.frozen and hasattr(cls, "__slots__"), name


def test_target_id_reads_the_request_uri_then_to() -> None:
    def request(uri: str, to: str) -> SipRequest:
        headers = Headers([("To", to), ("From", "<sip:a@b>;tag=1"), ("Call-ID", "c"), ("CSeq", "1 MESSAGE")])
        return SipRequest(headers=headers, body=b"", method="MESSAGE", uri=uri)

    assert target_id(request(f"sip:{LOCAL_ID}@10.0.0.2:5061", "<sip:x@d>")) == LOCAL_ID
    assert target_id(request("sip:10.0.0.2:5061", f"<sip:{LOCAL_ID}@{DOMAIN}>")) == LOCAL_ID
    assert target_id(request("nonsense", f"<sip:{LOCAL_ID}@{DOMAIN}>")) == LOCAL_ID
    assert target_id(request("sip:10.0.0.2", "<sip:10.0.0.2>")) is None
    assert target_id(request("sip:10.0.0.2", "garbage <<<")) is None


def _drain(endpoint: SipEndpoint) -> list[RequestReceived | ResponseReceived]:
    out: list[RequestReceived | ResponseReceived] = []
    while (event := endpoint.next_event()) is not None:
        if isinstance(event, (RequestReceived, ResponseReceived)):
            out.append(event)
    return out
