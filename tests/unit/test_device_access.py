"""DeviceAccess: the gateway's device-facing core, driven in memory against DeviceAgents."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from gb_harness import (
    DEV_PEER,
    GATEWAY_ID,
    GW_PEER,
    IPC_ID,
    NVR_ID,
    REALM,
    GbHarness,
    make_harness,
)

from gateway.gb28181.access import (
    ALLOW,
    CatalogReceived,
    DeviceInfoReceived,
    DeviceOffline,
    DeviceOnline,
    DeviceRegistered,
    DeviceStatusReceived,
    DeviceUnregistered,
    MessageRefused,
    QueryFailed,
    RegistrationRefused,
)
from gateway.gb28181.device_agent import AgentState, DeviceAgent
from gateway.gb28181.manscdp import DeviceInfoResponse, DeviceStatusResponse, Keepalive, serialize
from gateway.gb28181.requests import build_message, sip_uri
from gateway.gb28181.sip.auth import parse_auth_params
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.message import SipRequest, SipResponse, make_request, parse_message
from gateway.gb28181.sip.transport import Peer, Transport

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sip"


def registered(n_channels: int = 0, device_id: str = IPC_ID, **kw: object) -> tuple[GbHarness, DeviceAgent]:
    """A harness with one agent registered and its first queries answered (clock at 1 s)."""
    h = make_harness(**kw)  # type: ignore[arg-type]
    agent = h.add_agent(device_id, n_channels=n_channels)
    h.start(agent)
    h.pump(until=1.0)
    assert agent.state is AgentState.REGISTERED
    return h, agent


def device_request(h: GbHarness, device_id: str, body: bytes) -> SipRequest:
    """A MESSAGE sent from the device endpoint outside any agent (the agent never sees the answer)."""
    ep = h.host.endpoint
    request = build_message(
        from_id=device_id,
        from_domain=REALM,
        from_tag=ep.new_tag(),
        to_id=GATEWAY_ID,
        to_domain=REALM,
        request_uri=sip_uri(GATEWAY_ID, REALM),
        call_id=ep.new_call_id(),
        cseq=1,
        body=body,
    )
    ep.send_request(request, GW_PEER, h.clock.now)
    return request


def responses_from_gateway(h: GbHarness, method: str) -> list[SipResponse]:
    return [m for m in h.messages("gw") if isinstance(m, SipResponse) and m.cseq.method == method]


# --- real device REGISTERs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "source", "received", "rport"),
    [
        # sbgb sends no rport: only received, because the source address differs from its Via
        ("sbgb_register_initial_udp.sip", Peer(Transport.UDP, "203.0.113.5", 38506), "203.0.113.5", None),
        ("sbgb_register_initial_udp.sip", Peer(Transport.UDP, "127.0.0.1", 38506), None, None),
        # camsim asks for rport: behind NAT it gets both
        ("camsim_register_initial_udp.sip", Peer(Transport.UDP, "203.0.113.5", 40001), "203.0.113.5", "40001"),
        ("camsim_register_initial_udp.sip", Peer(Transport.UDP, "127.0.0.1", 5060), None, "5060"),
    ],
    ids=["sbgb_nat", "sbgb_same_host", "camsim_nat", "camsim_same_host"],
)
def test_real_device_register_is_challenged(
    fixture: str, source: Peer, received: str | None, rport: str | None
) -> None:
    data = (FIXTURES / fixture).read_bytes()
    request = parse_message(data)
    assert isinstance(request, SipRequest) and request.method == "REGISTER"
    h = make_harness()

    h.router.receive(data, source, 0.0)

    out = h.access.endpoint.data_to_send()
    assert len(out) == 1
    raw, peer = out[0]
    assert peer == source
    response = parse_message(raw)
    assert isinstance(response, SipResponse)
    assert response.status == 401
    assert response.call_id == request.call_id
    assert response.cseq.seq == request.cseq.seq
    assert response.to.tag  # a final response gets a To tag
    via = response.top_via
    assert via.branch == request.top_via.branch
    assert via.params.get("received") == received
    assert ("received" in via.params) is (received is not None)
    assert via.params.get("rport") == rport
    scheme, params = parse_auth_params(response.headers.get("WWW-Authenticate") or "")
    assert (scheme, params["algorithm"], params["qop"], params["realm"]) == ("digest", "MD5", "auth", REALM)
    events = h.take()
    assert len(events) == 1 and isinstance(events[0], RegistrationRefused)
    assert (events[0].device_id, events[0].status, events[0].peer) == (request.from_.uri.user, 401, source)


# --- registration, queries, catalog ----------------------------------------------------------


def test_nvr_with_500_channels_registers_and_delivers_its_catalog() -> None:
    h = make_harness()
    agent = h.add_agent(NVR_ID, n_channels=500)
    h.start(agent)

    h.pump(until=60.0)

    regs = h.of_type(DeviceRegistered)
    assert len(regs) == 1
    assert regs[0].first is True
    assert (regs[0].device_id, regs[0].peer, regs[0].expires) == (NVR_ID, DEV_PEER, 3600)
    online = h.of_type(DeviceOnline)
    assert len(online) == 1 and online[0].device_id == NVR_ID
    infos = h.of_type(DeviceInfoReceived)
    assert len(infos) == 1
    assert isinstance(infos[0].info, DeviceInfoResponse)
    assert infos[0].info.channel == 500
    catalogs = h.of_type(CatalogReceived)
    assert len(catalogs) == 1
    catalog = catalogs[0]
    assert catalog.device_id == NVR_ID
    assert catalog.partial is False
    assert catalog.sum_num == 500
    assert len(catalog.items) == 500
    assert [i.device_id for i in catalog.items] == [c.device_id for c in agent.profile.channels]
    assert h.of_type(QueryFailed) == []
    assert h.of_type(DeviceOffline) == []
    assert h.access.liveness.is_online(NVR_ID)
    session = h.access.sessions[NVR_ID]
    assert (session.peer, session.expires, session.user_agent) == (DEV_PEER, 3600, "kgw-sim")
    assert len(h.access.catalogs) == 0


def test_registration_refresh_is_not_first_and_does_not_requery() -> None:
    h, agent = registered()
    h.take()

    h.pump(until=3000.0)  # the agent refreshes at 0.8 × 3600 s

    regs = h.of_type(DeviceRegistered)
    assert len(regs) == 1
    assert regs[0].first is False
    assert h.of_type(DeviceInfoReceived) == [] and h.of_type(CatalogReceived) == []
    assert h.of_type(DeviceOnline) == [] and h.of_type(DeviceOffline) == []
    assert agent.stats.registrations == 2


def test_keepalives_keep_device_online_then_silence_takes_it_offline() -> None:
    h, agent = registered(n_channels=4)
    h.take()

    h.pump(until=600.0)
    assert h.of_type(DeviceOffline) == []
    assert h.access.liveness.is_online(IPC_ID)
    assert agent.stats.keepalives_sent == 11  # 0, 60, … 600
    last = h.access.liveness.last_seen(IPC_ID)
    assert last == 600.0

    agent.misbehaviour.silent = True
    h.pump(until=1000.0)
    offline = h.of_type(DeviceOffline)
    assert len(offline) == 1
    assert offline[0].reason == "keepalive_timeout"
    assert offline[0].at == last + 180.0
    assert not h.access.liveness.is_online(IPC_ID)

    agent.misbehaviour.silent = False
    h.take()
    agent.send_keepalive_now(h.clock.now)
    h.pump()
    online = h.of_type(DeviceOnline)
    assert len(online) == 1
    assert (online[0].reason, online[0].at) == ("keepalive", 1000.0)
    assert h.access.liveness.is_online(IPC_ID)


def test_unregister_emits_unregistered_and_offline() -> None:
    h, agent = registered()
    h.pump(until=120.0)
    h.take()

    agent.stop(h.clock.now, unregister=True)
    h.pump(until=h.clock.now + 40.0)

    events = h.take()
    kinds = [type(e) for e in events]
    assert DeviceUnregistered in kinds and DeviceOffline in kinds
    assert kinds.index(DeviceUnregistered) < kinds.index(DeviceOffline)
    offline = next(e for e in events if isinstance(e, DeviceOffline))
    assert (offline.device_id, offline.reason) == (IPC_ID, "unregistered")
    assert IPC_ID not in h.access.sessions
    assert not h.access.liveness.is_registered(IPC_ID, h.clock.now)


def test_message_from_unregistered_device_is_404() -> None:
    h = make_harness()
    stranger = "12010000001320000099"
    body = serialize(Keepalive(sn=1, device_id=stranger, status="OK"))

    device_request(h, stranger, body)
    h.pump()

    refused = h.of_type(MessageRefused)
    assert len(refused) == 1
    assert (refused[0].device_id, refused[0].status, refused[0].peer) == (stranger, 404, DEV_PEER)
    assert [r.status for r in responses_from_gateway(h, "MESSAGE")] == [404]
    assert not h.access.liveness.is_online(stranger)
    assert h.of_type(DeviceOnline) == []


def test_malformed_keepalive_is_400_and_not_a_sign_of_life() -> None:
    h, agent = registered()
    agent.misbehaviour.silent = True  # only our hand-made MESSAGEs from now on
    h.pump(until=100.0)
    last = h.access.liveness.last_seen(IPC_ID)
    broken = serialize(Keepalive(sn=99, device_id=IPC_ID, status="OK")).replace(b"</Notify>", b"<Notify>")

    for t in (100.0, 150.0):
        h.pump(until=t)
        device_request(h, IPC_ID, broken)
        h.pump()

    refused = h.of_type(MessageRefused)
    assert [(r.device_id, r.status) for r in refused] == [(IPC_ID, 400), (IPC_ID, 400)]
    assert [r.status for r in responses_from_gateway(h, "MESSAGE")][-2:] == [400, 400]
    assert h.access.liveness.last_seen(IPC_ID) == last
    h.pump(until=last + 200.0)
    offline = h.of_type(DeviceOffline)
    assert len(offline) == 1 and offline[0].at == last + 180.0


def _keepalive_from(h, peer: Peer) -> tuple[bytes, Peer]:
    ep = h.host.endpoint
    request = build_message(
        from_id=IPC_ID,
        from_domain=REALM,
        from_tag=ep.new_tag(),
        to_id=GATEWAY_ID,
        to_domain=REALM,
        request_uri=sip_uri(GATEWAY_ID, REALM),
        call_id=ep.new_call_id(),
        cseq=1,
        body=serialize(Keepalive(sn=5, device_id=IPC_ID, status="OK")),
    )
    ep.send_request(request, GW_PEER, h.clock.now)
    ((raw, _),) = ep.data_to_send()
    h.router.receive(raw, peer, h.clock.now)
    ((answer, to),) = h.access.endpoint.data_to_send()
    return answer, to


@pytest.mark.parametrize("new_host", [False, True])
def test_message_from_another_port_or_host_is_refused_and_moves_nothing(new_host: bool) -> None:
    """Only an authenticated REGISTER moves a session (issue 10, C3).

    MESSAGEs are unauthenticated: the same host with another port used to move
    the session (for NAT rebinding), which let anyone on the device's network
    (or spoofing its IP) take its INVITEs. A rebound device now hears 404 and
    registers again, as it does after a platform restart.
    """
    h, agent = registered()
    before = h.access.sessions[IPC_ID].peer
    moved = Peer(Transport.UDP, "10.0.0.77" if new_host else before.host, 6000)

    answer, to = _keepalive_from(h, moved)

    assert to == moved  # the answer goes where the request came from
    assert parse_message(answer).status == 404  # type: ignore[union-attr]
    assert h.access.sessions[IPC_ID].peer == before


def test_options_answered_200_with_allow_and_unknown_method_405() -> None:
    h = make_harness()
    ep = h.host.endpoint
    for method in ("OPTIONS", "PUBLISH"):
        headers = Headers(
            [
                ("From", f"<sip:{IPC_ID}@{REALM}>;tag={ep.new_tag()}"),
                ("To", f"<sip:{GATEWAY_ID}@{REALM}>"),
                ("Call-ID", ep.new_call_id()),
                ("CSeq", f"1 {method}"),
                ("Max-Forwards", "70"),
            ]
        )
        ep.send_request(make_request(method, sip_uri(GATEWAY_ID, REALM), headers), GW_PEER, 0.0)
    h.pump()
    answers = {r.cseq.method: r for r in h.messages("gw") if isinstance(r, SipResponse)}
    assert answers["OPTIONS"].status == 200
    assert answers["OPTIONS"].headers.get("Allow") == ALLOW
    assert answers["PUBLISH"].status == 405


# --- loss and leaks ------------------------------------------------------------------------------


def lossy(seed: int, rate: float = 0.1):  # noqa: ANN201 - a loss pattern
    rng = random.Random(seed)
    return lambda _i: rng.random() < rate


def run_lossy_nvr(seed: int) -> GbHarness:
    h = make_harness(loss=lossy(seed))
    agent = h.add_agent(NVR_ID, n_channels=500)
    h.start(agent)
    h.pump(until=300.0)
    assert agent.state is AgentState.REGISTERED
    assert not all(d.delivered for d in h.wire)  # the pattern really dropped datagrams
    return h


@pytest.mark.parametrize("seed", [0, 6])
def test_registration_and_catalog_survive_ten_percent_loss(seed: int) -> None:
    h = run_lossy_nvr(seed)
    assert sum(not d.delivered for d in h.wire) >= 20
    assert len([r for r in h.of_type(DeviceRegistered) if r.first]) == 1
    assert len(h.of_type(DeviceInfoReceived)) == 1
    assert h.of_type(QueryFailed) == []
    catalogs = h.of_type(CatalogReceived)
    assert catalogs, "no catalog at all"
    final = catalogs[-1]
    assert final.partial is False
    assert len(final.items) == 500
    assert all(c.partial for c in catalogs[:-1])  # nothing complete before the last one
    assert h.access.liveness.is_online(NVR_ID)


def test_no_spurious_partial_catalog_under_loss_seed6() -> None:
    h = run_lossy_nvr(seed=6)
    catalogs = h.of_type(CatalogReceived)
    assert [(c.partial, len(c.items)) for c in catalogs] == [(False, 500)]


def test_transactions_drain_after_device_stops() -> None:
    h, agent = registered(n_channels=20)
    h.pump(until=200.0)
    agent.stop(h.clock.now, unregister=False)
    last_activity = max(d.at for d in h.wire)

    h.pump(until=last_activity + 300.0)

    assert h.access.endpoint.transaction_count == 0
    assert h.host.endpoint.transaction_count == 0
    assert [e.reason for e in h.of_type(DeviceOffline)] == ["keepalive_timeout"]


# --- queries ------------------------------------------------------------------------------------


def test_query_device_status_answered() -> None:
    h, _agent = registered()
    h.take()

    sn = h.access.query_device_status(IPC_ID, h.clock.now)
    h.pump(until=h.clock.now + 60.0)

    assert isinstance(sn, int)
    statuses = h.of_type(DeviceStatusReceived)
    assert len(statuses) == 1
    assert statuses[0].device_id == IPC_ID
    assert isinstance(statuses[0].status, DeviceStatusResponse)
    assert statuses[0].status.sn == sn
    assert statuses[0].status.online == "ONLINE"
    assert h.of_type(QueryFailed) == []


def test_query_to_unknown_device_returns_none() -> None:
    h = make_harness()
    assert h.access.query_device_status(IPC_ID, 0.0) is None
    assert h.access.query_device_info(IPC_ID, 0.0) is None
    assert h.access.query_catalog(IPC_ID, 0.0) is None
    assert h.access.endpoint.data_to_send() == []


def test_query_to_silent_device_fails() -> None:
    h, agent = registered()
    agent.misbehaviour.silent = True
    h.take()

    sn = h.access.query_device_status(IPC_ID, h.clock.now)
    h.pump(until=h.clock.now + 60.0)

    failed = h.of_type(QueryFailed)
    assert failed, "no QueryFailed for a query nobody answered"
    assert all((f.device_id, f.cmd_type, f.sn) == (IPC_ID, "DeviceStatus", sn) for f in failed)
    assert {f.reason for f in failed} <= {"no_response", "transport_timeout"}
    assert h.of_type(DeviceStatusReceived) == []
    assert h.access.endpoint.transaction_count == 0


def test_query_to_silent_device_fails_exactly_once() -> None:
    h, agent = registered()
    agent.misbehaviour.silent = True
    h.take()
    h.access.query_device_status(IPC_ID, h.clock.now)
    h.pump(until=h.clock.now + 60.0)
    assert len(h.of_type(QueryFailed)) == 1


def test_catalog_query_to_silent_device_fails_cleanly() -> None:
    """This used to raise AttributeError: _fail_query called CatalogAssembler.cancel before it existed."""
    h, agent = registered()
    agent.misbehaviour.silent = True
    h.take()
    sn = h.access.query_catalog(IPC_ID, h.clock.now)
    h.pump(until=h.clock.now + 200.0)
    failed = h.of_type(QueryFailed)
    assert [(f.cmd_type, f.sn, f.reason) for f in failed] == [("Catalog", sn, "transport_timeout")]
    assert h.of_type(CatalogReceived) == []
    assert len(h.access.catalogs) == 0
