"""The SIP endpoint core: bytes in, events and bytes out, no I/O.

:class:`SipEndpoint` owns the transaction layer. It parses what the transport
hands it, absorbs retransmissions, matches responses to client transactions
by branch and method (RFC 3261 §17.1.3) and requests to server transactions
(§17.2.3), stamps ``received``/``rport`` on the top Via (RFC 3581) so devices
behind NAT get their answers, and reports everything else to the
application as events. Malformed input never raises out of :meth:`receive`:
it is answered with a stateless 400/513 when that is possible, otherwise
dropped and counted.

The asyncio adapters call :meth:`receive`, then drain :meth:`next_event`
and :meth:`data_to_send`, and re-arm one timer at :meth:`get_timer`.
"""

from __future__ import annotations

import contextlib
import heapq
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import MessageTooLarge, SipError, SipParseError
from gateway.gb28181.sip.headers import Headers, Via, split_top_level
from gateway.gb28181.sip.idsource import IdSource, new_branch
from gateway.gb28181.sip.message import (
    MAX_MESSAGE_SIZE,
    SipRequest,
    SipResponse,
    check_mandatory,
    make_response,
    parse_head,
    parse_message,
)
from gateway.gb28181.sip.timers import SipTimers
from gateway.gb28181.sip.transaction import (
    ClientInvite,
    ClientNonInvite,
    Effects,
    ServerInvite,
    ServerNonInvite,
    Transaction,
    TransactionError,
    TxInput,
    TxState,
    response_input,
)
from gateway.gb28181.sip.transport import Peer, Transport

MAX_TRANSACTIONS = 200_000  # a hard cap: beyond it new requests get 503

# Per-method counters only for these, so a flood of made-up methods cannot
# grow ``stats`` without bound.
_COUNTED_METHODS = frozenset(
    ("REGISTER", "MESSAGE", "INVITE", "ACK", "BYE", "CANCEL", "INFO", "SUBSCRIBE", "NOTIFY", "OPTIONS", "UPDATE")
)


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the application (retransmissions never show up here).

    ``transaction`` is None for an ACK to a 2xx, which has no transaction.
    """

    request: SipRequest
    peer: Peer
    transaction: str | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for a request this endpoint sent.

    ``transaction`` is None for a 2xx retransmission that arrived after the
    INVITE transaction ended (the dialog layer re-sends its ACK).
    """

    response: SipResponse
    peer: Peer
    transaction: str | None
    context: object


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """A client transaction got no final response (Timer B/F) or hit a transport error."""

    transaction: str
    request: SipRequest
    peer: Peer
    context: object


SipEvent = RequestReceived | ResponseReceived | TransactionTimedOut


