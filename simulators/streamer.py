"""Simulated cameras stream real video: the media side of the fleet's live calls (asyncio).

The SIP side of a live call is sans-I/O (:class:`~gateway.gb28181.device_calls.DeviceCalls`
inside each :class:`~gateway.gb28181.device_agent.DeviceAgent`). This module is the
I/O that answers it, one :class:`StreamHub` per kindergarten (per shared SIP endpoint)
and one :class:`CameraStreamer` per call:

* ``MediaRequested``: open the sender (:mod:`gateway.io.rtp_send_io`) — UDP:
  :meth:`~gateway.io.rtp_send_io.UdpRtpSender.open` on port 0; TCP passive (the gateway
  listens): :meth:`~gateway.io.rtp_send_io.TcpRtpSender.bind`, connected after the ACK;
  TCP active (the gateway connects): :meth:`~gateway.io.rtp_send_io.TcpRtpSender.listen`
  on port 0 — then ``accept`` with that port. The clip
  (title = kindergarten, subtitle = camera name) is fetched from the shared
  :class:`~simulators.video.ClipCache` in a worker thread at the same time, so the
  loop never blocks on an encode.
* ``MediaStarted`` (the ACK): make the path ready (connect, or wait for the gateway's
  connection), pace :meth:`ClipReplayer.frames_due` with one ``loop.call_at`` chain per
  stream, cut frames with :class:`RtpPacketizer` (the offer's SSRC) and hand them to the
  sender (datagrams, or RFC 4571 frames over TCP).
* ``MediaStopped`` (BYE) or a lost connection: stop and close; a lost connection
  also hangs the call up (the device sends BYE).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

from gateway.errors import MediaTransportError
from gateway.gb28181.device_agent import AgentHost, DeviceAgent
from gateway.gb28181.device_calls import CallError, CallEvent, MediaRequested, MediaStarted, MediaStopped
from gateway.gb28181.sdp import MediaSessionSpec, MediaTransport
from gateway.io.rtp_send_io import RtpSendTransport, TcpRtpSender, UdpRtpSender
from gateway.media.rtp import RtpPacketizer
from gateway.media.rtp.sender import ClipReplayer, ReplayFrame
from simulators.black_picture import BlackClips
from simulators.hevc import profile_for_camera
from simulators.ptz_view import FollowingReplayer, ViewFollower, view_follower
from simulators.substreams import SubStreams
from simulators.video import ClipCache, EncodedClip, VideoProfile, has_microphone

__all__ = ["CONNECT_TIMEOUT", "TCP_HIGH_WATER", "CameraStreamer", "StreamHub", "StreamStats"]

log = logging.getLogger("kgw.simulate.media")
TCP_HIGH_WATER = 2 * 1024 * 1024  # bytes queued on a TCP stream before frames are dropped
CONNECT_TIMEOUT = 5.0  # s for a TCP-passive connect to the gateway's media port
OFFLINE_STATUS = 480  # Temporarily Unavailable: an NVR's answer for a channel whose camera is dead
# TCP active: the gateway's connection is awaited without a deadline (until BYE or close).
# UDP: UdpRtpSender.open sets the socket's SO_SNDBUF (1 MiB, a key frame is a burst of datagrams).


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
        follow: ViewFollower | None = None,
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
        self.answer_stream: int | None = None  # the stream number the answer states (None: as offered)
        self._clip = clip
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._sender: RtpSendTransport | None = None  # opened by prepare(), ready after start()
        self._replayer: ClipReplayer | FollowingReplayer | None = None
        self._follow = follow  # a PTZ camera: the picture follows its view (simulators/ptz_view.py)
        self._packetizer = RtpPacketizer(request.spec.ssrc)
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
        target = (self.spec.local_host, self.spec.local_port)  # the offer's c=/m=
        sender: RtpSendTransport
        if self.transport is MediaTransport.UDP:
            sender = await UdpRtpSender.open(host, target, on_closed=self._sender_closed)
        elif self.transport is MediaTransport.TCP_PASSIVE:  # bound now, connected after the ACK
            sender = await TcpRtpSender.bind(host, target, on_closed=self._sender_closed, high_water=TCP_HIGH_WATER)
        else:  # the gateway connects to us (one connection per stream, a=connection:new)
            sender = await TcpRtpSender.listen(host, on_closed=self._sender_closed, high_water=TCP_HIGH_WATER)
        if self.closed:  # stopped while we opened it
            sender.close()
        else:
            self._sender = sender
        return sender.port

    def start(self) -> None:
        """The ACK arrived: wait for the clip, connect if we must, then send."""
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
        if self._follow is not None:
            self._replayer = self._follow.replayer(clip, self._loop.time)
        else:
            self._replayer = ClipReplayer(clip.frames, clip.profile.fps)
        if await self._connect():
            self._maybe_begin()

    async def _connect(self) -> bool:
        """TCP passive: connect to the gateway's listening port; TCP active: wait for its connection."""
        sender = self._sender
        if sender is None:
            return False
        timeout = CONNECT_TIMEOUT if self.transport is MediaTransport.TCP_PASSIVE else math.inf
        try:
            await sender.start(timeout)
        except MediaTransportError as exc:
            log.info("camera %s: %s", self.channel_id, exc)
            self._lost("connect_failed")
            return False
        return True

    # --- sending ----------------------------------------------------------------------------

    def _maybe_begin(self) -> None:
        """Start pacing once the ACK, the clip and the connection are all there."""
        ready = self._sender is not None and self._sender.connected
        if self.closed or self.sending or not self.started or self._replayer is None or not ready:
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
        if self._sender is not None:
            self._sender.send(packets)

    def _congested(self) -> bool:
        """More than ``TCP_HIGH_WATER`` bytes wait on a TCP stream (UDP is never held back)."""
        sender = self._sender
        return isinstance(sender, TcpRtpSender) and sender.connected and not sender.writable

    # --- called by the sender ------------------------------------------------------------------

    def _sender_closed(self, reason: str) -> None:
        """The sender's ``on_closed``: the TCP connection to the gateway broke."""
        log.debug("media of %s closed: %s", self.channel_id, reason)
        self._lost("connection_lost")

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
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()


