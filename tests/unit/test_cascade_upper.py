"""UpperLink / CascadeHost: the gateway as a lower platform, against upper platforms in memory.

Each upper platform is a bare :class:`SipEndpoint` with a small registrar built on
the real :class:`DigestServer` (or the gateway's own :class:`Registrar`) and
scripted MESSAGE answers, so each test decides how the upper behaves: wrong
password, silence, a restart that forgets us. Everything runs on a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pytest

from gateway.cascade.upper import (
    AlarmAnswered,
    CascadeHost,
    CatalogSent,
    PlatformInfo,
    SubscriptionChanged,
    UpperEvent,
    UpperLink,
    UpperOffline,
    UpperOnline,
    UpperPlatformConfig,
    UpperState,
)
from gateway.errors import ConfigError
from gateway.gb28181.auth_throttle import AuthThrottle
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
    ResultResponse,
    Root,
    decode_message,
    serialize,
)
from gateway.gb28181.registrar import Registrar, RegistrarConfig
from gateway.gb28181.requests import MANSCDP_CONTENT_TYPE, build_message, build_register, sip_uri
from gateway.gb28181.sip.auth import AuthResult, DigestServer, parse_auth_params
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, SipEvent, TransactionTimedOut
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.idsource import SeededIds
from gateway.gb28181.sip.message import SipRequest, SipResponse, make_response, parse_message
from gateway.gb28181.sip.testing import FakeClock
from gateway.gb28181.sip.transport import Peer, Transport

LOCAL_ID = "12010000002090000001"  # the gateway (type 209)
LOCAL_DOMAIN = "1201000000"
PASSWORD = "upper-secret"
UPPER_ID = "12000000002000000001"  # municipal platform (type 200)
UPPER_DOMAIN = "1200000000"
POLICE_ID = "12000000002000000002"
GW_HOST, GW_PORT = "10.0.0.1", 5060
UP_HOST, UP_PORT = "10.0.0.9", 5060
POLICE_HOST = "10.0.0.10"
DEV_HOST, DEV_PORT = "10.0.0.2", 5061
GW_PEER = Peer(Transport.UDP, GW_HOST, GW_PORT)
DEV_PEER = Peer(Transport.UDP, DEV_HOST, DEV_PORT)
TIMER_F = 32.0  # a non-INVITE transaction without an answer times out after 64 × T1

GROUP_ID = "12010000002150000001"  # business group 215
DISTRICT_NODE = "12010100002160000001"  # virtual organisation 216
CHANNEL_IDS = tuple(f"12010100001310{i:06d}" for i in range(1, 21))
NOT_SHARED = "12010100001310999999"


def catalog_items(n: int = 20) -> list[CatalogItem]:
    """Two tree nodes, then ``n`` cameras: the shape the sharing policy builds."""
    nodes = [
        CatalogItem(device_id=GROUP_ID, name="幼儿园安全监控", parent_id=LOCAL_ID),
        CatalogItem(device_id=DISTRICT_NODE, name="和平区", business_group_id=GROUP_ID),
    ]
    cameras = [
        CatalogItem(
            device_id=cid, name=f"cam-{i}", manufacturer="Hik", model="DS-2CD", parent_id=DISTRICT_NODE, status="ON"
        )
        for i, cid in enumerate(CHANNEL_IDS[:n], start=1)
    ]
    return nodes + cameras


def upper_config(**kw: object) -> UpperPlatformConfig:
    values: dict[str, object] = {
        "name": "municipal",
        "server_id": UPPER_ID,
        "host": UP_HOST,
        "port": UP_PORT,
        "password": PASSWORD,
    }
    values.update(kw)
    return UpperPlatformConfig(**values)  # type: ignore[arg-type]


# --- the upper platform double ------------------------------------------------------------------------


@dataclass
class Upper:
    """An upper platform: a digest registrar plus scripted answers, on its own endpoint."""

    clock: FakeClock
    endpoint: SipEndpoint
    digest: DigestServer
    password: str = PASSWORD
    registrar: Registrar | None = None  # the gateway's own registrar; None = the scripted one
    bad_password: int = 401  # scripted registrar: re-challenge (same nonce within a second) or 403
    grant: int | None = None  # Expires granted instead of the one asked for
    register_status: int | None = None  # answer every REGISTER with this, no digest
    rechallenge_always: bool = False  # a broken registrar: a new nonce for every REGISTER, never a 200
    challenges: int = 0
    silent: bool = False  # answer nothing at all
    message_status: Callable[[SipRequest], int | None] | None = None  # None: 200 if we are registered, else 404
    registered: bool = False
    requests: list[tuple[float, SipRequest]] = field(default_factory=list)
    responses: list[tuple[object, int]] = field(default_factory=list)  # (context, status) of its own requests
    finals: dict[object, SipResponse] = field(default_factory=dict)  # final answer by context

    @property
    def peer(self) -> Peer:
        return Peer(Transport.UDP, self.endpoint.local_host, self.endpoint.local_port)

    def process(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, ResponseReceived):
                if event.response.status >= 200:
                    self.responses.append((event.context, event.response.status))
                    self.finals[event.context] = event.response
                continue
            if not isinstance(event, RequestReceived) or event.transaction is None:
                continue
            request = event.request
            self.requests.append((self.clock.now, request))
            if self.silent:
                continue
            if request.method == "REGISTER":
                status, headers = self._register(request)
            else:
                answer = self.message_status or (lambda _r: 200 if self.registered else 404)
                maybe = answer(request)
                if maybe is None:
                    continue
                status, headers = maybe, []
            response = make_response(request, status, to_tag=self.endpoint.new_tag(), extra=headers)
            self.endpoint.send_response(event.transaction, response, self.clock.now)

    def _register(self, request: SipRequest) -> tuple[int, list[tuple[str, str]]]:
        now = self.clock.now
        expires = int(request.headers.get("Expires") or "3600")
        if self.registrar is not None:
            decision = self.registrar.handle(request, GW_PEER, now, datetime(2024, 5, 20, 10, 0, 0))
            if decision.status == 200:
                self.registered = expires > 0
            return decision.status, decision.headers
        if self.register_status is not None:
            return self.register_status, []
        if self.rechallenge_always:
            self.challenges += 1
            return 401, [("WWW-Authenticate", f'Digest realm="{UPPER_DOMAIN}",nonce="n{self.challenges}"')]
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return 401, [("WWW-Authenticate", self.digest.challenge(now))]
        result = self.digest.verify(authorization, "REGISTER", self.password, now)
        if result is AuthResult.OK:
            self.registered = expires > 0
            granted = self.grant if self.grant is not None and expires > 0 else expires
            return 200, [("Expires", str(granted))]
        if result is AuthResult.STALE_NONCE:
            return 401, [("WWW-Authenticate", self.digest.challenge(now, stale=True))]
        if result is AuthResult.BAD_PASSWORD and self.bad_password == 403:
            return 403, []
        if result is AuthResult.BAD_PASSWORD:
            # A registrar with stateless nonces (as kgw's was) re-challenges with the nonce just used.
            nonce = parse_auth_params(authorization)[1]["nonce"]
            return 401, [
                ("WWW-Authenticate", f'Digest realm="{UPPER_DOMAIN}",nonce="{nonce}",algorithm=MD5,qop="auth"')
            ]
        return 401, [("WWW-Authenticate", self.digest.challenge(now))]

    def restart(self, secret: bytes = b"r" * 32) -> None:
        """Crash and come back: registrations and nonces are forgotten."""
        self.registered = False
        self.digest = DigestServer(UPPER_DOMAIN, secret, offer_qop=self.digest.offer_qop)

    # looking

    def of_method(self, method: str) -> list[tuple[float, SipRequest]]:
        return [(at, r) for at, r in self.requests if r.method == method]

    def registers(self, *, with_auth: bool | None = None) -> list[tuple[float, SipRequest]]:
        return [
            (at, r)
            for at, r in self.of_method("REGISTER")
            if with_auth is None or (r.headers.get("Authorization") is not None) == with_auth
        ]

    def bodies(self, kind: type) -> list[tuple[float, SipRequest, Any]]:
        out: list[tuple[float, SipRequest, Any]] = []
        for at, request in self.of_method("MESSAGE") + self.of_method("NOTIFY"):
            message, _ = decode_message(request.body)
            if isinstance(message, kind):
                out.append((at, request, message))
        return out

    def keepalive_times(self) -> list[float]:
        return [at for at, _, _ in self.bodies(Keepalive)]

    def status_of(self, context: object) -> int | None:
        return next((status for ctx, status in self.responses if ctx == context), None)

    # sending to the gateway

    def send(self, request: SipRequest, context: object) -> None:
        self.endpoint.send_request(request, GW_PEER, self.clock.now, context=context)

    def message(self, body: bytes, context: object, *, from_id: str = UPPER_ID) -> None:
        request = build_message(
            from_id=from_id,
            from_domain=UPPER_DOMAIN,
            from_tag=self.endpoint.new_tag(),
            to_id=LOCAL_ID,
            to_domain=LOCAL_DOMAIN,
            request_uri=sip_uri(LOCAL_ID, GW_HOST, GW_PORT),
            call_id=self.endpoint.new_call_id(),
            cseq=1,
            body=body,
        )
        self.send(request, context)


@dataclass
class Rig:
    """A gateway endpoint with a CascadeHost, some uppers and one device endpoint, on a fake clock."""

    clock: FakeClock
    gw: SipEndpoint
    host: CascadeHost
    uppers: dict[tuple[str, int], Upper]
    dev: SipEndpoint
    unrouted: list[SipEvent] = field(default_factory=list)
    events: list[UpperEvent] = field(default_factory=list)
    elsewhere: list[tuple[bytes, Peer]] = field(default_factory=list)

    @property
    def upper(self) -> Upper:
        return self.uppers[(UP_HOST, UP_PORT)]

    @property
    def link(self) -> UpperLink:
        return self.host.links[0]

    def deliver(self) -> None:
        while True:
            moved = 0
            for data, dst in self.gw.data_to_send():
                moved += 1
                upper = self.uppers.get((dst.host, dst.port))
                if upper is not None:
                    upper.endpoint.receive(data, GW_PEER, self.clock.now)
                elif (dst.host, dst.port) == (DEV_HOST, DEV_PORT):
                    self.dev.receive(data, GW_PEER, self.clock.now)
                else:
                    self.elsewhere.append((data, dst))
            for upper in self.uppers.values():
                upper.process()
                for data, _dst in upper.endpoint.data_to_send():
                    moved += 1
                    self.gw.receive(data, upper.peer, self.clock.now)
            for data, _dst in self.dev.data_to_send():
                moved += 1
                self.gw.receive(data, DEV_PEER, self.clock.now)
            self.gateway()
            if moved == 0:
                return

    def gateway(self) -> None:
        """What the device-access core does: offer every endpoint event to the cascade host first."""
        while (event := self.gw.next_event()) is not None:
            if not self.host.route(event, self.clock.now):
                self.unrouted.append(event)
        while (upper_event := self.host.next_event()) is not None:
            self.events.append(upper_event)

    def _endpoints(self) -> list[SipEndpoint]:
        return [self.gw, self.dev, *(u.endpoint for u in self.uppers.values())]

    def pump(self, until: float | None = None) -> None:
        """Deliver until quiet; with ``until``, also run every timer up to it."""
        self.deliver()
        if until is None:
            return
        for _ in range(1_000_000):
            timers = [t for t in (*(e.get_timer() for e in self._endpoints()), self.host.get_timer()) if t is not None]
            if not timers or min(timers) > until:
                break
            self.clock.now = max(min(timers), self.clock.now)
            for endpoint in self._endpoints():
                endpoint.handle_timer(self.clock.now)
            self.host.handle_timer(self.clock.now)
            self.deliver()
        else:  # pragma: no cover
            raise AssertionError("timers did not settle")
        self.clock.now = max(self.clock.now, until)

    def advance(self, seconds: float) -> None:
        self.pump(self.clock.now + seconds)

    def of_type(self, kind: type) -> list:
        self.gateway()
        return [e for e in self.events if isinstance(e, kind)]


def make_rig(
    *configs: UpperPlatformConfig,
    items: list[CatalogItem] | None = None,
    online: dict[str, bool] | None = None,
    offer_qop: bool = True,
    nonce_ttl: float = 300.0,
    real_registrar: bool = False,
) -> Rig:
    clock = FakeClock()
    gw = SipEndpoint(SeededIds("gw"), local_host=GW_HOST, local_port=GW_PORT)
    host = CascadeHost(gw)
    uppers: dict[tuple[str, int], Upper] = {}
    shared = catalog_items() if items is None else items
    status = online if online is not None else {cid: i % 2 == 0 for i, cid in enumerate(CHANNEL_IDS)}
    for config in configs or (upper_config(),):
        digest = DigestServer(UPPER_DOMAIN, b"u" * 32, nonce_ttl=nonce_ttl, offer_qop=offer_qop)
        registrar = None
        if real_registrar:
            registrar = Registrar(
                RegistrarConfig(gateway_id=config.server_id, realm=UPPER_DOMAIN, device_password=PASSWORD),
                digest,
                AuthThrottle(),
                lambda _id: None,
                lambda _id: False,
            )
        endpoint = SipEndpoint(SeededIds(f"up-{config.name}"), local_host=config.host, local_port=config.port)
        uppers[(config.host, config.port)] = Upper(clock, endpoint, digest, registrar=registrar)
        link = UpperLink(
            config,
            LOCAL_ID,
            LOCAL_DOMAIN,
            gw,
            catalog=lambda: shared,
            channel_status=status.get,
            device_info=PlatformInfo(firmware="1.2.3"),
        )
        host.add(link)
    dev = SipEndpoint(SeededIds("dev"), local_host=DEV_HOST, local_port=DEV_PORT)
    return Rig(clock, gw, host, uppers, dev)


def registered_rig(*configs: UpperPlatformConfig, **kw: object) -> Rig:
    rig = make_rig(*configs, **kw)  # type: ignore[arg-type]
    rig.host.start_all(rig.clock.now)
    rig.pump()
    assert all(link.state is UpperState.REGISTERED for link in rig.host.links)
    return rig


def auth_params(request: SipRequest) -> dict[str, str]:
    value = request.headers.get("Authorization")
    assert value is not None
    scheme, params = parse_auth_params(value)
    assert scheme == "digest"
    return params


# --- registration ---------------------------------------------------------------------------------------


def test_registers_with_digest_qop_against_the_real_registrar() -> None:
    rig = make_rig(real_registrar=True)
    rig.link.start(0.0)
    assert rig.link.state is UpperState.REGISTERING

    rig.pump()

    assert rig.link.state is UpperState.REGISTERED and rig.link.registered
    first, second = (r for _, r in rig.upper.registers())
    assert first.headers.get("Authorization") is None
    # docs/gb28181.md §16.2: Request-URI is the upper's ID at its address; From/To are our ID at our domain.
    assert first.uri == f"sip:{UPPER_ID}@{UP_HOST}:{UP_PORT}"
    assert first.from_.uri.user == first.to.uri.user == LOCAL_ID
    assert first.from_.uri.host == first.to.uri.host == LOCAL_DOMAIN
    assert str(first.contact.uri) == f"sip:{LOCAL_ID}@{GW_HOST}:{GW_PORT}"  # type: ignore[union-attr]
    assert first.headers.get("Expires") == "3600"
    assert second.call_id == first.call_id and second.cseq.seq == first.cseq.seq + 1
    params = auth_params(second)
    assert params["username"] == LOCAL_ID and params["realm"] == UPPER_DOMAIN
    assert params["uri"] == f"sip:{UPPER_ID}@{UP_HOST}:{UP_PORT}"
    assert (params["algorithm"], params["qop"], params["nc"]) == ("MD5", "auth", "00000001")
    assert rig.of_type(UpperOnline) == [UpperOnline("municipal", 0.0)]
    assert rig.upper.keepalive_times() == [0.0]  # the first keepalive goes at once
    status = rig.link.status()
    assert status["state"] == "registered" and status["registered_at"] == 0.0
    assert (status["consecutive_register_failures"], status["keepalive_failures"]) == (0, 0)


def test_registers_without_qop_when_the_upper_offers_none() -> None:
    rig = make_rig(offer_qop=False)
    rig.link.start(0.0)
    rig.pump()

    assert rig.link.registered
    params = auth_params(rig.upper.registers(with_auth=True)[0][1])
    assert "qop" not in params and "nc" not in params and "cnonce" not in params  # RFC 2069 form
    assert params["algorithm"] == "MD5"


def test_keepalives_every_interval_and_refresh_at_80_percent_reusing_the_nonce() -> None:
    rig = make_rig(nonce_ttl=10_000.0)
    rig.link.start(0.0)
    rig.pump(until=2_900.0)

    registers = rig.upper.registers()
    assert [at for at, _ in registers] == [0.0, 0.0, 2_880.0]
    refresh = registers[-1][1]
    assert refresh.call_id == registers[0][1].call_id and refresh.cseq.seq > registers[1][1].cseq.seq
    assert auth_params(refresh)["nc"] == "00000002"  # same nonce: nonce count moves on
    assert auth_params(refresh)["nonce"] == auth_params(registers[1][1])["nonce"]
    assert rig.upper.keepalive_times() == [60.0 * i for i in range(49)]
    keepalive = rig.upper.bodies(Keepalive)[0][2]
    assert isinstance(keepalive, Keepalive) and keepalive.device_id == LOCAL_ID and keepalive.status == "OK"
    assert rig.of_type(UpperOffline) == [] and len(rig.of_type(UpperOnline)) == 1


def test_refresh_with_a_stale_nonce_is_answered_at_once_without_going_offline() -> None:
    rig = make_rig()  # nonces live 300 s: the refresh's reused nonce is stale
    rig.link.start(0.0)
    rig.pump(until=2_881.0)

    at_refresh = [(at, r) for at, r in rig.upper.registers() if at == 2_880.0]
    assert len(at_refresh) == 2  # stale=true → new nonce, at once
    assert auth_params(at_refresh[1][1])["nc"] == "00000001"
    assert rig.link.state is UpperState.REGISTERED and rig.of_type(UpperOffline) == []


def test_refresh_follows_the_expiry_the_upper_grants() -> None:
    rig = make_rig(nonce_ttl=10_000.0)
    rig.upper.grant = 600
    rig.link.start(0.0)
    rig.pump(until=1_000.0)

    assert [at for at, _ in rig.upper.registers(with_auth=True)] == [0.0, 480.0, 960.0]


def test_wrong_password_same_nonce_goes_to_retry_wait_with_backoff_up_to_the_cap() -> None:
    rig = make_rig()
    rig.upper.password = "not-ours"
    rig.link.start(0.0)
    rig.pump()

    assert rig.link.state is UpperState.RETRY_WAIT
    assert "wrong password" in (rig.link.last_error or "")
    assert rig.link.status()["retry_at"] == 2.0

    rig.pump(until=200.0)

    # Each round: REGISTER, 401, credentials, 401 with the same nonce → wait 2, 4, 8 … 60 s.
    assert [at for at, _ in rig.upper.registers(with_auth=False)] == [0.0, 2.0, 6.0, 14.0, 30.0, 62.0, 122.0, 182.0]
    assert len(rig.upper.registers(with_auth=True)) == 8
    assert rig.link.consecutive_register_failures == 8
    assert rig.of_type(UpperOnline) == []


def test_a_fresh_nonce_for_every_attempt_is_not_an_endless_loop() -> None:
    rig = make_rig()
    rig.upper.rechallenge_always = True  # no qop, no algorithm: libgb28181's challenge
    rig.link.start(0.0)
    rig.pump()

    # Without credentials, with n1 (refused with a fresh n2: maybe a restart), with n2 (refused again).
    assert [r.headers.get("Authorization") is not None for _, r in rig.upper.registers()] == [False, True, True]
    assert rig.link.state is UpperState.RETRY_WAIT and "wrong password" in (rig.link.last_error or "")


def test_423_min_expires_is_adopted() -> None:
    rig = make_rig(real_registrar=True)
    registrar = rig.upper.registrar
    assert registrar is not None
    registrar.config = replace(registrar.config, min_expires=7200)
    rig.link.start(0.0)
    rig.pump()

    assert rig.link.registered
    assert [r.headers.get("Expires") for _, r in rig.upper.registers()] == ["3600", "7200", "7200"]


def test_403_goes_to_retry_wait_and_a_corrected_password_gets_through() -> None:
    rig = make_rig(real_registrar=True)
    rig.upper.registrar.config = replace(rig.upper.registrar.config, device_password="changed")  # type: ignore[union-attr]
    rig.link.start(0.0)
    rig.pump()

    assert rig.link.state is UpperState.RETRY_WAIT
    assert rig.link.last_error == "REGISTER 403 Forbidden"
    assert rig.link.consecutive_register_failures == 1

    rig.upper.registrar.config = replace(rig.upper.registrar.config, device_password=PASSWORD)  # type: ignore[union-attr]
    rig.pump(until=2.0)

    assert rig.link.registered and rig.link.consecutive_register_failures == 0
    assert rig.of_type(UpperOnline) == [UpperOnline("municipal", 2.0)]


def test_other_refusals_back_off_too() -> None:
    rig = make_rig()
    rig.upper.register_status = 503
    rig.link.start(0.0)
    rig.pump(until=20.0)

    assert [at for at, _ in rig.upper.registers()] == [0.0, 2.0, 6.0, 14.0]
    assert rig.link.last_error == "REGISTER 503 Service Unavailable"


def test_silent_upper_times_out_and_backs_off() -> None:
    rig = make_rig()
    rig.upper.silent = True
    rig.link.start(0.0)
    rig.pump(until=TIMER_F)

    assert rig.link.state is UpperState.RETRY_WAIT and rig.link.last_error == "REGISTER timed out"
    rig.pump(until=200.0)

    # REGISTER at 0 times out at 32, wait 2 → 34 (out at 66), wait 4 → 70, wait 8 → 110, wait 16 → 158,
    # out at 190, wait 32 → 222.
    assert sorted({at for at, _ in rig.upper.registers()}) == [0.0, 34.0, 70.0, 110.0, 158.0]
    assert rig.link.consecutive_register_failures == 5
    assert rig.link.status()["retry_at"] == 222.0

    rig.upper.silent = False
    rig.pump(until=223.0)
    assert rig.link.registered and rig.link.consecutive_register_failures == 0
    assert rig.of_type(UpperOnline) == [UpperOnline("municipal", 222.0)]


def test_upper_restart_is_noticed_by_keepalives_and_we_register_again() -> None:
    rig = registered_rig()
    rig.pump(until=100.0)
    rig.upper.restart()  # forgets us: keepalives get 404, our nonce is foreign now

    rig.pump(until=239.0)
    assert rig.link.registered and rig.link.keepalive_failures == 2  # 120 and 180 failed

    rig.pump(until=241.0)
    assert rig.link.state is UpperState.RETRY_WAIT and rig.link.keepalive_failures == 3
    assert rig.of_type(UpperOffline) == [UpperOffline("municipal", 240.0, "3 keepalives failed (last: keepalive 404)")]
    assert rig.link.send_alarm(AlarmNotify(sn=1, device_id=CHANNEL_IDS[0]), rig.clock.now, "k") is False

    rig.pump(until=300.0)
    assert rig.link.registered and rig.link.keepalive_failures == 0
    assert [e.at for e in rig.of_type(UpperOnline)] == [0.0, 242.0]
    assert rig.upper.registered
    assert rig.upper.keepalive_times() == [0.0, 60.0, 120.0, 180.0, 240.0, 242.0]
    # The re-REGISTER reused the old nonce, which the restarted upper never issued: one fresh
    # challenge is not a wrong password, the credentials for it get through.
    assert [r.headers.get("Authorization") is not None for at, r in rig.upper.registers() if at == 242.0] == [
        True,
        True,
    ]


def test_keepalive_timeouts_count_and_a_200_resets_the_count() -> None:
    rig = registered_rig()
    answers = iter([None, None, 200])  # two keepalives lost, the third answered
    rig.upper.message_status = lambda _r: next(answers, 200)

    rig.pump(until=60.0 + 60.0 + TIMER_F + 1)
    assert rig.link.keepalive_failures == 2 and rig.link.registered

    rig.pump(until=181.0)
    assert rig.link.keepalive_failures == 0 and rig.link.registered
    assert rig.of_type(UpperOffline) == []


def test_three_keepalive_timeouts_take_the_upper_offline_and_we_register_again() -> None:
    rig = registered_rig()
    rig.upper.message_status = lambda r: None if b"Keepalive" in r.body else 200

    rig.pump(until=180.0 + TIMER_F - 1)
    assert rig.link.registered
    rig.pump(until=180.0 + TIMER_F)

    [offline] = rig.of_type(UpperOffline)
    assert offline.at == 180.0 + TIMER_F and offline.reason == "3 keepalives failed (last: keepalive 408)"
    rig.pump(until=180.0 + TIMER_F + 2.0)
    assert rig.link.registered  # REGISTER still works: the upper answers it


def test_a_silent_upper_is_noticed_within_three_keepalive_intervals() -> None:
    """With keepalives faster than a UDP transaction's time-out (32 s), a keepalive still
    unanswered when the next is due counts as missed: a restarted upper is noticed in
    3 intervals, not in 3 × 32 s."""
    rig = registered_rig(upper_config(keepalive_interval=5.0))
    rig.upper.message_status = lambda r: None if b"Keepalive" in r.body else 200
    start = rig.clock.now  # the keepalive sent at registration was answered; the next ones are not
    rig.pump(until=start + 19.9)
    assert rig.link.registered
    rig.pump(until=start + 20.0)
    [offline] = rig.of_type(UpperOffline)
    assert offline.reason == "3 keepalives failed (last: no answer within the keepalive interval)"


def test_a_late_keepalive_answer_clears_the_count() -> None:
    rig = registered_rig(upper_config(keepalive_interval=5.0))
    silent = {"on": True}
    rig.upper.message_status = lambda r: None if silent["on"] and b"Keepalive" in r.body else 200
    rig.pump(until=rig.clock.now + 10.0)
    assert rig.link.keepalive_failures >= 1
    silent["on"] = False
    rig.pump(until=rig.clock.now + 10.0)
    assert rig.link.keepalive_failures == 0 and rig.link.registered


def test_stop_unregisters_with_expires_0_and_goes_quiet() -> None:
    rig = registered_rig()
    rig.link.stop(10.0)
    rig.pump()

    _, unregister = rig.upper.registers()[-1]
    assert unregister.headers.get("Expires") == "0" and unregister.headers.get("Authorization") is not None
    assert rig.upper.registered is False
    assert rig.link.state is UpperState.STOPPED
    assert rig.of_type(UpperOffline) == [UpperOffline("municipal", 10.0, "stopped")]
    sent_before = len(rig.upper.requests)
    rig.pump(until=4_000.0)
    assert len(rig.upper.requests) == sent_before  # no keepalive, no refresh

    rig.upper.message(serialize(DeviceInfoQuery(sn=5, device_id=LOCAL_ID)), "info")
    rig.pump()
    assert rig.upper.status_of("info") == 403  # a switched-off upper is refused, not served


def test_stop_before_registration_sends_nothing_and_start_again_works() -> None:
    rig = make_rig()
    rig.upper.silent = True
    rig.link.start(0.0)
    rig.link.stop(1.0)
    rig.pump(until=100.0)
    assert rig.link.state is UpperState.STOPPED and len({r.cseq.seq for _, r in rig.upper.registers()}) == 1

    rig.upper.silent = False
    rig.link.start(rig.clock.now)
    rig.pump()
    assert rig.link.registered


# --- queries from the upper ----------------------------------------------------------------------------------


def test_catalog_query_is_answered_in_chunks_with_sumnum_in_order() -> None:
    rig = registered_rig()
    rig.upper.message(serialize(CatalogQuery(sn=4711, device_id=LOCAL_ID)), "catalog")
    rig.pump()

    assert rig.upper.status_of("catalog") == 200
    chunks = [m for _, _, m in rig.upper.bodies(CatalogResponse)]
    assert [len(c.items) for c in chunks] == [8, 8, 6]
    assert all(isinstance(c, CatalogResponse) and c.root is Root.RESPONSE for c in chunks)
    assert {(c.sn, c.device_id, c.sum_num) for c in chunks} == {(4711, LOCAL_ID, 22)}
    sent_ids = [item.device_id for c in chunks for item in c.items]
    assert sent_ids == [GROUP_ID, DISTRICT_NODE, *CHANNEL_IDS]
    for _, request, _ in rig.upper.bodies(CatalogResponse):
        assert request.uri == f"sip:{UPPER_ID}@{UP_HOST}:{UP_PORT}" and request.from_.uri.user == LOCAL_ID
    assert rig.of_type(CatalogSent) == [CatalogSent("municipal", 4711, 22, 3)]


def test_catalog_chunks_wait_for_the_previous_answer() -> None:
    rig = registered_rig()
    rig.upper.message_status = lambda r: None if b"<SumNum>" in r.body else 200
    rig.upper.message(serialize(CatalogQuery(sn=9, device_id=LOCAL_ID)), "catalog")
    rig.pump()

    assert len(rig.upper.bodies(CatalogResponse)) == 1  # the second waits for the first one's answer
    rig.pump(until=rig.clock.now + TIMER_F + 1)
    assert len(rig.upper.bodies(CatalogResponse)) == 2  # a lost chunk does not stop the rest
    rig.upper.message_status = None
    rig.pump(until=rig.clock.now + TIMER_F + 1)
    assert [e.messages for e in rig.of_type(CatalogSent)] == [3]


def test_empty_catalog_is_one_message_with_sumnum_0() -> None:
    rig = registered_rig(items=[])
    rig.upper.message(serialize(CatalogQuery(sn=3, device_id=LOCAL_ID)), "catalog")
    rig.pump()

    [(_, _, chunk)] = rig.upper.bodies(CatalogResponse)
    assert isinstance(chunk, CatalogResponse) and (chunk.sum_num, chunk.items) == (0, ())


def test_device_info_of_the_platform_counts_shared_channels_only() -> None:
    rig = registered_rig(items=catalog_items(3))
    rig.upper.message(serialize(DeviceInfoQuery(sn=21, device_id=LOCAL_ID)), "info")
    rig.pump()

    assert rig.upper.status_of("info") == 200
    [(_, _, info)] = rig.upper.bodies(DeviceInfoResponse)
    assert info == DeviceInfoResponse(
        sn=21,
        device_id=LOCAL_ID,
        device_name="kgw",
        result="OK",
        manufacturer="kgw",
        model="gateway",
        firmware="1.2.3",
        channel=3,
    )


def test_device_info_of_a_channel_and_of_an_unshared_one() -> None:
    rig = registered_rig()
    rig.upper.message(serialize(DeviceInfoQuery(sn=1, device_id=CHANNEL_IDS[0])), "a")
    rig.upper.message(serialize(DeviceInfoQuery(sn=2, device_id=NOT_SHARED)), "b")
    rig.pump()

    answers = {m.sn: m for _, _, m in rig.upper.bodies(DeviceInfoResponse)}
    assert (answers[1].result, answers[1].device_name, answers[1].manufacturer) == ("OK", "cam-1", "Hik")
    assert (answers[2].result, answers[2].device_id) == ("ERROR", NOT_SHARED)
    assert rig.upper.status_of("b") == 200


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (LOCAL_ID, ("OK", "ONLINE", "OK")),
        (CHANNEL_IDS[0], ("OK", "ONLINE", "OK")),
        (CHANNEL_IDS[1], ("OK", "OFFLINE", "OK")),
        (NOT_SHARED, ("ERROR", None, None)),  # 200 to the MESSAGE, Result ERROR in the Response
    ],
)
def test_device_status_answers(target: str, expected: tuple[str | None, ...]) -> None:
    rig = registered_rig()
    rig.upper.message(serialize(DeviceStatusQuery(sn=77, device_id=target)), "status")
    rig.pump()

    assert rig.upper.status_of("status") == 200
    [(_, _, answer)] = rig.upper.bodies(DeviceStatusResponse)
    assert isinstance(answer, DeviceStatusResponse)
    assert (answer.sn, answer.device_id) == (77, target)
    assert (answer.result, answer.online, answer.status) == expected


def test_keepalive_and_other_messages_from_the_upper_get_200() -> None:
    rig = registered_rig()
    rig.upper.message(serialize(Keepalive(sn=1, device_id=UPPER_ID)), "ka")
    rig.upper.message(serialize(ResultResponse("Alarm", 7, CHANNEL_IDS[0], "OK")), "alarm-ack")
    rig.upper.message(
        b'<?xml version="1.0"?><Control><CmdType>DeviceControl</CmdType><SN>3</SN>'
        b"<DeviceID>12010100001310000001</DeviceID></Control>",
        "control",
    )
    rig.pump()

    assert [rig.upper.status_of(c) for c in ("ka", "alarm-ack", "control")] == [200, 200, 200]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"<Query><CmdType>Catalog</CmdType><SN>1", 400),
        (b"<Query><CmdType>Catalog</CmdType></Query>", 400),  # no SN
        (b"<Foo><CmdType>Catalog</CmdType><SN>1</SN></Foo>", 415),  # not MANSCDP at all
    ],
)
def test_malformed_message_bodies_are_refused(body: bytes, status: int) -> None:
    rig = registered_rig()
    rig.upper.message(body, "bad")
    rig.pump()

    assert rig.upper.status_of("bad") == status
    assert rig.upper.bodies(CatalogResponse) == []


# --- subscriptions ---------------------------------------------------------------------------------------------------


def subscribe_request(
    *,
    expires: int | None = 3600,
    event: str | None = "Catalog;id=5",
    body: bytes | None = None,
    call_id: str = "sub-1@10.0.0.9",
    cseq: int = 1,
    to_tag: str | None = None,
) -> SipRequest:
    headers = Headers(
        [
            ("From", f"<sip:{UPPER_ID}@{UPPER_DOMAIN}>;tag=upsub"),
            ("To", f"<sip:{LOCAL_ID}@{LOCAL_DOMAIN}>" + (f";tag={to_tag}" if to_tag else "")),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} SUBSCRIBE"),
            ("Max-Forwards", "70"),
            ("Contact", f"<sip:{UPPER_ID}@{UP_HOST}:{UP_PORT}>"),
            ("Content-Type", MANSCDP_CONTENT_TYPE),
        ]
    )
    if event is not None:
        headers.add("Event", event)
    if expires is not None:
        headers.add("Expires", str(expires))
    if body is None:
        body = serialize(CatalogQuery(sn=55, device_id=LOCAL_ID))
    return SipRequest(headers=headers, body=body, method="SUBSCRIBE", uri=sip_uri(LOCAL_ID, GW_HOST, GW_PORT))


def subscribe(rig: Rig, context: str = "sub", **kw: object) -> SipResponse | None:
    """Send a SUBSCRIBE from the upper; return the gateway's final answer."""
    rig.upper.send(subscribe_request(**kw), context)  # type: ignore[arg-type]
    rig.pump()
    return rig.upper.finals.get(context)


