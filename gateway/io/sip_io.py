"""asyncio adapters for SIP cores: they move bytes and run one timer, nothing else.

:class:`SipDriver` binds one UDP socket and (optionally) one TCP listener on
the same port, feeds every datagram / framed stream message to a sans-I/O
core (a :class:`~gateway.gb28181.sip.router.SipRouter`), and keeps exactly one
``loop.call_at`` armed at the core's next deadline. Sending is driven by the
endpoint's ``output_ready`` signal: whoever queues a message (a datagram's
answer, an API query, an alarm's acknowledgement, a BYE), the driver flushes
once at the end of the loop turn, so nobody calls ``flush`` by hand.
Exceptions from the core are contained here (docs/design.md §6): one bad packet
must never stall the loop or tear down a device's TCP connection.

Inbound TCP connections are bounded (issue 10, H4; limits in :mod:`gateway.io.conn_limits`):
the process-wide gate refuses a host's connections beyond its cap and every connection
that would eat into the file descriptors reserved for the alarm path; a sweep once a
second closes a connection whose started message (headers and body) is not complete
within ``header_timeout`` (slowloris), or that sent no complete message (nor RFC 5626
ping) for ``idle_timeout``; and the unfinished bytes of all connections together are
capped. A connection reset before the loop could hand it over is closed with one
debug line (L2).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket
from collections.abc import Callable
from typing import Protocol, cast

from gateway.errors import MessageTooLarge
from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.framing import FramedMessage, SipFramingError, StreamFramer
from gateway.gb28181.sip.transport import Peer, Transport
from gateway.io.conn_limits import GATE, InboundGate
from gateway.io.ports import bind_udp

log = logging.getLogger("kgw.sip.io")
UDP_BUFFER = 4 * 1024 * 1024
TIMER_TICK = 0.02  # s; SIP timers start at T1 = 500 ms, so 20 ms of rounding is harmless
SWEEP_INTERVAL = 1.0  # s between two checks of the inbound connections' timeouts


class SipCore(Protocol):
    """What a driver needs from a core (DeviceAccess, AgentHost…)."""

    endpoint: SipEndpoint

    def receive(self, data: bytes, peer: Peer, now: float) -> None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


class SipDriver:
    """Runs a core on a UDP socket and a TCP listener/connections."""

    def __init__(
        self, core: SipCore, *, on_activity: Callable[[], None] | None = None, gate: InboundGate | None = None
    ) -> None:
        self.core = core
        self.gate = gate or GATE
        self.buffered = 0  # unfinished message bytes over all connections
        self._sweeper: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()
        self.on_activity = on_activity or (lambda: None)
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp_server: asyncio.base_events.Server | None = None
        self.connections: dict[int, _SipStream] = {}
        self._by_addr: dict[tuple[str, int], int] = {}
        self._next_conn = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_pending = False
        core.endpoint.output_ready = self.flush_soon

    async def listen(self, host: str, port: int, *, tcp: bool = True) -> int:
        """Bind UDP (and TCP on the same port); returns the bound port.

        With port 0 the kernel picks a UDP port whose TCP twin may be taken
        (e.g. by a socket in TIME_WAIT): then we try another one.
        """
        for attempt in range(50):
            try:
                return await self._bind(host, port, tcp=tcp)
            except OSError as exc:
                if port != 0 or exc.errno != errno.EADDRINUSE or attempt == 49:
                    raise
                self.close()
        raise AssertionError("unreachable")

    async def _bind(self, host: str, port: int, *, tcp: bool) -> int:
        self.udp, _ = await self.loop.create_datagram_endpoint(lambda: _SipDatagram(self), sock=bind_udp(host, port))
        bound = self.udp.get_extra_info("sockname")[1]
        sock = self.udp.get_extra_info("socket")
        try:  # a registration storm arrives in bursts: give the kernel room (ZLM uses 4 MiB too)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_BUFFER)
        except OSError:
            pass
        if tcp:
            self.tcp_server = await self.loop.create_server(lambda: _SipStream(self, inbound=True), host, bound)
            self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        self.core.endpoint.local_port = bound
        if host not in ("0.0.0.0", "::"):  # a wildcard is no address to put in Via/Contact
            self.core.endpoint.local_host = host
        return int(bound)

    async def connect_tcp(self, host: str, port: int) -> Peer:
        """Open a TCP connection (device side); returns the Peer to send on."""
        transport, stream = await self.loop.create_connection(lambda: _SipStream(self), host, port)
        assert stream.conn_id is not None
        local = transport.get_extra_info("sockname")
        self.core.endpoint.local_host, self.core.endpoint.local_port = local[0], local[1]
        return Peer(Transport.TCP, host, port, stream.conn_id)

    async def open_tcp(self, host: str, port: int) -> Peer:
        """Open an outgoing TCP connection from the gateway side (towards an upper platform).

        Unlike :meth:`connect_tcp` the endpoint keeps advertising its listening
        address; requests to ``Peer(TCP, host, port)`` without a connection id use
        this connection while it lasts.
        """
        _transport, stream = await self.loop.create_connection(lambda: _SipStream(self), host, port)
        assert stream.conn_id is not None
        return Peer(Transport.TCP, host, port, stream.conn_id)

    def has_connection(self, host: str, port: int) -> bool:
        """Whether a TCP connection to ``host:port`` is open."""
        conn = self._by_addr.get((host, port))
        return conn is not None and conn in self.connections

    def close(self) -> None:
        """Close every socket and the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.udp is not None:
            self.udp.close()
            self.udp = None
        if self.tcp_server is not None:
            self.tcp_server.close()
            self.tcp_server = None
        for stream in list(self.connections.values()):
            stream.transport.close()

    # --- called by the protocols ---------------------------------------------

    def deliver(self, data: bytes, peer: Peer) -> None:
        """Hand bytes to the core and contain failures; what it caused is flushed this loop turn."""
        try:
            self.core.receive(data, peer, self.loop.time())
        except Exception:  # a bug, not bad input: log once with context, keep serving
            log.exception("SIP core failed on %d bytes from %s", len(data), peer)
        self.flush_soon()

    def flush_soon(self) -> None:
        """Flush once at the end of this loop turn, however many messages were queued in it."""
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what the endpoint queued, let the app drain its events, send again, re-arm the timer."""
        self._flush_pending = True  # output queued meanwhile goes out in this flush
        try:
            for data, peer in self.core.endpoint.data_to_send():
                self._send(data, peer)
            try:
                self.on_activity()
            except Exception:
                log.exception("activity callback failed")
            for data, peer in self.core.endpoint.data_to_send():
                self._send(data, peer)
            self._rearm()
        finally:
            self._flush_pending = False

    def _send(self, data: bytes, peer: Peer) -> None:
        if peer.transport is Transport.UDP:
            if self.udp is not None:
                self.udp.sendto(data, (peer.host, peer.port))
            return
        conn = peer.conn_id if peer.conn_id is not None else self._by_addr.get((peer.host, peer.port))
        stream = self.connections.get(conn) if conn is not None else None
        if stream is None:
            log.debug("no TCP connection for %s; dropping %d bytes", peer, len(data))
            return
        stream.transport.write(data)

    def _rearm(self) -> None:
        """Keep one wake-up armed, rounded up to a TIMER_TICK boundary.

        Under load every keepalive starts a transaction with its own Timer J;
        rounding lets one wake-up serve all deadlines of a tick instead of one
        loop callback per deadline. An armed wake-up at or before the new tick
        is kept: when it fires, the core handles what is due and we re-arm.
        """
        deadline = self.core.get_timer()
        if deadline is None:
            return
        tick = math.ceil(deadline / TIMER_TICK) * TIMER_TICK
        if self._timer_at is not None and self._timer_at <= tick:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = tick
        self._timer = self.loop.call_at(tick, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        try:
            self.core.handle_timer(self.loop.time())
        except Exception:
            log.exception("SIP core timer failed")
        self.flush()

    def _sweep(self) -> None:
        """Close inbound connections that stalled mid-message or stayed idle too long."""
        now = self.loop.time()
        limits = self.gate.limits
        for stream in list(self.connections.values()):
            if not stream.inbound:
                continue
            if stream.partial_since is not None and now - stream.partial_since > limits.header_timeout:
                stream.close_for("header_timeout")
            elif now - stream.last_message > limits.idle_timeout:
                stream.close_for("idle_timeout")
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _register_stream(self, stream: _SipStream, addr: tuple[str, int]) -> int:
        self._next_conn += 1
        self.connections[self._next_conn] = stream
        self._by_addr[addr] = self._next_conn
        return self._next_conn

    def _forget_stream(self, stream: _SipStream) -> None:
        if stream.conn_id is None:
            return
        self.connections.pop(stream.conn_id, None)
        if self._by_addr.get(stream.addr) == stream.conn_id:
            del self._by_addr[stream.addr]
        self.core.endpoint.transport_error(stream.peer, self.loop.time())
        self.flush()


class _SipDatagram(asyncio.DatagramProtocol):
    def __init__(self, driver: SipDriver) -> None:
        self.driver = driver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.driver.deliver(data, Peer(Transport.UDP, addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class _SipStream(asyncio.Protocol):
    def __init__(self, driver: SipDriver, *, inbound: bool = False) -> None:
        self.driver = driver
        self.framer = StreamFramer(max_message=driver.core.endpoint.max_message_size)
        self.conn_id: int | None = None
        self.addr: tuple[str, int] = ("", 0)
        self.peer = Peer(Transport.TCP, "", 0)
        self.inbound = inbound
        self.counted = False  # admitted by the gate (released on connection_lost)
        self.last_message = driver.loop.time()  # a complete message or ping last arrived
        self.partial_since: float | None = None  # when the unfinished message's first byte came
        self._buffered = 0  # this connection's share of driver.buffered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # typeshed passes every Protocol a BaseTransport; a stream protocol gets a stream transport
        # (under uvloop not an asyncio.Transport subclass, so no isinstance check).
        self.transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if not peername:  # reset before the loop handed it over (L2): nothing to serve, nothing to log
            log.debug("SIP/TCP connection gone before it was accepted")
            cast(asyncio.Transport, transport).abort()
            return
        host, port = peername[:2]
        if self.inbound:
            if self.driver.gate.admit(host) is not None:  # counted and logged by the gate
                cast(asyncio.Transport, transport).abort()
                return
            self.counted = True
        self.addr = (host, port)
        self.conn_id = self.driver._register_stream(self, self.addr)
        self.peer = Peer(Transport.TCP, host, port, self.conn_id)

    def close_for(self, reason: str) -> None:
        """Close a connection that broke a limit (counted by reason)."""
        log.info("closing SIP/TCP %s: %s", self.peer, reason)
        self.driver.gate.closed(reason)
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.conn_id is None:
            return
        try:
            items = self.framer.feed(data)
        except MessageTooLarge:
            self.driver.core.endpoint.reject_oversized(data[:4096], self.peer)
            self.driver.flush()
            self.transport.close()
            return
        except SipFramingError as exc:
            log.info("closing SIP/TCP %s: %s", self.peer, exc.reason)
            self.transport.close()
            return
        now = self.driver.loop.time()
        if items:
            self.last_message = now
        self._account(now)
        if self.driver.buffered > self.driver.gate.limits.max_buffered:
            self.close_for("buffer_cap")
            return
        for item in items:
            if isinstance(item, FramedMessage):
                self.driver.deliver(item.data, self.peer)
            else:
                self.transport.write(b"\r\n")  # RFC 5626 pong

    def _account(self, now: float) -> None:
        """Track this connection's unfinished bytes (driver total) and since when a message is pending."""
        buffered = self.framer.buffered
        self.driver.buffered += buffered - self._buffered
        self._buffered = buffered
        if buffered == 0:
            self.partial_since = None
        elif self.partial_since is None or self.last_message == now:
            self.partial_since = now

    def connection_lost(self, exc: Exception | None) -> None:
        self.driver.buffered -= self._buffered
        self._buffered = 0
        if self.counted:
            self.counted = False
            self.driver.gate.release(self.addr[0])
        self.driver._forget_stream(self)
