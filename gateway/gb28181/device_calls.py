"""Live-play calls in the device role (UAS): INVITE in, SDP answer out (sans-I/O).

A simulated camera (and any test peer) answers the gateway's live INVITE the
way a GB/T 28181 device does (docs/gb28181.md §15): ``100 Trying`` at once;
the media side is then asked where it will send from (:class:`MediaRequested`)
— for a TCP-active offer the device must *listen*, so its port has to exist
before the answer is written — and :meth:`DeviceCalls.accept` sends the 200
with the answer: ``a=sendonly``, the offer's SSRC in ``y=``, ``a=setup``
mirrored (docs/gb28181.md §15.5). The ACK starts the stream (:class:`MediaStarted`);
a BYE from either side ends it (:class:`MediaStopped`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from gateway.errors import GatewayError
from gateway.gb28181.dialog import Dialog
from gateway.gb28181.sdp import (
    Direction,
    MediaSessionSpec,
    MediaTransport,
    SdpError,
    Setup,
    build_sdp,
    parse_sdp,
    spec_from_offer,
)
from gateway.gb28181.sip.endpoint import RequestReceived, SipEndpoint
from gateway.gb28181.sip.message import SipRequest, make_response
from gateway.gb28181.sip.transport import Peer

SDP_CONTENT_TYPE = "APPLICATION/SDP"


@dataclass(frozen=True, slots=True)
class MediaRequested:
    """An acceptable INVITE: the media side must prepare and then call ``accept`` or ``reject``.

    ``spec`` is the offer seen from the gateway: ``local_host``/``local_port``
    are where the gateway receives (UDP) or listens (TCP passive).
    """

    call_id: str
    channel_id: str
    spec: MediaSessionSpec


@dataclass(frozen=True, slots=True)
class MediaStarted:
    """The ACK arrived: start sending."""

    call_id: str


@dataclass(frozen=True, slots=True)
class MediaStopped:
    """The call ended (``reason``: bye, cancelled, rejected)."""

    call_id: str
    reason: str


CallEvent = MediaRequested | MediaStarted | MediaStopped


class CallError(GatewayError):
    """``accept``/``reject`` for a call that is not waiting for it."""


@dataclass(slots=True)
class _Call:
    invite: SipRequest
    transaction: str
    peer: Peer
    channel_id: str
    spec: MediaSessionSpec
    offer_setup: Setup | None
    dialog: Dialog | None = None
    started: bool = False


class DeviceCalls:
    """The INVITE dialogs of one device (or of one shared endpoint)."""

    def __init__(self, endpoint: SipEndpoint, *, max_calls: int = 64) -> None:
        self.endpoint = endpoint
        self.max_calls = max_calls
        self._calls: dict[str, _Call] = {}
        self._events: deque[CallEvent] = deque()

    def next_event(self) -> CallEvent | None:
        """The next media event, or None."""
        return self._events.popleft() if self._events else None

    @property
    def active(self) -> int:
        """Calls offered, answered or streaming."""
        return len(self._calls)

    # --- requests from the gateway ----------------------------------------------

    def on_request(self, event: RequestReceived, channel_id: str, now: float) -> bool:
        """Handle INVITE, ACK or BYE for ``channel_id``; False if the request is not ours."""
        method = event.request.method
        if method == "INVITE" and event.transaction is not None:
            self._on_invite(event, event.transaction, channel_id, now)
            return True
        call = self._calls.get(event.request.call_id)
        if call is None:
            if method in ("BYE", "CANCEL") and event.transaction is not None:
                self._answer(event.request, event.transaction, 481, now)
                return True
            return False
        if method == "ACK":
            if call.dialog is not None and not call.started:
                call.started = True
                self._events.append(MediaStarted(event.request.call_id))
            return True
        if method == "BYE" and event.transaction is not None:
            self._answer(event.request, event.transaction, 200, now)
            self._end(event.request.call_id, "bye")
            return True
        if method == "CANCEL" and event.transaction is not None:
            # RFC 3261 §9.2: 200 to the CANCEL; 487 to the INVITE if it has no final answer yet.
            self._answer(event.request, event.transaction, 200, now)
            if call.dialog is None:
                self._answer(call.invite, call.transaction, 487, now)
                self._end(event.request.call_id, "cancelled")
            return True
        return False

    def _on_invite(self, event: RequestReceived, transaction: str, channel_id: str, now: float) -> None:
        request = event.request
        if len(self._calls) >= self.max_calls:
            self._answer(request, transaction, 486, now)
            return
        try:
            offer = parse_sdp(request.body)
            spec = spec_from_offer(offer)
        except SdpError:
            self._answer(request, transaction, 488, now)
            return
        self._answer(request, transaction, 100, now)
        self._calls[request.call_id] = _Call(request, transaction, event.peer, channel_id, spec, offer.setup)
        self._events.append(MediaRequested(request.call_id, channel_id, spec))

    # --- decisions of the media side -------------------------------------------------

    def accept(
        self, call_id: str, media_host: str, media_port: int, now: float, *, file_size: int | None = None
    ) -> None:
        """Answer 200 with our SDP: we send from (or, TCP active, listen at) ``media_host:media_port``.

        ``file_size`` adds ``a=filesize:`` (a Download answer, docs/gb28181.md §15.3)."""
        call = self._waiting(call_id)
        offer = parse_sdp(call.invite.body)
        mirrored = {Setup.ACTIVE: Setup.PASSIVE, Setup.PASSIVE: Setup.ACTIVE}
        answer = replace(
            offer,
            origin_user=call.channel_id,
            origin_address=media_host,
            connection_address=media_host,
            port=media_port,
            payload_types=(96,),
            rtpmap={96: "PS/90000"},
            direction=Direction.SENDONLY,
            setup=mirrored.get(offer.setup) if offer.setup is not None and offer.is_tcp else None,
            ssrc=call.spec.ssrc_text,
            file_size=file_size,
        )
        local_tag = self.endpoint.new_tag()
        contact = f"<sip:{call.channel_id}@{self.endpoint.local_host}:{self.endpoint.local_port}>"
        response = make_response(
            call.invite,
            200,
            to_tag=local_tag,
            extra=[("Contact", contact), ("Content-Type", SDP_CONTENT_TYPE)],
            body=build_sdp(answer),
        )
        call.dialog = Dialog.from_uas(call.invite, local_tag)
        self.endpoint.send_response(call.transaction, response, now)

    def reject(self, call_id: str, status: int, now: float) -> None:
        """Refuse a requested call (e.g. 486 when no media port is free)."""
        call = self._waiting(call_id)
        self._answer(call.invite, call.transaction, status, now)
        self._end(call_id, "rejected")

    def hang_up(self, call_id: str, now: float) -> None:
        """End a call from the device side (the stream ended): send BYE."""
        call = self._calls.get(call_id)
        if call is None or call.dialog is None:
            return
        self.endpoint.send_request(call.dialog.new_request("BYE"), call.peer, now, context=(self, "bye"))
        self._end(call_id, "device_bye")

    def in_dialog(self, request: SipRequest) -> bool:
        """Whether a request of the gateway (INFO…) belongs to an answered call here (RFC 3261 §12.2.2).

        Records its CSeq; raises :class:`~gateway.gb28181.dialog.DialogError` (500) when it is out of order."""
        call = self._calls.get(request.call_id)
        if call is None or call.dialog is None or not call.dialog.matches(request):
            return False
        call.dialog.accept_remote(request)
        return True

    def send_in_dialog(self, call_id: str, method: str, body: bytes, content_type: str, now: float) -> str | None:
        """Send a request inside an answered call (e.g. MESSAGE ``MediaStatus``); its transaction, or None."""
        call = self._calls.get(call_id)
        if call is None or call.dialog is None:
            return None
        request = call.dialog.new_request(method, body, content_type)
        return self.endpoint.send_request(request, call.peer, now, context=(self, method.lower()))

    def transport_of(self, call_id: str) -> MediaTransport:
        """The offered transport of a call (UDP, TCP passive: we connect, TCP active: we listen)."""
        call = self._calls.get(call_id)
        if call is None:
            raise CallError(f"no call {call_id[:40]!r}")
        return call.spec.transport

    def _waiting(self, call_id: str) -> _Call:
        call = self._calls.get(call_id)
        if call is None or call.dialog is not None:
            raise CallError(f"call {call_id[:40]!r} is not waiting for an answer")
        return call

    def _end(self, call_id: str, reason: str) -> None:
        if self._calls.pop(call_id, None) is not None:
            self._events.append(MediaStopped(call_id, reason))

    def _answer(self, request: SipRequest, transaction: str, status: int, now: float) -> None:
        tag = None if status == 100 else self.endpoint.new_tag()
        self.endpoint.send_response(transaction, make_response(request, status, to_tag=tag), now)
