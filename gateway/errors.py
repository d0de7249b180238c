"""Exception taxonomy of the gateway.

Every error raised across a layer boundary is a subclass of :class:`GatewayError`.
Errors caused by what a peer sent carry the wire answer they deserve
(``status_hint`` for SIP) so that the boundary that catches them can answer
without guessing. Malformed-input errors also subclass :class:`ValueError`, the
way PyAV's errors subclass built-ins, so generic code can still catch them.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


# --- SIP -------------------------------------------------------------------


class SipError(GatewayError):
    """A SIP-level failure; ``status_hint`` is the response code that answers it."""

    status_hint: int = 500

    def __init__(self, reason: str, *, status_hint: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if status_hint is not None:
            self.status_hint = status_hint


class SipParseError(SipError, ValueError):
    """Bytes that are not a well-formed SIP message (RFC 3261 §25)."""

    status_hint = 400


class MessageTooLarge(SipParseError):
    """A message, header block or Content-Length above our limits."""

    status_hint = 513


class CallDoesNotExist(SipError):
    """A request inside a dialog or transaction we do not know (481)."""

    status_hint = 481


class DigestError(SipError, ValueError):
    """A malformed digest challenge or Authorization header."""

    status_hint = 400


# --- identifiers ------------------------------------------------------------


class InvalidDeviceId(GatewayError, ValueError):
    """A GB/T 28181 identifier that is not 20 decimal digits (or a civil code)."""


# --- MANSCDP ------------------------------------------------------------------


class ManscdpError(GatewayError, ValueError):
    """A MANSCDP body we cannot read; answered with 400 or ``Result=ERROR``."""

    status_hint = 400


# --- store --------------------------------------------------------------------


class StoreError(GatewayError):
    """The registry store failed (disk, schema, constraint)."""


class StoreConstraintError(StoreError):
    """A write broke an integrity rule (e.g. a channel of an unknown device)."""


class ConfigError(GatewayError, ValueError):
    """A configuration file or option that cannot be used."""


# --- media transports -----------------------------------------------------------


class MediaTransportError(GatewayError):
    """A media transport could not be set up."""


class PortRangeExhausted(MediaTransportError):
    """Every port of the configured media port range is in use."""

    def __init__(self, host: str, low: int, high: int) -> None:
        super().__init__(f"no free media port on {host} in {low}-{high}: all {high - low + 1} in use")
        self.host, self.low, self.high = host, low, high


# --- alarms ---------------------------------------------------------------------


class AlarmError(GatewayError):
    """An alarm operation that cannot be done (unknown alarm, wrong state)."""


class UnknownAlarm(AlarmError, KeyError):
    """No alarm has this id (HTTP 404)."""


class InvalidTransition(AlarmError):
    """A lifecycle step that is not allowed from the alarm's state (HTTP 409)."""


class ForeignAlarm(AlarmError):
    """The alarm belongs to another gateway process of the city (HTTP 409 naming it).

    Only the node that received an alarm holds its live state (outbox, escalation,
    held deliveries); an operator step taken elsewhere would be written over by it.
    """

    def __init__(self, alarm_id: str, node: str) -> None:
        super().__init__(f"alarm {alarm_id} is held by gateway process {node!r}: act on it there (由其他网关进程处理)")
        self.alarm_id = alarm_id
        self.node = node


class DeliveryError(AlarmError):
    """A sink could not deliver; ``permanent`` means retrying the same message is pointless.

    Transient failures (broker down, 5xx, timeout) are retried with backoff; a
    permanent one (the receiver rejected the payload with a 4xx) dead-letters the
    delivery at once so it stops holding back the kindergarten's later alarms.
    """

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
