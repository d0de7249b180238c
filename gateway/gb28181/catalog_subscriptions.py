"""Catalog subscriptions to lower platforms (sans-I/O): SUBSCRIBE, refresh, retry (docs/gb28181.md §14).

A platform asks a registered lower platform for its catalog once, then
subscribes so the lower NOTIFYs it of channels that come, go, or go on/off
line. Many lower platforms do not support in-dialog refreshes, so a refresh is
a new SUBSCRIBE (WVP's default, docs/gb28181.md §14.1); a refused or unanswered one is
tried again later. The NOTIFYs themselves reach device access as requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.gb28181.manscdp import CatalogQuery, serialize
from gateway.gb28181.requests import MANSCDP_CONTENT_TYPE, sip_uri
from gateway.gb28181.sip.endpoint import ResponseReceived, SipEndpoint, SipEvent, TransactionTimedOut
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.message import SipRequest
from gateway.gb28181.sip.transport import Peer

__all__ = ["CatalogSubscriber", "PLATFORM_TYPE_CODES"]

PLATFORM_TYPE_CODES: Final = frozenset({200, 209})  # SIP server / platform, access gateway: lowers with catalogs
DEFAULT_EXPIRES: Final = 3600
RETRY_AFTER: Final = 60.0  # s before a refused or unanswered SUBSCRIBE is sent again
REFRESH_RATIO: Final = 0.8


@dataclass(frozen=True, slots=True)
class _SubscribeContext:
    device_id: str
    generation: int


@dataclass(slots=True)
class _Subscription:
    peer: Peer
    generation: int
    due: float  # when to (re)subscribe
    active: bool = False


class CatalogSubscriber:
    """Keeps one catalog subscription per registered lower platform."""

    def __init__(
        self, endpoint: SipEndpoint, local_id: str, local_domain: str, *, expires: int = DEFAULT_EXPIRES
    ) -> None:
        self.endpoint = endpoint
        self.local_id = local_id
        self.local_domain = local_domain
        self.expires = expires
        self._subs: dict[str, _Subscription] = {}
        self._generation = 0
        self._cseq = endpoint.ids.number(4)
        self._sn = endpoint.ids.number(5)

    @staticmethod
    def wants(device_id: str) -> bool:
        """Whether a registered device is a platform whose catalog we subscribe to."""
        return len(device_id) == 20 and device_id.isdigit() and int(device_id[10:13]) in PLATFORM_TYPE_CODES

    def is_active(self, device_id: str) -> bool:
        """Whether the lower accepted our subscription."""
        sub = self._subs.get(device_id)
        return sub is not None and sub.active

    def subscribe(self, device_id: str, peer: Peer, now: float) -> None:
        """Subscribe now (a new registration), replacing any earlier subscription."""
        self._generation += 1
        self._subs[device_id] = _Subscription(peer, self._generation, due=now)
        self._send(device_id, now)

    def forget(self, device_id: str) -> None:
        """The lower unregistered or lapsed: stop refreshing (its NOTIFYs end with the dialog)."""
        self._subs.pop(device_id, None)

    def get_timer(self) -> float | None:
        """When the next (re)subscription is due."""
        pending = [s.due for s in self._subs.values() if s.due > 0]
        return min(pending) if pending else None

    def handle_timer(self, now: float) -> None:
        """Refresh or retry what is due."""
        for device_id, sub in list(self._subs.items()):
            if 0 < sub.due <= now:
                self._send(device_id, now)

    def route(self, event: SipEvent, now: float) -> bool:
        """Take the answers to our SUBSCRIBEs; True when the event was one."""
        context = getattr(event, "context", None)
        if not isinstance(context, _SubscribeContext):
            return False
        sub = self._subs.get(context.device_id)
        if sub is None or sub.generation != context.generation:
            return True  # an answer to a subscription we have since replaced
        if isinstance(event, ResponseReceived):
            status = event.response.status
            if status < 200:
                return True
            if status < 300:
                granted = _expires(event.response.headers.get("Expires"), self.expires)
                sub.active = True
                sub.due = now + max(granted, 30) * REFRESH_RATIO
                return True
        elif not isinstance(event, TransactionTimedOut):
            return True
        sub.active = False
        sub.due = now + RETRY_AFTER
        return True

    def _send(self, device_id: str, now: float) -> None:
        sub = self._subs[device_id]
        sub.due = 0.0  # nothing due until the answer says
        self._cseq += 1
        self._sn += 1
        body = serialize(CatalogQuery(sn=self._sn, device_id=device_id))
        headers = Headers(
            [
                ("From", f"<{sip_uri(self.local_id, self.local_domain)}>;tag={self.endpoint.new_tag()}"),
                ("To", f"<{sip_uri(device_id, device_id[:10])}>"),
                ("Call-ID", self.endpoint.new_call_id()),
                ("CSeq", f"{self._cseq} SUBSCRIBE"),
                ("Max-Forwards", "70"),
                ("Contact", f"<{sip_uri(self.local_id, self.endpoint.local_host, self.endpoint.local_port or None)}>"),
                ("Event", f"Catalog;id={self._sn}"),
                ("Expires", str(self.expires)),
                ("Content-Type", MANSCDP_CONTENT_TYPE),
            ]
        )
        request = SipRequest(
            headers=headers, body=body, method="SUBSCRIBE", uri=sip_uri(device_id, sub.peer.host, sub.peer.port)
        )
        self.endpoint.send_request(request, sub.peer, now, context=_SubscribeContext(device_id, sub.generation))


def _expires(value: str | None, default: int) -> int:
    return int(value) if value is not None and value.strip().isdigit() else default
