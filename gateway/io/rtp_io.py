"""asyncio media receive transports (gateway side): they move RTP bytes and run timers, nothing else.

GB/T 28181 media arrives three ways (docs/gb28181.md §15.5): over UDP, over TCP
where the gateway listens and the device connects (TCP-PASSIVE), or over TCP
where the gateway connects to the port in the device's SDP answer (TCP-ACTIVE).
Each transport hands every RTP datagram or RFC 4571 frame to a :class:`MediaSink`
(the media session's RtpReceiver + PsDemuxer pipeline) and reports its end once
through ``on_closed``. RTCP is counted here and not fed as media. Exceptions from
the sink are contained (docs/design.md §6): a bug in one session must never kill the
loop or another stream. This module holds the shared parts and the UDP transport;
the TCP ones live in :mod:`gateway.io.rtp_tcp_io`.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.errors import ConfigError, MediaTransportError
from gateway.io.ports import PortSpec, bind_in_range, bind_udp

log = logging.getLogger("kgw.media.io")
T = TypeVar("T")
Addr = tuple[str, int]
UDP_RCVBUF = 4 * 1024 * 1024  # ZLMediaKit asks for 4 MiB too; the kernel caps it at net.core.rmem_max
DEFAULT_RTP_TIMEOUT = 10.0  # s without media before a stream is declared dead (ZLM's rtp_timeout_sec default)


class MediaSink(Protocol):
    """Where a transport delivers media: one packet at a time, then one close notice."""

    def feed(self, data: bytes, source: Addr) -> None:
        """Take one RTP packet (a UDP datagram or an RFC 4571 frame) from ``source``."""

    def on_closed(self, reason: str) -> None:
        """The transport ended by itself (never called after a local :meth:`close`)."""


class CloseReason(enum.StrEnum):
    """Why a transport ended; passed to :meth:`MediaSink.on_closed` as a ``str``."""

    NO_CONNECTION = "no_connection"  # TCP-PASSIVE: the device never connected (docs/gb28181.md §19 item 3)
    RTP_TIMEOUT = "rtp_timeout"
    FRAMING_ERROR = "framing_error"
    PEER_CLOSED = "peer_closed"
    CONNECTION_ERROR = "connection_error"


class MediaConnectError(MediaTransportError):
    """TCP-ACTIVE: the device's media port did not accept our connection in time."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot connect to media port {host}:{port}: {reason}")
        self.host, self.port, self.reason = host, port, reason


@dataclass(slots=True)
class MediaTransportStats:
    """Counters of one media transport."""

    packets: int = 0  # RTP packets handed to the sink
    bytes: int = 0
    rtcp: int = 0  # RTCP packets seen and not fed
    feed_errors: int = 0  # exceptions raised by the sink's feed
    refused_connections: int = 0  # TCP-PASSIVE: connections after the first one
    foreign_connections: int = 0  # TCP-PASSIVE: connections from a host the answer does not allow
    non_rtp_frames: int = 0  # TCP: frames whose first byte is not RTP version 2


