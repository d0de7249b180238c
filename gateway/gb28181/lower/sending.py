"""The requests a lower-side client sends, each with the one context type of the core (RFC 3261 §8.1).

REGISTERs share one Call-ID and From tag (RFC 3261 §10.2); MESSAGEs get a
fresh Call-ID and tag each (docs/gb28181.md §2); NOTIFYs go inside their subscription
dialog (docs/gb28181.md §14.3). All share one CSeq counter. Every request carries a
:class:`SendContext`, by which a host finds the client of an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from gateway.gb28181.lower.policy import LowerIdentity
from gateway.gb28181.lower.subscriptions import Subscription
from gateway.gb28181.requests import MANSCDP_CONTENT_TYPE, build_message, build_register, sip_uri
from gateway.gb28181.sip.endpoint import ResponseReceived, SipEndpoint, TransactionTimedOut
from gateway.gb28181.sip.message import SipRequest
from gateway.gb28181.sip.transport import Peer

__all__ = ["RequestSender", "SendContext", "Sender", "Sent"]


class Sender(Protocol):
    """Whoever sent a request (a :class:`~gateway.gb28181.lower.client.LowerClient`): its answers go back to it."""

    @property
    def endpoint(self) -> SipEndpoint: ...
    def handle_response(self, event: ResponseReceived, now: float) -> None: ...
    def handle_timeout(self, event: TransactionTimedOut, now: float) -> None: ...


class Sent(StrEnum):
    """What a request the client sent was, so its answer finds its handler."""

    REGISTER = "register"
    KEEPALIVE = "keepalive"
    CATALOG = "catalog"
    NOTIFY = "notify"
    KEYED = "keyed"  # a role's MESSAGE (an alarm) whose answer is reported with its key
    REPLY = "reply"  # Response MESSAGEs to the server's queries: their answers need nothing


@dataclass(frozen=True, slots=True, eq=False)
class SendContext:
    """The endpoint context of every request a client sends: how a host finds the client of an answer."""

    client: Sender
    kind: Sent
    ref: object = None


class RequestSender:
    """Builds and sends one client's requests to ``peer`` (which the I/O layer may replace)."""

    def __init__(self, owner: Sender, identity: LowerIdentity, endpoint: SipEndpoint, peer: Peer) -> None:
        self.owner = owner
        self.identity = identity
        self.endpoint = endpoint
        self.peer = peer
        self.call_id = endpoint.new_call_id()  # one Call-ID for all our REGISTERs (RFC 3261 §10.2)
        self.from_tag = endpoint.new_tag()
        self.cseq = 0

    def register(
        self, now: float, expires: int, user_agent: str, credentials: tuple[str, str] | None, ref: object
    ) -> str:
        """A REGISTER on our one Call-ID; returns its transaction key."""
        self.cseq += 1
        identity = self.identity
        request = build_register(
            device_id=identity.local_id,
            domain=identity.local_domain,
            server_id=identity.server_id,
            contact_host=self.endpoint.local_host,
            contact_port=self.endpoint.local_port,
            from_tag=self.from_tag,
            call_id=self.call_id,
            cseq=self.cseq,
            expires=expires,
            user_agent=user_agent,
        )
        # docs/gb28181.md §16.2: the server's ID at its address (a device: its domain)
        request.uri = identity.server_uri
        if credentials is not None:
            request.headers.add(*credentials)
        return self._send(request, now, Sent.REGISTER, ref)

    def message(self, body: bytes, now: float, kind: Sent, ref: object = None) -> str:
        """A MANSCDP MESSAGE outside any dialog (RFC 3428); returns its transaction key."""
        self.cseq += 1
        identity = self.identity
        request = build_message(
            from_id=identity.local_id,
            from_domain=identity.local_domain,
            from_tag=self.endpoint.new_tag(),
            to_id=identity.server_id,
            to_domain=identity.server_domain,
            request_uri=identity.server_uri,
            call_id=self.endpoint.new_call_id(),
            cseq=self.cseq,
            body=body,
        )
        return self._send(request, now, kind, ref)

    def notify(self, subscription: Subscription, body: bytes, now: float, ref: object) -> str:
        """NOTIFY in the subscription dialog (docs/gb28181.md §14.3): Event echoed, Subscription-State with the time left."""
        request = subscription.dialog.new_request("NOTIFY", body, MANSCDP_CONTENT_TYPE)
        if subscription.event is not None:
            request.headers.add("Event", subscription.event)
        remaining = max(0, int(subscription.expires_at - now))
        request.headers.add("Subscription-State", f"active;expires={remaining}")
        request.headers.add("Contact", self.contact())
        return self.endpoint.send_request(request, self.peer, now, context=SendContext(self.owner, Sent.NOTIFY, ref))

    def contact(self) -> str:
        """Our Contact: our ID at the endpoint's address."""
        return f"<{sip_uri(self.identity.local_id, self.endpoint.local_host, self.endpoint.local_port)}>"

    def _send(self, request: SipRequest, now: float, kind: Sent, ref: object) -> str:
        return self.endpoint.send_request(request, self.peer, now, context=SendContext(self.owner, kind, ref))