def test_subscribe_is_accepted_and_notify_goes_in_the_dialog() -> None:
    rig = registered_rig()
    response = subscribe(rig)

    assert response is not None and response.status == 200
    assert response.headers.get("Expires") == "3600"
    to_tag = response.to.tag
    assert to_tag
    assert response.headers.get("Content-Type") == MANSCDP_CONTENT_TYPE
    assert b"<CmdType>Catalog</CmdType>" in response.body and b"<Result>OK</Result>" in response.body
    ack, _ = decode_message(response.body)
    assert (ack.root, ack.sn, ack.device_id) == (Root.RESPONSE, 55, LOCAL_ID)  # the query's SN (docs/gb28181.md §14.2)
    assert rig.of_type(SubscriptionChanged) == [SubscriptionChanged("municipal", True)]
    assert rig.link.status()["subscriptions"] == 1

    rig.pump(until=100.0)
    changes = [replace(item, event="ADD") for item in catalog_items(8)[2:]] + [
        CatalogItem(device_id=CHANNEL_IDS[10], event="OFF"),
        CatalogItem(device_id=CHANNEL_IDS[11], event="DEL"),
        CatalogItem(device_id=CHANNEL_IDS[12], event="ON"),
    ]
    assert rig.link.notify_catalog(changes, rig.clock.now) == 1
    rig.pump()

    notifies = rig.upper.of_method("NOTIFY")
    assert len(notifies) == 2  # 11 items, 8 per message
    cseqs = []
    items: list[CatalogItem] = []
    for _, notify in notifies:
        assert notify.uri == f"sip:{UPPER_ID}@{UP_HOST}:{UP_PORT}"  # the SUBSCRIBE's Contact
        assert notify.call_id == "sub-1@10.0.0.9"
        assert notify.from_.tag == to_tag and notify.to.tag == "upsub"
        assert notify.headers.get("Event") == "Catalog;id=5"
        assert notify.headers.get("Subscription-State") == "active;expires=3500"
        body, _ = decode_message(notify.body)
        assert isinstance(body, CatalogResponse) and body.root is Root.NOTIFY
        assert (body.device_id, body.sum_num) == (LOCAL_ID, 11)
        items.extend(body.items)
        cseqs.append(notify.cseq.seq)
    assert cseqs == sorted(cseqs) and len(set(cseqs)) == 2
    assert [i.event for i in items] == ["ADD"] * 8 + ["OFF", "DEL", "ON"]
    assert len(rig.of_type(CatalogSent)) == 1


