"""The device role of live play (DeviceCalls) against the gateway's PlaySession, in memory."""

from __future__ import annotations

import pytest

from gateway.gb28181.device_calls import CallError, DeviceCalls, MediaRequested, MediaStarted, MediaStopped
from gateway.gb28181.play import PlayEnded, PlaySession, PlayStarted, PlayState
from gateway.gb28181.sdp import MediaTransport, Setup, parse_sdp
from gateway.gb28181.sip import RequestReceived, SeededIds, SipEndpoint, SipTimers, parse_message
from gateway.gb28181.sip.testing import FakeClock, peer_of

GATEWAY_ID = "12010000002090000001"
DOMAIN = "1201000000"
CHANNEL_ID = "12010100111310000101"
SSRC = "0100000001"


class Rig:
    """Gateway endpoint + PlaySession on one side, device endpoint + DeviceCalls on the other."""

    def __init__(self, transport: MediaTransport) -> None:
        timers = SipTimers(t1=0.5)
        self.clock = FakeClock()
        self.gw = SipEndpoint(SeededIds("gw"), local_host="127.0.0.1", local_port=5060, timers=timers)
        self.dev = SipEndpoint(SeededIds("dev"), local_host="127.0.0.2", local_port=5061, timers=timers)
        self.calls = DeviceCalls(self.dev)
        self.session = PlaySession(
            self.gw, GATEWAY_ID, DOMAIN, CHANNEL_ID, peer_of(self.dev), "127.0.0.1", 30000, transport, SSRC
        )
        self.play_events: list[object] = []
        self.call_events: list[object] = []
        self.wire: list[bytes] = []

    def deliver(self) -> None:
        moved = True
        while moved:
            moved = False
            while (ev := self.dev.next_event()) is not None:
                if isinstance(ev, RequestReceived):
                    self.calls.on_request(ev, CHANNEL_ID, self.clock.now)
            while (call_ev := self.calls.next_event()) is not None:
                self.call_events.append(call_ev)
            while (ev := self.gw.next_event()) is not None:
                if isinstance(ev, RequestReceived):
                    self.session.handle_request(ev, self.clock.now)
                else:
                    self.session.handle_response(ev, self.clock.now)
            while (play_ev := self.session.next_event()) is not None:
                self.play_events.append(play_ev)
            for src, dst in ((self.gw, self.dev), (self.dev, self.gw)):
                for data, _ in src.data_to_send():
                    moved = True
                    self.wire.append(data)
                    dst.receive(data, peer_of(src), self.clock.now)


@pytest.mark.parametrize(
    ("transport", "answer_setup"),
    [
        (MediaTransport.UDP, None),
        (MediaTransport.TCP_PASSIVE, Setup.ACTIVE),
        (MediaTransport.TCP_ACTIVE, Setup.PASSIVE),
    ],
)
def test_play_against_the_device_role(transport: MediaTransport, answer_setup: Setup | None) -> None:
    r = Rig(transport)
    r.session.start(r.clock.now)
    r.deliver()
    (requested,) = [e for e in r.call_events if isinstance(e, MediaRequested)]
    assert requested.channel_id == CHANNEL_ID and requested.spec.ssrc_text == SSRC
    assert requested.spec.transport is transport and r.calls.transport_of(requested.call_id) is transport
    assert r.session.state is PlayState.INVITING  # 100 Trying only, until the media side is ready

    r.calls.accept(requested.call_id, "127.0.0.2", 40000, r.clock.now)
    r.deliver()

    (started,) = [e for e in r.play_events if isinstance(e, PlayStarted)]
    assert r.session.state is PlayState.STREAMING
    assert (started.spec.ssrc_text, started.spec.transport) == (SSRC, transport)
    assert (started.spec.remote_host, started.spec.remote_port) == ("127.0.0.2", 40000)
    assert [type(e) for e in r.call_events] == [MediaRequested, MediaStarted]
    answer = parse_sdp(next(m for m in map(parse_message, r.wire) if getattr(m, "status", 0) == 200 and m.body).body)
    assert answer.setup is answer_setup and answer.ssrc == SSRC and answer.rtpmap[96] == "PS/90000"

    r.session.stop(r.clock.now)
    r.deliver()
    assert r.session.state is PlayState.CLOSED
    assert isinstance(r.call_events[-1], MediaStopped) and r.call_events[-1].reason == "bye"
    assert r.calls.active == 0
    assert any(isinstance(e, PlayEnded) for e in r.play_events)