class CallAnswerer(Protocol):
    """The device-side UAS of a hub's calls: live calls (DeviceCalls) or a recordings feature."""

    def reject(self, call_id: str, status: int, now: float) -> None: ...
    def hang_up(self, call_id: str, now: float) -> None: ...


_Streamer = TypeVar("_Streamer", bound=CameraStreamer)


class CallHub(Generic[_Streamer]):
    """What every media hub of a shared endpoint keeps: its streamers by Call-ID, who answers each
    call, and the totals; answering once the sender is ready, and hanging up when media breaks."""

    def __init__(self, local_host: str) -> None:
        self.local_host = local_host
        self.streams: dict[str, _Streamer] = {}
        self.finished = StreamStats()
        self.calls_answered = 0
        self._answerers: dict[str, CallAnswerer] = {}
        self._loop = asyncio.get_running_loop()

    def _serve(self, streamer: _Streamer, answerer: CallAnswerer, accept: Callable[[int], None]) -> None:
        """Keep ``streamer`` and answer its call once its sender is open (``accept(port)`` sends the 200)."""
        self.streams[streamer.call_id] = streamer
        self._answerers[streamer.call_id] = answerer
        streamer.spawn(self._answer(streamer, answerer, accept))

    async def _answer(self, streamer: _Streamer, answerer: CallAnswerer, accept: Callable[[int], None]) -> None:
        """Open the sender, then answer 200 with its port (or 500 when no socket is free)."""
        try:
            port = await streamer.prepare()
        except OSError as exc:
            log.warning("no media socket for %s: %s", streamer.channel_id, exc)
            streamer.close("no_socket")
            self._forget(streamer.call_id)
            with contextlib.suppress(CallError):
                answerer.reject(streamer.call_id, 500, self._loop.time())
            return
        try:
            accept(port)
        except CallError:  # hung up while we prepared
            streamer.close("call_gone")
            self._forget(streamer.call_id)
            return
        self.calls_answered += 1

    def _stopped(self, call_id: str, reason: str) -> None:
        streamer = self._forget(call_id)
        if streamer is not None:
            streamer.close(reason)

    def _on_lost(self, streamer: CameraStreamer, reason: str) -> None:
        """The media path broke: the device hangs up (BYE)."""
        answerer = self._answerers.get(streamer.call_id)
        self._forget(streamer.call_id)
        if answerer is not None:
            answerer.hang_up(streamer.call_id, self._loop.time())

    def _forget(self, call_id: str) -> _Streamer | None:
        self._answerers.pop(call_id, None)
        streamer = self.streams.pop(call_id, None)
        if streamer is not None:
            self.finished.add(streamer.stats)
        return streamer

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