def test_changes_arriving_during_a_notify_push_are_queued_never_dropped() -> None:
    """A registration storm: many catalog changes while NOTIFYs are still going out."""
    rig = registered_rig()
    subscribe(rig)
    rig.pump(until=100.0)
    for n in range(30):  # 30 change sets, no pumping in between: pushes overlap
        rig.link.notify_catalog([CatalogItem(device_id=f"1201010011131000{n:04d}", event="ADD")], rig.clock.now)
    rig.pump()
    items: list[str] = []
    for _, notify in rig.upper.of_method("NOTIFY"):
        body, _ = decode_message(notify.body)
        assert isinstance(body, CatalogResponse)
        items.extend(i.device_id for i in body.items)
    assert items == [f"1201010011131000{n:04d}" for n in range(30)]  # all, in order


def test_unsubscribe_in_dialog_ends_the_subscription() -> None:
    rig = registered_rig()
    first = subscribe(rig)
    assert first is not None
    to_tag = first.to.tag
    answer = subscribe(rig, "unsub", expires=0, to_tag=to_tag, cseq=2, body=b"")

    assert answer is not None and answer.status == 200 and answer.headers.get("Expires") == "0"
    assert rig.of_type(SubscriptionChanged) == [
        SubscriptionChanged("municipal", True),
        SubscriptionChanged("municipal", False),
    ]
    assert rig.link.notify_catalog(catalog_items(1), rig.clock.now) == 0
    again = subscribe(rig, "again", expires=0, to_tag=to_tag, cseq=3, body=b"")
    assert again is not None and again.status == 481


