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

Alarms first (issue 12): the driver reads the UDP socket itself, everything the
kernel holds at each readiness, and sorts it into the two lanes of
:class:`~gateway.gb28181.sip.triage.DatagramLanes` (an alarm is told by a bytes
search, no parse). Alarm-looking messages go to the core at once and what they
caused is flushed in the same loop turn; the rest (REGISTERs, keepalives,
catalogs) is served in slices of at most ``BULK_BUDGET`` s of CPU per loop
turn, so the loop keeps turning for the alarm's store commit and its MQTT
publish; for ``EXPEDITE_WINDOW`` s after an alarm, slices shrink to
``EXPEDITE_BUDGET`` (registration keeps most of its throughput during a steady
stream of alarms, forged ones included). SIP/TCP messages are framed per connection and sorted the
same way: an alarm is served at once, the rest waits in the bulk lane (a
connection is paused while the lane is full, never dropped).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import math
import socket
import time
from collections.abc import Callable
from typing import Final, Protocol, cast

from gateway.errors import MessageTooLarge
from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.framing import FramedMessage, SipFramingError, StreamFramer
from gateway.gb28181.sip.transport import Peer, Transport
from gateway.gb28181.sip.triage import DatagramLanes, Lane, looks_like_alarm
from gateway.io.conn_limits import GATE, InboundGate
from gateway.io.ports import bind_udp

