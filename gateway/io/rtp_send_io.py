"""asyncio media send transports: RTP packets to one receiver (the gateway towards an upper platform).

The sending twin of :mod:`gateway.io.rtp_io` / :mod:`gateway.io.rtp_tcp_io`, for the
three modes of docs/gb28181.md §15.5 seen from the *sender*:

* :meth:`UdpRtpSender.open`: datagrams to the receiver's offered ``c=``/``m=``;
* :meth:`TcpRtpSender.bind` (the receiver's offer said ``a=setup:passive``: it
  listens): a socket bound now, so its port can go into our answer, connected by
  :meth:`RtpSendTransport.start` after the ACK;
* :meth:`TcpRtpSender.listen` (its offer said ``a=setup:active``): we listen before
  the answer and :meth:`RtpSendTransport.start` waits for its one connection
  (``a=connection:new``).

TCP frames are RFC 4571 (docs/gb28181.md §17.2). Only bytes and timers here: what to send,
and what a slow or lost receiver means for the call, is the caller's business.
:attr:`RtpSendTransport.writable` turns False while more than ``high_water`` bytes
wait in asyncio's buffer; a relay then stops pulling and lets its fan-out skip to
the next key frame instead of queueing without bound.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from gateway.io.ports import PortSpec, bind_in_range, bind_socket, bind_udp
from gateway.io.rtp_io import Addr, CloseReason, MediaConnectError
from gateway.media.rtp import Rfc4571Framer

__all__ = ["DEFAULT_HIGH_WATER", "RtpSendStats", "RtpSendTransport", "TcpRtpSender", "UdpRtpSender"]

log = logging.getLogger("kgw.media.io")
DEFAULT_HIGH_WATER = 1024 * 1024  # bytes waiting in asyncio before the receiver counts as slow
UDP_SNDBUF = 1024 * 1024  # a key frame is a burst of dozens of datagrams


@dataclass(slots=True)
class RtpSendStats:
    """What one send transport wrote."""

    packets: int = 0
    bytes: int = 0


class RtpSendTransport(abc.ABC):
    """One outgoing RTP stream; ``on_closed(reason)`` once if it ends by itself (never after :meth:`close`)."""

    def __init__(self, on_closed: Callable[[str], None], high_water: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.on_closed = on_closed
        self.high_water = high_water
        self.stats = RtpSendStats()
        self.closed = False
        self._drained = asyncio.Event()
        self._drained.set()

    @property
    @abc.abstractmethod
    def port(self) -> int:
        """Our local port, for the ``m=`` line of the SDP answer."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """True once packets can be sent (UDP: at once)."""

    @abc.abstractmethod
    async def start(self, timeout: float) -> None:
        """Make the path ready after the ACK; :class:`MediaConnectError` when it cannot be within ``timeout``."""

    @abc.abstractmethod
    def _write(self, packets: Sequence[bytes]) -> None:
        """Put the packets on the wire (the path is connected)."""

    @abc.abstractmethod
    def _buffered(self) -> int:
        """Bytes asyncio holds for the wire."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Close the sockets of the subclass."""

    @property
    def writable(self) -> bool:
        """False while the receiver does not keep up (more than ``high_water`` bytes buffered)."""
        return self.connected and not self.closed and self._buffered() <= self.high_water

    async def wait_writable(self, timeout: float) -> bool:
        """Wait until the buffer drained (or ``timeout``); True when writable now."""
        if not self.writable and not self.closed:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
        return self.writable

    def send(self, packets: Sequence[bytes]) -> None:
        """Send RTP packets in order (dropped when not connected or closed)."""
        if self.closed or not self.connected or not packets:
            return
        self._write(packets)
        self.stats.packets += len(packets)
        self.stats.bytes += sum(map(len, packets))

    def close(self) -> None:
        """Close locally; ``on_closed`` is not called (the caller knows)."""
        if not self.closed:
            self.closed = True
            self._drained.set()
            self._release()

    def _resumed(self) -> None:
        self._drained.set()

    def _lost(self, reason: str) -> None:
        """The path ended by itself: release, then tell the owner once."""
        if self.closed:
            return
        self.close()
        try:
            self.on_closed(reason)
        except Exception:
            log.exception("media sender on_closed(%s) failed", reason)


