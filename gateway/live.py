"""Live streams: one upstream INVITE per (channel, stream), any number of viewers (issues 3, 11).

:class:`LiveService` glues the sans-I/O pieces together in the gateway's loop:
a viewer asks for a channel; the first one opens a UDP RTP port and sends the
INVITE (:class:`~gateway.gb28181.play.PlaySession`); RTP goes through
:class:`~gateway.media.rtp.RtpReceiver` and :class:`~gateway.media.ps.PsDemuxer`
into the channel's :class:`~gateway.media.relay.StreamFanout`, which every
viewer reads. The last viewer leaving starts a linger; then BYE. A device BYE
or an RTP timeout ends the stream for everyone.

Cameras have a main and often a sub-stream (issue 11). :attr:`LiveService.streams` is
keyed by :func:`stream_key`: a channel's main stream under the channel ID (so every
caller that knows only channels gets the main stream), its sub-stream under
``<channel>/1``. :meth:`LiveService.watch` takes the stream wanted; the offer spells the
stream number the way the device understands (:mod:`gateway.gb28181.stream_number`), and
a device that refuses the sub-stream or answers it with its main stream is remembered
(:class:`~gateway.substreams.StreamPlanner`). Every upstream session holds a reservation
of its kindergarten's uplink (:mod:`gateway.uplink`): a main stream that would exceed it is
taken on the sub-stream, or refused with :class:`LiveUplinkExceeded`.

The service is the first handler on the SIP router: it takes the events of
its play sessions (by Call-ID and context) and leaves everything else to the
next handler. It needs two things from the rest of the gateway, named here as
small protocols: a :class:`SipContext` (the endpoint, our SIP identity, where a
device is) and a :class:`ChannelLocator` (which device serves a channel).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.errors import GatewayError
from gateway.gb28181.play import PlayEnded, PlayFailed, PlaySession, PlayStarted
from gateway.gb28181.sdp import MediaSessionSpec, MediaTransport, make_ssrc, offer_for_play
from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.transport import Peer
from gateway.gb28181.stream_number import MAIN, SUB, answered_stream, with_stream
from gateway.io.rtp_io import MediaTransport as RtpTransport
from gateway.media.ps import AccessUnit, PsDemuxer, StreamType
from gateway.media.relay import StreamFanout
from gateway.media.rtp import RtpReceiver
from gateway.media.snapshot import SnapshotError, snapshot_jpeg
from gateway.media_intake import connect_active, open_intake
from gateway.play_sessions import PlaySessionHandler, PlaySessions
from gateway.substreams import StreamChoice, StreamPlanner, stream_name
from gateway.uplink import Reservation, UplinkBudget, UplinkExceeded

log = logging.getLogger("kgw.live")

LINGER = 5.0  # s an upstream stays open after its last viewer left (quick re-opens are free)
PS_PAYLOAD_TYPES = frozenset({96})
MEASURE_AFTER = 10.0  # s of streaming before a stream's measured RTP rate replaces its uplink estimate


class SipIdentity(Protocol):
    """The SIP side as its services need it: the shared endpoint and who we are."""

    @property
    def endpoint(self) -> SipEndpoint: ...
    @property
    def local_id(self) -> str: ...
    @property
    def domain(self) -> str: ...


class SipContext(SipIdentity, Protocol):
    """A live stream also needs to know where a device is."""

    def peer_of(self, device_id: str) -> Peer | None: ...


class ChannelLocator(Protocol):
    """Which device serves a channel (None: no such channel)."""

    def device_of(self, channel_id: str) -> str | None: ...


class LiveError(GatewayError):
    """A live stream could not be opened (unknown channel, device offline, INVITE refused…)."""


class LiveRefused(LiveError):
    """The device answered the INVITE with an error (``status``) or never answered (408)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class LiveUplinkExceeded(LiveError, UplinkExceeded):
    """No stream of the channel fits its kindergarten's uplink budget; the message names what uses it."""


def stream_key(channel_id: str, number: int = MAIN) -> str:
    """The :attr:`LiveService.streams` key: the channel ID for main, ``<channel>/<n>`` otherwise."""
    return channel_id if number == MAIN else f"{channel_id}/{number}"


