"""Live play of one channel, signalling half: the gateway as UAC (docs/gb28181.md §15).

:class:`PlaySession` sends the INVITE with the live offer (Subject, ``y=``),
ACKs the device's 2xx, turns offer plus answer into the
:class:`~gateway.gb28181.sdp.MediaSessionSpec` the media layer needs, and
tears the call down with BYE. It sits on a :class:`SipEndpoint` the way
:mod:`gateway.gb28181.access` does: the owner routes the endpoint's events
to :meth:`PlaySession.handle_response` / :meth:`PlaySession.handle_request`
(each returns False for events that are not this session's; the INVITE and
BYE transactions carry the session as their ``context``), drains
:meth:`PlaySession.next_event`, and runs :meth:`PlaySession.handle_timer`
at :meth:`PlaySession.get_timer`.

The machine is one table, :data:`TRANSITIONS`. Network inputs that can
arrive late or twice (a 1xx after the 2xx, the answer to our BYE after the
device's own BYE…) are absorbed by explicit ``IGNORE`` entries; a pair that
is missing raises :class:`PlaySessionError` and moves the session to FAILED
(h2's rule, docs/design.md §3).

Stopping an unanswered INVITE CANCELs it (:meth:`SipEndpoint.send_cancel`
repeats the INVITE's branch, RFC 3261 §9.1); a 2xx that still arrives after we
gave up (it crossed the CANCEL, or came after the play timeout) is ACKed and
hung up at once (RFC 3261 §15). The owner keeps routing a stopped session's
messages for that while (``gateway.play_sessions.RETIRED_FOR``).

Playback and download sessions (an ``offer`` from ``sdp.offer_for_history``) add two
things inside the dialog (docs/gb28181.md §15.9): :meth:`PlaySession.send_info` sends a
MANSRTSP INFO (its answer or timeout comes back as :class:`PlayInfoAnswered`), and the
device's ``MediaStatus`` MESSAGE with ``NotifyType 121`` (end of file) is claimed by the
dialog (Call-ID and tags, and only from the device's own address: Hikvision writes a
From user that is not the device), answered 200 and reported as
:class:`PlayMediaEnded`; the owner then hangs up with :meth:`PlaySession.stop`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from gateway.errors import ManscdpError, SipError
from gateway.gb28181.dialog import Dialog
from gateway.gb28181.manscdp import ChildIndex, decode_xml
from gateway.gb28181.requests import sip_uri
from gateway.gb28181.sdp import (
    MediaSessionSpec,
    MediaTransport,
    SdpSession,
    answer_to_spec,
    build_sdp,
    offer_for_play,
    parse_sdp,
)
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, TransactionTimedOut
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.message import SipRequest, SipResponse, make_response
from gateway.gb28181.sip.transport import Peer

__all__ = [
    "DEFAULT_PLAY_TIMEOUT",
    "TRANSITIONS",
    "PlayAction",
    "PlayEnded",
    "PlayEvent",
    "PlayFailed",
    "PlayInfoAnswered",
    "PlayInput",
    "PlayMediaEnded",
    "PlayNotStreaming",
    "PlaySession",
    "PlaySessionError",
    "PlayStarted",
    "PlayState",
]

DEFAULT_PLAY_TIMEOUT = 10.0  # WVP playTimeout: INVITE sent → stream up (docs/gb28181.md §15.8)
SDP_CONTENT_TYPE = "APPLICATION/SDP"  # as WVP writes it (docs/gb28181.md §15.1)
MANSRTSP_CONTENT_TYPE = "Application/MANSRTSP"  # as WVP writes it (docs/gb28181.md §15.9)
MEDIA_STATUS_END = "121"  # NotifyType of MediaStatus: the device finished sending the file (§13)


class PlaySessionError(SipError):
    """An input the play machine has no transition for; the session is FAILED."""


class PlayNotStreaming(SipError):
    """An in-dialog request (MANSRTSP INFO) for a session that is not streaming (any more)."""

    status_hint = 481


class PlayState(Enum):
    """Where a live view stands (docs/design.md §3)."""

    IDLE = "idle"
    INVITING = "inviting"
    STREAMING = "streaming"
    TEARING_DOWN = "tearing down"
    CLOSED = "closed"
    FAILED = "failed"


class PlayInput(Enum):
    """What can happen to a live view."""

    START = "start"
    RECV_1XX = "recv 1xx"
    RECV_2XX = "recv 2xx"
    RECV_2XX_BAD_SDP = "recv 2xx with an unusable answer"
    RECV_ERROR = "recv 300-699"
    TIMEOUT = "no final answer (play timeout or Timer B)"
    RTP_TIMEOUT = "no media"
    STOP = "stop"
    RECV_BYE = "recv BYE"
    BYE_ANSWERED = "our BYE answered or timed out"
    SEND_INFO = "send an INFO (MANSRTSP) in the dialog"
    INFO_ANSWERED = "our INFO answered or timed out"
    RECV_MEDIA_STATUS = "recv MediaStatus 121 in the dialog"
    RECV_DIALOG_MESSAGE = "recv another MESSAGE in the dialog"


class PlayAction(Enum):
    """What a transition does besides changing state."""

    IGNORE = "ignore"
    SEND_INVITE = "send INVITE"
    CONFIRM = "form dialog, ACK, report PlayStarted"
    REJECT_ANSWER = "form dialog, ACK, BYE, report PlayFailed(488)"
    RESEND_ACK = "re-send the ACK for a retransmitted 2xx"
    HANG_UP_LATE = "ACK and BYE a 2xx that came after we gave up"
    FAIL = "report PlayFailed"
    ABANDON = "report PlayEnded before any answer"
    CANCEL = "CANCEL the pending INVITE, report PlayEnded"
    SEND_BYE = "send BYE"
    ANSWER_BYE = "answer the device's BYE 200, report PlayEnded"
    END = "report PlayEnded"
    SEND_INFO = "send the INFO"
    REFUSE_INFO = "refuse to send an INFO: PlayNotStreaming"
    REPORT_INFO = "report PlayInfoAnswered"
    MEDIA_ENDED = "answer the MediaStatus 200, report PlayMediaEnded"
    ANSWER_MESSAGE = "answer an in-dialog MESSAGE 200, nothing else"


@dataclass(frozen=True, slots=True)
class PlayStarted:
    """The device accepted: media may flow as ``spec`` says."""

    spec: MediaSessionSpec


@dataclass(frozen=True, slots=True)
class PlayFailed:
    """The play never started: the device refused, never answered, or answered nonsense."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class PlayEnded:
    """The play is over: ``reason`` is ``stopped``, ``rtp_timeout``, ``device_bye`` or ``error``."""

    reason: str


