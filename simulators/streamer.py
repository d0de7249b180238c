"""Simulated cameras stream real video: the media side of the fleet's live calls (asyncio).

The SIP side of a live call is sans-I/O (:class:`~gateway.gb28181.device_calls.DeviceCalls`
inside each :class:`~gateway.gb28181.device_agent.DeviceAgent`). This module is the
I/O that answers it, one :class:`StreamHub` per kindergarten (per shared SIP endpoint)
and one :class:`CameraStreamer` per call:

* ``MediaRequested``: open the sender — UDP: a datagram socket on port 0; TCP passive
  (the gateway listens): a bound TCP socket, connected after the ACK; TCP active (the
  gateway connects): a listener on port 0 — then ``accept`` with that port. The clip
  (title = kindergarten, subtitle = camera name) is fetched from the shared
  :class:`~simulators.video.ClipCache` in a worker thread at the same time, so the
  loop never blocks on an encode.
* ``MediaStarted`` (the ACK): pace :meth:`ClipReplayer.frames_due` with one
  ``loop.call_at`` chain per stream, cut frames with :class:`RtpPacketizer` (the
  offer's SSRC) and send them as datagrams or RFC 4571 frames.
* ``MediaStopped`` (BYE) or a lost connection: stop and close; a lost connection
  also hangs the call up (the device sends BYE).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from gateway.gb28181.device_agent import AgentHost, DeviceAgent
from gateway.gb28181.device_calls import CallError, CallEvent, MediaRequested, MediaStarted, MediaStopped
from gateway.gb28181.sdp import MediaSessionSpec, MediaTransport
from gateway.media.rtp import Rfc4571Framer, RtpPacketizer
from gateway.media.rtp.sender import ClipReplayer, ReplayFrame
from simulators.video import ClipCache, EncodedClip, VideoProfile

__all__ = ["CONNECT_TIMEOUT", "TCP_HIGH_WATER", "CameraStreamer", "StreamHub", "StreamStats"]

log = logging.getLogger("kgw.simulate.media")
TCP_HIGH_WATER = 2 * 1024 * 1024  # bytes queued on a TCP stream before frames are dropped
CONNECT_TIMEOUT = 5.0  # s for a TCP-passive connect to the gateway's media port
UDP_SNDBUF = 1024 * 1024  # a key frame is a burst of dozens of datagrams


@dataclass(slots=True)
class StreamStats:
    """What one stream (or a sum of streams) sent."""

    frames: int = 0
    packets: int = 0
    bytes: int = 0
    dropped_frames: int = 0  # skipped while a TCP stream was congested

    def add(self, other: StreamStats) -> None:
        """Accumulate ``other`` into this one."""
        self.frames += other.frames
        self.packets += other.packets
        self.bytes += other.bytes
        self.dropped_frames += other.dropped_frames


class CameraStreamer:
    """The media half of one live call: a sender socket, the clip, and its pacing timer."""

    def __init__(
        self,
        request: MediaRequested,
        clip: asyncio.Future[EncodedClip],
        *,
        local_host: str,
        on_lost: Callable[[CameraStreamer, str], None],
    ) -> None:
        self.call_id = request.call_id
        self.channel_id = request.channel_id
        self.spec: MediaSessionSpec = request.spec
        self.local_host = local_host
        self.stats = StreamStats()
        self.started = False  # the ACK arrived
        self.sending = False  # the pacing timer runs
        self.closed = False
        self.close_reason: str | None = None
        self._clip = clip
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Transport | None = None
        self._server: asyncio.base_events.Server | None = None
        self._sock: socket.socket | None = None  # TCP passive: bound before the answer, connected after the ACK
        self._replayer: ClipReplayer | None = None
        self._packetizer = RtpPacketizer(request.spec.ssrc)
        self._framer = Rfc4571Framer()
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = 0.0
        self._wait_key = False
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def transport(self) -> MediaTransport:
        """The offered transport."""
        return self.spec.transport

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task owned by this stream (cancelled on close)."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- setup ----------------------------------------------------------------------------

    async def prepare(self) -> int:
        """Open the sender; returns the port to put in the SDP answer."""
        host = self.local_host
        if self.transport is MediaTransport.UDP:
            self._udp, _ = await self._loop.create_datagram_endpoint(
                lambda: _UdpSender(self), local_addr=(host, 0)
            )
            sock = self._udp.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UDP_SNDBUF)
            return int(self._udp.get_extra_info("sockname")[1])
        if self.transport is MediaTransport.TCP_PASSIVE:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.bind((host, 0))
            except OSError:
                sock.close()
                raise
            self._sock = sock
            return int(sock.getsockname()[1])
        self._server = await self._loop.create_server(lambda: _TcpSender(self), host, 0)
        return int(self._server.sockets[0].getsockname()[1])

    def start(self) -> None:
        """The ACK arrived: connect if we must, wait for the clip, then send."""
        if self.closed or self.started:
            return
        self.started = True
        self.spawn(self._start())

    async def _start(self) -> None:
        try:
            clip = await asyncio.shield(self._clip)
        except Exception as exc:  # the encode failed: nothing to stream
            log.warning("no clip for %s: %s", self.channel_id, exc)
            self._lost("no clip")
            return
        if self.closed:
            return
        self._replayer = ClipReplayer(clip.frames, clip.profile.fps)
        if self.transport is MediaTransport.TCP_PASSIVE:
            await self._connect()
        self._maybe_begin()

    async def _connect(self) -> None:
        """TCP passive: connect the pre-bound socket to the gateway's listening port."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        target = (self.spec.local_host, self.spec.local_port)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._loop.sock_connect(sock, target)
            await self._loop.create_connection(lambda: _TcpSender(self), sock=sock)
        except asyncio.CancelledError:
            sock.close()
            raise
        except (OSError, TimeoutError) as exc:
            sock.close()
            log.info("camera %s cannot connect to %s:%d: %s", self.channel_id, *target, exc or "timeout")
            self._lost("connect_failed")

    # --- sending ----------------------------------------------------------------------------

    def _ready(self) -> bool:
        if self.transport is MediaTransport.UDP:
            return self._udp is not None
        return self._tcp is not None

    def _maybe_begin(self) -> None:
        """Start pacing once the ACK, the clip and the connection are all there."""
        if self.closed or self.sending or not self.started or self._replayer is None or not self._ready():
            return
        self.sending = True
        self._t0 = self._loop.time()
        self._tick()

    def _tick(self) -> None:
        self._timer = None
        replayer = self._replayer
        if self.closed or replayer is None:
            return
        try:
            for frame in replayer.frames_due(self._loop.time() - self._t0):
                self._send_frame(frame)
                if self.closed:
                    return
        except Exception:  # a bug: stop this stream only
            log.exception("stream of %s failed", self.channel_id)
            self._lost("error")
            return
        self._timer = self._loop.call_at(self._t0 + replayer.next_due_time(), self._tick)

    def _send_frame(self, frame: ReplayFrame) -> None:
        if self._congested():
            self._wait_key = True
        if self._wait_key and (not frame.keyframe or self._congested()):
            self.stats.dropped_frames += 1
            return
        self._wait_key = False
        packets = [bytes(p) for p in self._packetizer.packetize(frame.ps_frame, frame.timestamp)]
        self.stats.frames += 1
        self.stats.packets += len(packets)
        self.stats.bytes += sum(map(len, packets))
        if self._udp is not None:
            target = (self.spec.local_host, self.spec.local_port)
            for packet in packets:
                self._udp.sendto(packet, target)
        elif self._tcp is not None:
            self._tcp.write(b"".join(self._framer.frame(p) for p in packets))

    def _congested(self) -> bool:
        return self._tcp is not None and self._tcp.get_write_buffer_size() > TCP_HIGH_WATER

    # --- called by the protocols --------------------------------------------------------------

    def _attach(self, transport: asyncio.Transport) -> bool:
        """A TCP connection is up (ours, or the gateway's to our listener)."""
        if self.closed or self._tcp is not None:
            return False
        self._tcp = transport
        if self._server is not None:  # one connection per stream (a=connection:new)
            self._server.close()
            self._server = None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._maybe_begin()
        return True

    def _lost(self, reason: str) -> None:
        """The media path broke: close and tell the hub (which hangs the call up)."""
        if self.closed:
            return
        self.close(reason)
        self._on_lost(self, reason)

    # --- teardown ------------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Stop sending and release every socket, timer and task."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.sending = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for closable in (self._udp, self._tcp, self._server, self._sock):
            if closable is not None:
                closable.close()
        self._udp = self._tcp = self._server = self._sock = None
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()