@dataclass
class LiveStream:
    """One channel's upstream session and what it feeds."""

    channel_id: str
    device_id: str
    session: PlaySession | None  # None: not an INVITE but an external feed (an RTSP camera's puller)
    transport: RtpTransport | None  # None until a TCP-active connection is made
    fanout: StreamFanout
    receiver: RtpReceiver
    demuxer: PsDemuxer
    started: asyncio.Future[None]
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None
    linger: asyncio.TimerHandle | None = None
    opened_at: float = 0.0
    mode: MediaTransport = MediaTransport.UDP
    key: str = ""  # in LiveService.streams (stream_key)
    stream_number: int = MAIN  # the stream the device sends (0 main, 1 sub)
    asked: int = MAIN  # the stream the offer asked for
    reservation: Reservation | None = None  # its share of the kindergarten's uplink
    codec: StreamType | None = None  # known from the source (an external feed), else from the PS demuxer

    def __post_init__(self) -> None:
        self.key = self.key or stream_key(self.channel_id, self.stream_number)

    @property
    def state(self) -> str:
        """The upstream's state for the API: the play session's, or "streaming" for an external feed."""
        return self.session.state.value if self.session is not None else "streaming"


class ExternalFeed(Protocol):
    """One upstream connection that is not a GB/T 28181 INVITE (an RTSP camera's): what viewers read."""

    @property
    def fanout(self) -> StreamFanout: ...
    @property
    def codec(self) -> StreamType: ...
    @property
    def wakeup(self) -> asyncio.Event: ...
    @property
    def opened_at(self) -> float: ...


class ExternalSources(Protocol):
    """Channels whose streams come from elsewhere (gateway/rtsp): the live service asks, never INVITEs."""

    def handles(self, channel_id: str) -> bool: ...
    def feed(self, channel_id: str) -> ExternalFeed | None: ...
    def state_text(self, channel_id: str) -> str: ...


class _Sink:
    """RTP packets → RtpReceiver → PsDemuxer → StreamFanout (called by the UDP transport)."""

    def __init__(self, service: LiveService) -> None:
        self.service = service
        self.stream: LiveStream | None = None  # set once the stream exists

    def feed(self, data: bytes, source: tuple[str, int]) -> None:
        stream = self.stream
        if stream is None or self.service.streams.get(stream.key) is not stream:
            return
        if feed_rtp(stream.receiver, stream.demuxer, stream.fanout, data, source, self.service.loop.time()):
            stream.wakeup.set()

    def on_closed(self, reason: str) -> None:
        if self.stream is not None:
            self.service.media_closed(self.stream.key, reason)


