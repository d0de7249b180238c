"""In-memory helpers for testing code built on :class:`SipEndpoint` (docs/design.md §9).

Like sipgo's ``siptest`` and aioquic's ``transfer``: two endpoints talk to
each other without sockets, on a fake clock, optionally losing datagrams::

    clock = FakeClock()
    gw, dev = SipEndpoint(SeededIds("gw"), local_port=5060), SipEndpoint(SeededIds("dev"), local_port=5070)
    dev.send_request(register, peer_of(gw), clock.now)
    transfer(dev, gw, clock)                   # REGISTER reaches gw
    ...
    run_timers([gw, dev], clock, until=40.0)   # retransmissions and Timer F/K

Nothing here does I/O or reads the wall clock, so it is safe in any test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.transport import Peer, Transport


@dataclass(slots=True)
class FakeClock:
    """A clock that only moves when told to."""

    now: float = 0.0

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (never backwards); return the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds
        return self.now


def peer_of(endpoint: SipEndpoint, transport: Transport = Transport.UDP) -> Peer:
    """The address other endpoints use to reach ``endpoint``."""
    return Peer(transport, endpoint.local_host, endpoint.local_port)


def transfer(
    a: SipEndpoint,
    b: SipEndpoint,
    clock: FakeClock,
    loss: Callable[[int], bool] | None = None,
    *,
    transport: Transport = Transport.UDP,
) -> int:
    """Deliver what ``a`` and ``b`` have to send to each other until both are quiet.

    Each side sees the other as ``peer_of(other, transport)``, whatever
    address the sender put on its outgoing data. ``loss(i)`` is asked about
    the i-th message of this call (0, 1, 2 …, both directions counted, in
    sending order); True drops it, as aiortc's ``loss_pattern`` does. Time
    does not move. Returns how many messages were delivered.
    """
    sent = delivered = 0
    while True:
        moved = False
        for src, dst in ((a, b), (b, a)):
            source = peer_of(src, transport)
            for data, _destination in src.data_to_send():
                moved = True
                lost = loss is not None and loss(sent)
                sent += 1
                if not lost:
                    dst.receive(data, source, clock.now)
                    delivered += 1
        if not moved:
            return delivered


def run_timers(endpoints: Iterable[SipEndpoint], clock: FakeClock, until: float) -> list[float]:
    """Advance ``clock`` timer by timer up to ``until``, firing each endpoint's timers.

    At every step the clock jumps to the earliest pending timer of any
    endpoint and that endpoint's :meth:`~SipEndpoint.handle_timer` runs.
    Nothing is delivered in between: what the timers send stays in
    ``data_to_send()`` for the test to inspect or :func:`transfer`. The clock
    ends at ``until``. Returns the instants at which timers fired.
    """
    eps = list(endpoints)
    fired: list[float] = []
    while True:
        due = [t for t in (ep.get_timer() for ep in eps) if t is not None and t <= until]
        if not due:
            break
        at = max(min(due), clock.now)
        clock.advance(at - clock.now)
        for ep in eps:
            timer = ep.get_timer()
            if timer is not None and timer <= at:
                ep.handle_timer(at)
        fired.append(at)
    clock.advance(max(0.0, until - clock.now))
    return fired


__all__ = ["FakeClock", "peer_of", "run_timers", "transfer"]