def test_unsubscribe_outside_the_dialog_ends_the_subscription_too() -> None:
    rig = registered_rig()
    subscribe(rig)
    answer = subscribe(rig, "unsub", expires=0, call_id="other@10.0.0.9")

    assert answer is not None and answer.status == 200 and answer.headers.get("Expires") == "0"
    assert rig.link.subscriptions == 0
    assert rig.of_type(SubscriptionChanged)[-1] == SubscriptionChanged("municipal", False)


def test_subscription_refresh_in_dialog_and_expiry() -> None:
    rig = registered_rig()
    first = subscribe(rig, expires=60)
    assert first is not None
    rig.pump(until=50.0)
    refresh = subscribe(rig, "refresh", expires=60, to_tag=first.to.tag, cseq=2, body=b"")
    assert refresh is not None and refresh.status == 200 and refresh.headers.get("Expires") == "60"

    rig.pump(until=109.0)
    assert rig.link.subscriptions == 1
    rig.pump(until=110.0)
    assert rig.link.subscriptions == 0
    assert rig.of_type(SubscriptionChanged)[-1] == SubscriptionChanged("municipal", False)
    assert rig.link.notify_catalog(catalog_items(1), rig.clock.now) == 0


def test_a_new_subscribe_dialog_replaces_the_old_one() -> None:
    rig = registered_rig()
    subscribe(rig, "one")
    subscribe(rig, "two", call_id="sub-2@10.0.0.9")

    assert rig.link.subscriptions == 1
    rig.link.notify_catalog([CatalogItem(device_id=CHANNEL_IDS[0], event="OFF")], rig.clock.now)
    rig.pump()
    [(_, notify)] = rig.upper.of_method("NOTIFY")
    assert notify.call_id == "sub-2@10.0.0.9"


