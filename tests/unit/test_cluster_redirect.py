"""Several gateway processes: the 302 redirect by district, both sides in bytes (gateway/cluster.py).

Two gateway cores (A at 10.0.0.1:5060 serving 120101, B at 10.0.0.3:5062 serving
120102) and one endpoint of simulated devices configured with A's address only.
A device of B's district is answered 302 by A before any digest, follows the
Contact to B and registers there; a forged 302 naming an address outside the
configured city is refused by the device; a device of a district nobody serves
gets 403. Nothing here opens a socket or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from gb_harness import PASSWORD, REALM, WALL_OFFSET

from gateway.cluster import Cluster, PeerGateway, parse_districts, parse_peer
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.gb28181.access import AccessConfig, DeviceAccess
from gateway.gb28181.auth_throttle import AuthThrottle
from gateway.gb28181.device_agent import AgentHost, AgentTiming, DeviceAgent, DeviceProfile, ServerInfo
from gateway.gb28181.lower import Redirected, RegState
from gateway.gb28181.registrar import RefusalReason, Registrar, RegistrarConfig
from gateway.gb28181.requests import build_register, register_uri
from gateway.gb28181.sip.auth import DigestServer
from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.idsource import SeededIds
from gateway.gb28181.sip.message import SipRequest, SipResponse, make_response, parse_message
from gateway.gb28181.sip.router import SipRouter
from gateway.gb28181.sip.testing import FakeClock
from gateway.gb28181.sip.transport import Peer, Transport

A_ID, B_ID = "12010000002090000001", "12010000002090000002"
A = Peer(Transport.UDP, "10.0.0.1", 5060)
B = Peer(Transport.UDP, "10.0.0.3", 5062)
DEV = Peer(Transport.UDP, "10.0.0.2", 5061)
DEVICE_A = "12010100111320000101"  # 和平区 (120101): served by A
DEVICE_B = "12010200111320000201"  # 河东区 (120102): served by B
DEVICE_NOWHERE = "12011900111320000301"  # 蓟州区 (120119): nobody's
CITY = frozenset({"10.0.0.1", "10.0.0.3"})


def cluster_a() -> Cluster:
    return Cluster("a", frozenset({"120101"}), (PeerGateway(frozenset({"120102"}), B.host, B.port, B_ID),))


def cluster_b() -> Cluster:
    return Cluster("b", frozenset({"120102"}), (PeerGateway(frozenset({"120101"}), A.host, A.port, A_ID),))


def registrar(gateway_id: str, cluster: Cluster, digest: DigestServer | None = None) -> Registrar:
    reg = Registrar(
        RegistrarConfig(gateway_id=gateway_id, realm=REALM, device_password=PASSWORD),
        digest or DigestServer(REALM, b"k" * 32),
        AuthThrottle(),
        lambda device_id: None,
        lambda device_id: False,
    )
    reg.redirect_for = cluster.redirect_for
    return reg


@dataclass
class City:
    """Two gateway cores and one device endpoint, datagrams routed by destination address."""

    clock: FakeClock = field(default_factory=FakeClock)
    gateways: dict[tuple[str, int], tuple[DeviceAccess, SipRouter]] = field(default_factory=dict)
    devices: AgentHost = field(init=False)
    device_router: SipRouter = field(init=False)
    wire: list[tuple[str, str, bytes]] = field(default_factory=list)  # (from, to, bytes)

    def __post_init__(self) -> None:
        for peer, gateway_id, cluster in ((A, A_ID, cluster_a()), (B, B_ID, cluster_b())):
            endpoint = SipEndpoint(SeededIds(gateway_id), local_host=peer.host, local_port=peer.port)
            access = DeviceAccess(
                endpoint,
                registrar(gateway_id, cluster),
                AccessConfig(gateway_id=gateway_id, realm=REALM, query_on_register=False),
                wall_offset=WALL_OFFSET,
            )
            self.gateways[(peer.host, peer.port)] = (access, SipRouter(endpoint, [access]))
        endpoint = SipEndpoint(SeededIds("dev"), local_host=DEV.host, local_port=DEV.port)
        self.devices = AgentHost(endpoint)
        self.device_router = SipRouter(endpoint, [self.devices], unclaimed_status=404)

    def agent(self, device_id: str, allow: frozenset[str] = CITY) -> DeviceAgent:
        agent = DeviceAgent(
            DeviceProfile(device_id, PASSWORD, "cam"),
            ServerInfo(A_ID, REALM, A, redirect_allow=allow),  # every device knows one city address: A's
            self.devices.endpoint,
            timing=AgentTiming(keepalive_interval=30.0, retry_delay=5.0),
        )
        self.devices.add(agent)
        return agent

    def deliver(self) -> None:
        for _ in range(1000):
            moved = 0
            for data, dst in self.devices.endpoint.data_to_send():
                moved += 1
                self.wire.append((str(DEV), f"{dst.host}:{dst.port}", data))
                gateway = self.gateways.get((dst.host, dst.port))
                if gateway is not None:
                    gateway[1].receive(data, DEV, self.clock.now)
            for (host, port), (access, router) in self.gateways.items():
                for data, _dst in router.endpoint.data_to_send():
                    moved += 1
                    self.wire.append((f"{host}:{port}", str(DEV), data))
                    self.device_router.receive(data, Peer(Transport.UDP, host, port), self.clock.now)
                while access.next_event() is not None:
                    pass
            if moved == 0:
                return
        raise AssertionError("never quiet")

    def run(self, until: float) -> None:
        self.deliver()
        while True:
            routers = [self.device_router, *(r for _, r in self.gateways.values())]
            due = [t for t in (r.get_timer() for r in routers) if t is not None and t <= until]
            if not due:
                break
            self.clock.now = max(self.clock.now, min(due))
            for r in routers:
                t = r.get_timer()
                if t is not None and t <= self.clock.now:
                    r.handle_timer(self.clock.now)
            self.deliver()
        self.clock.now = until

    def access(self, peer: Peer) -> DeviceAccess:
        return self.gateways[(peer.host, peer.port)][0]

    def responses_from(self, peer: Peer) -> list[SipResponse]:
        out = []
        for src, _dst, data in self.wire:
            message = parse_message(data)
            if src == f"{peer.host}:{peer.port}" and isinstance(message, SipResponse):
                out.append(message)
        return out

    def requests_to(self, peer: Peer) -> list[SipRequest]:
        out = []
        for _src, dst, data in self.wire:
            message = parse_message(data)
            if dst == f"{peer.host}:{peer.port}" and isinstance(message, SipRequest):
                out.append(message)
        return out


# --- the gateway side -----------------------------------------------------------------------------------


def register_bytes(device_id: str) -> SipRequest:
    return build_register(
        device_id=device_id,
        domain=REALM,
        server_id=A_ID,
        contact_host=DEV.host,
        contact_port=DEV.port,
        from_tag="t1",
        call_id="c1",
        cseq=1,
        expires=3600,
        user_agent="IP Camera",
    )


def test_a_foreign_district_is_redirected_before_the_digest_and_leaves_nothing_behind() -> None:
    digest = DigestServer(REALM, b"k" * 32)
    reg = registrar(A_ID, cluster_a(), digest)
    decision = reg.handle(register_bytes(DEVICE_B), DEV, 0.0, datetime(2024, 1, 1))
    assert decision.status == 302
    assert decision.headers == [("Contact", f"<sip:{B_ID}@10.0.0.3:5062>")]
    assert decision.refusal is RefusalReason.REDIRECTED and decision.registration is None
    # No nonce was issued, no new-device budget spent, no throttle entry made.
    assert not any(n.lower() == "www-authenticate" for n, _ in decision.headers)
    assert reg.new_devices.retry_after(DEV.host, 0.0) is None
    assert reg.throttle.is_blocked(DEVICE_B, DEV.host, 0.0) is None
    # A device of A's own district is challenged as before.
    assert reg.handle(register_bytes(DEVICE_A), DEV, 0.0, datetime(2024, 1, 1)).status == 401


def test_a_district_nobody_serves_is_refused_with_a_reason() -> None:
    decision = registrar(A_ID, cluster_a()).handle(register_bytes(DEVICE_NOWHERE), DEV, 0.0, datetime(2024, 1, 1))
    assert decision.status == 403
    assert decision.refusal is RefusalReason.DISTRICT_NOT_SERVED
    assert "120119" in dict(decision.headers)["Warning"]


def test_the_302_on_the_wire_and_a_device_that_follows_it_registers_at_b_only() -> None:
    city = City()
    agent = city.agent(DEVICE_B)
    city.devices.start_all(0.0, [agent])
    city.run(1.0)
    first = city.responses_from(A)[0]
    assert first.status == 302 and first.reason == "Moved Temporarily"
    assert first.headers.get("Contact") == f"<sip:{B_ID}@10.0.0.3:5062>"
    assert agent.state is RegState.REGISTERED and agent.client.peer == B
    # At B: REGISTER to B's ID, 401, then the digest with B's ID in the URI, 200.
    to_b = [r for r in city.requests_to(B) if r.method == "REGISTER"]
    assert [r.uri for r in to_b] == [register_uri(B_ID, REALM)] * 2
    assert "Authorization" in to_b[1].headers
    assert [r.status for r in city.responses_from(B) if r.cseq.method == "REGISTER"] == [401, 200]
    assert DEVICE_B in city.access(B).sessions and DEVICE_B not in city.access(A).sessions
    # Keepalives go to B from now on.
    city.run(40.0)
    assert any(r.method == "MESSAGE" for r in city.requests_to(B))
    assert not any(r.method == "MESSAGE" for r in city.requests_to(A))


def test_a_device_of_the_front_door_district_registers_there_as_before() -> None:
    city = City()
    agent = city.agent(DEVICE_A)
    city.devices.start_all(0.0, [agent])
    city.run(1.0)
    assert agent.state is RegState.REGISTERED and agent.client.peer == A
    assert [r.status for r in city.responses_from(A) if r.cseq.method == "REGISTER"] == [401, 200]


# --- the device side: forged redirects --------------------------------------------------------------------


def answer_302(city: City, contact: str, status: int = 302) -> None:
    """A forged answer to the device's pending REGISTER, as if from A."""
    for data, _dst in city.devices.endpoint.data_to_send():
        request = parse_message(data)
        assert isinstance(request, SipRequest) and request.method == "REGISTER"
        response = make_response(request, status, to_tag="x", extra=[("Contact", contact)])
        city.device_router.receive(bytes(response), A, city.clock.now)
        return
    raise AssertionError("no REGISTER pending")


