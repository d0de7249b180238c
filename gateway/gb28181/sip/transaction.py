"""SIP transactions as transition tables (RFC 3261 §17, RFC 6026).

Each transaction kind is one ``dict[(state, input)] -> (action, next state)``.
A pair missing from the table is a protocol error: local misuse (the TU
answering twice) raises :class:`TransactionError`; a stray network input is
simply absorbed by an explicit ``IGNORE`` entry. The machines never touch a
socket or a clock: :meth:`Transaction.fire` returns :class:`Effects` (bytes
to send, a response for the TU, a timeout) and the timers it wants, keyed by
RFC name, in :attr:`Transaction.timers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from gateway.errors import SipError
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.message import SipRequest, SipResponse
from gateway.gb28181.sip.timers import SipTimers
from gateway.gb28181.sip.transport import Peer


class TransactionError(SipError):
    """The transaction user did something the state machine does not allow."""


class TxState(Enum):
    """Transaction states named after RFC 3261 §17 and RFC 6026."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class TxInput(Enum):
    """What can happen to a transaction."""

    RECV_1XX = "recv 1xx"
    RECV_2XX = "recv 2xx"
    RECV_300_699 = "recv 300-699"
    RECV_REQUEST = "recv request retransmission"
    RECV_ACK = "recv ACK"
    SEND_1XX = "TU sends 1xx"
    SEND_2XX = "TU sends 2xx"
    SEND_300_699 = "TU sends 300-699"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TRANSPORT_ERROR = "transport error"


class Action(Enum):
    """What a transition does besides changing state."""

    IGNORE = "ignore"
    RETRANSMIT_REQUEST = "retransmit request"
    DELIVER = "deliver response to TU"
    DELIVER_AND_ACK = "deliver response to TU and send ACK"
    RESEND_ACK = "resend ACK"
    SEND_RESPONSE = "send response"
    RESEND_RESPONSE = "resend last response"
    TIMEOUT = "report timeout to TU"
    STOP = "stop"


S, I, A = TxState, TxInput, Action  # noqa: E741 - short names keep the tables readable
Transition = tuple[Action, TxState]


@dataclass(slots=True)
class Effects:
    """What the endpoint must do after a transition."""

    send: list[bytes] = field(default_factory=list)
    deliver: SipResponse | None = None
    timed_out: bool = False


def response_input(status: int, *, sending: bool) -> TxInput:
    """Classify a status code as a transaction input."""
    if status < 200:
        return I.SEND_1XX if sending else I.RECV_1XX
    if status < 300:
        return I.SEND_2XX if sending else I.RECV_2XX
    return I.SEND_300_699 if sending else I.RECV_300_699


class Transaction:
    """Common machinery: the table walk and timer bookkeeping."""

    TABLE: ClassVar[dict[tuple[TxState, TxInput], Transition]] = {}
    INITIAL: ClassVar[TxState]

    def __init__(self, key: str, request: SipRequest, peer: Peer, timers: SipTimers, context: object = None) -> None:
        self.key = key
        self.request = request
        self.peer = peer
        self.sip_timers = timers
        self.context = context
        self.state = self.INITIAL
        self.timers: dict[TxInput, float] = {}
        self._interval = timers.t1
        self._request_bytes = b""  # serialised on first send: server transactions never need it
        self.last_response: SipResponse | None = None
        self._last_response_bytes = b""
        self._ack = b""

    def _request_wire(self) -> bytes:
        if not self._request_bytes:
            self._request_bytes = bytes(self.request)
        return self._request_bytes

    @property
    def reliable(self) -> bool:
        """True when the transport needs no retransmissions."""
        return self.peer.reliable

    @property
    def terminated(self) -> bool:
        """True once the transaction can be forgotten."""
        return self.state is S.TERMINATED

    def next_deadline(self) -> float | None:
        """The earliest armed timer."""
        return min(self.timers.values()) if self.timers else None

    def fire(self, inp: TxInput, now: float, response: SipResponse | None = None) -> Effects:
        """Apply one input; raise TransactionError for a pair the table lacks."""
        transition = self.TABLE.get((self.state, inp))
        if transition is None:
            error = TransactionError(f"{type(self).__name__}: {inp.value} in state {self.state.value}")
            self.state = S.TERMINATED
            self.timers.clear()
            raise error
        action, next_state = transition
        self.timers.pop(inp, None)
        effects = Effects()
        self._act(action, inp, now, response, effects)
        self._enter(next_state, now)
        return effects

    def expired_timers(self, now: float) -> list[TxInput]:
        """Timers due at ``now``, earliest first."""
        return sorted((t for t, at in self.timers.items() if at <= now), key=lambda t: self.timers[t])

    def _act(self, action: Action, inp: TxInput, now: float, response: SipResponse | None, fx: Effects) -> None:
        if action is A.RETRANSMIT_REQUEST:
            fx.send.append(self._request_wire())
            self._interval = self._next_interval()
            self.timers[inp] = now + self._interval
        elif action in (A.DELIVER, A.DELIVER_AND_ACK):
            fx.deliver = response
            if action is A.DELIVER_AND_ACK and response is not None:
                self._ack = bytes(build_ack(self.request, response))
                fx.send.append(self._ack)
        elif action is A.RESEND_ACK:
            fx.send.append(self._ack)
        elif action is A.SEND_RESPONSE and response is not None:
            self.last_response = response
            self._last_response_bytes = bytes(response)
            fx.send.append(self._last_response_bytes)
        elif action is A.RESEND_RESPONSE:
            if self._last_response_bytes:
                fx.send.append(self._last_response_bytes)
            if inp is I.TIMER_G:
                self._interval = min(2 * self._interval, self.sip_timers.t2)
                self.timers[I.TIMER_G] = now + self._interval
        elif action is A.TIMEOUT:
            fx.timed_out = True

    def _next_interval(self) -> float:
        return min(2 * self._interval, self.sip_timers.t2)

    def _enter(self, state: TxState, now: float) -> None:
        if state is self.state:
            return
        self.state = state
        self.timers.clear()
        self._on_enter(state, now)

    def _on_enter(self, state: TxState, now: float) -> None:
        """Arm the timers of a new state."""


