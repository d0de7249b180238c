"""Voice broadcast, sans-I/O: Notify/Broadcast, Response/Broadcast, the device's INVITE and our 200, BYE, forgeries.

The gateway side (:class:`BroadcastCalls` before device access) and simulated devices
(:class:`DeviceBroadcast` on an :class:`AgentHost`) talk over the in-memory harness on a
fake clock. Bodies are COMPOSED after docs/gb28181.md §13 and §15.10 (tests/fixtures/PROVENANCE.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.gb28181.access_events import ManscdpReceived
from gateway.gb28181.broadcast import (
    AUDIO_F_LINE,
    AudioEnded,
    AudioRequested,
    AudioStarted,
    BroadcastCalls,
    audio_answer,
    audio_offer,
    audio_target,
    broadcast_body,
    broadcast_result,
    parse_broadcast_notify,
)
from gateway.gb28181.device_broadcast import DeviceBroadcast
from gateway.gb28181.manscdp import parse_manscdp
from gateway.gb28181.sdp import Direction, MediaTransport, SdpError, Setup, build_sdp, parse_sdp
from gateway.gb28181.sip.message import SipRequest, SipResponse, parse_message
from gateway.gb28181.sip.router import SipRouter
from gateway.gb28181.sip.transport import Peer, Transport
from tests.unit.gb_harness import DEV_PEER, GATEWAY_ID, NVR_ID, GbHarness, make_harness

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "manscdp"
CHANNEL = NVR_ID[:10] + "131" + NVR_ID[13:19] + "1"  # channels() numbers the NVR's cameras like this
KEY = "bc-1"


class _Sink:
    """The simulated speaker: remembers what it was told."""

    host = "10.0.0.2"

    def __init__(self) -> None:
        self.expected: dict[int, tuple[str, str]] = {}
        self.ended_log: list[tuple[int, str]] = []

    def port_for(self, transport: MediaTransport) -> int:
        return 17000 if transport is MediaTransport.UDP else 17001

    def expect(self, ssrc: int, device_id: str, target: str) -> None:
        self.expected[ssrc] = (device_id, target)

    def ended(self, ssrc: int, reason: str) -> None:
        self.ended_log.append((ssrc, reason))


def _setup(transport: MediaTransport = MediaTransport.UDP) -> tuple[GbHarness, BroadcastCalls, DeviceBroadcast, _Sink]:
    h = make_harness()
    calls = BroadcastCalls(h.access.endpoint, GATEWAY_ID, invite_timeout=10.0, ack_timeout=32.0)
    h.router = SipRouter(h.access.endpoint, [calls, h.access])
    sink = _Sink()
    feature = DeviceBroadcast(h.host.endpoint, sink, transport=transport)
    h.devices = SipRouter(h.host.endpoint, [feature, h.host], unclaimed_status=404)
    agent = h.add_agent(NVR_ID, n_channels=2)
    agent.features.append(feature)
    h.start(agent)
    h.pump(until=1.0)
    assert agent.registered
    return h, calls, feature, sink


def _events(calls: BroadcastCalls) -> list[object]:
    out = []
    while (event := calls.next_event()) is not None:
        out.append(event)
    return out


def _ask(h: GbHarness, calls: BroadcastCalls, target: str = CHANNEL) -> int:
    sn = h.access.send_command(NVR_ID, "Broadcast", broadcast_body(GATEWAY_ID, target), h.clock.now)
    assert sn is not None
    calls.expect(KEY, NVR_ID, target, DEV_PEER, h.clock.now)
    h.pump()
    return sn


def _last(h: GbHarness, src: str, kind: type, method: str | None = None) -> SipRequest | SipResponse:
    found = [m for m in h.messages(src) if isinstance(m, kind)]
    if method is not None:
        found = [m for m in found if (m.method if isinstance(m, SipRequest) else m.cseq.method) == method]
    assert found, f"no {kind.__name__} {method or ''} from {src}"
    return found[-1]


def test_notify_broadcast_body_names_source_and_target() -> None:
    body = broadcast_body(GATEWAY_ID, CHANNEL)(7, "GB2312")
    assert b"<CmdType>Broadcast</CmdType>" in body and b"<SN>7</SN>" in body
    notify = parse_broadcast_notify(parse_manscdp(body))
    assert notify is not None and (notify.sn, notify.source_id, notify.target_id) == (7, GATEWAY_ID, CHANNEL)


def test_response_broadcast_result_fixture() -> None:
    message = parse_manscdp((FIXTURES / "broadcast_response_ok.xml").read_bytes())
    assert broadcast_result(message) is True
    failed = parse_manscdp((FIXTURES / "broadcast_response_error.xml").read_bytes())
    assert broadcast_result(failed) is False


def test_device_invite_answered_acked_and_hung_up_udp() -> None:
    h, calls, feature, sink = _setup()
    sn = _ask(h, calls)
    answers = [e for e in h.take() if isinstance(e, ManscdpReceived)]
    assert [broadcast_result(e.message) for e in answers] == [True] and answers[0].message.sn == sn
    (requested,) = _events(calls)
    assert isinstance(requested, AudioRequested) and requested.key == KEY
    assert requested.target.transport is MediaTransport.UDP
    assert (requested.target.host, requested.target.port, requested.target.payload_type) == ("10.0.0.2", 17000, 8)
    invite = _last(h, "dev", SipRequest, "INVITE")
    assert isinstance(invite, SipRequest) and CHANNEL in (invite.headers.get("Subject") or "")
    assert requested.target.ssrc is not None and int(requested.target.ssrc) in sink.expected

    calls.accept(KEY, "10.0.0.1", 30010, requested.target.ssrc, h.clock.now)
    h.pump()
    ok = _last(h, "gw", SipResponse, "INVITE")
    assert isinstance(ok, SipResponse) and ok.status == 200
    answer = parse_sdp(ok.body)
    assert answer.kind == "audio" and answer.direction is Direction.SENDONLY
    assert answer.rtpmap[8] == "PCMA/8000" and answer.payload_types == (8,)
    assert answer.ssrc == requested.target.ssrc and answer.f_line == AUDIO_F_LINE
    assert (answer.connection_address, answer.port) == ("10.0.0.1", 30010)
    assert [type(e) for e in _events(calls)] == [AudioStarted]  # the device ACKed
    assert feature.calls  # the device's call is up

    calls.hang_up(KEY, h.clock.now)
    h.pump()
    bye = _last(h, "gw", SipRequest, "BYE")
    assert isinstance(bye, SipRequest) and bye.call_id == invite.call_id
    assert [r for _, r in sink.ended_log] == ["platform_bye"] and not feature.calls
    assert calls.state_of(KEY) is None


def test_device_bye_ends_the_broadcast() -> None:
    h, calls, feature, sink = _setup()
    _ask(h, calls)
    (requested,) = _events(calls)
    assert isinstance(requested, AudioRequested)
    calls.accept(KEY, "10.0.0.1", 30010, "0100000001", h.clock.now)
    h.pump()
    _events(calls)
    assert feature.hang_up(NVR_ID, h.clock.now) == 1
    h.pump()
    assert _events(calls) == [AudioEnded(KEY, "device_bye")]
    ok = _last(h, "gw", SipResponse, "BYE")
    assert isinstance(ok, SipResponse) and ok.status == 200


def test_tcp_offer_setup_mirrored() -> None:
    h, calls, _feature, _sink = _setup(MediaTransport.TCP_PASSIVE)
    _ask(h, calls)
    (requested,) = _events(calls)
    assert isinstance(requested, AudioRequested)
    assert requested.target.transport is MediaTransport.TCP_PASSIVE  # the device listens, we connect
    assert requested.target.port == 17001
    calls.accept(KEY, "10.0.0.1", 30012, "0100000001", h.clock.now)
    h.pump()
    ok = _last(h, "gw", SipResponse, "INVITE")
    answer = parse_sdp(ok.body)
    assert answer.is_tcp and answer.setup is Setup.ACTIVE


def test_answer_mirrors_active_offer() -> None:
    offer = audio_offer(
        origin_user=NVR_ID, media_host="10.0.0.2", media_port=9, ssrc="0100000009", transport=MediaTransport.TCP_ACTIVE
    )
    target = audio_target(offer)
    assert target.transport is MediaTransport.TCP_ACTIVE  # the device connects to our answer's port
    answer = audio_answer(offer, origin_user=GATEWAY_ID, media_host="10.0.0.1", media_port=30020, ssrc="0100000009")
    assert answer.setup is Setup.PASSIVE and answer.port == 30020


HIK_PS_OFFER = (
    b"v=0\r\no=34020000001320000001 0 0 IN IP4 10.0.0.2\r\ns=Play\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
    b"m=audio 17000 RTP/AVP 96\r\na=rtpmap:96 PS/90000\r\na=recvonly\r\ny=0100000001\r\n"
    b"f=v/////a/1/8/1\r\n"
)


def test_offer_of_ps_only_is_answered_with_ps() -> None:
    # Hikvision/Dahua devices offer only PS for broadcast audio (COMPOSED after docs/gb28181.md §15.10).
    offer = parse_sdp(HIK_PS_OFFER)
    target = audio_target(offer)
    assert target.ps and target.payload_type == 96 and target.rtpmap == "PS/90000", target
    assert (target.host, target.port, target.ssrc) == ("10.0.0.2", 17000, "0100000001")
    answer = audio_answer(offer, origin_user=GATEWAY_ID, media_host="10.0.0.1", media_port=30020, ssrc="0100000001")
    text = build_sdp(answer).decode()
    assert "m=audio 30020 RTP/AVP 96\r\n" in text and "a=rtpmap:96 PS/90000" in text and "PCMA" not in text
    assert "a=sendonly" in text and "y=0100000001" in text
    # PCMA wins when both are offered: no PS wrapping needed.
    both = parse_sdp(HIK_PS_OFFER.replace(b"RTP/AVP 96", b"RTP/AVP 96 8") + b"a=rtpmap:8 PCMA/8000\r\n")
    assert audio_target(both).payload_type == 8 and not audio_target(both).ps
    # Our simulated devices' PS offer has the same shape.
    simulated = audio_target(audio_offer(origin_user=NVR_ID, media_host="10.0.0.2", media_port=9, ssrc="1", ps=True))
    assert simulated.ps and simulated.payload_type == 96


def test_offer_without_pcma_or_ps_is_refused() -> None:
    for media in (b"m=audio 17000 RTP/AVP 0\r\n", b"m=audio 17000 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"):
        offer = parse_sdp(
            b"v=0\r\no=x 0 0 IN IP4 10.0.0.2\r\ns=Play\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
            + media
            + b"a=recvonly\r\ny=0100000001\r\n"
        )
        with pytest.raises(SdpError):
            audio_target(offer)


def test_no_invite_in_time_fails() -> None:
    h, calls, feature, _sink = _setup()
    feature.on_message = lambda agent, message, now: parse_broadcast_notify(message) is not None  # type: ignore[method-assign]
    _ask(h, calls)
    assert _events(calls) == []
    h.advance(11.0)
    assert _events(calls) == [AudioEnded(KEY, "no_invite")]


def _forged_invite(h: GbHarness, *, caller: str, subject_target: str, call_id: str = "forged-1") -> bytes:
    body = (
        b"v=0\r\no=x 0 0 IN IP4 10.0.0.66\r\ns=Play\r\nc=IN IP4 10.0.0.66\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=recvonly\r\ny=0100000077\r\n"
    )
    head = (
        f"INVITE sip:{GATEWAY_ID}@10.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.66:5099;rport;branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:{caller}@1201000000>;tag=evil\r\n"
        f"To: <sip:{GATEWAY_ID}@1201000000>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{caller}@10.0.0.66:5099>\r\n"
        f"Subject: {subject_target}:0100000077,{GATEWAY_ID}:0\r\n"
        f"Content-Type: APPLICATION/SDP\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _status_to(h: GbHarness, call_id: str) -> int:
    statuses = [
        d.parse().status  # type: ignore[union-attr]
        for d in h.wire
        if d.src == "gw" and isinstance(d.parse(), SipResponse) and d.parse().call_id == call_id
    ]
    finals = [s for s in statuses if s >= 200]
    assert finals, f"no final answer to {call_id}"
    return finals[-1]


def _inject(h: GbHarness, data: bytes, peer: Peer) -> None:
    h.router.receive(data, peer, h.clock.now)
    for out, _dst in h.access.endpoint.data_to_send():
        h.wire.append(type(h.wire[0])(h.clock.now, "gw", out, True))


def test_forged_invites_are_refused() -> None:
    h, calls, _feature, _sink = _setup()
    evil = Peer(Transport.UDP, "10.0.0.66", 5099)
    # Nobody asked: 481.
    _inject(h, _forged_invite(h, caller=NVR_ID, subject_target=CHANNEL, call_id="f1"), evil)
    assert _status_to(h, "f1") == 481
    # A broadcast is pending, but the INVITE comes from another address than the device's registration: 403.
    feature_quiet = h.devices.handlers[0]
    feature_quiet.on_message = lambda agent, message, now: True  # type: ignore[attr-defined]
    _ask(h, calls)
    _inject(h, _forged_invite(h, caller=NVR_ID, subject_target=CHANNEL, call_id="f2"), evil)
    assert _status_to(h, "f2") == 403
    # From the device's own address but for another target than the one we named: 403.
    _inject(h, _forged_invite(h, caller=NVR_ID, subject_target="12010000001310000099", call_id="f3"), DEV_PEER)
    assert _status_to(h, "f3") == 403
    # Another caller name from the right address: nobody asked it: 481.
    _inject(h, _forged_invite(h, caller="12010000001320000077", subject_target=CHANNEL, call_id="f4"), DEV_PEER)
    assert _status_to(h, "f4") == 481
    assert _events(calls) == []
    assert calls.refused == {481: 2, 403: 2}
    # The real device still gets through afterwards.
    _inject(h, _forged_invite(h, caller=NVR_ID, subject_target=CHANNEL, call_id="f5"), DEV_PEER)
    (requested,) = _events(calls)
    assert isinstance(requested, AudioRequested) and requested.target.port == 40000


def test_bye_for_the_call_from_another_address_is_refused() -> None:
    h, calls, _feature, _sink = _setup()
    _ask(h, calls)
    (requested,) = _events(calls)
    assert isinstance(requested, AudioRequested)
    calls.accept(KEY, "10.0.0.1", 30010, "0100000001", h.clock.now)
    h.pump()
    _events(calls)
    invite = _last(h, "dev", SipRequest, "INVITE")
    ok = _last(h, "gw", SipResponse, "INVITE")
    bye = (
        f"BYE sip:{GATEWAY_ID}@10.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.66:5099;rport;branch=z9hG4bKbye1\r\n"
        f"From: {invite.headers.get('From')}\r\nTo: {ok.headers.get('To')}\r\n"
        f"Call-ID: {invite.call_id}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    _inject(h, bye, Peer(Transport.UDP, "10.0.0.66", 5099))
    assert _status_to(h, invite.call_id) == 403
    assert calls.state_of(KEY) is not None and _events(calls) == []
    assert isinstance(parse_message(bye), SipRequest)


def test_target_the_device_does_not_have_gets_result_error_and_no_invite() -> None:
    h, calls, _feature, sink = _setup()
    _ask(h, calls, target="12010000001310000099")
    answers = [e for e in h.take() if isinstance(e, ManscdpReceived)]
    assert [broadcast_result(e.message) for e in answers] == [False]
    assert not [m for m in h.messages("dev") if isinstance(m, SipRequest) and m.method == "INVITE"]
    assert _events(calls) == [] and not sink.expected


def test_no_ack_means_bye() -> None:
    h, calls, _feature, _sink = _setup()
    quiet = h.devices.handlers[0]
    quiet.on_message = lambda agent, message, now: True  # type: ignore[attr-defined]
    _ask(h, calls)
    _inject(h, _forged_invite(h, caller=NVR_ID, subject_target=CHANNEL, call_id="real-1"), DEV_PEER)
    (requested,) = _events(calls)
    assert isinstance(requested, AudioRequested)
    calls.accept(KEY, "10.0.0.1", 30010, "0100000077", h.clock.now)
    h.advance(33.0)  # nobody ACKs the 200 (the caller is a hand-made INVITE)
    assert AudioEnded(KEY, "no_ack") in _events(calls)
    byes = [m for m in h.messages("gw") if isinstance(m, SipRequest) and m.method == "BYE"]
    assert byes and byes[-1].call_id == "real-1"
    assert calls.state_of(KEY) is None