def test_notify_answered_481_drops_the_subscription() -> None:
    rig = registered_rig()
    subscribe(rig)
    rig.upper.message_status = lambda r: 481 if r.method == "NOTIFY" else 200
    rig.link.notify_catalog([CatalogItem(device_id=CHANNEL_IDS[0], event="ON")], rig.clock.now)
    rig.pump()

    assert rig.link.subscriptions == 0
    assert rig.of_type(SubscriptionChanged)[-1] == SubscriptionChanged("municipal", False)


@pytest.mark.parametrize(
    ("kw", "status"),
    [
        ({"expires": None}, 400),  # Expires is required (WVP)
        ({"body": b"<Query><CmdType>Catalog"}, 400),
        ({"body": serialize(DeviceStatusQuery(sn=1, device_id=LOCAL_ID))}, 489),  # only catalog subscriptions
        ({"to_tag": "nosuchdialog"}, 481),
    ],
)
def test_bad_subscribes_are_refused(kw: dict[str, object], status: int) -> None:
    rig = registered_rig()
    subscribe(rig, "bad", **kw)

    assert rig.upper.status_of("bad") == status
    assert rig.link.subscriptions == 0 and rig.of_type(SubscriptionChanged) == []


def test_subscribe_without_event_header_is_accepted_and_notify_has_none() -> None:
    rig = registered_rig()
    subscribe(rig, event=None)  # Monibuca sends no Event header
    rig.link.notify_catalog([CatalogItem(device_id=CHANNEL_IDS[0], event="ON")], rig.clock.now)
    rig.pump()

    [(_, notify)] = rig.upper.of_method("NOTIFY")
    assert notify.headers.get("Event") is None and notify.headers.get("Subscription-State") is not None