class LiveService(PlaySessionHandler["LiveStream"]):
    """Opens, shares and closes live streams of the gateway's channels."""

    def __init__(
        self,
        sip: SipContext,
        channels: ChannelLocator,
        *,
        media_host: str = "127.0.0.1",
        play_timeout: float = 10.0,
        default_transport: MediaTransport = MediaTransport.UDP,
        rtp_timeout: float = 10.0,
        media_ports: tuple[int, int] | None = None,
        planner: StreamPlanner | None = None,
        uplink: UplinkBudget | None = None,
        measure_after: float = MEASURE_AFTER,
    ) -> None:
        self.sip = sip
        self.planner = planner or StreamPlanner()
        self.uplink = uplink
        self.measure_after = measure_after  # 0: never measure, count estimates only
        self.channels = channels
        self.media_ports: tuple[int, int] | int = media_ports or 0
        self.default_transport = default_transport
        self.rtp_timeout = rtp_timeout
        self.loop = asyncio.get_running_loop()
        self.media_host = media_host
        self.play_timeout = play_timeout
        self.streams: dict[str, LiveStream] = {}  # by stream_key: the channel ID is its main stream
        self._sessions: PlaySessions[LiveStream] = PlaySessions(self.loop)  # by Call-ID, closed ones a while
        self._opening: dict[str, asyncio.Task[LiveStream]] = {}
        self._ssrc_seq = itertools.count(1)
        self._viewer_seq = itertools.count(1)
        self.invites_sent = 0
        self.closed_totals: dict[str, int] = dict.fromkeys(COUNTERS, 0)  # counters of ended streams
        self.external: ExternalSources | None = None  # RTSP cameras (gateway/rtsp), set by the composition root

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Streams, viewers, RTP and PS counters over every stream so far."""
        yield GaugeMetricFamily("kgw_streams_active", "Live upstream streams open now", value=len(self.streams))
        yield GaugeMetricFamily(
            "kgw_stream_viewers",
            "Viewers of all live streams",
            value=sum(s.fanout.consumer_count for s in self.streams.values()),
        )
        totals = self.rtp_totals()
        for key, help_text in (
            ("packets", "RTP packets received"),
            ("bytes", "RTP bytes received"),
            ("lost", "RTP packets lost"),
        ):
            yield CounterMetricFamily(f"kgw_rtp_{key}", help_text, value=totals[key])
        dropped = CounterMetricFamily("kgw_rtp_dropped", "RTP packets dropped, by reason", labels=["reason"])
        for key, value in totals.items():
            if key.startswith("dropped_"):
                dropped.add_metric([key.removeprefix("dropped_")], value)
        yield dropped
        yield CounterMetricFamily("kgw_ps_resyncs", "MPEG-PS parser resynchronisations", value=totals["ps_resyncs"])
        if self.uplink is not None:
            yield CounterMetricFamily(
                "kgw_uplink_refused",
                "Live requests refused over a kindergarten's uplink budget",
                value=self.uplink.refused,
            )
            yield GaugeMetricFamily(
                "kgw_substreams_active",
                "Sub-streams open now",
                value=sum(s.stream_number != MAIN for s in self.streams.values()),
            )

    def rtp_totals(self) -> dict[str, int]:
        """RTP and PS counters over every stream so far (for /metrics)."""
        totals = dict(self.closed_totals)
        for stream in self.streams.values():
            for key, value in _counters(stream).items():
                totals[key] = totals.get(key, 0) + value
        return totals

    # --- viewers ---------------------------------------------------------------------

    async def watch(
        self,
        channel_id: str,
        transport: MediaTransport | None = None,
        stream: StreamChoice | int = StreamChoice.MAIN,
    ) -> tuple[LiveStream, str]:
        """Attach a new viewer to a channel's stream (opening the upstream if needed); returns its consumer id.

        ``stream`` is the stream wanted: main (0, the default), sub (1), or
        :attr:`StreamChoice.AUTO` (whichever already runs, else main). The returned
        stream's ``stream_number`` says what the viewer got: the sub-stream when main
        would exceed the kindergarten's uplink budget, main when the channel has no
        sub-stream. Raises :class:`LiveUplinkExceeded` when nothing fits, :class:`LiveError`
        when the stream cannot be opened. ``transport`` chooses how a *new* upstream
        carries RTP (default: the service's); a running stream is shared whatever it uses.
        """
        if self.external is not None and self.external.handles(channel_id):
            live = self._external_stream(channel_id, self.external)
            consumer = f"viewer-{next(self._viewer_seq)}"
            live.fanout.attach(consumer, self.loop.time())
            if live.linger is not None:
                live.linger.cancel()
                live.linger = None
            return live, consumer
        choice = _as_choice(stream)
        while True:
            opening = self._plan(channel_id, choice, transport or self.default_transport)
            try:
                live = opening if isinstance(opening, LiveStream) else await asyncio.shield(opening)
                await asyncio.wait_for(asyncio.shield(live.started), self.play_timeout + 1)
            except LiveRefused:
                # The device refused the sub-stream: _after recorded it; ask for main once.
                if choice is StreamChoice.MAIN or self.planner.has_sub(channel_id):
                    raise
                choice = StreamChoice.MAIN
                continue
            break
        consumer = f"viewer-{next(self._viewer_seq)}"
        live.fanout.attach(consumer, self.loop.time())
        if live.linger is not None:
            live.linger.cancel()
            live.linger = None
        return live, consumer

    def _plan(
        self, channel_id: str, choice: StreamChoice, mode: MediaTransport
    ) -> LiveStream | asyncio.Task[LiveStream]:
        """Pick the stream for a new viewer and reserve its uplink, in one step (no await: no race).

        The wanted stream when it runs or fits the budget; over budget, another stream
        of the channel that runs already (it costs nothing more), else the sub-stream
        when main was wanted and the sub fits; else :class:`LiveUplinkExceeded`.
        """
        has_sub = self.planner.has_sub(channel_id)
        wanted = SUB if choice is StreamChoice.SUB and has_sub else MAIN
        if choice is StreamChoice.AUTO and has_sub and not self._running(channel_id, MAIN):
            wanted = SUB if self._running(channel_id, SUB) else MAIN
        if (running := self._running(channel_id, wanted)) is not None:
            return running
        kindergarten = self.planner.kindergarten_of(channel_id)
        budget = self.uplink if kindergarten is not None else None
        if budget is None or budget.fits(kindergarten or "", self._estimate(wanted)):
            return self._start_open(channel_id, wanted, mode, kindergarten)
        other = SUB if wanted == MAIN else MAIN
        if (other == MAIN or has_sub) and (running := self._running(channel_id, other)) is not None:
            return running
        if wanted == MAIN and has_sub and budget.fits(kindergarten or "", self._estimate(SUB)):
            return self._start_open(channel_id, SUB, mode, kindergarten)
        budget.refused += 1
        error = budget.exceeded(kindergarten or "", self._estimate(wanted), error_type=LiveUplinkExceeded)
        assert isinstance(error, LiveUplinkExceeded)
        log.info("live %s %s refused: %s", channel_id, stream_name(wanted), error)
        raise error

    def _running(self, channel_id: str, number: int) -> LiveStream | asyncio.Task[LiveStream] | None:
        key = stream_key(channel_id, number)
        return self.streams.get(key) or self._opening.get(key)

    def _estimate(self, number: int) -> int:
        if self.uplink is None:
            return 0
        return self.uplink.main_kbps if number == MAIN else self.uplink.sub_kbps

    def _start_open(
        self, channel_id: str, number: int, mode: MediaTransport, kindergarten: str | None
    ) -> asyncio.Task[LiveStream]:
        """Reserve the uplink and start opening (concurrent viewers share the opening: one INVITE)."""
        key = stream_key(channel_id, number)
        reservation = None
        if self.uplink is not None and kindergarten is not None:
            reservation = self.uplink.reserve(
                kindergarten,
                self._estimate(number),
                f"live {self.planner.label(channel_id, number)}",
                channel_id=channel_id,
            )
        opening = self.loop.create_task(self._open(channel_id, number, mode, reservation))
        self._opening[key] = opening

        def _opened(task: asyncio.Task[LiveStream]) -> None:
            if self._opening.get(key) is task:
                del self._opening[key]
            if reservation is not None and (task.cancelled() or task.exception() is not None):
                reservation.release()

        opening.add_done_callback(_opened)
        return opening

    def _external_stream(self, channel_id: str, sources: ExternalSources) -> LiveStream:
        """The channel's stream on its external feed's current connection (one stream per connection)."""
        feed = sources.feed(channel_id)
        if feed is None:
            raise LiveError(f"RTSP camera {channel_id} is not online: {sources.state_text(channel_id)}")
        running = self.streams.get(channel_id)
        if running is not None and running.fanout is feed.fanout:
            return running
        if running is not None:
            self.close(channel_id, "reconnected")
        started: asyncio.Future[None] = self.loop.create_future()
        started.set_result(None)
        stream = LiveStream(
            channel_id=channel_id,
            device_id=self.channels.device_of(channel_id) or "",
            session=None,
            transport=None,
            fanout=feed.fanout,
            receiver=RtpReceiver(None, PS_PAYLOAD_TYPES, armed=False),  # no RTP: its counters stay 0
            demuxer=PsDemuxer(),  # no PS either: the feed gives access units
            started=started,
            wakeup=feed.wakeup,
            opened_at=feed.opened_at,
            codec=feed.codec,
        )
        self.streams[stream.key] = stream
        log.info("live %s streaming from its external feed (%s)", channel_id, feed.codec.name)
        return stream

    def external_closed(self, channel_id: str, reason: str) -> None:
        """An external feed's connection ended: its stream ends for every viewer (as a device's BYE)."""
        stream = self.streams.get(channel_id)
        if stream is not None and stream.session is None:
            self.close(channel_id, reason)

    def streams_of(self, channel_id: str) -> list[LiveStream]:
        """The channel's running streams, main first."""
        return [s for n in (MAIN, SUB) if (s := self.streams.get(stream_key(channel_id, n))) is not None]

    async def snapshot(self, channel_id: str, wait: float = 5.0) -> bytes:
        """A JPEG of the channel's latest key frame, opening a short session if needed.

        Uses whichever stream of the channel runs (``AUTO``), so a snapshot never
        opens a second session of a channel. Raises LiveError when the stream cannot be
        opened or gives no decodable key frame within ``wait`` seconds.
        """
        try:
            stream, viewer = await self.watch(channel_id, stream=StreamChoice.AUTO)
        except (LiveError, TimeoutError) as exc:
            raise LiveError(f"cannot open {channel_id}: {exc or type(exc).__name__}") from exc
        try:
            units: list[Any] = []
            deadline = self.loop.time() + wait
            while self.loop.time() < deadline:
                if self.streams.get(stream.key) is not stream:
                    raise LiveError(f"stream of {channel_id} ended before a key frame")  # closed: no more will come
                units.extend(stream.fanout.pull(viewer))
                if any(u.keyframe and u.is_video for u in units):
                    try:
                        return await asyncio.to_thread(snapshot_jpeg, units)
                    except SnapshotError:
                        pass  # the key frame needs the next unit to come out of the decoder
                stream.wakeup.clear()
                try:
                    async with asyncio.timeout(max(0.05, deadline - self.loop.time())):
                        await stream.wakeup.wait()  # set by new units, and by close()
                except TimeoutError:
                    break
            raise LiveError(f"no decodable key frame from {channel_id}")
        finally:
            self.leave(channel_id, viewer)

    def leave(self, channel_id: str, consumer: str) -> None:
        """A viewer left (of whichever of the channel's streams it watched); the last one starts the linger."""
        stream = next((s for s in self.streams_of(channel_id) if consumer in s.fanout.consumers), None)
        if stream is None:
            return
        stream.fanout.detach(consumer, self.loop.time())
        if stream.fanout.consumer_count == 0 and stream.linger is None:
            stream.linger = self.loop.call_later(LINGER, self.close, stream.key, "no_viewers")

    def close_channel(self, channel_id: str, reason: str = "closed") -> int:
        """End every stream of a channel; returns how many there were."""
        streams = self.streams_of(channel_id)
        for stream in streams:
            self.close(stream.key, reason)
        return len(streams)

    def close(self, key: str, reason: str = "closed") -> None:
        """End a stream (a channel ID: its main stream): BYE (if it was streaming) and release its port."""
        stream = self.streams.pop(key, None)
        if stream is None:
            return
        log.info("live %s closed: %s", key, reason)
        if stream.reservation is not None:
            stream.reservation.release()
        for name, value in _counters(stream).items():
            self.closed_totals[name] = self.closed_totals.get(name, 0) + value
        if stream.session is not None:
            self._sessions.retire(stream.session)
            stream.session.stop(self.loop.time())
            self._after(stream)
        if stream.transport is not None:
            stream.transport.close()
        for handle in (stream.timer, stream.linger):
            if handle is not None:
                handle.cancel()
        if not stream.started.done():
            stream.started.set_exception(LiveError(f"stream of {key} closed: {reason}"))
        stream.wakeup.set()

    def media_closed(self, key: str, reason: str) -> None:
        """The RTP transport ended by itself (no packets for the RTP timeout)."""
        stream = self.streams.get(key)
        if stream is not None:
            if stream.session is not None:
                stream.session.media_timeout(self.loop.time())
            self.close(key, reason)

    # --- opening ------------------------------------------------------------------------

    async def _open(
        self, channel_id: str, number: int, mode: MediaTransport, reservation: Reservation | None = None
    ) -> LiveStream:
        device_id = self.channels.device_of(channel_id)
        if device_id is None:
            raise LiveError(f"unknown channel {channel_id}")
        peer = self.sip.peer_of(device_id)
        if peer is None:
            raise LiveError(f"device {device_id} of channel {channel_id} is not registered")
        sink = _Sink(self)
        # Nothing is admitted until the device's answer arms it (issue 10, H3): an open port
        # must never lock onto whoever sends first.
        receiver = RtpReceiver(None, PS_PAYLOAD_TYPES, armed=False)
        transport, port = await open_intake(
            sink,
            receiver,
            mode,
            host=self.media_host,
            ports=self.media_ports,
            connect_timeout=self.play_timeout,
            rtp_timeout=self.rtp_timeout,
        )
        sip = self.sip
        ssrc = make_ssrc(sip.domain, next(self._ssrc_seq))
        offer = offer_for_play(
            origin_user=channel_id,  # docs/gb28181.md §15.6 writes the channel in o=
            media_host=self.media_host,
            media_port=port,
            ssrc=ssrc,
            transport=mode,
        )
        offer = with_stream(offer, number, self.planner.style_of(device_id, channel_id))
        session = PlaySession(
            sip.endpoint,
            sip.local_id,
            sip.domain,
            channel_id,
            peer,
            self.media_host,
            port,
            mode,
            ssrc,
            play_timeout=self.play_timeout,
            offer=offer,
        )
        stream = LiveStream(
            channel_id=channel_id,
            device_id=device_id,
            session=session,
            transport=transport,
            fanout=StreamFanout(channel_id),
            receiver=receiver,
            demuxer=PsDemuxer(),
            started=self.loop.create_future(),
            opened_at=self.loop.time(),
            mode=mode,
            stream_number=number,
            asked=number,
            reservation=reservation,
        )
        sink.stream = stream
        if reservation is not None and self.measure_after > 0:
            reservation.measure = lambda: self._measured_kbps(stream)
        self.streams[stream.key] = stream
        session.start(self.loop.time())
        self.invites_sent += 1
        self._sessions.add(session, stream)
        self._after(stream)
        return stream

    def _measured_kbps(self, stream: LiveStream) -> float | None:
        """The stream's RTP rate since it opened (kbit/s), once it has run ``measure_after`` seconds."""
        elapsed = self.loop.time() - stream.opened_at
        if elapsed < self.measure_after or stream.receiver.stats.bytes == 0:
            return None
        return stream.receiver.stats.bytes * 8 / 1000 / elapsed

    def video_codec(self, key: str) -> StreamType | None:
        """The video stream type seen on a running stream (a channel ID: its main stream; None before the first PSM/frame)."""
        stream = self.streams.get(key)
        if stream is None:
            return None
        if stream.codec is not None:
            return stream.codec
        return next((t for t in stream.demuxer.stream_types.values() if t in (StreamType.H264, StreamType.H265)), None)

    # --- SIP events (PlaySessionHandler routes them to the sessions) -------------------------------

    def _after(self, stream: LiveStream) -> None:
        """Drain the session's events, re-arm its timer, and send what it queued."""
        session = stream.session
        if session is None:
            return
        while (event := session.next_event()) is not None:
            if isinstance(event, PlayStarted):
                log.info("live %s streaming (ssrc %s, %s)", stream.key, event.spec.ssrc_text, stream.mode.name)
                self._answered(stream, answered_stream(stream.asked, event.spec.stream_number))
                stream.receiver.arm(*media_sources(event.spec, session))
                if stream.mode is MediaTransport.TCP_ACTIVE and stream.transport is None:
                    self.loop.create_task(self._connect_active(stream, event.spec.remote_host, event.spec.remote_port))
                elif not stream.started.done():
                    stream.started.set_result(None)
            elif isinstance(event, (PlayFailed, PlayEnded)):
                reason = f"{type(event).__name__}: {getattr(event, 'reason', '')}"
                if not stream.started.done():
                    status = event.status if isinstance(event, PlayFailed) else 500
                    if stream.asked != MAIN and isinstance(event, PlayFailed) and 400 <= status != 408:
                        self.planner.record_no_sub(stream.channel_id, f"INVITE for the sub-stream answered {status}")
                    stream.started.set_exception(LiveRefused(f"{stream.key}: {reason}", status))
                if self.streams.get(stream.key) is stream:
                    self.loop.call_soon(self.close, stream.key, reason)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        deadline = session.get_timer()
        if deadline is not None:
            stream.timer = self.loop.call_at(deadline, self._on_timer, stream)

    def _answered(self, stream: LiveStream, number: int) -> None:
        """The device says which stream it sends; a sub asked for but main answered: it has none."""
        if number == stream.stream_number:
            return
        stream.stream_number = number
        if stream.asked != MAIN and number == MAIN:
            self.planner.record_no_sub(stream.channel_id, "answered the sub-stream INVITE with its main stream")
        if stream.reservation is not None:
            stream.reservation.update(self._estimate(number), f"live {self.planner.label(stream.channel_id, number)}")
        key = stream_key(stream.channel_id, number)
        if key in self.streams or key in self._opening:
            return  # that stream runs too (a race): this one stays where it is, labelled with what it carries
        # Re-file it under the stream it carries, so that the next viewer of that stream shares it.
        del self.streams[stream.key]
        stream.key = key
        self.streams[key] = stream

    async def _connect_active(self, stream: LiveStream, host: str, port: int) -> None:
        """TCP active: connect to the device's listening port from its answer."""
        sink = _Sink(self)
        sink.stream = stream
        try:
            stream.transport = await connect_active(
                sink,
                host,
                port,
                connect_timeout=self.play_timeout,
                rtp_timeout=self.rtp_timeout,
            )
        except GatewayError as exc:
            log.warning("live %s: cannot connect to %s:%d for media: %s", stream.key, host, port, exc)
            if not stream.started.done():
                stream.started.set_exception(LiveError(f"{stream.key}: media connect failed"))
            self.close(stream.key, "media_connect_failed")
            return
        if self.streams.get(stream.key) is not stream:  # closed meanwhile
            stream.transport.close()
        elif not stream.started.done():
            stream.started.set_result(None)

    def _on_timer(self, stream: LiveStream) -> None:
        stream.timer = None
        if stream.session is None:
            return
        stream.session.handle_timer(self.loop.time())
        self._after(stream)


