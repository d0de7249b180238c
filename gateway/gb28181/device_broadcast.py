"""Voice broadcast in the device role (sans-I/O): what a simulated device does with ``Notify/Broadcast``.

A :class:`DeviceBroadcast` is a :class:`~gateway.gb28181.device_agent.DeviceFeature` of every
agent on one endpoint and a handler of that endpoint's router (for the answers to the
INVITEs it sends). On ``Notify/Broadcast`` for one of the device's own IDs — a camera
channel, an audio-out channel (type 137) or the device itself — it answers
``Response/Broadcast`` OK, then INVITEs the platform for audio the way WVP expects
(docs/gb28181.md §15.10): ``m=audio <port> RTP/AVP 8`` (or ``TCP/RTP/AVP 8`` with
``a=setup:passive``: the device listens and the platform connects), ``y=``, Subject
``<target>:<ssrc>,<platform>:0``. It ACKs the 2xx and tells its :class:`AudioSink`
which SSRC to record for whom; a BYE from the platform (or :meth:`DeviceBroadcast.hang_up`)
ends it. With ``ps`` it offers ``m=audio <port> RTP/AVP 96`` with ``a=rtpmap:96 PS/90000``
instead, as many Hikvision/Dahua devices do (the sink then reads A-law inside PS). A broadcast for an ID the device does not have is answered ``Result`` ERROR.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.errors import SipError
from gateway.gb28181.broadcast import audio_offer, broadcast_response, parse_broadcast_notify
from gateway.gb28181.dialog import Dialog
from gateway.gb28181.manscdp import ManscdpMessage
from gateway.gb28181.requests import sip_uri
from gateway.gb28181.sdp import MediaTransport, SdpError, build_sdp, make_ssrc, parse_sdp
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, SipEvent, TransactionTimedOut
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.message import SipRequest, make_response
from gateway.gb28181.sip.transport import Peer

if TYPE_CHECKING:
    from gateway.gb28181.device_agent import DeviceAgent

__all__ = ["AudioSink", "DeviceBroadcast", "HeardCall"]


class AudioSink(Protocol):
    """Where the device's speaker is: the simulator's media receiver."""

    @property
    def host(self) -> str: ...

    def port_for(self, transport: MediaTransport) -> int:
        """The port to offer (UDP: where it receives; TCP passive: where it listens)."""
        ...

    def expect(self, ssrc: int, device_id: str, target: str) -> None:
        """Audio with ``ssrc`` is the broadcast to ``device_id`` (``target`` its audio output)."""
        ...

    def ended(self, ssrc: int, reason: str) -> None:
        """That broadcast's call is over."""
        ...


@dataclass(slots=True)
class HeardCall:
    """One broadcast call of a device, as the device sees it."""

    call_id: str
    device_id: str
    target: str
    ssrc: str
    invite: SipRequest
    peer: Peer
    dialog: Dialog | None = None
    answer_host: str = ""
    answer_port: int = 0