@pytest.mark.parametrize(
    "contact",
    [
        f"<sip:{B_ID}@203.0.113.9:5060>",  # outside the city
        f"<sip:{B_ID}@10.0.0.3>",  # no port
        "<sip:not-an-id@10.0.0.3:5062>",  # no 20-digit server ID
        "<sip:10.0.0.3:5062>",  # no user part at all
    ],
)
def test_a_forged_302_outside_the_city_is_not_followed(contact: str) -> None:
    city = City()
    agent = city.agent(DEVICE_B)
    events: list[object] = []
    agent.on_redirect = lambda a, e: events.append(e)
    city.devices.start_all(0.0, [agent])
    answer_302(city, contact)
    assert agent.state is RegState.RETRY_WAIT
    assert agent.client.peer == A and agent.client.identity.server_id == A_ID
    assert "outside the city" in (agent.client.last_error or "") or "Contact" in (agent.client.last_error or "")
    assert events == []
    # The retry goes home to A (which, being real here, redirects to B: allowed).
    city.run(10.0)
    assert agent.state is RegState.REGISTERED and agent.client.peer == B


def test_a_redirect_loop_stops_after_a_few_hops() -> None:
    city = City()
    agent = city.agent(DEVICE_B, allow=frozenset({"10.0.0.1:5060", "10.0.0.3"}))
    city.devices.start_all(0.0, [agent])
    for _ in range(3):
        answer_302(city, f"<sip:{A_ID}@10.0.0.1:5060>")
        assert agent.state is RegState.REGISTERING
    answer_302(city, f"<sip:{A_ID}@10.0.0.1:5060>")
    assert agent.state is RegState.RETRY_WAIT
    assert "too many redirects" in (agent.client.last_error or "")