def _as_choice(stream: StreamChoice | int) -> StreamChoice:
    if isinstance(stream, StreamChoice):
        return stream
    return StreamChoice.MAIN if stream == MAIN else StreamChoice.SUB


class UnitTarget(Protocol):
    """Where demuxed access units go: a :class:`StreamFanout`, or a wrapper in front of one."""

    def publish(self, unit: AccessUnit, now: float) -> None: ...


def feed_rtp(
    receiver: RtpReceiver, demuxer: PsDemuxer, fanout: UnitTarget, data: bytes, source: tuple[str, int], now: float
) -> bool:
    """One RTP packet (or TCP frame) → receiver → PS demuxer → fanout; True when units were published."""
    receiver.receive(data, source, now)
    published = False
    while (payload := receiver.next_payload()) is not None:
        for unit in demuxer.feed(payload):
            fanout.publish(unit, now)
            published = True
    return published


def media_sources(spec: MediaSessionSpec, session: PlaySession) -> tuple[frozenset[int], frozenset[str]]:
    """The SSRCs and source hosts a device's answer allows (issue 10, H3).

    SSRC: the answered ``y=`` (docs/gb28181.md §19 item 1: a device may pick its own), and
    the offered one, which devices that ignore their own answer stream with. Hosts: the
    answer's ``c=`` and the host the device registered from: behind NAT the SDP names a
    private address while packets come from the NAT's, and the registered address is
    the authenticated one. Ports are not checked: a device's RTP source port is not in
    its answer and NAT rewrites it; the first admitted packet locks the exact address.
    """
    ssrcs = {spec.ssrc}
    offered = session.offer.ssrc_int
    if offered is not None:
        ssrcs.add(offered)
    hosts = {session.device_peer.host}
    if spec.remote_host and spec.remote_host not in ("0.0.0.0", "::"):
        hosts.add(spec.remote_host)
    return frozenset(ssrcs), frozenset(hosts)