RELEASED_REQUEST = SipRequest(headers=Headers(), body=b"", method="", uri="")
"""Stands in for a request a finished server transaction no longer needs."""


class ClientNonInvite(Transaction):
    """RFC 3261 §17.1.2 non-INVITE client transaction (REGISTER, MESSAGE, BYE…)."""

    INITIAL = S.TRYING
    TABLE = {
        (S.TRYING, I.TIMER_E): (A.RETRANSMIT_REQUEST, S.TRYING),
        (S.TRYING, I.TIMER_F): (A.TIMEOUT, S.TERMINATED),
        (S.TRYING, I.TRANSPORT_ERROR): (A.TIMEOUT, S.TERMINATED),
        (S.TRYING, I.RECV_1XX): (A.DELIVER, S.PROCEEDING),
        (S.TRYING, I.RECV_2XX): (A.DELIVER, S.COMPLETED),
        (S.TRYING, I.RECV_300_699): (A.DELIVER, S.COMPLETED),
        (S.PROCEEDING, I.TIMER_E): (A.RETRANSMIT_REQUEST, S.PROCEEDING),
        (S.PROCEEDING, I.TIMER_F): (A.TIMEOUT, S.TERMINATED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): (A.TIMEOUT, S.TERMINATED),
        (S.PROCEEDING, I.RECV_1XX): (A.DELIVER, S.PROCEEDING),
        (S.PROCEEDING, I.RECV_2XX): (A.DELIVER, S.COMPLETED),
        (S.PROCEEDING, I.RECV_300_699): (A.DELIVER, S.COMPLETED),
        (S.COMPLETED, I.RECV_1XX): (A.IGNORE, S.COMPLETED),
        (S.COMPLETED, I.RECV_2XX): (A.IGNORE, S.COMPLETED),
        (S.COMPLETED, I.RECV_300_699): (A.IGNORE, S.COMPLETED),
        (S.COMPLETED, I.TIMER_K): (A.STOP, S.TERMINATED),
    }

    _timer_f_at: float | None = None

    def start(self, now: float) -> Effects:
        """Send the request and arm Timers E and F."""
        if not self.reliable:
            self.timers[I.TIMER_E] = now + self.sip_timers.e
        self._timer_f_at = now + self.sip_timers.f
        self.timers[I.TIMER_F] = self._timer_f_at
        return Effects(send=[self._request_wire()])

    def _next_interval(self) -> float:
        if self.state is S.PROCEEDING:  # §17.1.2.2: T2 once a provisional arrived
            return self.sip_timers.t2
        return min(2 * self._interval, self.sip_timers.t2)

    def _on_enter(self, state: TxState, now: float) -> None:
        if state is S.PROCEEDING:
            if not self.reliable:
                self.timers[I.TIMER_E] = now + self.sip_timers.t2
            # §17.1.2.2: Timer F keeps running from the first send; a 1xx
            # must not push the 64*T1 timeout further out.
            f_at = self._timer_f_at
            self.timers[I.TIMER_F] = f_at if f_at is not None else now + self.sip_timers.f
        elif state is S.COMPLETED:
            self.timers[I.TIMER_K] = now + self.sip_timers.k(self.reliable)


