"""Sans-I/O SIP stack for GB/T 28181: codec, stream framing, transactions, endpoint.

Layers, bottom up: :mod:`.headers` and :mod:`.message` (codec),
:mod:`.framing` (TCP), :mod:`.transaction` (RFC 3261 §17 tables) and
:mod:`.endpoint` (bytes in, events and bytes out). :mod:`.testing` holds the
in-memory helpers (fake clock, ``transfer``) for tests of every layer above.
"""

from gateway.gb28181.sip.endpoint import (
    MAX_TRANSACTIONS,
    RequestReceived,
    ResponseReceived,
    SipEndpoint,
    SipEvent,
    TransactionTimedOut,
)
from gateway.gb28181.sip.framing import FramedMessage, KeepalivePing, SipFramingError, StreamFramer
from gateway.gb28181.sip.headers import CSeq, Headers, NameAddr, SipUri, Via, canonical_name
from gateway.gb28181.sip.idsource import BRANCH_MAGIC, IdSource, RandomIds, SeededIds, new_branch
from gateway.gb28181.sip.message import (
    MAX_MESSAGE_SIZE,
    REASON_PHRASES,
    SipMessage,
    SipRequest,
    SipResponse,
    check_mandatory,
    make_request,
    make_response,
    parse_head,
    parse_message,
)
from gateway.gb28181.sip.timers import SipTimers
from gateway.gb28181.sip.transaction import TransactionError, TxInput, TxState
from gateway.gb28181.sip.transport import Peer, Transport

__all__ = [
    "BRANCH_MAGIC",
    "MAX_MESSAGE_SIZE",
    "MAX_TRANSACTIONS",
    "REASON_PHRASES",
    "CSeq",
    "FramedMessage",
    "Headers",
    "IdSource",
    "KeepalivePing",
    "NameAddr",
    "Peer",
    "RandomIds",
    "RequestReceived",
    "ResponseReceived",
    "SeededIds",
    "SipEndpoint",
    "SipEvent",
    "SipFramingError",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "SipTimers",
    "SipUri",
    "StreamFramer",
    "TransactionError",
    "TransactionTimedOut",
    "Transport",
    "TxInput",
    "TxState",
    "Via",
    "canonical_name",
    "check_mandatory",
    "make_request",
    "make_response",
    "new_branch",
    "parse_head",
    "parse_message",
]
