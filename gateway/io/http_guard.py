"""Resource limits for the aiohttp server (issue 10, H4): connection caps and slow-client timeouts.

aiohttp 3.14 already closes a connection whose request head does not complete within
``keepalive_timeout`` (its keep-alive timer starts at ``connection_made`` and only a
complete request stops it), so :func:`runner_options` sets that timeout to the
header timeout. What aiohttp has no option for:

* a per-source-address connection cap and the file-descriptor reserve: :class:`GuardedSite`
  puts a small protocol in front of aiohttp's request handler that asks the process-wide
  :class:`~gateway.io.conn_limits.InboundGate` in ``connection_made`` and aborts refused
  connections before aiohttp sees them; connections from a trusted reverse proxy's
  networks (``uncapped``) skip the per-address cap, since the proxy brings every user
  from its one address, while the total and the reserve still apply to them;
* a body timeout: :func:`body_deadline` reads a request body within ``body_timeout``
  (408 otherwise), so an unfinished body cannot hold a handler and its buffer forever.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any, cast

from aiohttp import web

from gateway.io.conn_limits import GATE, InboundGate

__all__ = ["GuardedSite", "body_deadline", "runner_options"]

log = logging.getLogger("kgw.http.limits")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _within(host: str, networks: tuple[Network, ...]) -> bool:
    """Whether ``host`` (a peer address) lies in one of ``networks`` (IPv4-mapped IPv6 counts as IPv4)."""
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def runner_options(gate: InboundGate = GATE) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner``: the idle/head timeout of a connection."""
    return {"keepalive_timeout": gate.limits.header_timeout}


@web.middleware
async def body_deadline(request: web.Request, handler: Any) -> web.StreamResponse:
    """Read a request's body within the body timeout (the handler then gets it from the cache)."""
    if request.can_read_body:
        try:
            async with asyncio.timeout(GATE.limits.body_timeout):
                await request.read()
        except TimeoutError:
            GATE.closed("body_timeout")
            raise web.HTTPRequestTimeout(
                text='{"error": "request body too slow"}', content_type="application/json"
            ) from None
    response: web.StreamResponse = await handler(request)
    return response


class _GuardedProtocol(asyncio.Protocol):
    """Admission in front of one aiohttp request handler; passes everything else through."""

    def __init__(self, inner: asyncio.Protocol, gate: InboundGate, uncapped: tuple[Network, ...] = ()) -> None:
        self.inner = inner
        self.gate = gate
        self.uncapped_networks = uncapped
        self.uncapped = False  # admitted without the per-address cap (released the same way)
        self.host: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        if not peername:  # reset before accept completed: nothing to serve
            cast(asyncio.Transport, transport).abort()
            return
        host = str(peername[0])
        self.uncapped = _within(host, self.uncapped_networks)
        if self.gate.admit(host, uncapped=self.uncapped) is not None:
            cast(asyncio.Transport, transport).abort()
            return
        self.host = host
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.host is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.host is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.host is not None:
            self.gate.release(self.host, uncapped=self.uncapped)
            self.host = None
            self.inner.connection_lost(exc)


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` whose connections pass the inbound gate first (same arguments).

    ``uncapped``: networks (the trusted reverse proxies) exempt from the per-address cap.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        *args: Any,
        gate: InboundGate = GATE,
        uncapped: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, *args, **kwargs)
        self._gate = gate
        self._uncapped = tuple(ipaddress.ip_network(n, strict=False) for n in uncapped)

    async def start(self) -> None:
        """Like ``TCPSite.start`` with the gate in front of aiohttp's protocol factory."""
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        gate, uncapped = self._gate, self._uncapped
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _GuardedProtocol(server(), gate, uncapped),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port