class DeviceBroadcast:
    """Broadcast for every agent of one endpoint: a device feature and a router handler."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        sink: AudioSink,
        *,
        transport: MediaTransport = MediaTransport.UDP,
        ps: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.sink = sink
        self.transport = transport
        self.ps = ps
        self.calls: dict[str, HeardCall] = {}
        self.refused: list[tuple[str, int]] = []  # (device, status) of INVITEs the platform refused
        self._seq = 0

    # --- DeviceFeature ----------------------------------------------------------------------------

    def on_message(self, agent: DeviceAgent, message: ManscdpMessage, now: float) -> bool:
        """``Notify/Broadcast``: Result OK and our INVITE, or Result ERROR for a target we do not have."""
        notify = parse_broadcast_notify(message)
        if notify is None:
            return False
        device_id = agent.profile.device_id
        ok = agent.owns(notify.target_id)
        agent.client.reply(broadcast_response(notify.sn, device_id, ok), now)
        if ok:
            server = agent.server
            self.invite(
                local_id=device_id,
                platform_id=notify.source_id,
                target=notify.target_id,
                domain=server.domain,
                server_peer=agent.client.peer,  # the gateway it registered with (after a redirect too)
                now=now,
            )
        return True

    def on_call(self, agent: DeviceAgent, event: RequestReceived, now: float) -> bool:
        """BYE (and stray ACKs) of our broadcast calls."""
        return self._on_request(event, now)

    def _on_request(self, event: RequestReceived, now: float) -> bool:
        request = event.request
        try:
            call = self.calls.get(request.call_id)
        except SipError:
            return False
        if call is None:
            return False
        if request.method == "BYE" and event.transaction is not None:
            status = 200 if call.dialog is not None and call.dialog.matches(request) else 481
            self.endpoint.send_response(event.transaction, make_response(request, status), now)
            if status == 200:
                self._end(call, "platform_bye")
        elif event.transaction is not None:
            self.endpoint.send_response(event.transaction, make_response(request, 405), now)
        return True

    def on_timer(self, agent: DeviceAgent, key: Hashable, now: float) -> bool:
        """No timers of its own (the endpoint times the INVITE out)."""
        return False

    # --- router handler ------------------------------------------------------------------------------

    def route(self, event: SipEvent, now: float) -> bool:
        """Answers to our INVITEs and BYEs, the platform's BYEs of our calls; False for everything else."""
        if isinstance(event, RequestReceived):
            return self._on_request(event, now)
        context = event.context
        if not (isinstance(context, tuple) and len(context) == 2 and context[0] is self):
            return False
        call = self.calls.get(str(context[1]))
        if call is None:
            return True  # the answer to our BYE, or to a call already over
        if isinstance(event, TransactionTimedOut):
            self._end(call, "invite_timeout")
            return True
        self._on_response(call, event, now)
        return True

    def get_timer(self) -> float | None:
        """None: nothing timed here."""
        return None

    def handle_timer(self, now: float) -> None:
        """Nothing: see :meth:`get_timer`."""

    # --- commands ----------------------------------------------------------------------------------------

    def hang_up_call(self, call_id: str, now: float) -> None:
        """End one call from the device's side (BYE once it has a dialog)."""
        call = self.calls.get(call_id)
        if call is None:
            return
        if call.dialog is not None:
            bye = call.dialog.new_request("BYE")
            self.endpoint.send_request(bye, call.peer, now, context=(self, call.call_id))
        self._end(call, "device_bye")

    def hang_up(self, device_id: str, now: float) -> int:
        """The device ends its broadcast calls (BYE); how many it ended."""
        ended = 0
        for call in [c for c in self.calls.values() if c.device_id == device_id]:
            if call.dialog is not None:
                bye = call.dialog.new_request("BYE")
                self.endpoint.send_request(bye, call.peer, now, context=(self, call.call_id))
            self._end(call, "device_bye")
            ended += 1
        return ended

    # --- internals -------------------------------------------------------------------------------------

    def invite(
        self, *, local_id: str, platform_id: str, target: str, domain: str, server_peer: Peer, now: float
    ) -> HeardCall:
        """INVITE ``platform_id`` at ``server_peer`` for broadcast audio to ``target``, as ``local_id``."""
        self._seq += 1
        device_id = local_id
        ssrc = make_ssrc(domain, self._seq)
        offer = audio_offer(
            origin_user=device_id,
            media_host=self.sink.host,
            media_port=self.sink.port_for(self.transport),
            ssrc=ssrc,
            transport=self.transport,
            ps=self.ps,
        )
        local = self.endpoint
        headers = Headers(
            [
                ("From", f"<{sip_uri(device_id, domain)}>;tag={local.new_tag()}"),
                ("To", f"<{sip_uri(platform_id, domain)}>"),
                ("Call-ID", local.new_call_id()),
                ("CSeq", "1 INVITE"),
                ("Max-Forwards", "70"),
                ("Contact", f"<{sip_uri(device_id, local.local_host, local.local_port)}>"),
                ("Subject", f"{target}:{ssrc},{platform_id}:0"),
                ("Content-Type", "APPLICATION/SDP"),
            ]
        )
        uri = sip_uri(platform_id, server_peer.host, server_peer.port)
        invite = SipRequest(headers=headers, body=build_sdp(offer), method="INVITE", uri=uri)
        call = HeardCall(invite.call_id, device_id, target, ssrc, invite, server_peer)
        self.calls[call.call_id] = call
        self.sink.expect(int(ssrc), device_id, target)
        local.send_request(invite, server_peer, now, context=(self, call.call_id))
        return call

    def _on_response(self, call: HeardCall, event: ResponseReceived, now: float) -> None:
        response = event.response
        if response.status < 200 or response.cseq.method != "INVITE":
            return
        if response.status >= 300:
            self.refused.append((call.device_id, response.status))
            self._end(call, f"refused_{response.status}")
            return
        if call.dialog is None:
            try:
                call.dialog = Dialog.from_uac(call.invite, response)
                answer = parse_sdp(response.body)
            except (SipError, SdpError):
                self._end(call, "bad_answer")
                return
            call.answer_host, call.answer_port = answer.connection_address, answer.port
        self.endpoint.send_ack(call.dialog.ack_for(response), call.peer)

    def _end(self, call: HeardCall, reason: str) -> None:
        if self.calls.pop(call.call_id, None) is not None:
            self.sink.ended(int(call.ssrc), reason)
