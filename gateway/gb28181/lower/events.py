"""What a lower-side client reports (docs/design.md §10: frozen, slotted, past tense).

Every event carries ``name``, the client's own label (a device ID for a
simulated device, the configured name for an upper link), so that a role that
holds many clients can tell them apart without a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.gb28181.manscdp import ManscdpMessage

__all__ = [
    "CatalogSent",
    "Challenged",
    "KeepaliveFailed",
    "KeepaliveSent",
    "LowerEvent",
    "MessageAnswered",
    "MessageReceived",
    "MessageTimedOut",
    "Redirected",
    "RegisterFailed",
    "Registered",
    "SubscriptionChanged",
    "WentOffline",
]


@dataclass(frozen=True, slots=True)
class Registered:
    """The server answered a REGISTER 2xx; ``first`` when this took us online (not a refresh)."""

    name: str
    at: float
    expires: int
    first: bool


@dataclass(frozen=True, slots=True)
class Challenged:
    """The server answered a REGISTER 401 or 407 (docs/gb28181.md §3.1): digest credentials are wanted."""

    name: str
    at: float
    status: int


@dataclass(frozen=True, slots=True)
class Redirected:
    """The server answered REGISTER 302 and we now register with the server its Contact named
    (GB/T 28181-2022 §9.1.2.3); a TCP host opens a connection to ``host:port`` and calls ``retry_now``."""

    name: str
    at: float
    server_id: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class RegisterFailed:
    """A registration attempt failed; ``status`` is None for a time-out. The next try is at ``retry_at``."""

    name: str
    at: float
    status: int | None
    reason: str
    retry_at: float


@dataclass(frozen=True, slots=True)
class WentOffline:
    """We were registered and are not any more: a refusal, lost keepalives, or a stop."""

    name: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class KeepaliveSent:
    """A ``Notify/Keepalive`` went out (docs/gb28181.md §4.1)."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class KeepaliveFailed:
    """A keepalive counted as failed: an error answer, a time-out (``status`` None), or no answer in time."""

    name: str
    at: float
    status: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """The server sent a readable MANSCDP MESSAGE and it was answered 200."""

    name: str
    at: float
    message: ManscdpMessage


@dataclass(frozen=True, slots=True)
class MessageAnswered:
    """The final answer to a MESSAGE sent with a ``key`` (an alarm, docs/gb28181.md §9.1)."""

    name: str
    at: float
    key: object
    status: int


@dataclass(frozen=True, slots=True)
class MessageTimedOut:
    """A MESSAGE sent with a ``key`` got no final answer (Timer F, or the connection broke)."""

    name: str
    at: float
    key: object


@dataclass(frozen=True, slots=True)
class CatalogSent:
    """A catalog push (Response to a query, or a subscription NOTIFY) ended.

    ``messages`` counts the chunks sent; fewer than needed for ``items`` means
    the server refused one (the push stops there, as WVP's does, docs/gb28181.md §6.2).
    """

    name: str
    sn: int
    items: int
    messages: int


@dataclass(frozen=True, slots=True)
class SubscriptionChanged:
    """A catalog subscription was accepted (True) or the last one ended (False), docs/gb28181.md §14."""

    name: str
    active: bool


LowerEvent = (
    Registered
    | Challenged
    | RegisterFailed
    | Redirected
    | WentOffline
    | KeepaliveSent
    | KeepaliveFailed
    | MessageReceived
    | MessageAnswered
    | MessageTimedOut
    | CatalogSent
    | SubscriptionChanged
)
"""Everything a :class:`~gateway.gb28181.lower.client.LowerClient` reports."""
