"""The lower side of GB/T 28181, once for every role (docs/design.md §9: one implementation per role).

What a device or a lower platform does towards the server it registers with:
REGISTER with digest and retry, keepalive, answering queries, pushing the
catalog in chunks, serving catalog subscriptions. A simulated device
(:mod:`gateway.gb28181.device_agent`) and the gateway towards an upper
platform (:mod:`gateway.cascade.upper`) are two roles of :class:`LowerClient`.
"""

from gateway.gb28181.lower.catalog_push import MAX_PUSHES, CatalogPusher
from gateway.gb28181.lower.client import CALL_METHODS, LowerClient, LowerRole, SendContext, Sent
from gateway.gb28181.lower.events import (
    CatalogSent,
    Challenged,
    KeepaliveFailed,
    KeepaliveSent,
    LowerEvent,
    MessageAnswered,
    MessageReceived,
    MessageTimedOut,
    Redirected,
    Registered,
    RegisterFailed,
    SubscriptionChanged,
    WentOffline,
)
from gateway.gb28181.lower.host import LowerHost, Router
from gateway.gb28181.lower.keepalive import Keepalives
from gateway.gb28181.lower.policy import LowerIdentity, LowerPolicy
from gateway.gb28181.lower.registration import (
    TABLE,
    RegAction,
    RegInput,
    RegistrationError,
    RegistrationMachine,
    RegState,
)
from gateway.gb28181.lower.subscriptions import MAX_SUBSCRIPTION_EXPIRES, SubscriptionBook

__all__ = [
    "CALL_METHODS",
    "MAX_PUSHES",
    "MAX_SUBSCRIPTION_EXPIRES",
    "TABLE",
    "CatalogPusher",
    "CatalogSent",
    "Challenged",
    "KeepaliveFailed",
    "KeepaliveSent",
    "Keepalives",
    "LowerClient",
    "LowerEvent",
    "LowerHost",
    "LowerIdentity",
    "LowerPolicy",
    "LowerRole",
    "MessageAnswered",
    "MessageReceived",
    "MessageTimedOut",
    "RegAction",
    "Redirected",
    "RegInput",
    "RegState",
    "RegisterFailed",
    "Registered",
    "RegistrationError",
    "RegistrationMachine",
    "Router",
    "SendContext",
    "Sent",
    "SubscriptionBook",
    "SubscriptionChanged",
    "WentOffline",
]
