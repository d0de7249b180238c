"""Voice broadcast (喊话), platform side, sans-I/O (docs/gb28181.md §13, §15.10).

The flow WVP implements and devices expect:

1. we send ``Notify/Broadcast`` (``SourceID`` = our ID, ``TargetID`` = the device's audio
   output: an audio-out channel of type 137 when the catalog has one, else the camera
   channel — simulated devices accept both) through :func:`broadcast_body`;
2. the device answers 200 and ``Response/Broadcast`` with ``Result`` (:func:`broadcast_result`);
3. the device sends *us* an INVITE offering where it receives audio
   (``m=audio <port> RTP/AVP 8``, or ``TCP/RTP/AVP 8`` with ``a=setup``, and ``y=``; many
   Hikvision/Dahua devices offer only ``RTP/AVP 96`` with ``a=rtpmap:96 PS/90000``);
4. we answer 200 (``a=sendonly``, the chosen ``a=rtpmap`` — PCMA when offered, else PS —,
   setup mirrored, ``y=``, ``f=v/////a/1/8/1``: :func:`audio_answer`), it ACKs, we send
   PCMA RTP (or the A-law inside audio-only PS on the 90 kHz clock); BYE either way.

:class:`BroadcastCalls` is the UAS of step 3-4. It takes an INVITE only from the device we
asked, from the address its registration is bound to, while that broadcast is expected,
for the target we named: an INVITE to our ID that nobody expects is answered 481, one from
the wrong address or naming another target 403 (every field of the network is a claim).
The owner routes the endpoint's events to :meth:`BroadcastCalls.route`, drains
:meth:`BroadcastCalls.next_event`, answers :class:`AudioRequested` with
:meth:`BroadcastCalls.accept` (or ``reject``) once it has a media port, and runs
:meth:`BroadcastCalls.handle_timer` at :meth:`BroadcastCalls.get_timer`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from enum import Enum
from xml.etree.ElementTree import Element, SubElement

from gateway.errors import SipError
from gateway.gb28181.dialog import Dialog
from gateway.gb28181.manscdp import ChildIndex, ManscdpMessage, ResultResponse, Root, UnknownCommand, serialize
from gateway.gb28181.requests import sip_uri, target_id
from gateway.gb28181.sdp import (
    Connection,
    Direction,
    MediaTransport,
    SdpError,
    SdpSession,
    Setup,
    build_sdp,
    offer_transport,
    parse_sdp,
)
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, SipEvent, TransactionTimedOut
from gateway.gb28181.sip.message import SipRequest, make_response
from gateway.gb28181.sip.transport import Peer

__all__ = [
    "AUDIO_F_LINE",
    "AUDIO_OUT_TYPE",
    "BROADCAST",
    "DEFAULT_ACK_TIMEOUT",
    "DEFAULT_INVITE_TIMEOUT",
    "PCMA_RTPMAP",
    "PS_RTPMAP",
    "AudioEnded",
    "AudioRequested",
    "AudioStarted",
    "AudioTarget",
    "BroadcastCalls",
    "BroadcastEvent",
    "BroadcastNotify",
    "audio_answer",
    "audio_offer",
    "audio_target",
    "broadcast_body",
    "broadcast_response",
    "broadcast_result",
    "parse_broadcast_notify",
    "subject_ids",
]

BROADCAST = "Broadcast"
AUDIO_OUT_TYPE = "137"  # the 20-digit type code of an audio output channel (docs/gb28181.md §1.2)
PCMA_RTPMAP = "PCMA/8000"
PS_RTPMAP = "PS/90000"
AUDIO_F_LINE = "v/////a/1/8/1"  # G.711, 64 kbit/s, 8 kHz as WVP writes it (docs/gb28181.md §15.7)
DEFAULT_INVITE_TIMEOUT = 10.0  # s from our Broadcast to the device's INVITE
DEFAULT_ACK_TIMEOUT = 32.0  # s from our 200 to its ACK (64*T1, RFC 3261 §13.3.1.4)
SDP_CONTENT_TYPE = "APPLICATION/SDP"
PCMA_PT = 8
PS_PT = 96


# --- MANSCDP ------------------------------------------------------------------------------------


def broadcast_body(source_id: str, target: str) -> Callable[[int, str], bytes]:
    """The ``Notify/Broadcast`` body builder for :meth:`DeviceAccess.send_command` (``body(sn, charset)``)."""

    def body(sn: int, charset: str) -> bytes:
        root = Element("Notify")
        SubElement(root, "CmdType").text = BROADCAST
        SubElement(root, "SN").text = str(sn)
        SubElement(root, "SourceID").text = source_id
        SubElement(root, "TargetID").text = target
        return serialize(UnknownCommand(Root.NOTIFY, BROADCAST, sn, "", root), charset)

    return body


@dataclass(frozen=True, slots=True)
class BroadcastNotify:
    """A ``Notify/Broadcast`` as the device reads it."""

    sn: int
    source_id: str
    target_id: str


def parse_broadcast_notify(message: ManscdpMessage) -> BroadcastNotify | None:
    """The broadcast request in ``message``, or None when it is no (usable) ``Notify/Broadcast``."""
    if not isinstance(message, UnknownCommand) or message.root is not Root.NOTIFY:
        return None
    if str(message.cmd_type).lower() != BROADCAST.lower():
        return None
    fields = ChildIndex(message.element)
    source, target = fields.text("SourceID"), fields.text("TargetID")
    if not source or not target:
        return None
    return BroadcastNotify(message.sn, source, target)


def broadcast_response(sn: int, device_id: str, ok: bool = True) -> ResultResponse:
    """The device's ``Response/Broadcast`` (``Result`` OK or ERROR)."""
    return ResultResponse(BROADCAST, sn, device_id, "OK" if ok else "ERROR")