class StreamHub(CallHub[CameraStreamer]):
    """The media side of one shared SIP endpoint: call events in, :class:`CameraStreamer` out."""

    def __init__(
        self,
        host: AgentHost,
        title: str,
        cache: ClipCache,
        profile: VideoProfile,
        *,
        local_host: str,
        substreams: SubStreams | None = None,
        hevc_share: float = 0.0,
        offline: frozenset[str] = frozenset(),
        black: tuple[frozenset[str], BlackClips] | None = None,
    ) -> None:
        super().__init__(local_host)
        self.offline = offline  # dead cameras (simulators/faults.py): their INVITEs are refused
        self.black = black  # cameras streaming a black picture, and where their clips come from
        self.host = host
        self.substreams = substreams or SubStreams(0.0)  # which cameras have a sub-stream (issue 11)
        self.title = title
        self.cache = cache
        self.profile = profile
        self.hevc_share = hevc_share  # of the cameras stream H.265 (simulators/hevc.py)

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
        calls = agent.calls
        assert calls is not None  # live calls come only from a device with cameras
        if event.channel_id in self.offline:
            calls.reject(event.call_id, OFFLINE_STATUS, self._loop.time())
            return
        profile, answer_stream = self.substreams.pick(event.channel_id, event.spec.stream_number, self.profile)
        profile = profile_for_camera(profile, event.channel_id, self.hevc_share)
        profile = replace(profile, audio=has_microphone(event.channel_id))  # even channels have a microphone
        name = self._camera_name(agent, event)
        black = self.black is not None and event.channel_id in self.black[0]
        follow = None if black else view_follower(agent, event.channel_id, self.title, name, profile)
        if black:
            assert self.black is not None
            clip = asyncio.ensure_future(asyncio.to_thread(self.black[1].get, profile))
        elif follow is not None:
            clip = asyncio.ensure_future(asyncio.to_thread(follow.initial, self._loop.time()))
        else:
            clip = asyncio.ensure_future(asyncio.to_thread(self.cache.get, self.title, name, profile))
        clip.add_done_callback(_consume_exception)
        streamer = CameraStreamer(event, clip, local_host=self.local_host, on_lost=self._on_lost, follow=follow)
        streamer.answer_stream = answer_stream
        self._serve(
            streamer,
            calls,
            lambda port: calls.accept(
                streamer.call_id, self.local_host, port, self._loop.time(), stream_number=streamer.answer_stream
            ),
        )

    # --- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _camera_name(agent: DeviceAgent, event: MediaRequested) -> str:
        for channel in agent.profile.channels:
            if channel.device_id == event.channel_id:
                return channel.name or channel.device_id
        return event.channel_id


def _consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark a failed clip future's exception as retrieved (each stream reports it itself)."""
    if not future.cancelled():
        future.exception()