# What one stream counts: RTP received/bytes/lost, input dropped by reason, PS resyncs.
COUNTERS = (
    "packets",
    "bytes",
    "lost",
    "dropped_foreign_ssrc",
    "dropped_foreign_source",
    "dropped_foreign_address",
    "dropped_before_answer",
    "dropped_foreign_connection",
    "dropped_bad_pt",
    "dropped_malformed",
    "dropped_duplicate",
    "ps_resyncs",
    "ps_dropped_bytes",
)


def _counters(stream: LiveStream) -> dict[str, int]:
    rtp = stream.receiver.stats
    ps = stream.demuxer.stats
    return {
        "packets": rtp.received,
        "bytes": rtp.bytes,
        "lost": rtp.lost,
        "dropped_foreign_ssrc": rtp.foreign_ssrc,
        "dropped_foreign_source": rtp.foreign_source,
        "dropped_foreign_address": rtp.foreign_address,
        "dropped_before_answer": rtp.before_answer,
        "dropped_foreign_connection": stream.transport.stats.foreign_connections if stream.transport else 0,
        "dropped_bad_pt": rtp.bad_pt,
        "dropped_malformed": rtp.malformed,
        "dropped_duplicate": rtp.duplicates,
        "ps_resyncs": ps.resyncs,
        "ps_dropped_bytes": ps.dropped_bytes,
    }
