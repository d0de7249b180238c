"""Inbound TCP connection limits shared by every listener of the process (issue 10, H4).

An attacker who opens tens of thousands of idle connections must not take the file
descriptors the alarm path needs: the webhook and MQTT deliveries to police open
*outgoing* connections. Every inbound TCP connection (SIP, HTTP, RTP-over-TCP) asks the
process-wide :class:`InboundGate` first; it refuses

* a connection from a host that already holds ``per_address`` connections, and
* any connection once inbound connections reach ``soft RLIMIT_NOFILE - fd_reserve``
  (:func:`raise_nofile_limit` first lifts the soft limit to the hard one),

so ``fd_reserve`` descriptors always stay free for outgoing connections, files and the
media sockets. A listener may exempt a source from the per-address cap (the HTTP
listener does so for the configured trusted reverse proxies, which carry every user
through one address): such a connection still counts towards the total and the reserve,
but not towards its host's share, so it neither is capped nor crowds out SIP or RTP
connections from that host. Refusals are counted by reason and logged once per source host and minute
at most (a flood must not become a log flood). Timeouts of idle and slow connections
live in the adapters (:mod:`gateway.io.sip_io`, :mod:`gateway.io.http_guard`) and read
their values here.
"""

from __future__ import annotations

import enum
import logging
import resource
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.errors import ConfigError

__all__ = ["GATE", "InboundGate", "InboundLimits", "Refusal", "raise_nofile_limit"]

log = logging.getLogger("kgw.io.limits")
_LOG_EVERY = 60.0  # s between two warnings about the same refused host


@dataclass(frozen=True, slots=True)
class InboundLimits:
    """The knobs; defaults suit a city gateway (GatewayConfig ``tcp_*`` and ``fd_reserve``)."""

    per_address: int = 128  # one kindergarten's NAT carries its NVR and cameras: tens, not thousands
    fd_reserve: int = 512  # descriptors kept free for outgoing alarm deliveries, files, media sockets
    idle_timeout: float = 300.0  # s a SIP/TCP connection may go without a complete message (keepalives: 60 s)
    header_timeout: float = 10.0  # s a started SIP message or an HTTP request head may take to complete
    body_timeout: float = 30.0  # s an HTTP request body may take to arrive
    max_buffered: int = 64 * 1024 * 1024  # bytes of unfinished SIP messages over all connections of a listener

    def __post_init__(self) -> None:
        if self.per_address < 1 or self.fd_reserve < 0 or self.max_buffered < 1:
            raise ConfigError("per_address and max_buffered must be positive, fd_reserve not negative")
        if min(self.idle_timeout, self.header_timeout, self.body_timeout) <= 0:
            raise ConfigError("connection timeouts must be positive")


class Refusal(enum.StrEnum):
    """Why a connection was refused (the ``reason`` label of ``kgw_tcp_refused``)."""

    PER_ADDRESS = "per_address"
    FD_RESERVE = "fd_reserve"


def raise_nofile_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


class InboundGate:
    """Counts open inbound connections per source host and in total; says which to refuse."""

    def __init__(self, limits: InboundLimits | None = None, nofile: int | None = None) -> None:
        self.limits = limits or InboundLimits()
        self.nofile = nofile if nofile is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.per_host: Counter[str] = Counter()
        self.total = 0
        self.refused: Counter[Refusal] = Counter()
        self.closed_by: Counter[str] = Counter()  # connections closed by a timeout or cap, by reason
        self._logged: dict[str, float] = {}

    def configure(self, limits: InboundLimits, nofile: int | None = None) -> None:
        """New limits (open connections stay counted)."""
        self.limits = limits
        if nofile is not None:
            self.nofile = nofile

    @property
    def max_total(self) -> int:
        """Inbound connections allowed at once: the open-file limit minus the reserve."""
        return max(1, self.nofile - self.limits.fd_reserve)

    def admit(self, host: str, *, uncapped: bool = False) -> Refusal | None:
        """Count a new connection from ``host``, or say why it must be closed (not counted then).

        ``uncapped``: exempt from the per-address cap (a trusted proxy); the total still applies.
        Release it with the same flag.
        """
        refusal: Refusal | None = None
        if self.total >= self.max_total:
            refusal = Refusal.FD_RESERVE
        elif not uncapped and self.per_host[host] >= self.limits.per_address:
            refusal = Refusal.PER_ADDRESS
        if refusal is not None:
            self.refused[refusal] += 1
            now = time.monotonic()
            if now - self._logged.get(host, -_LOG_EVERY) >= _LOG_EVERY:
                if len(self._logged) > 10_000:
                    self._logged.clear()
                self._logged[host] = now
                log.warning("refusing TCP connections from %s: %s", host, refusal.value)
            return refusal
        if not uncapped:
            self.per_host[host] += 1
        self.total += 1
        return None

    def release(self, host: str, *, uncapped: bool = False) -> None:
        """A connection :meth:`admit` counted (with the same ``uncapped``) has closed."""
        if not uncapped:
            left = self.per_host[host] - 1
            if left > 0:
                self.per_host[host] = left
            else:
                self.per_host.pop(host, None)
        self.total = max(0, self.total - 1)

    def closed(self, reason: str) -> None:
        """Count a connection the adapters closed for ``reason`` (idle, header_timeout…)."""
        self.closed_by[reason] += 1

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Open inbound connections, refusals and limit closes (for /metrics)."""
        yield GaugeMetricFamily("kgw_tcp_inbound", "Open inbound TCP connections (SIP, HTTP, RTP)", value=self.total)
        refused = CounterMetricFamily(
            "kgw_tcp_refused", "Inbound TCP connections refused, by reason", labels=["reason"]
        )
        for refusal in Refusal:
            refused.add_metric([refusal.value], self.refused[refusal])
        yield refused
        closed = CounterMetricFamily("kgw_tcp_closed_by_limit", "Connections closed by a limit", labels=["reason"])
        for reason, count in sorted(self.closed_by.items()):
            closed.add_metric([reason], count)
        yield closed


GATE = InboundGate()
"""The process's gate: every listener uses it (tests may :meth:`InboundGate.configure` it)."""
