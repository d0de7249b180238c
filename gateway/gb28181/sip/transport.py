"""Where a SIP message came from or goes to, independent of sockets."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Transport(str, Enum):
    """The transports GB/T 28181 signalling uses."""

    UDP = "UDP"
    TCP = "TCP"

    @property
    def reliable(self) -> bool:
        """Reliable transports need no retransmission timers."""
        return self is Transport.TCP


@dataclass(frozen=True, slots=True)
class Peer:
    """A remote address and the transport (and TCP connection) to reach it.

    ``conn_id`` names a TCP connection owned by the I/O layer; requests to a
    device registered over TCP must go back over the connection it opened
    (docs/gb28181.md §2).
    """

    transport: Transport
    host: str
    port: int
    conn_id: int | None = None

    @property
    def reliable(self) -> bool:
        """True for TCP."""
        return self.transport.reliable

    def __str__(self) -> str:
        return f"{self.transport.value.lower()}:{self.host}:{self.port}"