def test_a_failure_at_the_redirected_gateway_sends_the_next_attempt_home() -> None:
    city = City()
    agent = city.agent(DEVICE_B)
    redirects: list[Redirected] = []
    agent.on_redirect = lambda a, e: redirects.append(e)
    city.devices.start_all(0.0, [agent])
    city.run(1.0)
    assert agent.client.peer == B and redirects == [Redirected(DEVICE_B, 0.0, B_ID, "10.0.0.3", 5062)]
    del city.gateways[(B.host, B.port)]  # B dies: datagrams to it go nowhere
    agent.client.register_again(city.clock.now, 0.0, "test")
    before = len(city.requests_to(A))
    city.run(40.0)  # Timer F at B (32 s), then the retry goes home to A
    assert agent.client.last_error == "REGISTER timed out"
    assert agent.client.peer == A or [r.method for r in city.requests_to(A)[before:]].count("REGISTER") >= 1
    assert [r.method for r in city.requests_to(A)[before:]] == ["REGISTER"]
    assert len(redirects) == 2  # A sent it to B again: B serves that district, dead or alive


# --- configuration ------------------------------------------------------------------------------------


def test_peer_flag_and_districts_parse_and_refuse_nonsense() -> None:
    peer = parse_peer("120103,120104=10.0.0.5:5070/12010000002090000003", A_ID)
    assert peer == PeerGateway(frozenset({"120103", "120104"}), "10.0.0.5", 5070, "12010000002090000003")
    assert peer.contact == "<sip:12010000002090000003@10.0.0.5:5070>"
    assert parse_peer("120103=gw3:5060", A_ID).gateway_id == A_ID
    assert parse_districts("120102, 120101,120101") == ("120101", "120102")
    for bad in ("120103", "120103=host", "120103=host:0", "1201=host:5060", "120103=host:5060/123", "=h:1"):
        with pytest.raises(ConfigError):
            parse_peer(bad, A_ID)
    with pytest.raises(ConfigError, match="served here and by peer"):
        Cluster("a", frozenset({"120101"}), (parse_peer("120101=h:5060", A_ID),))
    with pytest.raises(ConfigError, match="two peers"):
        Cluster("a", frozenset(), (parse_peer("120102=h:5060", A_ID), parse_peer("120102=i:5060", A_ID)))


