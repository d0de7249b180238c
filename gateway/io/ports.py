"""Binding local ports for media and SIP: one port, or the first free one of a configured range.

Production configurations give media a port range (``media_ports``) so that
firewalls can be opened for it. A busy port must be skipped, whatever event
loop runs: uvloop reports a busy UDP port as ``OSError(errno=None, "could not
bind to local_addr")``, so UDP sockets are bound here with the ``socket``
module (errno always set) and handed to the loop with ``sock=``.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.errors import ConfigError, PortRangeExhausted

__all__ = ["PortRangeExhausted", "PortSpec", "bind_in_range", "bind_socket", "bind_udp"]

T = TypeVar("T")
PortSpec = int | tuple[int, int]  # a port (0: any) or an inclusive (low, high) range


def bind_socket(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """A non-blocking socket of ``kind`` bound to ``host:port`` (closed again if the bind fails)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def bind_udp(host: str, port: int) -> socket.socket:
    """A bound UDP socket for ``loop.create_datagram_endpoint(sock=...)`` (see the module docstring)."""
    return bind_socket(host, port, socket.SOCK_DGRAM)


async def bind_in_range(bind: Callable[[int], Awaitable[T]], host: str, ports: PortSpec) -> T:
    """Call ``bind(port)`` for ``ports`` (one port, or each of an inclusive range in order).

    A port in use is skipped; when none is left, :class:`PortRangeExhausted`.
    """
    if isinstance(ports, int):
        return await bind(ports)
    low, high = ports
    if not 1 <= low <= high <= 0xFFFF:
        raise ConfigError(f"media port range must be 1 <= low <= high <= 65535, not {low}-{high}")
    for port in range(low, high + 1):
        try:
            return await bind(port)
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
    raise PortRangeExhausted(host, low, high)
