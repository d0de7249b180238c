"""Playback sessions inside the dialog: MANSRTSP INFO and MediaStatus 121 (docs/gb28181.md §15.9)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.gb28181.mansrtsp import parse_request, pause, seek
from gateway.gb28181.play import (
    TRANSITIONS,
    PlayAction,
    PlayEnded,
    PlayInfoAnswered,
    PlayInput,
    PlayMediaEnded,
    PlayNotStreaming,
    PlaySession,
    PlayState,
)
from gateway.gb28181.sdp import MediaTransport, SessionType, offer_for_history
from gateway.gb28181.sip import RequestReceived, SipRequest, make_response
from gateway.gb28181.sip.testing import peer_of
from tests.unit.test_play_session import CHANNEL_ID, DOMAIN, GATEWAY_ID, DeviceUas, Rig, rig

MEDIA_STATUS = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>MediaStatus</CmdType>\r\n<SN>8</SN>\r\n'
    "<DeviceID>{}</DeviceID>\r\n<NotifyType>{}</NotifyType>\r\n</Notify>\r\n"
)


class ControlledDevice(DeviceUas):
    """The test UAS also answers INFO (200, or ``info_status``; 0 = never) and records them."""

    info_status: int = 200
    infos: list[SipRequest]

    def on_request(self, event: RequestReceived, now: float) -> None:
        if event.request.method == "INFO":
            assert event.transaction is not None
            self.infos.append(event.request)
            if self.info_status:
                body = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n" if self.info_status == 200 else b""
                self.ep.send_response(event.transaction, make_response(event.request, self.info_status, body=body), now)
            return
        super().on_request(event, now)

    def send_message(self, gw_peer: object, body: bytes, now: float, *, from_user: str = "hik-not-the-device") -> None:
        assert self.dialog is not None
        message = self.dialog.new_request("MESSAGE", body, "Application/MANSCDP+xml")
        # Hikvision: a From user that is not the device ID; the dialog's tags are what count.
        message.headers.set("From", message.headers.get("From").replace(CHANNEL_ID, from_user))  # type: ignore[union-attr]
        self.ep.send_request(message, gw_peer, now)  # type: ignore[arg-type]


def playback_rig(info_status: int = 200) -> Rig:
    base = rig()
    offer = offer_for_history(
        session_type=SessionType.PLAYBACK,
        channel_id=CHANNEL_ID,
        start=1716163200,
        end=1716166800,
        media_host="192.168.1.10",
        media_port=30004,
        ssrc="1200000002",
    )
    session = PlaySession(
        base.gw, GATEWAY_ID, DOMAIN, CHANNEL_ID, peer_of(base.dev), "192.168.1.10", 30004, MediaTransport.UDP,
        "1200000002", offer=offer,
    )  # fmt: skip
    device = ControlledDevice(base.dev)
    device.info_status = info_status
    device.infos = []
    r = replace(base, session=session, device=device)
    r.session.start(r.clock.now)
    r.deliver()
    assert r.session.state is PlayState.STREAMING
    assert b"s=Playback" in r.device.invites[0].body and b"t=1716163200 1716166800" in r.device.invites[0].body
    return r


def test_info_carries_mansrtsp_in_the_dialog_and_reports_the_answer() -> None:
    r = playback_rig()
    key = r.session.send_info(seek(1, 120), r.clock.now)
    r.deliver()
    device = r.device
    assert isinstance(device, ControlledDevice)
    (info,) = device.infos
    assert info.headers.get("Content-Type") == "Application/MANSRTSP"
    assert info.call_id == r.session.invite.call_id if r.session.invite else False
    assert r.device.dialog is not None and r.device.dialog.matches(info)
    assert parse_request(info.body).range_start == 120.0
    assert str(info.cseq).endswith("INFO")
    answered = [e for e in r.events if isinstance(e, PlayInfoAnswered)]
    assert answered == [PlayInfoAnswered(key, 200, "OK", b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n")]
    assert r.session.state is PlayState.STREAMING


def test_info_refused_by_the_device_and_unanswered_info_are_reported() -> None:
    r = playback_rig(info_status=481)
    key = r.session.send_info(pause(1), r.clock.now)
    r.deliver()
    assert [e.status for e in r.events if isinstance(e, PlayInfoAnswered) and e.transaction == key] == [481]
    silent = playback_rig(info_status=0)
    key = silent.session.send_info(pause(1), silent.clock.now)
    silent.run_until(silent.clock.now + 40)
    assert [e.status for e in silent.events if isinstance(e, PlayInfoAnswered) and e.transaction == key] == [408]
    assert silent.session.state is PlayState.STREAMING


def test_info_to_a_session_that_is_not_streaming_raises_without_harm() -> None:
    r = rig()
    with pytest.raises(PlayNotStreaming):
        r.session.send_info(pause(1), r.clock.now)
    assert r.session.state is PlayState.IDLE
    p = playback_rig()
    p.session.stop(p.clock.now)
    p.deliver()
    assert p.session.state is PlayState.CLOSED
    with pytest.raises(PlayNotStreaming) as info:
        p.session.send_info(pause(2), p.clock.now)
    assert info.value.status_hint == 481 and p.session.state is PlayState.CLOSED


def test_media_status_121_in_the_dialog_is_answered_and_reported() -> None:
    r = playback_rig()
    device = r.device
    assert isinstance(device, ControlledDevice)
    device.send_message(peer_of(r.gw), MEDIA_STATUS.format(CHANNEL_ID, 121).encode(), r.clock.now)
    r.deliver()
    assert PlayMediaEnded() in r.events
    assert [resp.status for resp in device.responses if resp.cseq.method == "MESSAGE"] == [200]
    assert r.unhandled == []
    # the owner hangs up
    r.session.stop(r.clock.now)
    r.deliver()
    assert r.session.state is PlayState.CLOSED and len(device.byes) == 1
    assert PlayEnded("stopped") in r.events


def test_other_dialog_messages_are_answered_but_do_not_end_anything() -> None:
    r = playback_rig()
    device = r.device
    assert isinstance(device, ControlledDevice)
    device.send_message(peer_of(r.gw), MEDIA_STATUS.format(CHANNEL_ID, 122).encode(), r.clock.now)
    device.send_message(peer_of(r.gw), b"garbage", r.clock.now + 0.01)
    r.deliver()
    assert not any(isinstance(e, PlayMediaEnded) for e in r.events)
    assert [resp.status for resp in device.responses if resp.cseq.method == "MESSAGE"] == [200, 200]


def test_media_status_from_another_address_is_a_forgery() -> None:
    r = playback_rig()
    assert r.device.dialog is not None
    message = r.device.dialog.new_request(
        "MESSAGE", MEDIA_STATUS.format(CHANNEL_ID, 121).encode(), "Application/MANSCDP+xml"
    )
    forged_peer = replace(r.session.device_peer, host="10.9.9.9")
    r.gw.receive(_with_via(message, forged_peer), forged_peer, r.clock.now)
    event = r.gw.next_event()
    assert isinstance(event, RequestReceived)
    assert r.session.handle_request(event, r.clock.now)  # claimed (the dialog's) but refused
    r.dispatch()
    assert not any(isinstance(e, PlayMediaEnded) for e in r.events)
    assert any(b"403" in data.split(b"\r\n", 1)[0] for data, _ in r.gw.data_to_send())
    assert r.session.state is PlayState.STREAMING


def test_a_message_outside_the_dialog_is_not_claimed() -> None:
    r = playback_rig()
    assert r.device.dialog is not None
    message = r.device.dialog.new_request(
        "MESSAGE", MEDIA_STATUS.format(CHANNEL_ID, 121).encode(), "Application/MANSCDP+xml"
    )
    message.headers.set("Call-ID", "another-call")
    r.gw.receive(_with_via(message, r.session.device_peer), r.session.device_peer, r.clock.now)
    event = r.gw.next_event()
    assert isinstance(event, RequestReceived) and not r.session.handle_request(event, r.clock.now)


def test_transitions_cover_control_inputs_in_every_state() -> None:
    for state in PlayState:
        action, _ = TRANSITIONS[(state, PlayInput.SEND_INFO)]
        assert (action is PlayAction.SEND_INFO) == (state is PlayState.STREAMING)
        assert (state, PlayInput.INFO_ANSWERED) in TRANSITIONS
    assert TRANSITIONS[(PlayState.STREAMING, PlayInput.RECV_MEDIA_STATUS)] == (
        PlayAction.MEDIA_ENDED,
        PlayState.STREAMING,
    )


def _with_via(request: SipRequest, peer: object) -> bytes:
    request.headers.add("Via", f"SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bKforged1")
    return bytes(request)