class _UdpSender(asyncio.DatagramProtocol):
    def __init__(self, owner: CameraStreamer) -> None:
        self.owner = owner

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable: the gateway went away
        log.debug("media UDP of %s: %s", self.owner.channel_id, exc)


class _TcpSender(asyncio.Protocol):
    def __init__(self, owner: CameraStreamer) -> None:
        self.owner = owner
        self.attached = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.attached = self.owner._attach(transport)
        if not self.attached:
            transport.close()

    def data_received(self, data: bytes) -> None:
        """RTCP or anything else from the receiver is ignored."""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.attached:
            self.owner._lost("connection_lost")


class StreamHub:
    """The media side of one shared SIP endpoint: call events in, :class:`CameraStreamer` out."""

    def __init__(
        self,
        host: AgentHost,
        title: str,
        cache: ClipCache,
        profile: VideoProfile,
        *,
        local_host: str,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.title = title
        self.cache = cache
        self.profile = profile
        self.local_host = local_host
        self.flush: Callable[[], None] = flush or (lambda: None)
        """Sends what the endpoint queued (the driver's ``flush``); set once the driver exists."""
        self.streams: dict[str, CameraStreamer] = {}
        self.finished = StreamStats()
        self.calls_answered = 0
        self._agents: dict[str, DeviceAgent] = {}
        self._loop = asyncio.get_running_loop()
        self._flush_armed = False

    # --- events from the SIP side -------------------------------------------------------------

    def drain(self) -> None:
        """Take every pending call event (the driver's ``on_activity`` hook)."""
        while (item := self.host.next_call_event()) is not None:
            agent, event = item
            try:
                self._on_event(agent, event)
            except Exception:
                log.exception("call event %s failed", event)

    def _on_event(self, agent: DeviceAgent, event: CallEvent) -> None:
        if isinstance(event, MediaRequested):
            self._requested(agent, event)
        elif isinstance(event, MediaStarted):
            streamer = self.streams.get(event.call_id)
            if streamer is not None:
                streamer.start()
        elif isinstance(event, MediaStopped):
            self._stopped(event.call_id, event.reason)

    def _requested(self, agent: DeviceAgent, event: MediaRequested) -> None:
        clip = asyncio.ensure_future(asyncio.to_thread(self.cache.get, self.title, self._camera_name(agent, event),
                                                       self.profile))
        clip.add_done_callback(_consume_exception)
        streamer = CameraStreamer(event, clip, local_host=self.local_host, on_lost=self._on_lost)
        self.streams[event.call_id] = streamer
        self._agents[event.call_id] = agent
        streamer.spawn(self._answer(agent, streamer))

    async def _answer(self, agent: DeviceAgent, streamer: CameraStreamer) -> None:
        """Open the sender, then answer 200 with its port (or 500 when no socket is free)."""
        assert agent.calls is not None
        try:
            port = await streamer.prepare()
        except OSError as exc:
            log.warning("no media socket for %s: %s", streamer.channel_id, exc)
            streamer.close("no_socket")
            with contextlib.suppress(CallError):
                agent.calls.reject(streamer.call_id, 500, self._loop.time())
            self._kick()
            return
        try:
            agent.calls.accept(streamer.call_id, self.local_host, port, self._loop.time())
        except CallError:  # hung up while we prepared
            streamer.close("call_gone")
            self._forget(streamer.call_id)
            return
        self.calls_answered += 1
        self._kick()

    def _stopped(self, call_id: str, reason: str) -> None:
        streamer = self._forget(call_id)
        if streamer is not None:
            streamer.close(reason)

    def _on_lost(self, streamer: CameraStreamer, reason: str) -> None:
        """The media path broke: the device hangs up (BYE)."""
        agent = self._agents.get(streamer.call_id)
        self._forget(streamer.call_id)
        if agent is not None and agent.calls is not None:
            agent.calls.hang_up(streamer.call_id, self._loop.time())
            self._kick()

    def _forget(self, call_id: str) -> CameraStreamer | None:
        self._agents.pop(call_id, None)
        streamer = self.streams.pop(call_id, None)
        if streamer is not None:
            self.finished.add(streamer.stats)
        return streamer

    # --- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _camera_name(agent: DeviceAgent, event: MediaRequested) -> str:
        for channel in agent.profile.channels:
            if channel.device_id == event.channel_id:
                return channel.name or channel.device_id
        return event.channel_id

    def _kick(self) -> None:
        """Flush the driver soon (never from inside its own flush)."""
        if not self._flush_armed:
            self._flush_armed = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_armed = False
        self.flush()

    def totals(self) -> StreamStats:
        """What every stream of this hub sent, finished and running."""
        total = StreamStats()
        total.add(self.finished)
        for streamer in self.streams.values():
            total.add(streamer.stats)
        return total

    def close(self) -> None:
        """Stop every stream (the fleet is shutting down)."""
        for call_id in list(self.streams):
            self._stopped(call_id, "shutdown")


def _consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark a failed clip future's exception as retrieved (each stream reports it itself)."""
    if not future.cancelled():
        future.exception()