class UdpRtpSender(RtpSendTransport):
    """RTP over UDP from one bound port to the receiver's address."""

    def __init__(self, target: Addr, on_closed: Callable[[str], None], high_water: int) -> None:
        super().__init__(on_closed, high_water)
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self._port = 0

    @classmethod
    async def open(
        cls,
        host: str,
        target: Addr,
        *,
        ports: PortSpec = 0,
        on_closed: Callable[[str], None] = lambda reason: None,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> UdpRtpSender:
        """Bind ``host`` on ``ports`` (0, a port or a range) to send to ``target``."""
        self = cls(target, on_closed, high_water)

        async def bind(port: int) -> asyncio.DatagramTransport:
            transport, _ = await self.loop.create_datagram_endpoint(lambda: _UdpOut(self), sock=bind_udp(host, port))
            return transport

        self.transport = await bind_in_range(bind, host, ports)
        # The selector datagram transport buffers on EAGAIN and has flow control (typeshed omits it).
        limits = getattr(self.transport, "set_write_buffer_limits", None)
        if limits is not None:
            limits(high=high_water)
        self._port = int(self.transport.get_extra_info("sockname")[1])
        with contextlib.suppress(OSError):
            self.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_SNDBUF)
        return self

    @property
    def port(self) -> int:
        return self._port

    @property
    def connected(self) -> bool:
        return self.transport is not None

    async def start(self, timeout: float) -> None:
        """Nothing to wait for over UDP."""

    def _write(self, packets: Sequence[bytes]) -> None:
        assert self.transport is not None
        for packet in packets:
            self.transport.sendto(packet, self.target)

    def _buffered(self) -> int:
        size = getattr(self.transport, "get_write_buffer_size", None)
        return int(size()) if size is not None else 0

    def _release(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def __str__(self) -> str:
        return f"UDP :{self._port} -> {self.target[0]}:{self.target[1]}"


class TcpRtpSender(RtpSendTransport):
    """RTP over TCP (RFC 4571), connecting out (:meth:`bind`) or accepting one connection (:meth:`listen`)."""

    def __init__(self, target: Addr | None, on_closed: Callable[[str], None], high_water: int) -> None:
        super().__init__(on_closed, high_water)
        self.target = target  # None: we listen
        self.allowed_host: str | None = None  # listening: only this host may connect (None: anyone)
        self.refused_connections = 0
        self.transport: asyncio.Transport | None = None
        self._sock: socket.socket | None = None  # bound, not yet connected
        self._server: asyncio.base_events.Server | None = None
        self._accepted: asyncio.Future[None] = self.loop.create_future()
        self._framer = Rfc4571Framer()
        self._port = 0

    @classmethod
    async def bind(
        cls,
        host: str,
        target: Addr,
        *,
        ports: PortSpec = 0,
        on_closed: Callable[[str], None] = lambda reason: None,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> TcpRtpSender:
        """A socket bound on ``host`` now, connected to ``target`` by :meth:`start`."""
        self = cls(target, on_closed, high_water)

        async def bind(port: int) -> socket.socket:
            return bind_socket(host, port, socket.SOCK_STREAM)

        self._sock = await bind_in_range(bind, host, ports)
        self._port = int(self._sock.getsockname()[1])
        return self

    @classmethod
    async def listen(
        cls,
        host: str,
        *,
        ports: PortSpec = 0,
        allowed_host: str | None = None,
        on_closed: Callable[[str], None] = lambda reason: None,
        high_water: int = DEFAULT_HIGH_WATER,
    ) -> TcpRtpSender:
        """Listen on ``host`` (``ports``); :meth:`start` waits for the receiver's connection.

        With ``allowed_host``, a connection from any other address is closed and
        counted, so a port scan cannot take the stream meant for the receiver.
        """
        self = cls(None, on_closed, high_water)
        self.allowed_host = allowed_host

        async def bind(port: int) -> asyncio.base_events.Server:
            return await self.loop.create_server(lambda: _TcpOut(self), host, port)

        self._server = await bind_in_range(bind, host, ports)
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def port(self) -> int:
        return self._port

    @property
    def connected(self) -> bool:
        return self.transport is not None

    async def start(self, timeout: float) -> None:
        """Connect to the receiver (bound socket), or wait for its connection (listener)."""
        if self.closed or self.transport is not None:
            return
        where = self.target or ("", self._port)
        try:
            async with asyncio.timeout(timeout):
                if self._sock is not None:
                    sock, self._sock = self._sock, None
                    try:
                        await self.loop.sock_connect(sock, where)
                        await self.loop.create_connection(lambda: _TcpOut(self), sock=sock)
                    except BaseException:
                        sock.close()
                        raise
                else:
                    await asyncio.shield(self._accepted)
        except TimeoutError:
            raise MediaConnectError(*where, f"no connection within {timeout:g} s") from None
        except OSError as exc:
            raise MediaConnectError(*where, str(exc) or type(exc).__name__) from exc
        if self.closed:
            raise MediaConnectError(*where, "closed while connecting")

    def _write(self, packets: Sequence[bytes]) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(self._framer.frame(p) for p in packets))

    def _buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _attach(self, transport: asyncio.Transport) -> bool:
        """A connection is up; one per stream (``a=connection:new``), later ones are refused."""
        if self.closed or self.transport is not None:
            return False
        peer = transport.get_extra_info("peername")
        if self.allowed_host is not None and (not peer or peer[0] != self.allowed_host):
            self.refused_connections += 1
            log.info("media %s: refused a connection from %s", self, peer)
            return False
        self.transport = transport
        transport.set_write_buffer_limits(high=self.high_water)
        with contextlib.suppress(OSError):
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._server is not None:
            self._server.close()
            self._server = None
        if not self._accepted.done():
            self._accepted.set_result(None)
        return True

    def _release(self) -> None:
        for closable in (self.transport, self._server, self._sock):
            if closable is not None:
                closable.close()
        self.transport = self._server = self._sock = None
        if not self._accepted.done():
            self._accepted.cancel()

    def __str__(self) -> str:
        peer = f"{self.target[0]}:{self.target[1]}" if self.target else "listening"
        return f"TCP :{self._port} -> {peer}"


class _UdpOut(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpRtpSender) -> None:
        self.owner = owner

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: the receiver is not (yet, or any more) listening.
        # Not fatal over UDP; the signalling decides when the call is over.
        log.debug("media UDP %s: %s", self.owner, exc)

    def pause_writing(self) -> None:
        """Over the high-water mark: ``writable`` reads the buffer size itself."""

    def resume_writing(self) -> None:
        self.owner._resumed()


class _TcpOut(asyncio.Protocol):
    def __init__(self, owner: TcpRtpSender) -> None:
        self.owner = owner
        self.attached = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, but not an asyncio.Transport subclass under uvloop: no isinstance check.
        self.attached = self.owner._attach(cast(asyncio.Transport, transport))
        if not self.attached:
            transport.close()

    def data_received(self, data: bytes) -> None:
        """RTCP or anything else from the receiver is not read."""

    def pause_writing(self) -> None:
        """Over the high-water mark: ``writable`` reads the buffer size itself."""

    def resume_writing(self) -> None:
        self.owner._resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.attached:
            self.owner._lost(CloseReason.CONNECTION_ERROR if exc is not None else CloseReason.PEER_CLOSED)