def broadcast_result(message: ManscdpMessage) -> bool | None:
    """True/False for a ``Response/Broadcast`` saying OK or anything else; None for other messages."""
    if not isinstance(message, ResultResponse) or message.cmd_type.lower() != BROADCAST.lower():
        return None
    return message.result.strip().upper() == "OK"


def subject_ids(request: SipRequest) -> tuple[str, ...]:
    """The IDs a ``Subject`` names (``<id>:<serial>,<id>:<serial>``, docs/gb28181.md §15.2)."""
    value = request.headers.get("Subject") or ""
    return tuple(part.split(":", 1)[0].strip() for part in value.split(",") if part.strip())


# --- SDP ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioTarget:
    """Where and how to send the broadcast audio, read from the device's offer.

    ``transport`` names the mode from the offerer's (the device's) side like
    :class:`MediaTransport`: ``TCP_PASSIVE`` — the device listens at ``host:port`` and we
    connect; ``TCP_ACTIVE`` — the device connects to the port of our answer.
    ``payload_type`` is 8 (raw PCMA) or, with ``ps``, the dynamic type the device gave
    ``PS/90000`` (A-law inside audio-only PS). ``ssrc`` is the device's ``y=``, or None.
    """

    transport: MediaTransport
    host: str
    port: int
    payload_type: int
    ssrc: str | None
    ps: bool = False

    @property
    def rtpmap(self) -> str:
        """The ``a=rtpmap`` encoding of what we send."""
        return PS_RTPMAP if self.ps else PCMA_RTPMAP


def audio_target(offer: SdpSession) -> AudioTarget:
    """Read the device's audio offer; :class:`SdpError` (488) when it offers no audio we can send.

    Raw PCMA (PT 8) when offered; else a dynamic type mapped to ``PS/90000`` (the A-law is
    then sent inside audio-only PS); anything else is refused.
    """
    if offer.kind != "audio":
        raise SdpError(f"broadcast offer is m={offer.kind[:10]}, not m=audio")
    names = {pt: name.upper() for pt, name in offer.rtpmap.items()}
    transport, host, port = offer_transport(offer), offer.connection_address, offer.port
    if PCMA_PT in offer.payload_types and names.get(PCMA_PT, PCMA_RTPMAP).startswith("PCMA"):
        return AudioTarget(transport, host, port, PCMA_PT, offer.ssrc)
    for pt in offer.payload_types:
        if pt >= PS_PT and names.get(pt, "").split("/")[0] == "PS":  # dynamic types only (RFC 3551 §6)
            return AudioTarget(transport, host, port, pt, offer.ssrc, ps=True)
    raise SdpError("broadcast offer has neither PCMA (payload type 8) nor PS/90000")