@dataclass(frozen=True, slots=True)
class PlayInfoAnswered:
    """The device answered our INFO ``transaction`` (or did not: 408); ``body`` is its MANSRTSP status, if any."""

    transaction: str
    status: int
    reason: str
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class PlayMediaEnded:
    """The device said it sent the whole file (MediaStatus 121): the owner hangs up."""

    notify_type: str = MEDIA_STATUS_END


PlayEvent = PlayStarted | PlayFailed | PlayEnded | PlayInfoAnswered | PlayMediaEnded

S, I, A = PlayState, PlayInput, PlayAction  # noqa: E741 - short names keep the table readable
_QUIET = (I.RECV_1XX, I.RECV_ERROR, I.TIMEOUT, I.RTP_TIMEOUT, I.STOP, I.BYE_ANSWERED)

TRANSITIONS: dict[tuple[PlayState, PlayInput], tuple[PlayAction, PlayState]] = {
    (S.IDLE, I.START): (A.SEND_INVITE, S.INVITING),
    (S.IDLE, I.STOP): (A.ABANDON, S.CLOSED),
    (S.INVITING, I.RECV_1XX): (A.IGNORE, S.INVITING),
    (S.INVITING, I.RECV_2XX): (A.CONFIRM, S.STREAMING),
    (S.INVITING, I.RECV_2XX_BAD_SDP): (A.REJECT_ANSWER, S.FAILED),
    (S.INVITING, I.RECV_ERROR): (A.FAIL, S.FAILED),
    (S.INVITING, I.TIMEOUT): (A.FAIL, S.FAILED),
    (S.INVITING, I.RTP_TIMEOUT): (A.FAIL, S.FAILED),
    (S.INVITING, I.STOP): (A.CANCEL, S.CLOSED),
    (S.STREAMING, I.RECV_1XX): (A.IGNORE, S.STREAMING),
    (S.STREAMING, I.RECV_2XX): (A.RESEND_ACK, S.STREAMING),
    (S.STREAMING, I.RECV_2XX_BAD_SDP): (A.RESEND_ACK, S.STREAMING),
    (S.STREAMING, I.RECV_ERROR): (A.IGNORE, S.STREAMING),
    (S.STREAMING, I.TIMEOUT): (A.IGNORE, S.STREAMING),
    (S.STREAMING, I.RTP_TIMEOUT): (A.SEND_BYE, S.TEARING_DOWN),
    (S.STREAMING, I.STOP): (A.SEND_BYE, S.TEARING_DOWN),
    (S.STREAMING, I.RECV_BYE): (A.ANSWER_BYE, S.CLOSED),
    (S.TEARING_DOWN, I.RECV_2XX): (A.RESEND_ACK, S.TEARING_DOWN),
    (S.TEARING_DOWN, I.RECV_2XX_BAD_SDP): (A.RESEND_ACK, S.TEARING_DOWN),
    (S.TEARING_DOWN, I.RECV_BYE): (A.ANSWER_BYE, S.CLOSED),  # BYE glare: both hung up
    (S.TEARING_DOWN, I.BYE_ANSWERED): (A.END, S.CLOSED),
    **{(S.TEARING_DOWN, i): (A.IGNORE, S.TEARING_DOWN) for i in _QUIET if i is not I.BYE_ANSWERED},
    **{(s, i): (A.IGNORE, s) for s in (S.CLOSED, S.FAILED) for i in _QUIET},
    **{(s, i): (A.HANG_UP_LATE, s) for s in (S.CLOSED, S.FAILED) for i in (I.RECV_2XX, I.RECV_2XX_BAD_SDP)},
    # Playback control inside the dialog (docs/gb28181.md §15.9).
    (S.STREAMING, I.SEND_INFO): (A.SEND_INFO, S.STREAMING),
    **{(s, I.SEND_INFO): (A.REFUSE_INFO, s) for s in S if s is not S.STREAMING},
    **{(s, I.INFO_ANSWERED): (A.REPORT_INFO, s) for s in S},
    (S.STREAMING, I.RECV_MEDIA_STATUS): (A.MEDIA_ENDED, S.STREAMING),
    **{(s, I.RECV_MEDIA_STATUS): (A.ANSWER_MESSAGE, s) for s in (S.TEARING_DOWN, S.CLOSED, S.FAILED)},
    **{(s, I.RECV_DIALOG_MESSAGE): (A.ANSWER_MESSAGE, s) for s in (S.STREAMING, S.TEARING_DOWN, S.CLOSED, S.FAILED)},
}