# --- alarms upward -------------------------------------------------------------------------------------------------------


def alarm(sn: int = 3902) -> AlarmNotify:
    return AlarmNotify(
        sn=sn,
        device_id=CHANNEL_IDS[0],
        priority="1",
        method="2",
        alarm_time="2024-05-20T10:20:11",
        description="一键报警",
    )


def test_send_alarm_only_when_registered_and_report_the_answer() -> None:
    rig = make_rig()
    assert rig.link.send_alarm(alarm(), 0.0, "a0") is False  # not registered: the outbox retries later

    rig.link.start(0.0)
    rig.pump()
    assert rig.link.send_alarm(alarm(), rig.clock.now, ("alarm", 1)) is True
    rig.pump()

    [(_, request, notify)] = rig.upper.bodies(AlarmNotify)
    assert notify == alarm()
    assert request.from_.uri.user == LOCAL_ID and request.uri == f"sip:{UPPER_ID}@{UP_HOST}:{UP_PORT}"
    assert rig.of_type(AlarmAnswered) == [AlarmAnswered("municipal", ("alarm", 1), 200)]


def test_alarm_error_and_timeout_statuses() -> None:
    rig = registered_rig()
    rig.upper.message_status = lambda r: (500 if b"<SN>1</SN>" in r.body else None) if b"Alarm" in r.body else 200
    rig.link.send_alarm(alarm(1), rig.clock.now, "five-hundred")
    rig.link.send_alarm(alarm(2), rig.clock.now, "silence")
    rig.pump(until=rig.clock.now + TIMER_F + 1)

    assert rig.of_type(AlarmAnswered) == [
        AlarmAnswered("municipal", "five-hundred", 500),
        AlarmAnswered("municipal", "silence", 408),
    ]


