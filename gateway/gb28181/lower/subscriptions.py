"""The notifier side of catalog subscriptions (docs/gb28181.md §14, RFC 6665 §4.2), sans-I/O.

A server subscribes to our catalog with SUBSCRIBE; we answer 200 with the
query's SN in a ``Response`` body (docs/gb28181.md §14.2) and later push changes as
NOTIFYs in that dialog. There is one catalog subscription per server: a server
that subscribes again with a new dialog instead of refreshing (WVP does,
docs/gb28181.md §14.1) must not get every NOTIFY twice. :meth:`SubscriptionBook.on_subscribe`
decides the answer; the client sends it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from gateway.errors import ManscdpError
from gateway.gb28181.dialog import Dialog
from gateway.gb28181.lower.events import LowerEvent, SubscriptionChanged
from gateway.gb28181.lower.registration import seconds
from gateway.gb28181.manscdp import CatalogItem, CatalogQuery, ResultResponse, decode_message, serialize
from gateway.gb28181.requests import MANSCDP_CONTENT_TYPE
from gateway.gb28181.sip.message import SipRequest

__all__ = ["MAX_SUBSCRIPTION_EXPIRES", "Subscription", "SubscriptionAnswer", "SubscriptionBook"]

MAX_SUBSCRIPTION_EXPIRES: Final = 86_400  # a longer SUBSCRIBE is granted this much


@dataclass(slots=True)
class Subscription:
    """One catalog subscription dialog from the server (docs/gb28181.md §14)."""

    dialog: Dialog
    event: str | None  # the Event header to echo (Monibuca sends none)
    expires_at: float
    sn: int
    pushing: bool = False  # a NOTIFY push is under way in this dialog
    pending: list[CatalogItem] = field(default_factory=list)  # changes waiting for it to end


@dataclass(frozen=True, slots=True)
class SubscriptionAnswer:
    """The response a SUBSCRIBE gets, and the charset its body used (None: not read)."""

    status: int
    extra: list[tuple[str, str]] = field(default_factory=list)
    to_tag: str | None = None
    body: bytes = b""
    charset: str | None = None


class SubscriptionBook:
    """The catalog subscriptions of one client, by Call-ID; reports :class:`SubscriptionChanged`."""

    def __init__(self, name: str, local_id: str, report: Callable[[LowerEvent], None]) -> None:
        self.name = name
        self.local_id = local_id
        self._report = report
        self._by_call_id: dict[str, Subscription] = {}

    def __len__(self) -> int:
        return len(self._by_call_id)

    def live(self, now: float) -> list[Subscription]:
        """Subscriptions not expired at ``now``."""
        return [s for s in self._by_call_id.values() if s.expires_at > now]

    def holds(self, subscription: Subscription) -> bool:
        """Whether ``subscription`` is still ours (not replaced, dropped or expired away)."""
        return self._by_call_id.get(subscription.dialog.call_id) is subscription

    def next_expiry(self) -> float | None:
        """When the first subscription runs out."""
        return min((s.expires_at for s in self._by_call_id.values()), default=None)

    def on_subscribe(
        self, request: SipRequest, now: float, new_tag: Callable[[], str], contact: str
    ) -> SubscriptionAnswer:
        """Catalog SUBSCRIBE (docs/gb28181.md §14.1-14.2): 200 with Expires; Expires: 0 ends it.

        Raises :class:`~gateway.gb28181.dialog.DialogError` for a SUBSCRIBE
        without Contact or an out-of-order CSeq in the dialog (its status hint
        is the answer).
        """
        expires = seconds(request.headers.get("Expires"))
        if expires is None:
            return SubscriptionAnswer(400)  # WVP refuses a SUBSCRIBE without Expires too
        granted = min(expires, MAX_SUBSCRIPTION_EXPIRES)
        if request.to.tag:  # inside an existing dialog: refresh or unsubscribe
            return self._resubscribe(request, granted, now, contact)
        try:
            message, charset = decode_message(request.body)
        except ManscdpError as exc:
            return SubscriptionAnswer(exc.status_hint)
        if not isinstance(message, CatalogQuery):
            return SubscriptionAnswer(489, charset=None)  # Bad Event: only catalog subscriptions for now
        if granted == 0:
            # Unsubscribing outside the dialog (servers that forget our To tag): there is
            # one catalog subscription per server, so this one is meant.
            self.drop_all()
            return SubscriptionAnswer(200, [("Expires", "0")], charset=charset)
        tag = new_tag()
        dialog = Dialog.from_uas(request, tag)  # DialogError (400) without Contact
        self._by_call_id.clear()  # one per server: the new dialog replaces the old one
        subscription = Subscription(dialog, request.headers.get("Event"), now + granted, message.sn)
        self._by_call_id[dialog.call_id] = subscription
        body = serialize(ResultResponse("Catalog", message.sn, self.local_id, "OK"), charset)
        extra = [("Expires", str(granted)), ("Contact", contact), ("Content-Type", MANSCDP_CONTENT_TYPE)]
        self._report(SubscriptionChanged(self.name, True))
        return SubscriptionAnswer(200, extra, tag, body, charset)

    def _resubscribe(self, request: SipRequest, granted: int, now: float, contact: str) -> SubscriptionAnswer:
        subscription = self._by_call_id.get(request.call_id)
        if subscription is None or not subscription.dialog.matches(request) or subscription.expires_at <= now:
            return SubscriptionAnswer(481)
        subscription.dialog.accept_remote(request)  # DialogError (500) for an old CSeq
        if granted == 0:
            self.drop(subscription)
            return SubscriptionAnswer(200, [("Expires", "0")])
        subscription.expires_at = now + granted
        return SubscriptionAnswer(200, [("Expires", str(granted)), ("Contact", contact)])

    def drop(self, subscription: Subscription) -> None:
        """End one subscription (unsubscribed, or the server answered a NOTIFY 481)."""
        if self.holds(subscription):
            del self._by_call_id[subscription.dialog.call_id]
            if not self._by_call_id:
                self._report(SubscriptionChanged(self.name, False))

    def drop_all(self) -> None:
        """End every subscription (a stop, or an unsubscribe outside the dialog)."""
        for subscription in list(self._by_call_id.values()):
            self.drop(subscription)

    def expire(self, now: float) -> None:
        """Forget the subscriptions whose time ran out (RFC 6665 §4.2.2: no refresh came)."""
        gone = [key for key, s in self._by_call_id.items() if s.expires_at <= now]
        for key in gone:
            del self._by_call_id[key]
        if gone and not self._by_call_id:
            self._report(SubscriptionChanged(self.name, False))