class ClientInvite(Transaction):
    """RFC 3261 §17.1.1 INVITE client transaction with the RFC 6026 Accepted state."""

    INITIAL = S.CALLING
    TABLE = {
        (S.CALLING, I.TIMER_A): (A.RETRANSMIT_REQUEST, S.CALLING),
        (S.CALLING, I.TIMER_B): (A.TIMEOUT, S.TERMINATED),
        (S.CALLING, I.TRANSPORT_ERROR): (A.TIMEOUT, S.TERMINATED),
        (S.CALLING, I.RECV_1XX): (A.DELIVER, S.PROCEEDING),
        (S.CALLING, I.RECV_2XX): (A.DELIVER, S.ACCEPTED),
        (S.CALLING, I.RECV_300_699): (A.DELIVER_AND_ACK, S.COMPLETED),
        (S.PROCEEDING, I.RECV_1XX): (A.DELIVER, S.PROCEEDING),
        (S.PROCEEDING, I.RECV_2XX): (A.DELIVER, S.ACCEPTED),
        (S.PROCEEDING, I.RECV_300_699): (A.DELIVER_AND_ACK, S.COMPLETED),
        (S.PROCEEDING, I.TIMER_B): (A.TIMEOUT, S.TERMINATED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): (A.TIMEOUT, S.TERMINATED),
        (S.COMPLETED, I.RECV_300_699): (A.RESEND_ACK, S.COMPLETED),
        (S.COMPLETED, I.RECV_1XX): (A.IGNORE, S.COMPLETED),
        (S.COMPLETED, I.RECV_2XX): (A.IGNORE, S.COMPLETED),  # a late or forked 2xx: absorb, don't die
        (S.COMPLETED, I.TIMER_D): (A.STOP, S.TERMINATED),
        (S.ACCEPTED, I.RECV_2XX): (A.DELIVER, S.ACCEPTED),  # RFC 6026: 2xx retransmits go to the TU
        (S.ACCEPTED, I.RECV_1XX): (A.IGNORE, S.ACCEPTED),
        (S.ACCEPTED, I.RECV_300_699): (A.IGNORE, S.ACCEPTED),
        (S.ACCEPTED, I.TIMER_M): (A.STOP, S.TERMINATED),
    }

    def start(self, now: float) -> Effects:
        """Send the INVITE and arm Timers A and B."""
        if not self.reliable:
            self.timers[I.TIMER_A] = now + self.sip_timers.a
        self.timers[I.TIMER_B] = now + self.sip_timers.b
        return Effects(send=[self._request_wire()])

    def _next_interval(self) -> float:
        # §17.1.1.2: Timer A doubles without the T2 cap that Timer E has.
        return 2 * self._interval

    def _on_enter(self, state: TxState, now: float) -> None:
        if state is S.PROCEEDING:
            # Deviation: the RFC runs no timer in Proceeding and leaves it to
            # the TU to CANCEL. We re-arm Timer B from the 1xx so a device that
            # answers 100 Trying and then nothing does not pin the transaction.
            self.timers[I.TIMER_B] = now + self.sip_timers.b
        elif state is S.COMPLETED:
            self.timers[I.TIMER_D] = now + self.sip_timers.d(self.reliable)
        elif state is S.ACCEPTED:
            self.timers[I.TIMER_M] = now + self.sip_timers.m


