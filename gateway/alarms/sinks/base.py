"""The sink interface: one delivery attempt of one alarm event to one destination.

A sink only moves bytes: the outbox decides what to send and when, keeps
order per kindergarten and retries. ``deliver`` returns when the destination
has acknowledged the message (MQTT PUBACK, HTTP 2xx, SIP 200) and raises
:class:`~gateway.errors.DeliveryError` otherwise — ``permanent=True`` only
when sending the same bytes again cannot succeed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gateway.alarms.model import Alarm, DeliveryEvent

__all__ = ["OutboundMessage", "Sink"]


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """What every sink gets: the alarm, the event, and the schema-1 JSON body."""

    alarm: Alarm
    event: DeliveryEvent
    body: bytes  # the UTF-8 JSON payload (README: "Alarm payload, schema 1")

    @property
    def alarm_id(self) -> str:
        """The stable id receivers deduplicate on."""
        return self.alarm.id

    @property
    def district_code(self) -> str:
        """Topic segment: the district's 6-digit civil code."""
        return self.alarm.district_code

    @property
    def kindergarten_segment(self) -> str:
        """Topic segment: the kindergarten id, or ``unplaced`` for a device not yet placed."""
        return self.alarm.kindergarten_id or "unplaced"


@runtime_checkable
class Sink(Protocol):
    """A destination of alarms."""

    name: str  # "mqtt", "webhook", "gb": the delivery rows' sink column
    max_inflight: int  # how many deliveries may be in flight at once (different kindergartens)

    @property
    def up(self) -> bool | None:
        """Whether the last contact worked (None before the first attempt); for metrics."""

    async def start(self) -> None:
        """Prepare (connect lazily is fine); must not raise when the destination is down."""

    async def deliver(self, message: OutboundMessage) -> None:
        """Deliver once; return on acknowledgement, raise DeliveryError otherwise."""

    async def close(self) -> None:
        """Release connections; in-flight ``deliver`` calls may be cancelled."""