class PlaySession:
    """One live view of one channel; the gateway is the UAC (docs/gb28181.md §15.1, §15.6, §15.8)."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        gateway_id: str,
        domain: str,
        channel_id: str,
        device_peer: Peer,
        media_host: str,
        media_port: int,
        transport: MediaTransport,
        ssrc: str,
        *,
        play_timeout: float = DEFAULT_PLAY_TIMEOUT,
        stream_number: int | None = None,
        cseq: int = 1,
        offer: SdpSession | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.gateway_id = gateway_id
        self.domain = domain
        self.channel_id = channel_id
        self.device_peer = device_peer
        self.play_timeout = play_timeout
        self.state = PlayState.IDLE
        # ``offer`` replaces the live offer: a Playback or Download one (sdp.offer_for_history).
        self.offer = offer or offer_for_play(
            origin_user=channel_id,  # docs/gb28181.md §15.6 writes the channel in o=
            media_host=media_host,
            media_port=media_port,
            ssrc=ssrc,
            transport=transport,
            stream_number=stream_number,
        )
        self.dialog: Dialog | None = None
        self.spec: MediaSessionSpec | None = None
        self.invite: SipRequest | None = None
        self._cseq = cseq
        self._invite_key: str | None = None
        self._bye_key: str | None = None
        self._info_keys: set[str] = set()
        self._info_body = b""
        self._info_result: PlayInfoAnswered | None = None
        self._info_sent = ""
        self._deadline: float | None = None
        self._events: deque[PlayEvent] = deque()
        # What the current input carries, for the action that needs it.
        self._response: SipResponse | None = None
        self._request: RequestReceived | None = None
        self._failure: tuple[int, str] = (500, "")
        self._end_reason = "stopped"

    @property
    def invite_transaction(self) -> str | None:
        """The endpoint's key of our INVITE transaction, once sent."""
        return self._invite_key

    @property
    def bye_transaction(self) -> str | None:
        """The endpoint's key of our BYE transaction, once sent."""
        return self._bye_key

    # --- commands -------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Send the INVITE and arm the play timeout."""
        self._fire(I.START, now)

    def stop(self, now: float) -> None:
        """The last viewer left: BYE when streaming, give up when still inviting."""
        self._end_reason = "stopped"
        self._fire(I.STOP, now)

    def media_timeout(self, now: float) -> None:
        """The media side saw no RTP in time: hang up."""
        self._end_reason = "rtp_timeout"
        self._failure = (408, "no media")
        self._fire(I.RTP_TIMEOUT, now)

    def send_info(self, body: bytes, now: float) -> str:
        """Send a MANSRTSP INFO in the dialog; the endpoint's transaction key.

        Its answer (or timeout) comes back as :class:`PlayInfoAnswered` with that key.
        Raises :class:`PlayNotStreaming` when the session is not streaming: the
        session itself is not affected.
        """
        action, _ = TRANSITIONS[(self.state, I.SEND_INFO)]
        if action is A.REFUSE_INFO:
            raise PlayNotStreaming(f"no playback control in state {self.state.name}")
        self._info_body = body
        self._fire(I.SEND_INFO, now)
        return self._info_sent

    def next_event(self) -> PlayEvent | None:
        """The next :data:`PlayEvent`, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (the play timeout while inviting)."""
        return self._deadline if self.state is PlayState.INVITING else None

    def handle_timer(self, now: float) -> None:
        """Fire the play timeout if it is due."""
        if self._deadline is not None and now >= self._deadline and self.state is PlayState.INVITING:
            self._deadline = None
            self._failure = (408, "play timeout")
            self._fire(I.TIMEOUT, now)

    # --- endpoint events --------------------------------------------------------------------

    def handle_response(self, event: ResponseReceived | TransactionTimedOut, now: float) -> bool:
        """Feed a response or transaction timeout; False when it is not this session's."""
        if isinstance(event, TransactionTimedOut):
            if event.transaction == self._invite_key:
                self._failure = (408, "no answer (Timer B)")
                self._fire(I.TIMEOUT, now)
            elif event.transaction == self._bye_key:
                self._fire(I.BYE_ANSWERED, now)
            elif event.transaction in self._info_keys:
                self._info_keys.discard(event.transaction)
                self._info_result = PlayInfoAnswered(event.transaction, 408, "no answer")
                self._fire(I.INFO_ANSWERED, now)
            else:
                return False
            return True
        response = event.response
        if event.transaction is not None and event.transaction == self._bye_key:
            if response.status >= 200:
                self._fire(I.BYE_ANSWERED, now)
            return True
        if event.transaction is not None and event.transaction in self._info_keys:
            if response.status >= 200:
                self._info_keys.discard(event.transaction)
                self._info_result = PlayInfoAnswered(event.transaction, response.status, response.reason, response.body)
                self._fire(I.INFO_ANSWERED, now)
            return True
        if not self._is_invite_response(event):
            return False
        self._response = response
        self._fire(self._classify(response), now)
        return True

    def handle_request(self, event: RequestReceived, now: float) -> bool:
        """Feed a BYE or an in-dialog MESSAGE from the device; False when it is not this dialog's."""
        request = event.request
        if request.method == "MESSAGE":
            return self._dialog_message(event, now)
        if (
            request.method != "BYE"
            or event.transaction is None
            or self.dialog is None
            or self.state not in (PlayState.STREAMING, PlayState.TEARING_DOWN)
            or not self.dialog.matches(request)
        ):
            return False
        self._request = event
        self._fire(I.RECV_BYE, now)
        return True

    def _dialog_message(self, event: RequestReceived, now: float) -> bool:
        """A MESSAGE in our dialog from the device's address: MediaStatus 121 ends the playback.

        Matched on the dialog (Call-ID and both tags), never on the From user (Hikvision
        writes another ID there, docs/gb28181.md §15.9). The same dialog from another
        address is a forgery: 403, and the session does not hear of it.
        """
        request = event.request
        if event.transaction is None or self.dialog is None or not self.dialog.matches(request):
            return False
        if event.peer != self.device_peer:
            self.endpoint.send_response(event.transaction, make_response(request, 403), now)
            return True
        self._request = event
        self._fire(I.RECV_MEDIA_STATUS if _is_media_end(request.body) else I.RECV_DIALOG_MESSAGE, now)
        return True

    # --- the machine -------------------------------------------------------------------------

    def _fire(self, inp: PlayInput, now: float) -> None:
        transition = TRANSITIONS.get((self.state, inp))
        if transition is None:
            error = PlaySessionError(f"{inp.name} in state {self.state.name}")
            self._abort(now, error.reason)
            raise error
        action, next_state = transition
        try:
            self._run(action, inp, now)
        except SipError as exc:
            self._abort(now, exc.reason)
            raise
        self.state = next_state
        self._response = None
        self._request = None

    def _run(self, action: PlayAction, inp: PlayInput, now: float) -> None:
        if action is A.SEND_INVITE:
            self._send_invite(now)
        elif action is A.CONFIRM:
            self._confirm()
        elif action is A.REJECT_ANSWER:
            self._form_dialog_and_ack()
            self._send_bye(now)
            self._events.append(PlayFailed(*self._failure))
        elif action is A.RESEND_ACK:
            self._resend_ack()
        elif action is A.HANG_UP_LATE:
            self._hang_up_late(now)
        elif action is A.FAIL:
            self._events.append(PlayFailed(*self._failure))
        elif action is A.ABANDON:
            self._events.append(PlayEnded(self._end_reason))
        elif action is A.CANCEL:
            if self._invite_key is not None:  # RFC 3261 §9.1; a 2xx that crosses it is ACKed and BYEd
                self.endpoint.send_cancel(self._invite_key, now)
            self._events.append(PlayEnded(self._end_reason))
        elif action is A.SEND_BYE:
            self._send_bye(now)
        elif action is A.ANSWER_BYE:
            self._answer_bye(now)
        elif action is A.END:
            self._events.append(PlayEnded(self._end_reason))
        elif action is A.SEND_INFO:
            self._send_info(now)
        elif action is A.REPORT_INFO:
            if self._info_result is not None:
                self._events.append(self._info_result)
                self._info_result = None
        elif action is A.MEDIA_ENDED:
            self._answer_message(now)
            self._events.append(PlayMediaEnded())
        elif action is A.ANSWER_MESSAGE:
            self._answer_message(now)
        # A.IGNORE: nothing to do

    def _abort(self, now: float, reason: str) -> None:
        """Missing pair or broken input: FAILED, hanging up a confirmed call, reporting once."""
        if self.dialog is not None and self._bye_key is None and self.state is PlayState.STREAMING:
            self._send_bye(now)
        if self.state in (PlayState.IDLE, PlayState.INVITING):
            self._events.append(PlayFailed(500, reason))
        elif self.state in (PlayState.STREAMING, PlayState.TEARING_DOWN):
            self._events.append(PlayEnded("error"))
        self.state = PlayState.FAILED

    # --- actions ------------------------------------------------------------------------------

    def _send_invite(self, now: float) -> None:
        host, port = self.device_peer.host, self.device_peer.port
        target = sip_uri(self.channel_id, host, port)
        headers = Headers(
            [
                ("From", f"<{sip_uri(self.gateway_id, self.domain)}>;tag={self.endpoint.new_tag()}"),
                ("To", f"<{target}>"),
                ("Call-ID", self.endpoint.new_call_id()),
                ("CSeq", f"{self._cseq} INVITE"),
                ("Max-Forwards", "70"),
                ("Contact", f"<{sip_uri(self.gateway_id, self.endpoint.local_host, self.endpoint.local_port)}>"),
                # docs/gb28181.md §15.2: <sender id>:<ssrc>,<receiver id>:0
                ("Subject", f"{self.channel_id}:{self.offer.ssrc},{self.gateway_id}:0"),
                ("Content-Type", SDP_CONTENT_TYPE),
            ]
        )
        self.invite = SipRequest(headers=headers, body=build_sdp(self.offer), method="INVITE", uri=target)
        self._invite_key = self.endpoint.send_request(self.invite, self.device_peer, now, context=self)
        self._deadline = now + self.play_timeout

    def _confirm(self) -> None:
        self._form_dialog_and_ack()
        if self.spec is None:
            raise PlaySessionError("2xx confirmed without a media spec")
        self._events.append(PlayStarted(self.spec))

    def _form_dialog_and_ack(self) -> None:
        if self.invite is None or self._response is None:
            raise PlaySessionError("no 2xx to form a dialog from")
        self.dialog = Dialog.from_uac(self.invite, self._response)
        self.endpoint.send_ack(self.dialog.ack_for(self._response), self.device_peer)
        self._deadline = None

    def _resend_ack(self) -> None:
        ack = self.dialog.last_ack() if self.dialog is not None else None
        if ack is None:
            raise PlaySessionError("2xx retransmission without an ACK to repeat")
        self.endpoint.send_ack(ack, self.device_peer)

    def _hang_up_late(self, now: float) -> None:
        """RFC 3261 §15: a 2xx after we gave up is still ACKed, then BYE'd."""
        if self.dialog is not None:
            self._resend_ack()
            return
        self._form_dialog_and_ack()
        self._send_bye(now)

    def _send_bye(self, now: float) -> None:
        if self.dialog is None:
            raise PlaySessionError("BYE without a dialog")
        bye = self.dialog.new_request("BYE")
        self._bye_key = self.endpoint.send_request(bye, self.device_peer, now, context=self)

    def _send_info(self, now: float) -> None:
        if self.dialog is None:
            raise PlaySessionError("INFO without a dialog")
        info = self.dialog.new_request("INFO", self._info_body, MANSRTSP_CONTENT_TYPE)
        key = self.endpoint.send_request(info, self.device_peer, now, context=self)
        self._info_keys.add(key)
        self._info_sent = key

    def _answer_message(self, now: float) -> None:
        event = self._request
        if event is None or event.transaction is None:
            raise PlaySessionError("no MESSAGE to answer")
        self.endpoint.send_response(event.transaction, make_response(event.request, 200), now)

    def _answer_bye(self, now: float) -> None:
        event = self._request
        if event is None or event.transaction is None or self.dialog is None:
            raise PlaySessionError("no BYE to answer")
        self.dialog.accept_remote(event.request)
        response = make_response(event.request, 200)
        self.endpoint.send_response(event.transaction, response, now)
        self._events.append(PlayEnded("device_bye" if self.state is PlayState.STREAMING else self._end_reason))

    # --- classification --------------------------------------------------------------------------

    def _is_invite_response(self, event: ResponseReceived) -> bool:
        if self._invite_key is None or self.invite is None:
            return False
        if event.transaction is not None:
            return event.transaction == self._invite_key
        # A 2xx retransmitted after the INVITE transaction ended (RFC 6026 Timer M).
        response = event.response
        try:
            same_call = response.call_id == self.invite.call_id and response.cseq == self.invite.cseq
            tag = response.to.tag
        except SipError:
            return False
        return same_call and (self.dialog is None or tag == self.dialog.remote_tag)

    def _classify(self, response: SipResponse) -> PlayInput:
        if response.status < 200:
            return I.RECV_1XX
        if response.status >= 300:
            self._failure = (response.status, response.reason)
            return I.RECV_ERROR
        if self.state is not PlayState.INVITING:
            return I.RECV_2XX  # a retransmission or a late answer: its SDP no longer matters
        try:
            self.spec = answer_to_spec(self.offer, parse_sdp(response.body))
        except SipError as exc:  # SdpError: 488
            self._failure = (exc.status_hint, exc.reason)
            return I.RECV_2XX_BAD_SDP
        return I.RECV_2XX


def _is_media_end(body: bytes) -> bool:
    """Whether a MESSAGE body is ``Notify/MediaStatus`` with ``NotifyType 121`` (docs/gb28181.md §13)."""
    try:
        root = decode_xml(body).root
    except ManscdpError:
        return False
    fields = ChildIndex(root)
    return (fields.text("CmdType") or "").lower() == "mediastatus" and fields.text("NotifyType") == MEDIA_STATUS_END
