"""DeviceAgent and AgentHost: simulated devices in the device role, against the gateway core in memory."""

from __future__ import annotations

from gb_harness import DEV_PEER, GATEWAY_ID, IPC_ID, NVR_ID, REALM, GbHarness, make_harness

from gateway.gb28181.access import (
    DeviceOffline,
    DeviceOnline,
    DeviceRegistered,
    DeviceUnregistered,
    MessageRefused,
    RegistrationRefused,
)
from gateway.gb28181.device_agent import AgentState, AgentTiming, DeviceAgent, Misbehaviour
from gateway.gb28181.manscdp import DeviceInfoQuery, Keepalive, decode_xml, parse_element, serialize
from gateway.gb28181.requests import build_message, sip_uri
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.message import SipRequest, SipResponse, make_request


def dev_requests(h: GbHarness, method: str, *, delivered_only: bool = True) -> list[SipRequest]:
    return [
        m for m in h.messages("dev", delivered_only=delivered_only) if isinstance(m, SipRequest) and m.method == method
    ]


def keepalive_times(h: GbHarness) -> list[float]:
    out = []
    for d in h.wire:
        if d.src != "dev" or not d.delivered:
            continue
        m = d.parse()
        if isinstance(m, SipRequest) and m.method == "MESSAGE" and b"<CmdType>Keepalive" in m.body:
            out.append(d.at)
    return out


def started(device_id: str = IPC_ID, **kw: object) -> tuple[GbHarness, DeviceAgent]:
    h = make_harness()
    agent = h.add_agent(device_id, **kw)  # type: ignore[arg-type]
    h.start(agent)
    return h, agent


# --- registration --------------------------------------------------------------------------------


def test_agent_registers_with_digest_on_one_call_id() -> None:
    h, agent = started()
    assert agent.state is AgentState.REGISTERING

    h.pump()

    assert agent.state is AgentState.REGISTERED and agent.registered
    assert (agent.stats.challenges, agent.stats.registrations, agent.stats.refusals) == (1, 1, 0)
    first, second = dev_requests(h, "REGISTER")
    assert first.headers.get("Authorization") is None
    assert second.headers.get("Authorization") is not None
    assert first.call_id == second.call_id
    assert second.cseq.seq == first.cseq.seq + 1
    assert first.from_.tag == second.from_.tag
    assert second.headers.get("Expires") == "3600"
    ok = [m for m in h.messages("gw") if isinstance(m, SipResponse) and m.cseq.method == "REGISTER"]
    assert [m.status for m in ok] == [401, 200]
    assert ok[1].headers.get("Date") is not None


def test_agent_sends_keepalives_at_its_interval_and_refreshes_registration() -> None:
    h, agent = started(timing=AgentTiming(expires=600, keepalive_interval=30.0))
    h.pump(until=500.0)

    assert keepalive_times(h)[:4] == [0.0, 30.0, 60.0, 90.0]
    assert agent.stats.keepalives_sent == len(keepalive_times(h))
    # initial, answer to the challenge, refresh at 0.8 × 600 s with the old nonce (nc+1), which is
    # stale by then (nonce_ttl 300 s) and re-challenged with stale=true, then the fresh answer
    registers = dev_requests(h, "REGISTER")
    assert len(registers) == 4
    assert all(r.headers.get("Authorization") is not None for r in registers[1:])
    assert registers[2].call_id == registers[0].call_id
    answers = [m for m in h.messages("gw") if isinstance(m, SipResponse) and m.cseq.method == "REGISTER"]
    assert [a.status for a in answers] == [401, 200, 401, 200]
    assert "stale=true" in (answers[2].headers.get("WWW-Authenticate") or "")
    assert [r.reason for r in h.of_type(RegistrationRefused)] == ["challenged", "stale_nonce"]
    refresh = h.of_type(DeviceRegistered)[-1]
    assert (refresh.first, refresh.at) == (False, 480.0)
    assert h.of_type(DeviceOffline) == []