log = logging.getLogger("kgw.sip.io")
UDP_BUFFER = 4 * 1024 * 1024
TIMER_TICK = 0.02  # s; SIP timers start at T1 = 500 ms, so 20 ms of rounding is harmless
SWEEP_INTERVAL = 1.0  # s between two checks of the inbound connections' timeouts
MAX_READ: Final = 4096  # datagrams read from the socket per readiness (the rest on the next)
URGENT_PER_TURN: Final = 256  # alarm-looking messages served per loop turn before the bulk lane gets its slice
BULK_BUDGET: Final = 0.008  # s of bulk work (REGISTER, keepalive, catalog…) per loop turn
EXPEDITE_BUDGET: Final = 0.002  # s of bulk work per loop turn while an alarm is on its way (commit, publish)
EXPEDITE_WINDOW: Final = 0.15  # s after an alarm during which loop turns stay short
BULK_CHECK_EVERY: Final = 4  # messages between two looks at the clock
# Bytes of messages waiting in the bulk lane: about what the kernel's 4 MiB receive buffer held
# before (it counts ~2.5x a small datagram's size). A longer queue only makes the devices'
# retransmissions arrive before their originals are answered: more work, not more throughput.
BULK_LANE_BYTES: Final = UDP_BUFFER // 2
MAX_UDP_OUT: Final = 16_384  # datagrams queued while the socket's send buffer is full (beyond: dropped)


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
        self.udp: socket.socket | None = None
        self.lanes: DatagramLanes[Peer] = DatagramLanes(
            max_message=core.endpoint.max_message_size, max_bulk_bytes=BULK_LANE_BYTES
        )
        self._work_pending = False
        self._expedite_until = float("-inf")  # loop time until which bulk slices stay short
        self._udp_out: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque()
        self._paused: set[_SipStream] = set()  # TCP connections paused while the bulk lane is full
        self.clock: Callable[[], float] = time.perf_counter  # CPU-slice clock (tests inject one)
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
        sock = bind_udp(host, port)
        sock.setblocking(False)
        self.udp = sock
        bound = sock.getsockname()[1]
        try:  # a registration storm arrives in bursts: give the kernel room (ZLM uses 4 MiB too)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_BUFFER)
        except OSError:
            pass
        self.loop.add_reader(sock.fileno(), self._on_readable)
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
            self.loop.remove_reader(self.udp.fileno())
            if self._udp_out:
                self.loop.remove_writer(self.udp.fileno())
                self._udp_out.clear()
            self.udp.close()
            self.udp = None
        self.lanes.clear()
        if self.tcp_server is not None:
            self.tcp_server.close()
            self.tcp_server = None
        for stream in list(self.connections.values()):
            stream.transport.close()

    # --- inbound: two lanes, alarms first ----------------------------------------

    def _on_readable(self) -> None:
        """The UDP socket has data: read what is there, serve alarms now, the rest in slices."""
        self._read_udp()
        self._serve_urgent()
        self._schedule_work()

    def _read_udp(self) -> None:
        sock = self.udp
        if sock is None:
            return
        now = self.loop.time()
        for _ in range(MAX_READ):
            try:
                data, addr = sock.recvfrom(65_535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error reported on the socket: not fatal
                log.debug("UDP receive error: %s", exc)
                return
            if self.lanes.push(data, Peer(Transport.UDP, addr[0], addr[1]), now) is None:
                self.core.endpoint.stats["dropped_backlog"] += 1  # the bulk lane is full, as a full kernel buffer

    def _serve_urgent(self) -> int:
        """Hand at most ``URGENT_PER_TURN`` alarm-looking messages to the core and flush what they caused now."""
        served = 0
        while served < URGENT_PER_TURN and (item := self.lanes.pop_urgent()) is not None:
            self._to_core(item.data, item.source)
            served += 1
        if served:
            self._expedite_until = self.loop.time() + EXPEDITE_WINDOW
            self.flush()  # the alarm's events reach the app in this turn, not the next
        return served

    def _schedule_work(self) -> None:
        if self.lanes and not self._work_pending:
            self._work_pending = True
            self.loop.call_soon(self._work)

    def _work(self) -> None:
        """One loop turn's share: new input, alarms, then a bounded slice of the bulk lane."""
        self._work_pending = False
        self._read_udp()
        self._serve_urgent()
        expedite = self.loop.time() < self._expedite_until
        # While an alarm is on its way, short slices, the clock read after every message and what
        # it caused in the app: the alarm's next step waits ~EXPEDITE_BUDGET, not a whole slice.
        budget, check_every = (EXPEDITE_BUDGET, 1) if expedite else (BULK_BUDGET, BULK_CHECK_EVERY)
        deadline = self.clock() + budget
        served = 0
        while (item := self.lanes.pop_bulk()) is not None:
            self._to_core(item.data, item.source)
            served += 1
            if served % check_every == 0:
                self.flush()  # what they caused in the app (catalogs, NOTIFYs upward) counts against the slice
                if self.clock() >= deadline:
                    break
        if served:
            self.flush_soon()
        if self._paused and self.lanes.bulk_bytes <= self.lanes.max_bulk_bytes // 2:
            for stream in list(self._paused):
                stream.resume()
            self._paused.clear()
        self._schedule_work()

    def _to_core(self, data: bytes, peer: Peer) -> None:
        # The core's clock is the loop's now (never the read time: its timers must not go backwards).
        try:
            self.core.receive(data, peer, self.loop.time())
        except Exception:  # a bug, not bad input: log once with context, keep serving
            log.exception("SIP core failed on %d bytes from %s", len(data), peer)

    def _queue_stream(self, data: bytes, stream: _SipStream) -> None:
        """A framed TCP message: an alarm is served now, the rest waits its turn (the connection may pause)."""
        lane = self.lanes.push(data, stream.peer, self.loop.time(), force=True)
        if lane is Lane.URGENT:
            self._serve_urgent()
        elif self.lanes.bulk_bytes > self.lanes.max_bulk_bytes and stream not in self._paused:
            stream.pause()
            self._paused.add(stream)
        self._schedule_work()

    # --- called by the protocols ---------------------------------------------

    def deliver(self, data: bytes, peer: Peer) -> None:
        """Hand bytes to the core now and contain failures; what it caused is flushed this loop turn."""
        self._to_core(data, peer)
        if looks_like_alarm(data, self.lanes.max_message):
            self._expedite_until = self.loop.time() + EXPEDITE_WINDOW
            self.flush()
        else:
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
            self._sendto(data, (peer.host, peer.port))
            return
        conn = peer.conn_id if peer.conn_id is not None else self._by_addr.get((peer.host, peer.port))
        stream = self.connections.get(conn) if conn is not None else None
        if stream is None:
            log.debug("no TCP connection for %s; dropping %d bytes", peer, len(data))
            return
        stream.transport.write(data)

    def _sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send a datagram; while the send buffer is full, queue it (bounded) and send when writable."""
        sock = self.udp
        if sock is None:
            return
        if not self._udp_out:
            try:
                sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self.loop.add_writer(sock.fileno(), self._on_writable)
            except OSError as exc:  # unreachable host, refused port: UDP is best effort
                log.debug("UDP send to %s failed: %s", addr, exc)
                return
        if len(self._udp_out) >= MAX_UDP_OUT:
            self.core.endpoint.stats["dropped_send_queue"] += 1
            return
        self._udp_out.append((data, addr))

    def _on_writable(self) -> None:
        sock = self.udp
        while self._udp_out and sock is not None:
            data, addr = self._udp_out[0]
            try:
                sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("UDP send to %s failed: %s", addr, exc)
            self._udp_out.popleft()
        if sock is not None:
            self.loop.remove_writer(sock.fileno())

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
                self.driver._queue_stream(item.data, self)
            else:
                self.transport.write(b"\r\n")  # RFC 5626 pong

    def pause(self) -> None:
        """Stop reading while the driver's bulk lane is full (TCP is never dropped)."""
        with contextlib.suppress(RuntimeError, AttributeError):
            self.transport.pause_reading()

    def resume(self) -> None:
        """Read again."""
        with contextlib.suppress(RuntimeError, AttributeError):
            self.transport.resume_reading()

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
        self.driver._paused.discard(self)
        self.driver.buffered -= self._buffered
        self._buffered = 0
        if self.counted:
            self.counted = False
            self.driver.gate.release(self.addr[0])
        self.driver._forget_stream(self)
