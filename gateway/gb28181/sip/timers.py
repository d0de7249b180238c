"""SIP timer values (RFC 3261 Table 4, RFC 6026 Timers L and M)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SipTimers:
    """T1, T2 and T4; every other timer is derived from them.

    Timers that only exist to absorb retransmissions (D, I, J, K) are zero on
    reliable transports (RFC 3261 §17.1.1.2, §17.2.2).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def a(self) -> float:
        """INVITE request retransmit interval, initial (UDP only)."""
        return self.t1

    @property
    def b(self) -> float:
        """INVITE transaction timeout."""
        return 64 * self.t1

    def d(self, reliable: bool) -> float:
        """Wait time for response retransmits after a non-2xx INVITE final response."""
        return 0.0 if reliable else max(32.0, 64 * self.t1)

    @property
    def e(self) -> float:
        """Non-INVITE request retransmit interval, initial (UDP only)."""
        return self.t1

    @property
    def f(self) -> float:
        """Non-INVITE transaction timeout."""
        return 64 * self.t1

    @property
    def g(self) -> float:
        """INVITE final response retransmit interval, initial (UDP only)."""
        return self.t1

    @property
    def h(self) -> float:
        """Wait time for ACK receipt."""
        return 64 * self.t1

    def i(self, reliable: bool) -> float:
        """Wait time for ACK retransmits."""
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool) -> float:
        """Wait time for non-INVITE request retransmits."""
        return 0.0 if reliable else 64 * self.t1

    def k(self, reliable: bool) -> float:
        """Wait time for non-INVITE response retransmits."""
        return 0.0 if reliable else self.t4

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name
        """RFC 6026: wait time for INVITE request retransmits after a 2xx (server)."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """RFC 6026: wait time for 2xx retransmits (client)."""
        return 64 * self.t1