class ServerNonInvite(Transaction):
    """RFC 3261 §17.2.2 non-INVITE server transaction."""

    INITIAL = S.TRYING
    TABLE = {
        (S.TRYING, I.RECV_REQUEST): (A.IGNORE, S.TRYING),
        (S.TRYING, I.SEND_1XX): (A.SEND_RESPONSE, S.PROCEEDING),
        (S.TRYING, I.SEND_2XX): (A.SEND_RESPONSE, S.COMPLETED),
        (S.TRYING, I.SEND_300_699): (A.SEND_RESPONSE, S.COMPLETED),
        (S.PROCEEDING, I.RECV_REQUEST): (A.RESEND_RESPONSE, S.PROCEEDING),
        (S.PROCEEDING, I.SEND_1XX): (A.SEND_RESPONSE, S.PROCEEDING),
        (S.PROCEEDING, I.SEND_2XX): (A.SEND_RESPONSE, S.COMPLETED),
        (S.PROCEEDING, I.SEND_300_699): (A.SEND_RESPONSE, S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): (A.STOP, S.TERMINATED),
        (S.COMPLETED, I.RECV_REQUEST): (A.RESEND_RESPONSE, S.COMPLETED),
        (S.COMPLETED, I.TIMER_J): (A.STOP, S.TERMINATED),
        (S.COMPLETED, I.TRANSPORT_ERROR): (A.STOP, S.TERMINATED),
    }

    def _on_enter(self, state: TxState, now: float) -> None:
        if state is S.COMPLETED:
            self.timers[I.TIMER_J] = now + self.sip_timers.j(self.reliable)
            # For the 32 s of Timer J only the response bytes matter: drop the parsed
            # request and response (dozens of objects each) so that a city's worth of
            # keepalive transactions stays cheap for memory and the garbage collector.
            self.request = RELEASED_REQUEST
            self.last_response = None


class ServerInvite(Transaction):
    """RFC 3261 §17.2.1 INVITE server transaction with the RFC 6026 Accepted state.

    Unlike the RFC, the 2xx is retransmitted here (Timer G) until the ACK
    arrives, which the RFC leaves to the UAS core; keeping it in the
    transaction means the dialog layer never runs timers of its own.
    """

    INITIAL = S.PROCEEDING
    TABLE = {
        (S.PROCEEDING, I.RECV_REQUEST): (A.RESEND_RESPONSE, S.PROCEEDING),
        (S.PROCEEDING, I.SEND_1XX): (A.SEND_RESPONSE, S.PROCEEDING),
        (S.PROCEEDING, I.SEND_2XX): (A.SEND_RESPONSE, S.ACCEPTED),
        (S.PROCEEDING, I.SEND_300_699): (A.SEND_RESPONSE, S.COMPLETED),
        (S.PROCEEDING, I.TRANSPORT_ERROR): (A.STOP, S.TERMINATED),
        (S.COMPLETED, I.RECV_REQUEST): (A.RESEND_RESPONSE, S.COMPLETED),
        (S.COMPLETED, I.TIMER_G): (A.RESEND_RESPONSE, S.COMPLETED),
        (S.COMPLETED, I.TIMER_H): (A.TIMEOUT, S.TERMINATED),
        (S.COMPLETED, I.RECV_ACK): (A.IGNORE, S.CONFIRMED),
        (S.COMPLETED, I.TRANSPORT_ERROR): (A.TIMEOUT, S.TERMINATED),
        (S.CONFIRMED, I.RECV_ACK): (A.IGNORE, S.CONFIRMED),
        (S.CONFIRMED, I.RECV_REQUEST): (A.IGNORE, S.CONFIRMED),
        (S.CONFIRMED, I.TIMER_I): (A.STOP, S.TERMINATED),
        (S.ACCEPTED, I.RECV_REQUEST): (A.RESEND_RESPONSE, S.ACCEPTED),
        (S.ACCEPTED, I.SEND_2XX): (A.SEND_RESPONSE, S.ACCEPTED),
        (S.ACCEPTED, I.TIMER_G): (A.RESEND_RESPONSE, S.ACCEPTED),
        (S.ACCEPTED, I.RECV_ACK): (A.STOP, S.TERMINATED),
        (S.ACCEPTED, I.TIMER_L): (A.TIMEOUT, S.TERMINATED),
        (S.ACCEPTED, I.TRANSPORT_ERROR): (A.STOP, S.TERMINATED),
    }

    def _on_enter(self, state: TxState, now: float) -> None:
        if state in (S.COMPLETED, S.ACCEPTED):
            if not self.reliable:
                self._interval = self.sip_timers.g
                self.timers[I.TIMER_G] = now + self.sip_timers.g
            self.timers[I.TIMER_H if state is S.COMPLETED else I.TIMER_L] = now + self.sip_timers.h
        elif state is S.CONFIRMED:
            self.timers[I.TIMER_I] = now + self.sip_timers.i(self.reliable)


def build_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK a client transaction sends for a non-2xx final response (§17.1.1.3)."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    for name in ("From", "Call-ID"):
        value = invite.headers.get(name)
        if value is not None:
            headers.add(name, value)
    headers.add("To", response.headers.get("To") or invite.headers.get("To") or "")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("CSeq", f"{invite.cseq.seq} ACK")
    headers.add("Max-Forwards", "70")
    return SipRequest(headers=headers, body=b"", method="ACK", uri=invite.uri)
