"""Live play signalling: Dialog and PlaySession against an in-memory device UAS (docs/gb28181.md §15)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import SipError
from gateway.gb28181.dialog import Dialog, DialogError
from gateway.gb28181.play import (
    TRANSITIONS,
    PlayEnded,
    PlayEvent,
    PlayFailed,
    PlayInput,
    PlaySession,
    PlaySessionError,
    PlayStarted,
    PlayState,
)
from gateway.gb28181.sdp import (
    Direction,
    MediaTransport,
    SdpSession,
    Setup,
    answer_to_spec,
    build_sdp,
    parse_sdp,
)
from gateway.gb28181.sip import (
    RequestReceived,
    ResponseReceived,
    SeededIds,
    SipEndpoint,
    SipRequest,
    SipResponse,
    SipTimers,
    TransactionTimedOut,
    make_response,
    parse_message,
)
from gateway.gb28181.sip.testing import FakeClock, peer_of

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sip"
GATEWAY_ID = "34020000002000000001"
DOMAIN = "3402000000"
CHANNEL_ID = "34020000001320000001"
OFFERED_SSRC = "0200000001"
DEVICE_MEDIA = ("10.0.0.64", 15060)


def load(name: str) -> SipRequest | SipResponse:
    return parse_message((FIXTURES / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


# --- a small device UAS, written here on purpose (not the gateway's code) ------------------------


@dataclass
class DeviceUas:
    """Answers INVITE 100 + (200 with an SDP answer | ``final``), takes ACK, answers BYE 200."""

    ep: SipEndpoint
    final: int = 200  # 0: never answer
    answer_ssrc: str | None = "0200000099"
    invites: list[SipRequest] = field(default_factory=list)
    acks: list[SipRequest] = field(default_factory=list)
    byes: list[SipRequest] = field(default_factory=list)
    responses: list[SipResponse] = field(default_factory=list)
    dialog: Dialog | None = None
    sent_200: bytes = b""

    def answer_sdp(self, offer: SdpSession) -> bytes:
        tcp = offer.is_tcp
        answer = SdpSession(
            origin_user=CHANNEL_ID,
            origin_address=DEVICE_MEDIA[0],
            session_type=offer.session_type,
            connection_address=DEVICE_MEDIA[0],
            port=DEVICE_MEDIA[1],
            payload_types=(96,),
            protocol=offer.protocol,
            rtpmap={96: "PS/90000"},
            direction=Direction.SENDONLY,
            # RFC 4145: the answer mirrors the offer's setup.
            setup=(Setup.ACTIVE if offer.setup is Setup.PASSIVE else Setup.PASSIVE) if tcp else None,
            ssrc=self.answer_ssrc,
            f_line="",
        )
        return build_sdp(answer)

    def pump(self, now: float) -> None:
        while (event := self.ep.next_event()) is not None:
            if isinstance(event, RequestReceived):
                self.on_request(event, now)
            elif isinstance(event, ResponseReceived):
                self.responses.append(event.response)

    def on_request(self, event: RequestReceived, now: float) -> None:
        request = event.request
        if request.method == "ACK":
            self.acks.append(request)
            return
        assert event.transaction is not None
        if request.method == "INVITE":
            self.invites.append(request)
            self.ep.send_response(event.transaction, make_response(request, 100), now)
            if self.final == 0:
                return
            tag = self.ep.new_tag()
            if self.final != 200:
                self.ep.send_response(event.transaction, make_response(request, self.final, to_tag=tag), now)
                return
            contact = [("Contact", f"<sip:{CHANNEL_ID}@{self.ep.local_host}:{self.ep.local_port}>")]
            contact.append(("Content-Type", "application/sdp"))
            ok = make_response(request, 200, to_tag=tag, extra=contact, body=self.answer_sdp(parse_sdp(request.body)))
            self.dialog = Dialog.from_uas(request, tag)
            self.sent_200 = bytes(ok)
            self.ep.send_response(event.transaction, ok, now)
        elif request.method == "BYE":
            self.byes.append(request)
            self.ep.send_response(event.transaction, make_response(request, 200), now)

    def send_bye(self, gw: SipEndpoint, now: float) -> None:
        assert self.dialog is not None
        self.ep.send_request(self.dialog.new_request("BYE"), peer_of(gw), now)


@dataclass
class Rig:
    gw: SipEndpoint
    dev: SipEndpoint
    device: DeviceUas
    session: PlaySession
    clock: FakeClock
    events: list[PlayEvent] = field(default_factory=list)
    unhandled: list[object] = field(default_factory=list)

    def deliver(self, drop: Callable[[bytes], bool] = lambda _: False) -> None:
        """Move messages both ways and let each side react, until quiet."""
        moved = True
        while moved:
            moved = False
            self.device.pump(self.clock.now)
            self.dispatch()
            for src, dst in ((self.gw, self.dev), (self.dev, self.gw)):
                for data, _ in src.data_to_send():
                    moved = True
                    if not drop(data):
                        dst.receive(data, peer_of(src), self.clock.now)

    def dispatch(self) -> None:
        while (event := self.gw.next_event()) is not None:
            if isinstance(event, RequestReceived):
                handled = self.session.handle_request(event, self.clock.now)
            else:
                handled = self.session.handle_response(event, self.clock.now)
            if not handled:
                self.unhandled.append(event)
        while (play_event := self.session.next_event()) is not None:
            self.events.append(play_event)

    def run_until(self, until: float, drop: Callable[[bytes], bool] = lambda _: False) -> None:
        """Fire every timer (endpoints and session) up to ``until``, delivering in between."""
        while True:
            timers = [t for t in (self.gw.get_timer(), self.dev.get_timer(), self.session.get_timer()) if t is not None]
            due = [t for t in timers if t <= until]
            if not due:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.now))
            for core in (self.gw, self.dev, self.session):
                timer = core.get_timer()
                if timer is not None and timer <= self.clock.now:
                    core.handle_timer(self.clock.now)
            self.deliver(drop)
        self.clock.advance(max(0.0, until - self.clock.now))


def rig(transport: MediaTransport = MediaTransport.UDP, **device: object) -> Rig:
    timers = SipTimers(t1=0.5)
    gw = SipEndpoint(SeededIds("gw"), local_host="127.0.0.1", local_port=15060, timers=timers)
    dev = SipEndpoint(SeededIds("dev"), local_host="127.0.0.1", local_port=5060, timers=timers)
    session = PlaySession(
        gw, GATEWAY_ID, DOMAIN, CHANNEL_ID, peer_of(dev), "192.168.1.10", 30002, transport, OFFERED_SSRC
    )
    return Rig(gw, dev, DeviceUas(dev, **device), session, FakeClock())  # type: ignore[arg-type]


def streaming(transport: MediaTransport = MediaTransport.UDP, **device: object) -> Rig:
    r = rig(transport, **device)
    r.session.start(r.clock.now)
    r.deliver()
    assert r.session.state is PlayState.STREAMING
    return r


# --- Dialog -----------------------------------------------------------------------------------------


def test_dialog_from_uac_with_the_sbgb_capture() -> None:
    invite, ok = load("platform-sbgb_invite_offer_udp.sip"), load("sbgb_invite_200_sdp_udp.sip")
    assert isinstance(invite, SipRequest) and isinstance(ok, SipResponse)
    dialog = Dialog.from_uac(invite, ok)
    assert (dialog.call_id, dialog.local_tag, dialog.remote_tag) == ("44214669f4d27301@miniplat", "1e3c3e32", "ok")
    assert dialog.remote_target == "sip:34020000001320000002@127.0.0.1:38506"  # the 200's Contact
    assert dialog.local_cseq == 103 and dialog.remote_cseq is None

    ack = dialog.ack_for(ok)
    assert ack.method == "ACK" and str(ack.cseq) == "103 ACK" and ack.uri == dialog.remote_target
    assert ack.from_.tag == "1e3c3e32" and ack.to.tag == "ok" and ack.call_id == dialog.call_id

    bye = dialog.new_request("BYE")
    assert str(bye.cseq) == "104 BYE" and bye.uri == dialog.remote_target
    assert bye.from_.tag == "1e3c3e32" and bye.to.tag == "ok"
    assert str(bye.to.uri) == "sip:34020000001310000003@3402000000"
    assert str(dialog.new_request("INFO", b"PLAY RTSP/1.0\r\n", "Application/MANSRTSP").cseq) == "105 INFO"
    spec = answer_to_spec(parse_sdp(invite.body), parse_sdp(ok.body))
    assert (spec.ssrc_text, spec.transport, spec.remote_port) == ("0100000005", MediaTransport.UDP, 40000)


def test_dialog_refuses_what_it_cannot_acknowledge() -> None:
    invite, ok = load("platform-sbgb_invite_offer_udp.sip"), load("sbgb_invite_200_sdp_udp.sip")
    assert isinstance(invite, SipRequest) and isinstance(ok, SipResponse)
    dialog = Dialog.from_uac(invite, ok)
    with pytest.raises(DialogError):
        dialog.new_request("ACK")
    busy = make_response(invite, 486, to_tag="x")
    with pytest.raises(DialogError):
        dialog.ack_for(busy)
    untagged = make_response(invite, 200)
    with pytest.raises(DialogError):
        Dialog.from_uac(invite, untagged)


def test_dialog_from_uas_mirrors_the_uac_and_orders_remote_cseq() -> None:
    invite = load("platform-sbgb_invite_offer_udp.sip")
    assert isinstance(invite, SipRequest)
    dialog = Dialog.from_uas(invite, "devtag")
    assert (dialog.local_tag, dialog.remote_tag, dialog.remote_cseq) == ("devtag", "1e3c3e32", 103)
    assert dialog.remote_target == "sip:34020000002000000001@127.0.0.1:15060"
    bye = dialog.new_request("BYE")
    assert str(bye.cseq) == "1 BYE" and bye.from_.tag == "devtag" and bye.to.tag == "1e3c3e32"
    assert bye.uri == "sip:34020000002000000001@127.0.0.1:15060"
    with pytest.raises(DialogError) as info:
        dialog.accept_remote(invite)  # the same CSeq again
    assert info.value.status_hint == 500


# --- PlaySession: the happy path and its variants --------------------------------------------------


def test_udp_play_reaches_streaming_with_the_answers_spec() -> None:
    r = streaming()
    invite = r.device.invites[0]
    assert invite.uri == f"sip:{CHANNEL_ID}@127.0.0.1:5060"
    assert invite.headers["Subject"] == f"{CHANNEL_ID}:{OFFERED_SSRC},{GATEWAY_ID}:0"
    assert invite.headers["Content-Type"] == "APPLICATION/SDP"
    assert invite.from_.tag and str(invite.from_.uri) == f"sip:{GATEWAY_ID}@{DOMAIN}"
    assert str(invite.contact.uri) == f"sip:{GATEWAY_ID}@127.0.0.1:15060"  # type: ignore[union-attr]
    assert parse_sdp(invite.body).ssrc == OFFERED_SSRC and invite.body.endswith(b"\r\n")

    [started] = r.events
    assert isinstance(started, PlayStarted)
    spec = started.spec
    assert spec.ssrc == 200000099  # adopted from the answer's y= (docs/gb28181.md §19 item 1)
    assert spec.transport is MediaTransport.UDP
    assert (spec.remote_host, spec.remote_port) == DEVICE_MEDIA
    assert (spec.local_host, spec.local_port) == ("192.168.1.10", 30002)
    assert spec.payload_types == (96,)
    assert len(r.device.acks) == 1 and str(r.device.acks[0].cseq) == f"{invite.cseq.seq} ACK"
    assert r.device.acks[0].to.tag == r.session.dialog.remote_tag  # type: ignore[union-attr]


def test_answer_without_y_keeps_the_offered_ssrc() -> None:
    r = streaming(answer_ssrc=None)
    assert r.session.spec is not None and r.session.spec.ssrc_text == OFFERED_SSRC


@pytest.mark.parametrize(
    ("transport", "offer_setup", "answer_setup"),
    [
        (MediaTransport.TCP_PASSIVE, Setup.PASSIVE, Setup.ACTIVE),
        (MediaTransport.TCP_ACTIVE, Setup.ACTIVE, Setup.PASSIVE),
    ],
)
def test_tcp_offers_produce_the_right_transport(
    transport: MediaTransport, offer_setup: Setup, answer_setup: Setup
) -> None:
    r = streaming(transport)
    offer = parse_sdp(r.device.invites[0].body)
    assert offer.is_tcp and offer.setup is offer_setup
    assert r.session.spec is not None and r.session.spec.transport is transport
    assert (r.session.spec.remote_host, r.session.spec.remote_port) == DEVICE_MEDIA  # where TCP-active connects
    ok = parse_message(r.device.sent_200)
    assert isinstance(ok, SipResponse) and parse_sdp(ok.body).setup is answer_setup


def test_device_busy_fails_the_play() -> None:
    r = rig(final=486)
    r.session.start(0.0)
    r.deliver()
    assert r.session.state is PlayState.FAILED
    assert r.events == [PlayFailed(486, "Busy Here")]
    assert r.session.get_timer() is None
    r.run_until(40.0)
    assert r.gw.transaction_count == 0 and r.dev.transaction_count == 0


def test_silent_device_times_out_then_timer_b_leaves_nothing_behind() -> None:
    r = rig()
    r.session.start(0.0)
    assert r.session.get_timer() == 10.0
    r.gw.data_to_send()  # the INVITE (and every retransmission below) is lost
    r.run_until(9.9, drop=lambda _: True)
    assert r.session.state is PlayState.INVITING
    r.run_until(10.0, drop=lambda _: True)
    assert r.session.state is PlayState.FAILED
    assert r.events == [PlayFailed(408, "play timeout")]
    r.run_until(40.0, drop=lambda _: True)  # Timer B (32 s) ends the INVITE transaction
    assert r.session.state is PlayState.FAILED and len(r.events) == 1
    assert r.gw.transaction_count == 0 and r.unhandled == []


def test_device_that_only_says_trying_times_out() -> None:
    r = rig(final=0)
    r.session.start(0.0)
    r.deliver()
    r.run_until(10.0)
    assert r.events == [PlayFailed(408, "play timeout")]
    r.run_until(80.0)
    assert r.gw.transaction_count == 0


def test_unusable_answer_is_acked_and_hung_up() -> None:
    r = rig()
    real = r.device.answer_sdp
    r.device.answer_sdp = lambda offer: real(replace(offer, protocol="TCP/RTP/AVP", setup=Setup.PASSIVE))  # type: ignore[method-assign]
    r.session.start(0.0)
    r.deliver()
    assert r.session.state is PlayState.FAILED
    [failed] = r.events
    assert isinstance(failed, PlayFailed) and failed.status == 488
    assert len(r.device.acks) == 1 and len(r.device.byes) == 1


# --- teardown -----------------------------------------------------------------------------------------


def test_stop_sends_bye_in_the_dialog_then_closes() -> None:
    r = streaming()
    dialog = r.session.dialog
    assert dialog is not None
    r.session.stop(r.clock.now)
    assert r.session.state is PlayState.TEARING_DOWN
    r.deliver()
    [bye] = r.device.byes
    assert bye.call_id == dialog.call_id
    assert bye.from_.tag == dialog.local_tag and bye.to.tag == dialog.remote_tag
    assert bye.cseq.seq == r.device.invites[0].cseq.seq + 1 and bye.cseq.method == "BYE"
    assert bye.uri == dialog.remote_target
    assert r.session.state is PlayState.CLOSED
    assert r.events[1:] == [PlayEnded("stopped")]
    r.run_until(40.0)
    assert r.gw.transaction_count == 0 and r.dev.transaction_count == 0


def test_bye_unanswered_still_closes_after_timer_f() -> None:
    r = streaming()
    r.session.media_timeout(r.clock.now)
    r.run_until(40.0, drop=lambda data: data.startswith(b"BYE"))
    assert r.session.state is PlayState.CLOSED
    assert r.events[1:] == [PlayEnded("rtp_timeout")]
    assert r.gw.transaction_count == 0


def test_device_bye_is_answered_and_closes() -> None:
    r = streaming()
    r.device.send_bye(r.gw, r.clock.now)
    r.deliver()
    assert r.session.state is PlayState.CLOSED
    assert r.events[1:] == [PlayEnded("device_bye")]
    assert [resp.status for resp in r.device.responses if resp.cseq.method == "BYE"] == [200]
    r.session.stop(r.clock.now)  # the last viewer leaves afterwards: nothing more to do
    assert r.session.state is PlayState.CLOSED and r.gw.data_to_send() == []


def test_bye_for_another_dialog_is_not_ours() -> None:
    r = streaming()
    assert r.device.dialog is not None
    r.device.dialog.remote_tag = "someone-else"
    r.device.send_bye(r.gw, r.clock.now)
    r.deliver()
    assert r.session.state is PlayState.STREAMING
    assert len(r.unhandled) == 1 and isinstance(r.unhandled[0], RequestReceived)


# --- retransmitted 2xx ----------------------------------------------------------------------------------


def test_lost_ack_makes_the_device_retransmit_and_the_ack_is_resent() -> None:
    r = rig()
    r.session.start(0.0)
    dropped: list[bytes] = []

    def drop_first_ack(data: bytes) -> bool:
        if data.startswith(b"ACK") and not dropped:
            dropped.append(data)
            return True
        return False

    r.deliver(drop_first_ack)
    assert r.device.acks == []
    r.run_until(2.0, drop_first_ack)  # Timer G: the device retransmits its 200
    assert len(r.device.acks) == 1
    assert [type(e) for e in r.events] == [PlayStarted]


def test_2xx_after_the_invite_transaction_ended_gets_the_same_ack() -> None:
    r = streaming()
    r.run_until(40.0)  # Timer M has ended the INVITE transaction
    assert r.gw.transaction_count == 0
    r.gw.receive(r.device.sent_200, peer_of(r.dev), r.clock.now)
    r.deliver()
    first, again = r.device.acks
    assert again.uri == first.uri and str(again.cseq) == str(first.cseq)
    assert again.from_.tag == first.from_.tag and again.to.tag == first.to.tag
    assert [type(e) for e in r.events] == [PlayStarted] and r.unhandled == []


def test_late_2xx_after_giving_up_is_acked_and_hung_up() -> None:
    r = rig()
    r.session.start(0.0)
    invite_bytes = r.gw.data_to_send()
    r.session.stop(0.5)
    assert r.session.state is PlayState.CLOSED and r.events == []
    r.dispatch()
    assert r.events == [PlayEnded("stopped")]
    for data, _ in invite_bytes:
        r.dev.receive(data, peer_of(r.gw), r.clock.now)
    r.device.pump(r.clock.now)
    r.deliver()
    assert len(r.device.acks) == 1 and len(r.device.byes) == 1
    assert r.session.state is PlayState.CLOSED and len(r.events) == 1


# --- the table, driven by every input ----------------------------------------------------------------


def test_table_targets_are_states_and_terminal_states_absorb_network_inputs() -> None:
    for (state, inp), (_action, target) in TRANSITIONS.items():
        assert isinstance(target, PlayState)
        if state in (PlayState.CLOSED, PlayState.FAILED):
            assert target is state, (state, inp)


def test_starting_twice_is_local_misuse() -> None:
    r = streaming()
    with pytest.raises(PlaySessionError) as info:
        r.session.start(r.clock.now)
    assert isinstance(info.value, SipError)
    assert r.session.state is PlayState.FAILED
    r.deliver()
    assert len(r.device.byes) == 1  # the confirmed call is not left streaming


def stimulate(r: Rig, inp: PlayInput) -> None:
    """Produce ``inp`` through the session's public API, with messages a device could send."""
    s, now = r.session, r.clock.now
    invite, peer = s.invite, peer_of(r.dev)
    if inp is PlayInput.START:
        s.start(now)
    elif inp is PlayInput.STOP:
        s.stop(now)
    elif inp is PlayInput.RTP_TIMEOUT:
        s.media_timeout(now)
    elif inp is PlayInput.TIMEOUT:
        if invite is not None and s.invite_transaction is not None:
            s.handle_response(TransactionTimedOut(s.invite_transaction, invite, peer, s), now)
        s.handle_timer(now + 60.0)
    elif inp is PlayInput.BYE_ANSWERED:
        if s.bye_transaction is not None and invite is not None:
            s.handle_response(TransactionTimedOut(s.bye_transaction, invite, peer, s), now)
    elif inp is PlayInput.RECV_BYE:
        if r.device.dialog is not None:
            bye = r.device.dialog.new_request("BYE")
            bye.headers.prepend("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbye")
            s.handle_request(RequestReceived(bye, peer, "bye-txn"), now)
    elif invite is not None:
        status = {PlayInput.RECV_1XX: 180, PlayInput.RECV_ERROR: 486}.get(inp, 200)
        body = b"v=0\r\n" if inp is PlayInput.RECV_2XX_BAD_SDP else r.device.answer_sdp(s.offer)
        tag = "devtag"
        if r.device.dialog is None:
            r.device.dialog = Dialog.from_uas(invite, tag)
        extra = [("Contact", f"<sip:{CHANNEL_ID}@127.0.0.1:5060>")]
        response = make_response(invite, status, to_tag=tag, extra=extra, body=body if status == 200 else b"")
        s.handle_response(ResponseReceived(response, peer, s.invite_transaction, s), now)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(list(PlayInput)), max_size=8))
def test_any_input_sequence_gives_a_state_or_our_error_and_failed(inputs: list[PlayInput]) -> None:
    r = rig()
    for inp in inputs:
        try:
            stimulate(r, inp)
        except PlaySessionError:
            assert r.session.state is PlayState.FAILED
        else:
            assert isinstance(r.session.state, PlayState)
        r.gw.data_to_send()
        while (event := r.session.next_event()) is not None:
            r.events.append(event)
    assert sum(isinstance(e, PlayStarted) for e in r.events) <= 1
    assert sum(isinstance(e, (PlayEnded, PlayFailed)) for e in r.events) <= 1
