"""Where alarms go: MQTT (police integration), HTTP webhook, GB/T 28181 upper platforms."""

from gateway.alarms.sinks.base import OutboundMessage, Sink

__all__ = ["OutboundMessage", "Sink"]