def audio_offer(
    *,
    origin_user: str,
    media_host: str,
    media_port: int,
    ssrc: str,
    transport: MediaTransport = MediaTransport.UDP,
    ps: bool = False,
) -> SdpSession:
    """A device's offer for broadcast audio (what simulated devices send), WVP's shape.

    ``ps``: offer only ``96 PS/90000``, as many Hikvision/Dahua devices do.
    """
    tcp = transport is not MediaTransport.UDP
    payload_type, rtpmap = (PS_PT, PS_RTPMAP) if ps else (PCMA_PT, PCMA_RTPMAP)
    return SdpSession(
        origin_user=origin_user,
        origin_address=media_host,
        session_type="Play",
        connection_address=media_host,
        port=media_port,
        payload_types=(payload_type,),
        kind="audio",
        protocol="TCP/RTP/AVP" if tcp else "RTP/AVP",
        rtpmap={payload_type: rtpmap},
        direction=Direction.RECVONLY,
        setup=(Setup.ACTIVE if transport is MediaTransport.TCP_ACTIVE else Setup.PASSIVE) if tcp else None,
        connection=Connection.NEW if tcp else None,
        ssrc=ssrc,
    )


def audio_answer(offer: SdpSession, *, origin_user: str, media_host: str, media_port: int, ssrc: str) -> SdpSession:
    """Our 200's SDP: ``a=sendonly``, the chosen rtpmap (:func:`audio_target`), setup mirrored, ``y=``, ``f=``.

    :class:`SdpError` when the offer has nothing we can send.
    """
    target = audio_target(offer)
    mirrored = {Setup.ACTIVE: Setup.PASSIVE, Setup.PASSIVE: Setup.ACTIVE}
    setup = None
    if offer.is_tcp:
        setup = mirrored[offer.setup] if offer.setup is not None else Setup.ACTIVE  # no setup: it listens
    return replace(
        offer,
        origin_user=origin_user,
        origin_address=media_host,
        connection_address=media_host,
        port=media_port,
        payload_types=(target.payload_type,),
        rtpmap={target.payload_type: target.rtpmap},
        fmtp={},
        direction=Direction.SENDONLY,
        setup=setup,
        connection=Connection.NEW if offer.is_tcp else None,
        ssrc=ssrc,
        f_line=AUDIO_F_LINE,
        uri=None,
        attributes=(),
        download_speed=None,
        file_size=None,
        stream_number=None,
    )


# --- the UAS of the device's INVITE ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioRequested:
    """The expected device sent its INVITE: open a sender for ``target`` and :meth:`~BroadcastCalls.accept`."""

    key: Hashable
    target: AudioTarget


@dataclass(frozen=True, slots=True)
class AudioStarted:
    """The device ACKed our answer: send audio."""

    key: Hashable


@dataclass(frozen=True, slots=True)
class AudioEnded:
    """The broadcast's call is over or never came (``reason``: no_invite, no_ack, device_bye, rejected…)."""

    key: Hashable
    reason: str


BroadcastEvent = AudioRequested | AudioStarted | AudioEnded


class CallState(Enum):
    """Where one broadcast's call stands."""

    EXPECTED = "expected"  # Broadcast sent, waiting for the device's INVITE
    OFFERED = "offered"  # INVITE in, 100 sent, waiting for our media port
    ANSWERED = "answered"  # 200 sent, waiting for the ACK
    ACTIVE = "active"  # ACKed: audio flows
    HANGING_UP = "hanging up"  # our BYE sent


@dataclass(slots=True)
class _Call:
    key: Hashable
    device_id: str
    target: str
    peer: Peer
    deadline: float | None
    state: CallState = CallState.EXPECTED
    invite: SipRequest | None = None
    transaction: str | None = None
    offer: SdpSession | None = None
    dialog: Dialog | None = None