# --- calls ------------------------------------------------------------------------------------------------------------------


def invite(target: str) -> SipRequest:
    headers = Headers(
        [
            ("From", f"<sip:{UPPER_ID}@{UPPER_DOMAIN}>;tag=inv1"),
            ("To", f"<sip:{target}@{LOCAL_DOMAIN}>"),
            ("Call-ID", f"call-{target}@10.0.0.9"),
            ("CSeq", "1 INVITE"),
            ("Max-Forwards", "70"),
            ("Contact", f"<sip:{UPPER_ID}@{UP_HOST}:{UP_PORT}>"),
            ("Subject", f"{target}:0200000001,{UPPER_ID}:0"),
            ("Content-Type", "Application/SDP"),
        ]
    )
    body = b"v=0\r\no=- 0 0 IN IP4 10.0.0.9\r\ns=Play\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=video 30000 RTP/AVP 96\r\n"
    return SipRequest(headers=headers, body=body, method="INVITE", uri=sip_uri(target, GW_HOST, GW_PORT))


def test_unclaimed_invites_get_488_for_shared_channels_and_404_otherwise() -> None:
    rig = registered_rig()
    rig.upper.send(invite(CHANNEL_IDS[0]), "shared")
    rig.upper.send(invite(NOT_SHARED), "unshared")
    rig.pump()

    assert (rig.upper.status_of("shared"), rig.upper.status_of("unshared")) == (488, 404)
    assert rig.unrouted == []


def test_invites_go_to_on_call_first() -> None:
    rig = registered_rig()
    seen: list[tuple[str, float]] = []

    def on_call(event: RequestReceived, now: float) -> bool:
        seen.append((event.request.method, now))
        return True

    rig.link.on_call = on_call
    rig.upper.send(invite(CHANNEL_IDS[0]), "call")
    rig.pump()

    assert seen == [("INVITE", rig.clock.now)]
    assert rig.upper.status_of("call") is None  # the relay answers, not the link


# --- routing on the shared endpoint -----------------------------------------------------------------------------------------


def police_config() -> UpperPlatformConfig:
    return upper_config(name="police", server_id=POLICE_ID, host=POLICE_HOST, catalog_per_message=2)


def test_two_uppers_on_one_endpoint_each_get_their_own_traffic() -> None:
    rig = registered_rig(upper_config(), police_config())
    police = rig.uppers[(POLICE_HOST, UP_PORT)]

    assert rig.host.link("police").registered and rig.host.link("municipal").registered
    assert {r.uri for _, r in police.registers()} == {f"sip:{POLICE_ID}@{POLICE_HOST}:{UP_PORT}"}
    assert sorted(e.name for e in rig.of_type(UpperOnline)) == ["municipal", "police"]

    police.message(serialize(CatalogQuery(sn=1, device_id=LOCAL_ID)), "catalog", from_id=POLICE_ID)
    rig.pump()
    assert len(police.bodies(CatalogResponse)) == 11  # 22 items, 2 per message for the police
    assert rig.upper.bodies(CatalogResponse) == []
    assert [s["name"] for s in rig.host.status()] == ["municipal", "police"]
    with pytest.raises(KeyError):
        rig.host.link("district")


def test_requests_from_devices_are_left_to_device_access() -> None:
    rig = registered_rig()
    register = build_register(
        device_id="12010100001180000001",
        domain=LOCAL_DOMAIN,
        server_id=LOCAL_ID,
        contact_host=DEV_HOST,
        contact_port=DEV_PORT,
        from_tag="d1",
        call_id="dev-call",
        cseq=1,
        expires=3600,
    )
    rig.dev.send_request(register, GW_PEER, rig.clock.now)
    rig.pump()

    [event] = rig.unrouted
    assert isinstance(event, RequestReceived) and event.request.method == "REGISTER"