def test_config_from_flags_and_toml(tmp_path: Path) -> None:
    config = load_config(
        None, node="gw-b", districts="120102,120103", peers=("120101=127.0.0.1:5060/" + A_ID,), id=B_ID
    )
    assert config.node == "gw-b" and config.districts == ("120102", "120103")
    assert config.cluster.redirect_for(DEVICE_A) is not None and config.cluster.redirect_for(DEVICE_B) is None
    toml = tmp_path / "gw.toml"
    toml.write_text(
        f'[gateway]\nnode = "gw-a"\ndistricts = ["120101"]\npeers = ["120102=10.0.0.3:5062/{B_ID}"]\n',
        encoding="utf-8",
    )
    config = load_config(toml)
    assert config.node == "gw-a" and config.districts == ("120101",)
    assert [p.spec() for p in config.peers] == [f"120102=10.0.0.3:5062/{B_ID}"]
    toml.write_text(
        'node = "gw-a"\ndistricts = "120101"\n[[peers]]\ndistricts = ["120103"]\nhost = "10.0.0.4"\nport = 5064\n',
        encoding="utf-8",
    )
    assert [p.spec() for p in load_config(toml).peers] == [f"120103=10.0.0.4:5064/{A_ID}"]
    with pytest.raises(ConfigError, match="node"):
        load_config(None, node="bad name!")
    # One process, no flags: serves every district, redirects nobody.
    assert load_config(None).cluster.redirect_for(DEVICE_NOWHERE) is None