def test_two_agents_share_one_endpoint() -> None:
    h = make_harness()
    nvr = h.add_agent(NVR_ID, n_channels=3)
    ipc = h.add_agent(IPC_ID)
    h.host.start_all(0.0)
    h.pump(until=5.0)

    assert nvr.registered and ipc.registered
    assert {r.device_id for r in h.of_type(DeviceRegistered)} == {NVR_ID, IPC_ID}
    assert h.access.liveness.online_count == 2
    call_ids = {r.call_id for r in dev_requests(h, "REGISTER")}
    assert len(call_ids) == 2
    assert h.devices.unclaimed == 0


def test_wrong_password_agent_never_registers() -> None:
    h, agent = started(misbehaviour=Misbehaviour(wrong_password=True))

    h.pump(until=300.0)

    assert agent.state is not AgentState.REGISTERED
    assert agent.stats.registrations == 0
    assert agent.stats.refusals > 0
    assert agent.stats.last_refusal == 403
    refused = [r for r in h.of_type(RegistrationRefused) if r.status == 403]
    assert refused
    assert all(r.device_id == IPC_ID for r in refused)
    assert refused[0].reason == "bad_password"
    assert any(r.newly_blocked for r in refused)  # the throttle kicked in
    assert h.of_type(DeviceRegistered) == [] and h.of_type(DeviceOnline) == []
    assert IPC_ID not in h.access.sessions


def test_agent_retries_after_register_timeout() -> None:
    h, agent = started()
    h.loss = lambda _i: True  # the gateway is unreachable

    h.pump(until=33.0)  # Timer F = 64 × T1 = 32 s
    assert agent.state is AgentState.RETRY_WAIT
    assert h.access.sessions == {}

    h.loss = None
    h.pump(until=60.0)
    assert agent.state is AgentState.REGISTERED
    assert len(h.of_type(DeviceRegistered)) == 1


# --- stopping --------------------------------------------------------------------------------------


def test_stop_without_unregister_sends_nothing() -> None:
    h, agent = started()
    h.pump(until=10.0)
    before = len(h.wire)

    agent.stop(h.clock.now, unregister=False)
    h.pump()

    assert agent.state is AgentState.STOPPED
    assert agent.get_timer() is None
    assert len(h.wire) == before
    h.pump(until=400.0)
    assert [e.reason for e in h.of_type(DeviceOffline)] == ["keepalive_timeout"]
    assert h.of_type(DeviceUnregistered) == []


def test_unregister_after_nonce_expiry_still_unregisters() -> None:
    h, agent = started()
    h.pump(until=600.0)  # the nonce from t=0 is stale now
    h.take()

    agent.stop(h.clock.now, unregister=True)
    h.pump(until=h.clock.now + 40.0)

    assert len(h.of_type(DeviceUnregistered)) == 1
    assert [e.reason for e in h.of_type(DeviceOffline)] == ["unregistered"]


# --- misbehaviour -------------------------------------------------------------------------------


def test_flapping_agent_goes_offline_and_back() -> None:
    h, agent = started(misbehaviour=Misbehaviour(flap_period=200.0))
    h.pump(until=700.0)

    # talking 0-200 (keepalives 0..180), silent 200-400, talking 400-600 (420..), silent 600-800
    transitions = [(type(e).__name__, e.at) for e in h.events if isinstance(e, (DeviceOnline, DeviceOffline))]
    assert transitions == [("DeviceOnline", 0.0), ("DeviceOffline", 360.0), ("DeviceOnline", 420.0)]
    assert h.access.liveness.is_online(IPC_ID)


def test_malformed_keepalives_are_refused_and_do_not_count() -> None:
    h, agent = started(misbehaviour=Misbehaviour(malformed_every=2))
    h.pump(until=400.0)

    refused = h.of_type(MessageRefused)
    assert refused
    assert all((r.device_id, r.status) == (IPC_ID, 400) for r in refused)
    answers = [m for m in h.messages("gw") if isinstance(m, SipResponse) and m.cseq.method == "MESSAGE"]
    assert 400 in {a.status for a in answers} and 200 in {a.status for a in answers}
    assert agent.stats.keepalive_failures == len(refused)
    # the good keepalives (and the agent's re-registrations after each 400) keep it online
    assert h.of_type(DeviceOffline) == []
    assert h.access.liveness.is_online(IPC_ID)