def _raw_request_from(rig: Rig, request: SipRequest, peer: Peer) -> list[int]:
    branch = f"z9hG4bK{request.call_id}"
    request.headers.prepend("Via", f"SIP/2.0/UDP {peer.host}:{peer.port};rport;branch={branch}")
    rig.gw.receive(bytes(request), peer, rig.clock.now)
    rig.gateway()
    statuses = []
    for data, dst in rig.gw.data_to_send():
        if dst == peer:
            statuses.append(parse_message(data).status)  # type: ignore[union-attr]
    return statuses


def test_requests_are_routed_by_upper_id_or_by_upper_address() -> None:
    rig = registered_rig()
    body = serialize(Keepalive(sn=1, device_id=UPPER_ID))

    # The upper's ID from its own address: the upper's.
    from_id = build_message(
        from_id=UPPER_ID,
        from_domain=UPPER_DOMAIN,
        from_tag="x",
        to_id=LOCAL_ID,
        to_domain=LOCAL_DOMAIN,
        request_uri=sip_uri(LOCAL_ID, GW_HOST),
        call_id="c1",
        cseq=1,
        body=body,
    )
    assert _raw_request_from(rig, from_id, Peer(Transport.UDP, UP_HOST, UP_PORT)) == [200]

    # The upper's ID from anywhere else (issue 10, C1): refused, counted, never the device side's.
    forged = build_message(
        from_id=UPPER_ID,
        from_domain=UPPER_DOMAIN,
        from_tag="f",
        to_id=LOCAL_ID,
        to_domain=LOCAL_DOMAIN,
        request_uri=sip_uri(LOCAL_ID, GW_HOST),
        call_id="c0",
        cseq=1,
        body=body,
    )
    assert _raw_request_from(rig, forged, Peer(Transport.UDP, "10.0.0.99", 5060)) == [403]
    assert _raw_request_from(rig, forged, Peer(Transport.UDP, UP_HOST, UP_PORT + 1)) == [403]
    assert rig.link.forged_requests == 2 and rig.link.status()["forged_requests"] == 2
    assert rig.unrouted == []

    # From the upper's address with some other From user (a proxy's identity): the upper's too.
    from_addr = build_message(
        from_id="12000000002000000099",
        from_domain=UPPER_DOMAIN,
        from_tag="y",
        to_id=LOCAL_ID,
        to_domain=LOCAL_DOMAIN,
        request_uri=sip_uri(LOCAL_ID, GW_HOST),
        call_id="c2",
        cseq=1,
        body=body,
    )
    assert _raw_request_from(rig, from_addr, Peer(Transport.UDP, UP_HOST, UP_PORT)) == [200]

    # Neither: a device's, left alone (nothing answered here).
    other = build_message(
        from_id="12010100001180000001",
        from_domain=LOCAL_DOMAIN,
        from_tag="z",
        to_id=LOCAL_ID,
        to_domain=LOCAL_DOMAIN,
        request_uri=sip_uri(LOCAL_ID, GW_HOST),
        call_id="c3",
        cseq=1,
        body=body,
    )
    assert _raw_request_from(rig, other, Peer(Transport.UDP, "10.0.0.99", 5060)) == []
    assert len(rig.unrouted) == 1


def test_responses_to_other_requests_are_not_taken() -> None:
    rig = registered_rig()
    request = build_message(
        from_id=LOCAL_ID,
        from_domain=LOCAL_DOMAIN,
        from_tag="q",
        to_id="12010100001180000001",
        to_domain=LOCAL_DOMAIN,
        request_uri=sip_uri("12010100001180000001", DEV_HOST, DEV_PORT),
        call_id="q1",
        cseq=1,
        body=serialize(DeviceInfoQuery(sn=1, device_id="12010100001180000001")),
    )
    rig.gw.send_request(request, DEV_PEER, rig.clock.now, context=("device-access", 1))
    rig.pump(until=rig.clock.now + TIMER_F + 1)  # the device endpoint never answers: a time-out

    [timeout] = rig.unrouted
    assert isinstance(timeout, TransactionTimedOut) and timeout.context == ("device-access", 1)


def test_host_refuses_foreign_endpoints_and_duplicate_names() -> None:
    rig = make_rig()
    other = SipEndpoint(SeededIds("other"))
    stray = UpperLink(
        upper_config(name="x"), LOCAL_ID, LOCAL_DOMAIN, other, catalog=list, channel_status=lambda _i: None
    )
    with pytest.raises(ConfigError):
        rig.host.add(stray)
    twin = UpperLink(upper_config(), LOCAL_ID, LOCAL_DOMAIN, rig.gw, catalog=list, channel_status=lambda _i: None)
    with pytest.raises(ConfigError):
        rig.host.add(twin)


def test_remove_stops_and_unregisters() -> None:
    rig = registered_rig()
    link = rig.host.remove("municipal", rig.clock.now)
    rig.pump()

    assert link.state is UpperState.STOPPED and rig.host.links == ()
    assert rig.upper.registers()[-1][1].headers.get("Expires") == "0" and not rig.upper.registered


# --- configuration -------------------------------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = upper_config(transport="tcp")
    config.validate()
    assert config.domain == UPPER_DOMAIN and config.transport == "TCP"
    assert (config.expires, config.keepalive_interval, config.keepalive_missed) == (3600, 60.0, 3)
    assert (config.catalog_per_message, config.register_retry_min, config.register_retry_max) == (8, 2.0, 60.0)
    assert config.peer == Peer(Transport.TCP, UP_HOST, UP_PORT)
    assert upper_config(domain="1200009999").domain == "1200009999"


@pytest.mark.parametrize(
    "kw",
    [
        {"name": ""},
        {"server_id": "1200000000200000000"},
        {"server_id": "1200000000200000000x"},
        {"host": ""},
        {"host": "bad host"},
        {"port": 0},
        {"port": 70000},
        {"transport": "SCTP"},
        {"password": "a\nb"},
        {"expires": 5},
        {"keepalive_interval": 0.0},
        {"keepalive_missed": 0},
        {"catalog_per_message": 0},
        {"register_retry_min": 0.0},
        {"register_retry_max": 1.0},
        {"register_retry_min": float("nan")},
    ],
)
def test_config_validation(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        upper_config(**kw).validate()


def test_link_validates_its_config_and_local_id() -> None:
    gw = SipEndpoint(SeededIds("gw"))
    with pytest.raises(ConfigError):
        UpperLink(upper_config(port=0), LOCAL_ID, LOCAL_DOMAIN, gw, catalog=list, channel_status=lambda _i: None)
    with pytest.raises(ConfigError):
        UpperLink(upper_config(), "123", LOCAL_DOMAIN, gw, catalog=list, channel_status=lambda _i: None)
