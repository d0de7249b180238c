"""The inbound connection gate (gateway/io/conn_limits.py) and the HTTP listener's use of it.

A trusted reverse proxy brings every console user and API client from one address:
on the HTTP listener its connections skip the per-address cap, while the total (the
open-file limit minus the reserve) still bounds them.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from gateway.io.conn_limits import InboundGate, InboundLimits, Refusal
from gateway.io.http_guard import _GuardedProtocol, _within


def _gate(per_address: int = 2, nofile: int = 20, fd_reserve: int = 10) -> InboundGate:
    return InboundGate(InboundLimits(per_address=per_address, fd_reserve=fd_reserve), nofile=nofile)


def test_per_address_cap_refuses_the_next_connection_from_a_host() -> None:
    gate = _gate()
    assert gate.admit("10.0.0.1") is None
    assert gate.admit("10.0.0.1") is None
    assert gate.admit("10.0.0.1") is Refusal.PER_ADDRESS
    assert gate.admit("10.0.0.2") is None  # another host has its own share
    gate.release("10.0.0.1")
    assert gate.admit("10.0.0.1") is None


def test_uncapped_connections_skip_the_per_address_cap_but_not_the_total() -> None:
    gate = _gate(per_address=2, nofile=20, fd_reserve=10)  # at most 10 inbound connections in all
    for _ in range(10):
        assert gate.admit("10.0.0.9", uncapped=True) is None
    assert gate.total == 10
    assert gate.admit("10.0.0.9", uncapped=True) is Refusal.FD_RESERVE
    assert gate.admit("10.0.0.1") is Refusal.FD_RESERVE  # the reserve holds for everyone
    for _ in range(10):
        gate.release("10.0.0.9", uncapped=True)
    assert gate.total == 0 and not gate.per_host


def test_uncapped_connections_leave_the_hosts_capped_share_alone() -> None:
    gate = _gate(per_address=2, nofile=100, fd_reserve=10)
    for _ in range(5):
        assert gate.admit("127.0.0.1", uncapped=True) is None  # the proxy's HTTP connections
    # The same host's own (capped) connections, e.g. a device on the proxy's machine, still get their share.
    assert gate.admit("127.0.0.1") is None
    assert gate.admit("127.0.0.1") is None
    assert gate.admit("127.0.0.1") is Refusal.PER_ADDRESS
    assert gate.per_host["127.0.0.1"] == 2 and gate.total == 7


def test_networks_match_addresses_and_ipv4_mapped_addresses() -> None:
    networks = tuple(ipaddress.ip_network(n, strict=False) for n in ("10.1.0.0/16", "fd00::1"))
    assert _within("10.1.2.3", networks)
    assert _within("::ffff:10.1.2.3", networks)
    assert _within("fd00::1", networks)
    assert not _within("10.2.0.1", networks)
    assert not _within("not-an-address", networks)
    assert not _within("10.1.2.3", ())


class _Transport:
    def __init__(self, host: str) -> None:
        self.host = host
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.host, 40000) if name == "peername" else default

    def abort(self) -> None:
        self.aborted = True


class _Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.made = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made += 1


def _connect(gate: InboundGate, host: str, networks: tuple[Any, ...]) -> tuple[_GuardedProtocol, _Transport]:
    protocol, transport = _GuardedProtocol(_Inner(), gate, networks), _Transport(host)
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def test_the_http_guard_exempts_trusted_proxies_from_the_per_address_cap_only() -> None:
    proxies = (ipaddress.ip_network("127.0.0.1/32"),)
    gate = _gate(per_address=2, nofile=20, fd_reserve=10)
    held = [_connect(gate, "127.0.0.1", proxies) for _ in range(5)]
    assert not any(t.aborted for _, t in held)
    other = [_connect(gate, "127.0.0.2", proxies) for _ in range(3)]
    assert [t.aborted for _, t in other] == [False, False, True]  # not a proxy: capped
    held += [_connect(gate, "127.0.0.1", proxies) for _ in range(4)]
    assert [t.aborted for _, t in held[5:]] == [False, False, False, True]  # the total (20 - 10) still holds
    for protocol, transport in held:
        if not transport.aborted:
            protocol.connection_lost(None)
    for protocol, transport in other:
        if not transport.aborted:
            protocol.connection_lost(None)
    assert gate.total == 0 and not gate.per_host


def test_without_trusted_proxies_the_guard_caps_every_address() -> None:
    gate = _gate(per_address=2)
    connections = [_connect(gate, "127.0.0.1", ()) for _ in range(3)]
    assert [t.aborted for _, t in connections] == [False, False, True]