def test_every_keepalive_malformed_only_registrations_count_as_life() -> None:
    h, agent = started(misbehaviour=Misbehaviour(malformed_every=1))
    h.pump(until=300.0)

    assert h.of_type(MessageRefused)
    assert all(r.status == 400 for r in h.of_type(MessageRefused))
    # last_seen only ever moves with a REGISTER, never with a broken keepalive
    last = h.access.liveness.last_seen(IPC_ID)
    register_times = [
        d.at
        for d in h.wire
        if d.src == "dev" and d.delivered and isinstance(m := d.parse(), SipRequest) and m.method == "REGISTER"
    ]
    assert last in register_times
    assert agent.stats.keepalive_failures == agent.stats.keepalives_sent


def test_silent_agent_answers_no_query() -> None:
    h, agent = started(misbehaviour=Misbehaviour(silent=True))
    h.pump(until=1.0)
    assert agent.registered  # silence is about keepalives and answers, not REGISTER
    assert agent.stats.queries_answered == 0  # the gateway's DeviceInfo/Catalog queries go unanswered
    assert keepalive_times(h) == []
    assert [r for r in h.messages("dev") if isinstance(r, SipResponse) and r.cseq.method == "MESSAGE"] == []


# --- AgentHost routing ------------------------------------------------------------------------------


def gateway_message(h: GbHarness, target: str, body: bytes) -> None:
    ep = h.access.endpoint
    request = build_message(
        from_id=GATEWAY_ID,
        from_domain=REALM,
        from_tag=ep.new_tag(),
        to_id=target,
        to_domain=target[:10],
        request_uri=sip_uri(target, "10.0.0.2", 5061),
        call_id=ep.new_call_id(),
        cseq=7,
        body=body,
    )
    ep.send_request(request, DEV_PEER, h.clock.now)


def test_request_for_a_channel_reaches_its_nvr() -> None:
    h, nvr = started(NVR_ID, n_channels=3)
    h.pump(until=5.0)
    answered = nvr.stats.queries_answered
    channel = nvr.profile.channels[1].device_id
    assert nvr.owns(channel) and not nvr.owns(IPC_ID)

    gateway_message(h, channel, serialize(DeviceInfoQuery(sn=4242, device_id=channel)))
    h.pump(until=10.0)

    assert nvr.stats.queries_answered == answered + 1
    assert h.devices.unclaimed == 0
    replies = [m for m in dev_requests(h, "MESSAGE") if b"<SN>4242</SN>" in m.body]
    assert len(replies) == 1
    info = parse_element(decode_xml(replies[0].body).root)
    assert info.sn == 4242 and info.device_id == NVR_ID


def test_request_for_unknown_target_is_404() -> None:
    h, nvr = started(NVR_ID)
    h.pump(until=5.0)

    gateway_message(h, "12010000001329999999", serialize(Keepalive(sn=1, device_id="x", status="OK")))
    h.pump()

    assert h.devices.unclaimed == 1
    answers = [m for m in h.messages("dev") if isinstance(m, SipResponse) and m.cseq.seq == 7]
    assert [a.status for a in answers] == [404]


def test_invite_to_agent_is_501() -> None:
    h, nvr = started(NVR_ID)
    h.pump(until=5.0)
    ep = h.access.endpoint
    headers = Headers(
        [
            ("From", f"<sip:{GATEWAY_ID}@{REALM}>;tag={ep.new_tag()}"),
            ("To", f"<sip:{NVR_ID}@{REALM}>"),
            ("Call-ID", ep.new_call_id()),
            ("CSeq", "1 INVITE"),
            ("Max-Forwards", "70"),
            ("Contact", f"<sip:{GATEWAY_ID}@10.0.0.1:5060>"),
        ]
    )
    ep.send_request(make_request("INVITE", sip_uri(NVR_ID, "10.0.0.2", 5061), headers), DEV_PEER, h.clock.now)
    h.pump(until=h.clock.now + 40.0)

    assert nvr.stats.invites_received == 1
    answers = [m for m in h.messages("dev") if isinstance(m, SipResponse) and m.cseq.method == "INVITE"]
    assert answers and all(a.status == 501 for a in answers)
