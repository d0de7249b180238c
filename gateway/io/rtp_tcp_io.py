"""RTP over TCP receive transports (RFC 4571 framing), both directions of docs/gb28181.md §15.5.

* :class:`TcpPassiveRtpReceiver` (TCP-PASSIVE, ``a=setup:passive`` in our offer): we
  listen and the device connects. Exactly one connection is served
  (``a=connection:new``, one stream per connection, docs/gb28181.md §17.2); later ones are
  closed and counted. A device that never connects ends the stream with
  ``no_connection`` after ``connect_timeout`` — the explicit error docs/gb28181.md §19 item 3 asks for.
  An ``admit`` check (issue 10, H3) runs first: a connection from a host the device's
  answer does not allow (or before the answer) is closed and counted as
  ``foreign_connections`` without taking the stream's one slot.
* :class:`TcpActiveRtpReceiver` (TCP-ACTIVE): we connect to the ``c=``/``m=`` of the
  device's answer, retrying refusals until ``connect_timeout`` since a device may
  only start listening after its 200 OK.

A framing error cannot be recovered on a byte stream: that connection is closed.
Besides what :class:`Rfc4571Framer` rejects, a run of frames that do not start with
RTP version 2 means the length prefixes are out of step with the packets, and a
first frame that is not RTP means the peer does not speak RFC 4571 RTP at all
(an HTTP probe, a private header): both close the stream as a framing error too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import cast

from gateway.io.ports import PortSpec, bind_in_range
from gateway.io.rtp_io import (
    DEFAULT_RTP_TIMEOUT,
    Addr,
    CloseReason,
    MediaConnectError,
    MediaSink,
    MediaTransport,
)
from gateway.media.rtp import Rfc4571Framer, RtpFramingError
from gateway.media.rtp.tcp_framing import MAX_RFC4571_PACKET

log = logging.getLogger("kgw.media.io")
DEFAULT_CONNECT_TIMEOUT = 10.0  # s; ZLM's passive sender waits 5 s, devices can be slower
MAX_NON_RTP_RUN = 4  # consecutive non-RTP frames before the stream counts as desynchronised
CONNECT_RETRY_INTERVAL = 0.2  # s between TCP-ACTIVE attempts refused by the device


class TcpRtpReceiver(MediaTransport):
    """One RFC 4571 RTP stream on one TCP connection; the watchdog runs once connected."""

    def __init__(self, sink: MediaSink, rtp_timeout: float, max_packet: int) -> None:
        super().__init__(sink, rtp_timeout)
        self.max_packet = max_packet
        self.stream: _RtpStream | None = None
        self.peer: Addr | None = None

    @property
    def connected(self) -> bool:
        """True while the device's connection is up."""
        return self.stream is not None and not self.closed

    def pause_reading(self) -> None:
        """Back-pressure from the session: stop reading (TCP flow control slows the device)."""
        if self.stream is not None and not self.closed:
            self.stream.transport.pause_reading()

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading`."""
        if self.stream is not None and not self.closed:
            self.stream.transport.resume_reading()

    def __str__(self) -> str:
        peer = f"{self.peer[0]}:{self.peer[1]}" if self.peer else "-"
        return f"RTP/TCP {peer}"

    # --- called by _RtpStream ---------------------------------------------------

    def _admits(self, peer: Addr) -> bool:
        """Hook: whether ``peer`` may carry this stream (TCP-PASSIVE checks the device's answer)."""
        return True

    def _attach(self, stream: _RtpStream) -> bool:
        if not self.closed and not self._admits(stream.peer):
            self.stats.foreign_connections += 1
            log.info("refusing media connection from %s:%d to %s: not the answering device", *stream.peer, self)
            return False
        if self.closed or self.stream is not None:
            self.stats.refused_connections += 1
            log.info("refusing extra media connection from %s:%d to %s", *stream.peer, self)
            return False
        self.stream, self.peer = stream, stream.peer
        self._connected()
        self.watchdog.start()
        return True

    def _detach(self, stream: _RtpStream, exc: Exception | None) -> None:
        if stream is self.stream:
            self._finish(CloseReason.PEER_CLOSED if exc is None else CloseReason.CONNECTION_ERROR)

    def _framing_error(self, detail: str) -> None:
        log.warning("closing %s: not RFC 4571 RTP: %s", self, detail)
        self._finish(CloseReason.FRAMING_ERROR)

    def _connected(self) -> None:
        """Hook for subclasses, called when the stream's connection is accepted."""

    def _release(self) -> None:
        if self.stream is not None:
            self.stream.transport.close()


class TcpPassiveRtpReceiver(TcpRtpReceiver):
    """TCP-PASSIVE: listen on a port (or range) and take the device's one connection."""

    def __init__(self, sink: MediaSink, rtp_timeout: float, max_packet: int) -> None:
        super().__init__(sink, rtp_timeout, max_packet)
        self.server: asyncio.base_events.Server | None = None
        self._port = 0
        self._connect_timer: asyncio.TimerHandle | None = None
        self._admit: Callable[[Addr], bool] | None = None

    @classmethod
    async def open(
        cls,
        sink: MediaSink,
        host: str = "127.0.0.1",
        ports: PortSpec = 0,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        rtp_timeout: float = DEFAULT_RTP_TIMEOUT,
        max_packet: int = MAX_RFC4571_PACKET,
        admit: Callable[[Addr], bool] | None = None,
    ) -> TcpPassiveRtpReceiver:
        """Listen on ``host`` at ``ports`` (0, a port, or a range tried in order).

        ``admit(peer)`` decides whether a connection may carry the stream (default: any).
        """
        self = cls(sink, rtp_timeout, max_packet)
        self._admit = admit

        async def bind(port: int) -> asyncio.base_events.Server:
            return await self.loop.create_server(lambda: _RtpStream(self), host, port)

        self.server = await bind_in_range(bind, host, ports)
        self._port = int(self.server.sockets[0].getsockname()[1])
        self._connect_timer = self.loop.call_later(connect_timeout, self._finish, CloseReason.NO_CONNECTION)
        return self

    @property
    def port(self) -> int:
        """The listening port (to put in the SDP offer's ``m=`` line)."""
        return self._port

    def __str__(self) -> str:
        return f"{super().__str__()} (listening :{self._port})"

    def _admits(self, peer: Addr) -> bool:
        return self._admit is None or self._admit(peer)

    def _connected(self) -> None:
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None

    def _release(self) -> None:
        self._connected()
        if self.server is not None:
            self.server.close()
            self.server = None
        super()._release()


class TcpActiveRtpReceiver(TcpRtpReceiver):
    """TCP-ACTIVE: connect to the device's listening media port."""

    @classmethod
    async def connect(
        cls,
        sink: MediaSink,
        host: str,
        port: int,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        rtp_timeout: float = DEFAULT_RTP_TIMEOUT,
        max_packet: int = MAX_RFC4571_PACKET,
        retry_interval: float = CONNECT_RETRY_INTERVAL,
    ) -> TcpActiveRtpReceiver:
        """Connect within ``connect_timeout`` (refusals are retried), else :class:`MediaConnectError`."""
        self = cls(sink, rtp_timeout, max_packet)
        deadline = self.loop.time() + connect_timeout
        while True:
            remaining = deadline - self.loop.time()
            try:
                async with asyncio.timeout(remaining):
                    await self.loop.create_connection(lambda: _RtpStream(self), host, port)
                return self
            except TimeoutError:
                raise MediaConnectError(host, port, f"no connection within {connect_timeout:g} s") from None
            except ConnectionRefusedError:
                if deadline - self.loop.time() <= retry_interval:
                    raise MediaConnectError(host, port, f"refused for {connect_timeout:g} s") from None
                await asyncio.sleep(retry_interval)
            except OSError as exc:
                raise MediaConnectError(host, port, str(exc)) from exc


class _RtpStream(asyncio.Protocol):
    """Splits one TCP connection into RTP frames for its owner; never lets an exception escape."""

    def __init__(self, owner: TcpRtpReceiver) -> None:
        self.owner = owner
        self.framer = Rfc4571Framer(owner.max_packet)
        self.peer: Addr = ("", 0)
        self.accepted = False
        self._non_rtp_run = 0
        self._started = False  # a first frame has been seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # typeshed passes every Protocol a BaseTransport; a stream protocol gets a stream transport
        # (under uvloop not an asyncio.Transport subclass, so no isinstance check).
        self.transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if peername:
            self.peer = (peername[0], peername[1])
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # asyncio sets it on its own sockets too; be explicit (docs/dependencies.md)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.accepted = self.owner._attach(self)
        if not self.accepted:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.accepted or self.owner.closed:
            return
        try:
            self._frames(data)
        except Exception:  # a bug in the framing path: close this stream only, keep the loop
            log.exception("media stream from %s:%d failed", *self.peer)
            self.owner._framing_error("internal error")

    def _frames(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except RtpFramingError as exc:
            self.owner._framing_error(str(exc))
            return
        for frame in frames:
            if self.owner.closed:  # the sink may close us from inside feed
                return
            if frame[0] >> 6 != 2:  # RFC 3550 §5.1: RTP and RTCP both carry version 2
                self.owner.stats.non_rtp_frames += 1
                self._non_rtp_run += 1
                if not self._started or self._non_rtp_run >= MAX_NON_RTP_RUN:
                    what = "the first frame is" if not self._started else f"{self._non_rtp_run} frames in a row are"
                    self.owner._framing_error(f"{what} not RTP version 2 (first bytes {frame[:8].hex()})")
                    return
                continue
            self._started = True
            self._non_rtp_run = 0
            self.owner._deliver(frame, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.accepted:
            self.owner._detach(self, exc)
