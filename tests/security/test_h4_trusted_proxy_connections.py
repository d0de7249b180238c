"""H4 and a reverse proxy: the per-address connection cap must not cut off a trusted proxy (issue 10).

A reverse proxy in front of the console brings every user from its one address, so the
per-address cap (``tcp_per_address``) would turn away users beyond it. Addresses inside
``trusted_proxies`` skip that cap on the HTTP listener (the total and the fd reserve still
apply); any other address, and the proxy's address without the setting, stay capped.
Over real sockets from 127.0.0.1 to the HTTP listener.
"""

from __future__ import annotations

import asyncio
import socket

from gateway.io.conn_limits import GATE

CAP = 4
OPENED = 3 * CAP


def _served(port: int, count: int) -> int:
    """Hold ``count`` connections open at once, then ask /healthz on each: how many answered 200."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=20)
            socks.append(sock)
        served = 0
        for sock in socks:
            try:
                sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                if sock.recv(4096).startswith(b"HTTP/1.1 200"):
                    served += 1
            except OSError:  # reset: refused by the gate
                continue
        return served
    finally:
        for sock in socks:
            sock.close()


async def test_connections_from_a_trusted_proxy_are_not_capped_per_address(gateway_factory):
    service = await gateway_factory(tcp_per_address=CAP, trusted_proxies=("127.0.0.1/32",))
    assert GATE.limits.per_address == CAP

    served = await asyncio.to_thread(_served, service.http_port, OPENED)

    assert served == OPENED, f"{served} of {OPENED} connections from the trusted proxy served"


async def test_without_the_setting_the_same_address_is_capped(gateway_factory):
    service = await gateway_factory(tcp_per_address=CAP)

    served = await asyncio.to_thread(_served, service.http_port, OPENED)

    assert served <= CAP, f"{served} of {OPENED} connections from one address served (cap {CAP})"
    assert served >= 1


async def test_a_trusted_network_does_not_exempt_other_addresses(gateway_factory):
    service = await gateway_factory(tcp_per_address=CAP, trusted_proxies=("127.0.0.2/32",))

    served = await asyncio.to_thread(_served, service.http_port, OPENED)

    assert served <= CAP, f"{served} of {OPENED} connections from an untrusted address served (cap {CAP})"