class MediaWatchdog:
    """Calls ``on_timeout`` once no :meth:`touch` happened for ``timeout`` seconds.

    One ``loop.call_at`` at most, re-armed lazily: :meth:`touch` only records the
    time (it runs per packet), and when the timer fires early it moves itself to
    the last touch plus ``timeout`` — like the SIP driver's coalesced timer.
    """

    def __init__(self, timeout: float, on_timeout: Callable[[], None]) -> None:
        if timeout <= 0:
            raise ConfigError(f"rtp timeout must be positive, not {timeout}")
        self.timeout = timeout
        self._on_timeout = on_timeout
        self._loop = asyncio.get_running_loop()
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def armed(self) -> bool:
        """True between :meth:`start` and the timeout or :meth:`cancel`."""
        return self._timer is not None

    def start(self) -> None:
        """Start (or restart) counting from now."""
        self.cancel()
        self._last = self._loop.time()
        self._timer = self._loop.call_at(self._last + self.timeout, self._fire)

    def touch(self) -> None:
        """Something arrived: push the deadline back (no timer work)."""
        self._last = self._loop.time()

    def cancel(self) -> None:
        """Stop watching."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        deadline = self._last + self.timeout
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._fire)
            return
        self._timer = None
        try:
            self._on_timeout()
        except Exception:
            log.exception("media watchdog callback failed")


class MediaTransport(abc.ABC):
    """What every media transport shares: delivery to the sink, counters, watchdog, closing once."""

    def __init__(self, sink: MediaSink, rtp_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.sink = sink
        self.stats = MediaTransportStats()
        self.closed = False
        self.close_reason: str | None = None
        self.watchdog = MediaWatchdog(rtp_timeout, lambda: self._finish(CloseReason.RTP_TIMEOUT))

    def close(self) -> None:
        """Close locally; the sink's ``on_closed`` is not called (the caller knows)."""
        if not self.closed:
            self._shutdown("closed")

    def _deliver(self, data: bytes, source: Addr) -> None:
        """Hand one packet to the sink; RTCP is only counted; sink failures are contained."""
        if self.closed:
            return
        if len(data) >= 2 and 192 <= data[1] <= 223:  # is_rtcp(data), inlined: this runs per packet
            self.stats.rtcp += 1  # RTCP alone does not keep a stream alive: no touch
            return
        self.stats.packets += 1
        self.stats.bytes += len(data)
        self.watchdog.touch()
        try:
            self.sink.feed(data, source)
        except Exception:  # a bug, not bad input: log the traceback once, keep serving
            self.stats.feed_errors += 1
            if self.stats.feed_errors == 1:
                log.exception("media sink failed on %d bytes from %s:%d", len(data), *source)
            else:
                log.debug("media sink failed again (%d times) on data from %s:%d", self.stats.feed_errors, *source)

    def _finish(self, reason: CloseReason) -> None:
        """End by itself: release everything, then tell the sink once."""
        if self.closed:
            return
        log.info("media %s closed: %s", self, reason)
        self._shutdown(reason)
        try:
            self.sink.on_closed(reason)
        except Exception:
            log.exception("media sink on_closed(%s) failed", reason)

    def _shutdown(self, reason: str) -> None:
        self.closed = True
        self.close_reason = reason
        self.watchdog.cancel()
        self._release()

    @abc.abstractmethod
    def _release(self) -> None:
        """Close the sockets and timers of the subclass."""


class UdpRtpReceiverTransport(MediaTransport):
    """Receive RTP over UDP on one bound port; the watchdog runs from :meth:`open`."""

    def __init__(self, sink: MediaSink, rtp_timeout: float) -> None:
        super().__init__(sink, rtp_timeout)
        self.transport: asyncio.DatagramTransport | None = None
        self._port = 0

    @classmethod
    async def open(
        cls,
        sink: MediaSink,
        host: str = "127.0.0.1",
        ports: PortSpec = 0,
        *,
        rtp_timeout: float = DEFAULT_RTP_TIMEOUT,
        rcvbuf: int = UDP_RCVBUF,
    ) -> UdpRtpReceiverTransport:
        """Bind ``host`` on ``ports`` (0, a port, or a range tried in order) and start receiving."""
        self = cls(sink, rtp_timeout)

        async def bind(port: int) -> asyncio.DatagramTransport:
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda: _RtpDatagram(self), sock=bind_udp(host, port)
            )
            return transport

        self.transport = await bind_in_range(bind, host, ports)
        self._port = int(self.transport.get_extra_info("sockname")[1])
        sock = self.transport.get_extra_info("socket")
        try:  # a key frame is a burst of hundreds of datagrams
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        except OSError as exc:
            log.debug("cannot set SO_RCVBUF=%d on media port %d: %s", rcvbuf, self._port, exc)
        self.watchdog.start()
        return self

    @property
    def port(self) -> int:
        """The bound UDP port (to put in the SDP offer)."""
        return self._port

    def __str__(self) -> str:
        return f"UDP :{self._port}"

    def _release(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class _RtpDatagram(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpRtpReceiverTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # IPv6 addresses come as 4-tuples: keep (host, port) only, without a new tuple per IPv4 packet.
        self.owner._deliver(data, addr if len(addr) == 2 else (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("media UDP :%d error: %s", self.owner.port, exc)
