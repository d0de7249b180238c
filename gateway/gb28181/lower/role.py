"""What a role supplies to the lower-side core: the hooks of :class:`LowerRole`.

The two roles today are a simulated device
(:class:`~gateway.gb28181.device_agent.DeviceAgent`) and the gateway towards
an upper platform (:class:`~gateway.cascade.upper.UpperLink`). They hold a
:class:`~gateway.gb28181.lower.client.LowerClient` and implement this
protocol, rather than subclassing the client, so that each keeps its own
public API (the link's ``on_call`` attribute, the agent's keyword-only
``stop``) without clashing with the core's.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Final, Protocol

from gateway.gb28181.lower.events import LowerEvent
from gateway.gb28181.manscdp import (
    CatalogItem,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    ManscdpMessage,
)
from gateway.gb28181.sip.endpoint import RequestReceived

__all__ = ["CALL_METHODS", "LowerRole"]

CALL_METHODS: Final = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "INFO"})
"""Requests handed to :meth:`LowerRole.handle_call` untouched (docs/gb28181.md §15)."""


class LowerRole(Protocol):
    """The role-specific parts of the lower side, called by its :class:`LowerClient`."""

    def catalog_items(self) -> Sequence[CatalogItem]:
        """The catalog the server may see, in sending order."""
        ...

    def answer_device_info(self, query: DeviceInfoQuery) -> DeviceInfoResponse | None:
        """The answer to a DeviceInfo query (docs/gb28181.md §7); None sends nothing."""
        ...

    def answer_device_status(self, query: DeviceStatusQuery) -> DeviceStatusResponse | None:
        """The answer to a DeviceStatus query (docs/gb28181.md §8); None sends nothing."""
        ...

    def message_status(self, message: ManscdpMessage) -> int:
        """The SIP status for a server's MESSAGE that is not a Catalog/DeviceInfo/DeviceStatus query:
        200 (then :meth:`on_message` gets it), or a refusal such as 403 for a command about a channel the
        server may not reach (docs/gb28181.md §16.5); a refused message goes no further."""
        ...

    def on_message(self, message: ManscdpMessage, now: float) -> None:
        """Any other MANSCDP MESSAGE from the server, already answered 200 (e.g. ``Response/Alarm``)."""
        ...

    def handle_call(self, event: RequestReceived, now: float) -> None:
        """An INVITE, ACK, BYE, CANCEL or INFO from the server; the role answers it (or not)."""
        ...

    def is_muted(self, now: float) -> bool:
        """True while the role answers nothing and sends no keepalive (a dead device)."""
        ...

    def keepalive_body(self, body: bytes, number: int) -> bytes:
        """The body of the ``number``-th keepalive sent (a role may break it on purpose)."""
        ...

    def on_timer(self, key: Hashable, now: float) -> None:
        """A timer the role armed with :meth:`LowerClient.set_timer` is due."""
        ...

    def on_event(self, event: LowerEvent) -> None:
        """Something happened; called at once, in order."""
        ...