def test_device_hang_up_ends_the_gateway_session() -> None:
    r = Rig(MediaTransport.UDP)
    r.session.start(r.clock.now)
    r.deliver()
    requested = next(e for e in r.call_events if isinstance(e, MediaRequested))
    r.calls.accept(requested.call_id, "127.0.0.2", 40000, r.clock.now)
    r.deliver()
    r.calls.hang_up(requested.call_id, r.clock.now)
    r.deliver()
    assert r.session.state is PlayState.CLOSED
    assert any(isinstance(e, PlayEnded) and e.reason == "device_bye" for e in r.play_events)


def test_reject_and_bad_offers() -> None:
    r = Rig(MediaTransport.UDP)
    r.session.start(r.clock.now)
    r.deliver()
    requested = next(e for e in r.call_events if isinstance(e, MediaRequested))
    r.calls.reject(requested.call_id, 486, r.clock.now)
    r.deliver()
    assert r.session.state is PlayState.FAILED
    with pytest.raises(CallError):
        r.calls.accept(requested.call_id, "127.0.0.2", 40000, r.clock.now)


def test_an_unusable_offer_is_answered_488() -> None:
    from pathlib import Path

    raw = (Path(__file__).resolve().parents[1] / "fixtures" / "sip" / "platform-sbgb_invite_offer_udp.sip").read_bytes()
    invite = parse_message(raw)
    invite.body = b"v=0\r\nthis is not SDP\r\n"
    dev = SipEndpoint(SeededIds("dev"), local_host="127.0.0.2", local_port=5061)
    calls = DeviceCalls(dev)
    dev.receive(bytes(invite), peer_of(SipEndpoint(SeededIds("gw"), local_host="127.0.0.1", local_port=5060)), 0.0)
    event = dev.next_event()
    assert isinstance(event, RequestReceived)
    assert calls.on_request(event, CHANNEL_ID, 0.0) is True
    ((answer, _),) = dev.data_to_send()
    assert parse_message(answer).status == 488  # type: ignore[union-attr]
    assert calls.active == 0 and calls.next_event() is None


def test_stop_before_the_answer_cancels_the_invite() -> None:
    """RFC 3261 §9: CANCEL reuses the INVITE's branch; the device answers 200 and 487."""
    r = Rig(MediaTransport.UDP)
    r.session.start(r.clock.now)
    r.deliver()
    requested = next(e for e in r.call_events if isinstance(e, MediaRequested))

    r.session.stop(r.clock.now)
    r.deliver()

    assert r.session.state is PlayState.CLOSED
    assert any(isinstance(e, PlayEnded) for e in r.play_events)
    assert isinstance(r.call_events[-1], MediaStopped) and r.call_events[-1].reason == "cancelled"
    assert r.calls.active == 0
    messages = [parse_message(data) for data in r.wire]
    cancel = next(m for m in messages if getattr(m, "method", "") == "CANCEL")
    invite = next(m for m in messages if getattr(m, "method", "") == "INVITE")
    assert cancel.top_via.branch == invite.top_via.branch and str(cancel.cseq) == f"{invite.cseq.seq} CANCEL"
    statuses = sorted(m.status for m in messages if hasattr(m, "status") and m.status >= 200)
    assert statuses == [200, 487]
    with pytest.raises(CallError):
        r.calls.accept(requested.call_id, "127.0.0.2", 40000, r.clock.now)
    # every transaction (INVITE, CANCEL, the ACK for 487) ends once the timers have run
    for _ in range(200):
        r.clock.advance(1.0)
        for ep in (r.gw, r.dev):
            if (t := ep.get_timer()) is not None and t <= r.clock.now:
                ep.handle_timer(r.clock.now)
        r.deliver()
    assert r.gw.transaction_count == 0 and r.dev.transaction_count == 0