class BroadcastCalls:
    """The device INVITEs of the broadcasts we asked for, one call per key."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        local_id: str,
        *,
        invite_timeout: float = DEFAULT_INVITE_TIMEOUT,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self.local_id = local_id
        self.invite_timeout = invite_timeout
        self.ack_timeout = ack_timeout
        self._calls: dict[Hashable, _Call] = {}
        self._by_call_id: dict[str, Hashable] = {}
        self._events: deque[BroadcastEvent] = deque()
        self.refused: dict[int, int] = {}  # status -> count of INVITEs refused (forged, unexpected, bad SDP)

    # --- commands -----------------------------------------------------------------------------

    def expect(self, key: Hashable, device_id: str, target: str, peer: Peer, now: float) -> None:
        """We sent ``Notify/Broadcast`` for ``target`` to ``device_id`` at ``peer``: its INVITE may come."""
        if key in self._calls:
            raise SipError(f"broadcast {key!r} already exists", status_hint=500)
        self._calls[key] = _Call(key, device_id, target, peer, now + self.invite_timeout)

    def accept(self, key: Hashable, media_host: str, media_port: int, ssrc: str, now: float) -> None:
        """Answer the device's INVITE 200: we send from (TCP: listen at / connect from) ``media_host:media_port``."""
        call = self._calls.get(key)
        if call is None or call.state is not CallState.OFFERED or call.invite is None or call.offer is None:
            raise SipError(f"broadcast {key!r} has no INVITE waiting for an answer", status_hint=500)
        assert call.transaction is not None
        answer = audio_answer(
            call.offer, origin_user=self.local_id, media_host=media_host, media_port=media_port, ssrc=ssrc
        )
        local_tag = self.endpoint.new_tag()
        contact = f"<{sip_uri(self.local_id, self.endpoint.local_host, self.endpoint.local_port)}>"
        response = make_response(
            call.invite,
            200,
            to_tag=local_tag,
            extra=[("Contact", contact), ("Content-Type", SDP_CONTENT_TYPE)],
            body=build_sdp(answer),
        )
        call.dialog = Dialog.from_uas(call.invite, local_tag)
        self.endpoint.send_response(call.transaction, response, now)
        call.state, call.deadline = CallState.ANSWERED, now + self.ack_timeout

    def reject(self, key: Hashable, status: int, now: float) -> None:
        """Refuse the device's INVITE (no media port, the speaker left meanwhile…)."""
        call = self._calls.get(key)
        if call is None or call.state is not CallState.OFFERED or call.invite is None or call.transaction is None:
            return
        self._respond(call.invite, call.transaction, status, now)
        self._end(call, "rejected")

    def hang_up(self, key: Hashable, now: float) -> None:
        """End a broadcast from our side: BYE once the call has a dialog, 487/forget before."""
        call = self._calls.get(key)
        if call is None:
            return
        if call.state is CallState.OFFERED and call.invite is not None and call.transaction is not None:
            self._respond(call.invite, call.transaction, 487, now)
        elif call.dialog is not None and call.state in (CallState.ANSWERED, CallState.ACTIVE):
            bye = call.dialog.new_request("BYE")
            self.endpoint.send_request(bye, call.peer, now, context=(self, call.key))
            call.state, call.deadline = CallState.HANGING_UP, None
            self._forget(call)  # the BYE's answer only needs to be absorbed
            return
        self._forget(call)

    def next_event(self) -> BroadcastEvent | None:
        """The next :data:`BroadcastEvent`, or None."""
        return self._events.popleft() if self._events else None

    def state_of(self, key: Hashable) -> CallState | None:
        """Where a broadcast's call stands (None: unknown or over)."""
        call = self._calls.get(key)
        return call.state if call is not None else None

    # --- timers -----------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline (the INVITE after our Broadcast, the ACK after our 200)."""
        deadlines = [c.deadline for c in self._calls.values() if c.deadline is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """No INVITE in time: the broadcast failed; no ACK in time: BYE."""
        for call in list(self._calls.values()):
            if call.deadline is None or call.deadline > now:
                continue
            if call.state is CallState.EXPECTED:
                self._end(call, "no_invite")
            elif call.state is CallState.ANSWERED:
                self.hang_up(call.key, now)
                self._events.append(AudioEnded(call.key, "no_ack"))
            else:
                call.deadline = None

    # --- endpoint events ------------------------------------------------------------------------------

    def route(self, event: SipEvent, now: float) -> bool:
        """Take INVITEs to our own ID, requests of our dialogs and answers to our BYEs; False for the rest."""
        if isinstance(event, (ResponseReceived, TransactionTimedOut)):
            context = event.context
            return isinstance(context, tuple) and len(context) == 2 and context[0] is self
        request = event.request
        try:
            call_id = request.call_id
        except SipError:
            return False
        key = self._by_call_id.get(call_id)
        if key is not None:
            return self._in_call(self._calls[key], event, now)
        if request.method == "INVITE" and event.transaction is not None and target_id(request) == self.local_id:
            self._on_invite(event, event.transaction, now)
            return True
        return False

    def _on_invite(self, event: RequestReceived, txn: str, now: float) -> None:
        request = event.request
        try:
            caller = request.from_.uri.user or ""
            tagged = request.to.tag is not None
        except SipError as exc:
            self._refuse(request, txn, exc.status_hint, now)
            return
        if tagged:  # a re-INVITE of a dialog we do not have
            self._refuse(request, txn, 481, now)
            return
        named = subject_ids(request)
        candidates = [
            c for c in self._calls.values() if c.state is CallState.EXPECTED and caller in (c.device_id, c.target)
        ]
        if not candidates:
            self._refuse(request, txn, 481, now)  # nobody asked this caller for a broadcast
            return
        call = next((c for c in candidates if c.peer == event.peer), None)
        if call is None:  # the right name from the wrong address: not the registered device
            self._refuse(request, txn, 403, now)
            return
        others = [n for n in named if n not in (self.local_id, call.device_id, call.target)]
        if others and call.target not in named:  # it answers a broadcast to another target
            self._refuse(request, txn, 403, now)
            return
        try:
            offer = parse_sdp(request.body)
            target = audio_target(offer)
        except SdpError:
            self._refuse(request, txn, 488, now)
            return
        self._respond(request, txn, 100, now)
        call.state, call.invite, call.transaction, call.offer = CallState.OFFERED, request, txn, offer
        call.deadline = None
        self._by_call_id[call_id_of(request)] = call.key
        self._events.append(AudioRequested(call.key, target))

    def _in_call(self, call: _Call, event: RequestReceived, now: float) -> bool:
        request, txn = event.request, event.transaction
        method = request.method
        if event.peer.host != call.peer.host:  # only the device may end or confirm its call
            if txn is not None:
                self._refuse(request, txn, 403, now)
            return True
        if method == "ACK":
            if call.state is CallState.ANSWERED and call.dialog is not None and call.dialog.matches(request):
                call.state, call.deadline = CallState.ACTIVE, None
                self._events.append(AudioStarted(call.key))
            return True
        if txn is None:
            return True
        if method == "BYE":
            if call.dialog is None or not call.dialog.matches(request):
                self._respond(request, txn, 481, now)
                return True
            self._respond(request, txn, 200, now)
            self._end(call, "device_bye")
        elif method == "CANCEL" and call.state is CallState.OFFERED and call.invite is not None:
            self._respond(request, txn, 200, now)
            if call.transaction is not None:
                self._respond(call.invite, call.transaction, 487, now)
            self._end(call, "cancelled")
        elif method == "INVITE":
            self._respond(request, txn, 488 if call.dialog is not None else 491, now)  # no re-INVITE support
        else:
            self._respond(request, txn, 405 if method != "CANCEL" else 481, now)
        return True

    # --- helpers ----------------------------------------------------------------------------------------

    def _end(self, call: _Call, reason: str) -> None:
        self._forget(call)
        self._events.append(AudioEnded(call.key, reason))

    def _forget(self, call: _Call) -> None:
        self._calls.pop(call.key, None)
        if call.invite is not None:
            self._by_call_id.pop(call_id_of(call.invite), None)

    def _refuse(self, request: SipRequest, txn: str, status: int, now: float) -> None:
        self.refused[status] = self.refused.get(status, 0) + 1
        self._respond(request, txn, status, now)

    def _respond(self, request: SipRequest, txn: str, status: int, now: float) -> None:
        tag = None if status == 100 else self.endpoint.new_tag()
        self.endpoint.send_response(txn, make_response(request, status, to_tag=tag), now)


def call_id_of(request: SipRequest) -> str:
    """The Call-ID (already read once when the request was routed, so it parses)."""
    return request.call_id