class SipEndpoint:
    """Transaction layer and message codec for one local SIP address."""

    def __init__(
        self,
        ids: IdSource,
        *,
        local_host: str = "127.0.0.1",
        local_port: int = 5060,
        timers: SipTimers | None = None,
        max_message_size: int = MAX_MESSAGE_SIZE,
        user_agent: str = "kgw",
    ) -> None:
        self.ids = ids
        self.local_host = local_host
        self.local_port = local_port
        self.timers = timers or SipTimers()
        self.max_message_size = max_message_size
        self.user_agent = user_agent
        self.stats: Counter[str] = Counter()
        self._transactions: dict[str, Transaction] = {}
        self._accepted_invites: dict[tuple[str, int], str] = {}  # (Call-ID, CSeq) -> server txn
        # A UDP retransmission is the same bytes from the same address: (hash of the datagram,
        # peer) -> its non-INVITE server transaction, so a storm's retransmitted REGISTERs are
        # absorbed without being parsed again (they were ~30 % of the REGISTERs at 20k devices).
        self._datagrams: dict[tuple[int, Peer], str] = {}
        self._datagram_of: dict[str, tuple[int, Peer]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._scheduled: dict[str, float] = {}
        self._seq = 0
        self._events: deque[SipEvent] = deque()
        self._outgoing: list[tuple[bytes, Peer]] = []
        self.output_ready: Callable[[], None] | None = None
        """Called when output is queued while none was waiting: the I/O layer schedules one send.

        Commands (a query, an alarm's answer, a BYE) come from anywhere in the
        program; this is how their bytes leave without every caller flushing.
        """

    # --- what the I/O layer calls --------------------------------------------

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        """Handle one datagram or one framed stream message."""
        self.stats["bytes_in"] += len(data)
        if self._datagrams and self._absorbed(data, peer, now):
            return
        try:
            message = parse_message(data, max_size=self.max_message_size)
        except MessageTooLarge:
            self.stats["dropped_too_large"] += 1
            self._answer_unparsable(data[: self.max_message_size], peer, 513)
            return
        except SipParseError:
            self.stats["dropped_unparsable"] += 1
            return
        try:
            check_mandatory(message)
        except SipParseError:
            self.stats["dropped_bad_headers"] += 1
            if isinstance(message, SipRequest) and message.method != "ACK":
                self._send_stateless_error(message, peer, 400)
            return
        if isinstance(message, SipRequest):
            key = self._receive_request(message, peer, now)
            if key is not None and peer.transport is Transport.UDP and message.method != "INVITE":
                mark = (hash(data), peer)
                self._datagrams[mark] = key
                self._datagram_of[key] = mark
        else:
            self._receive_response(message, peer, now)

    def _absorbed(self, data: bytes, peer: Peer, now: float) -> bool:
        """A byte-identical retransmission of a request whose server transaction lives: absorbed.

        The hash is SipHash with a per-process key and the sender must be the same
        address, so only a true retransmission lands here; it is counted and handled
        exactly as the parsed path would (the transaction resends its last answer).
        """
        key = self._datagrams.get((hash(data), peer))
        txn = self._transactions.get(key) if key is not None else None
        if txn is None:
            return False
        method = key.rpartition("|")[2] if key is not None else ""  # the key ends with the method
        self.stats[f"in_request_{method if method in _COUNTED_METHODS else 'other'}"] += 1
        self.stats["retransmission_absorbed"] += 1
        self.stats["retransmission_unparsed"] += 1
        if (txn.state, TxInput.RECV_REQUEST) in txn.TABLE:
            self._fire(txn, TxInput.RECV_REQUEST, now)
            self._after(txn)
        return True

    def reject_oversized(self, head: bytes, peer: Peer) -> None:
        """Answer 513 to a stream message the framer refused for its size."""
        self.stats["dropped_too_large"] += 1
        self._answer_unparsable(head, peer, 513)

    def next_event(self) -> SipEvent | None:
        """The next event for the application, or None."""
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> list[tuple[bytes, Peer]]:
        """Everything to transmit now, in order; the list is handed over."""
        out, self._outgoing = self._outgoing, []
        return out

    @property
    def has_output(self) -> bool:
        """Whether :meth:`data_to_send` has something."""
        return bool(self._outgoing)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called."""
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, now: float) -> None:
        """Fire every transaction timer due at ``now``."""
        while self._heap and self._heap[0][0] <= now:
            _, _, key = heapq.heappop(self._heap)
            self._scheduled.pop(key, None)
            txn = self._transactions.get(key)
            if txn is None:
                continue
            for timer in txn.expired_timers(now):
                # An earlier timer of this batch may have changed state and
                # cleared or re-armed this one: fire only if still due.
                due = txn.timers.get(timer)
                if due is not None and due <= now:
                    self._fire(txn, timer, now)
                if txn.terminated:
                    break
            self._after(txn)

    def transport_error(self, peer: Peer, now: float) -> None:
        """A TCP connection closed: fail the transactions that used it."""
        for txn in [t for t in self._transactions.values() if t.peer == peer]:
            if (txn.state, TxInput.TRANSPORT_ERROR) in txn.TABLE:
                self._fire(txn, TxInput.TRANSPORT_ERROR, now)
            else:
                txn.state = TxState.TERMINATED
            self._after(txn)

    @property
    def transaction_count(self) -> int:
        """Live transactions (for metrics and leak tests)."""
        return len(self._transactions)

    # --- what the application calls --------------------------------------------

    def send_request(self, request: SipRequest, peer: Peer, now: float, context: object = None) -> str:
        """Start a client transaction; return its key.

        A Via with a fresh branch and ``rport`` is put on top; the request
        must already carry From, To, Call-ID, CSeq and Max-Forwards.
        """
        branch = new_branch(self.ids)
        request.headers.prepend("Via", self._via(peer, branch))
        if "User-Agent" not in request.headers:
            request.headers.add("User-Agent", self.user_agent)
        key = f"{branch}|{request.method}"
        cls = ClientInvite if request.method == "INVITE" else ClientNonInvite
        txn = cls(key, request, peer, self.timers, context)
        self._transactions[key] = txn
        self._emit(txn, txn.start(now))
        self._after(txn)
        self.stats[f"out_request_{request.method}"] += 1
        return key

    def send_cancel(self, invite_transaction: str, now: float) -> str | None:
        """CANCEL a pending INVITE (RFC 3261 §9.1): same branch, Call-ID, From, To and CSeq number.

        Returns the CANCEL's transaction key, or None when the INVITE already has a
        final answer (then the caller BYEs the dialog instead).
        """
        txn = self._transactions.get(invite_transaction)
        if not isinstance(txn, ClientInvite) or txn.state not in (TxState.CALLING, TxState.PROCEEDING):
            return None
        invite = txn.request
        headers = Headers()
        headers.add("Via", invite.headers.get_all("Via")[0])
        for name in ("From", "To", "Call-ID"):
            value = invite.headers.get(name)
            if value is not None:
                headers.add(name, value)
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
        headers.add("Max-Forwards", "70")
        cancel = SipRequest(headers=headers, body=b"", method="CANCEL", uri=invite.uri)
        key = f"{invite.top_via.branch}|CANCEL"
        cancel_txn = ClientNonInvite(key, cancel, txn.peer, self.timers, txn.context)
        self._transactions[key] = cancel_txn
        self._emit(cancel_txn, cancel_txn.start(now))
        self._after(cancel_txn)
        self.stats["out_request_CANCEL"] += 1
        return key

    def send_ack(self, ack: SipRequest, peer: Peer) -> None:
        """Send an ACK for a 2xx (a transaction of its own, §17.1.1.3)."""
        ack.headers.prepend("Via", self._via(peer, new_branch(self.ids)))
        self._queue(bytes(ack), peer)

    def send_response(self, transaction: str, response: SipResponse, now: float) -> bool:
        """Answer a server transaction; False if it no longer exists."""
        txn = self._transactions.get(transaction)
        if txn is None or txn.terminated:
            self.stats["response_without_transaction"] += 1
            return False
        inp = response_input(response.status, sending=True)
        if (txn.state, inp) not in txn.TABLE:
            # The TU answering twice: refuse the second answer but keep the
            # transaction, which still has to absorb retransmissions (firing
            # the missing pair would terminate it).
            self.stats["response_refused_by_state"] += 1
            return False
        if "User-Agent" not in response.headers and "Server" not in response.headers:
            response.headers.add("Server", self.user_agent)
        if response.status >= 200:  # final answers, by request method and class
            method = txn.request.method if txn.request.method in _COUNTED_METHODS else "other"
            self.stats[f"answered_{method}_{response.status // 100}xx"] += 1
        self._fire(txn, inp, now, response)
        if isinstance(txn, ServerInvite) and 200 <= response.status < 300:
            self._accepted_invites[(txn.request.call_id, txn.request.cseq.seq)] = txn.key
        self._after(txn)
        self.stats[f"out_response_{response.status // 100}xx"] += 1
        return True

    def new_tag(self) -> str:
        """A fresh From/To tag."""
        return self.ids.token(6)

    def new_call_id(self) -> str:
        """A fresh Call-ID."""
        return f"{self.ids.token(12)}@{self.local_host}"

    # --- internals ----------------------------------------------------------------

    def _queue(self, data: bytes, peer: Peer) -> None:
        self._outgoing.append((data, peer))
        if len(self._outgoing) == 1 and self.output_ready is not None:
            self.output_ready()

    def _via(self, peer: Peer, branch: str) -> str:
        return f"SIP/2.0/{peer.transport.value} {self.local_host}:{self.local_port};rport;branch={branch}"

    def _receive_request(self, request: SipRequest, peer: Peer, now: float) -> str | None:
        """Match or start a server transaction; the key of a new one (None: ACK, retransmission, refusal)."""
        method_label = request.method if request.method in _COUNTED_METHODS else "other"
        self.stats[f"in_request_{method_label}"] += 1
        via = request.top_via  # parsed once (cached); stamping keeps branch, host and port
        _stamp_via(request, peer, via)
        method = "INVITE" if request.method == "ACK" else request.method
        key = f"{via.branch}|{via.host}:{via.port or 5060}|{method}"
        txn = self._transactions.get(key)
        if request.method == "ACK":
            self._receive_ack(request, peer, txn, now)
            return None
        if txn is not None:
            self.stats["retransmission_absorbed"] += 1
            if (txn.state, TxInput.RECV_REQUEST) in txn.TABLE:
                self._fire(txn, TxInput.RECV_REQUEST, now)
                self._after(txn)
            return None
        if len(self._transactions) >= MAX_TRANSACTIONS:
            self.stats["refused_overload"] += 1
            self._send_stateless_error(request, peer, 503)
            return None
        cls = ServerInvite if request.method == "INVITE" else ServerNonInvite
        txn = cls(key, request, peer, self.timers)
        self._transactions[key] = txn
        self._events.append(RequestReceived(request, peer, key))
        return key

    def _receive_ack(self, ack: SipRequest, peer: Peer, txn: Transaction | None, now: float) -> None:
        if txn is not None and txn.state in (TxState.COMPLETED, TxState.CONFIRMED):
            self._fire(txn, TxInput.RECV_ACK, now)  # ACK to a non-2xx: absorbed
            self._after(txn)
            return
        accepted_key = self._accepted_invites.pop((ack.call_id, ack.cseq.seq), None)
        accepted = self._transactions.get(accepted_key) if accepted_key else None
        if accepted is None and txn is not None:
            # Some UAs reuse the INVITE's branch on the ACK for a 2xx. It still
            # stops the 2xx retransmissions and still goes to the TU below.
            accepted = txn
        if accepted is not None and accepted.state is TxState.ACCEPTED:
            self._fire(accepted, TxInput.RECV_ACK, now)
            self._after(accepted)
        self._events.append(RequestReceived(ack, peer, None))

    def _receive_response(self, response: SipResponse, peer: Peer, now: float) -> None:
        self.stats[f"in_response_{response.status // 100}xx"] += 1
        via = response.top_via
        cseq = response.cseq
        key = f"{via.branch}|{cseq.method}"
        txn = self._transactions.get(key)
        if txn is None:
            if cseq.method == "INVITE" and 200 <= response.status < 300:
                self._events.append(ResponseReceived(response, peer, None, None))
            else:
                self.stats["stray_response"] += 1
            return
        try:
            self._fire(txn, response_input(response.status, sending=False), now, response)
        except TransactionError:
            self.stats["response_refused_by_state"] += 1
        self._after(txn)

    def _fire(self, txn: Transaction, inp: TxInput, now: float, response: SipResponse | None = None) -> None:
        effects = txn.fire(inp, now, response)
        self._emit(txn, effects)

    def _emit(self, txn: Transaction, effects: Effects) -> None:
        for data in effects.send:
            self._queue(data, txn.peer)
        if effects.deliver is not None:
            self._events.append(ResponseReceived(effects.deliver, txn.peer, txn.key, txn.context))
        if effects.timed_out:
            if isinstance(txn, (ClientInvite, ClientNonInvite)):
                self.stats["client_timeout"] += 1
                self._events.append(TransactionTimedOut(txn.key, txn.request, txn.peer, txn.context))
            else:
                self.stats["server_timeout"] += 1

    def _after(self, txn: Transaction) -> None:
        """Forget a terminated transaction or (re)schedule its next timer."""
        if txn.terminated:
            self._transactions.pop(txn.key, None)
            self._scheduled.pop(txn.key, None)
            mark = self._datagram_of.pop(txn.key, None)
            if mark is not None and self._datagrams.get(mark) == txn.key:
                del self._datagrams[mark]
            if isinstance(txn, ServerInvite):
                # Timer L or a transport error ended it before the ACK came.
                accepted = (txn.request.call_id, txn.request.cseq.seq)
                if self._accepted_invites.get(accepted) == txn.key:
                    del self._accepted_invites[accepted]
            return
        deadline = txn.next_deadline()
        if deadline is None:
            return
        scheduled = self._scheduled.get(txn.key)
        if scheduled is None or deadline < scheduled:
            self._scheduled[txn.key] = deadline
            self._seq += 1
            heapq.heappush(self._heap, (deadline, self._seq, txn.key))

    def _answer_unparsable(self, data: bytes, peer: Peer, status: int) -> None:
        try:
            # The head alone: its Content-Length points at a body that is
            # not there, which parse_message would refuse.
            message = parse_head(data)
            check_mandatory(message)
        except SipError:
            return
        if isinstance(message, SipRequest) and message.method != "ACK":
            self._send_stateless_error(message, peer, status)

    def _send_stateless_error(self, request: SipRequest, peer: Peer, status: int) -> None:
        """Answer without a transaction (sipgo does this for broken requests)."""
        if not request.headers.get_all("Via"):
            return
        with contextlib.suppress(SipParseError):  # answer even if the Via is odd
            _stamp_via(request, peer)
        response = make_response(request, status, to_tag=self.new_tag())
        response.headers.add("Server", self.user_agent)
        self._queue(bytes(response), peer)
        self.stats[f"out_response_{status // 100}xx"] += 1


def _stamp_via(request: SipRequest, peer: Peer, parsed: Via | None = None) -> None:
    """RFC 3261 §18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via."""
    values = request.headers.get_all("Via")
    if not values:
        return
    parts = split_top_level(values[0])
    if not parts:
        return
    if parsed is None:
        top = Via.parse(parts[0])
    else:  # a copy: the parsed one is shared through the message's cache
        top = Via(parsed.transport, parsed.host, parsed.port, dict(parsed.params))
    changed = False
    if top.host != peer.host:
        top.params["received"] = peer.host
        changed = True
    if "rport" in top.params:
        top.params["rport"] = str(peer.port)
        changed = True
    if not changed:
        return
    parts[0] = str(top)
    request.headers.replace_first("Via", ", ".join(parts))


__all__ = [
    "RequestReceived",
    "ResponseReceived",
    "SipEndpoint",
    "SipEvent",
    "Transport",
    "TransactionTimedOut",
]
