"""Live streams: one upstream INVITE per channel, any number of viewers (issue 3).

:class:`LiveService` glues the sans-I/O pieces together in the gateway's loop:
a viewer asks for a channel; the first one opens a UDP RTP port and sends the
INVITE (:class:`~gateway.gb28181.play.PlaySession`); RTP goes through
:class:`~gateway.media.rtp.RtpReceiver` and :class:`~gateway.media.ps.PsDemuxer`
into the channel's :class:`~gateway.media.relay.StreamFanout`, which every
viewer reads. The last viewer leaving starts a linger; then BYE. A device BYE
or an RTP timeout ends the stream for everyone.

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
from gateway.gb28181.sdp import MediaSessionSpec, MediaTransport, make_ssrc
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, SipEvent, TransactionTimedOut
from gateway.gb28181.sip.transport import Peer
from gateway.io.rtp_io import MediaSink, UdpRtpReceiverTransport
from gateway.io.rtp_io import MediaTransport as RtpTransport
from gateway.io.rtp_tcp_io import TcpPassiveRtpReceiver
from gateway.media.ps import AccessUnit, PsDemuxer, StreamType
from gateway.media.relay import StreamFanout
from gateway.media.rtp import RtpReceiver
from gateway.media.snapshot import SnapshotError, snapshot_jpeg
from gateway.media_intake import connect_active, open_intake

log = logging.getLogger("kgw.live")

LINGER = 5.0  # s an upstream stays open after its last viewer left (quick re-opens are free)
# s a closed stream's session still takes its dialog's messages: 64*T1, as long as a camera may
# retransmit a 2xx (RFC 3261 §13.3.1.4), so that a late answer is ACKed and hung up, not left running.
RETIRED_FOR = 32.0
PS_PAYLOAD_TYPES = frozenset({96})


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


@dataclass
class LiveStream:
    """One channel's upstream session and what it feeds."""

    channel_id: str
    device_id: str
    session: PlaySession
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


class _Sink:
    """RTP packets → RtpReceiver → PsDemuxer → StreamFanout (called by the UDP transport)."""

    def __init__(self, service: LiveService, channel_id: str) -> None:
        self.service = service
        self.channel_id = channel_id

    def feed(self, data: bytes, source: tuple[str, int]) -> None:
        stream = self.service.streams.get(self.channel_id)
        if stream is None:
            return
        if feed_rtp(stream.receiver, stream.demuxer, stream.fanout, data, source, self.service.loop.time()):
            stream.wakeup.set()

    def on_closed(self, reason: str) -> None:
        self.service.media_closed(self.channel_id, reason)


class LiveService:
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
    ) -> None:
        self.sip = sip
        self.channels = channels
        self.media_ports: tuple[int, int] | int = media_ports or 0
        self.default_transport = default_transport
        self.rtp_timeout = rtp_timeout
        self.loop = asyncio.get_running_loop()
        self.media_host = media_host
        self.play_timeout = play_timeout
        self.streams: dict[str, LiveStream] = {}
        self._by_call: dict[str, str] = {}  # Call-ID -> channel
        self._retired: dict[str, PlaySession] = {}  # Call-ID -> session of a closed stream (RETIRED_FOR)
        self._opening: dict[str, asyncio.Task[LiveStream]] = {}
        self._ssrc_seq = itertools.count(1)
        self._viewer_seq = itertools.count(1)
        self.invites_sent = 0
        self.closed_totals: dict[str, int] = dict.fromkeys(COUNTERS, 0)  # counters of ended streams

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

    def rtp_totals(self) -> dict[str, int]:
        """RTP and PS counters over every stream so far (for /metrics)."""
        totals = dict(self.closed_totals)
        for stream in self.streams.values():
            for key, value in _counters(stream).items():
                totals[key] = totals.get(key, 0) + value
        return totals

    # --- viewers ---------------------------------------------------------------------

    async def watch(self, channel_id: str, transport: MediaTransport | None = None) -> tuple[LiveStream, str]:
        """Attach a new viewer to a channel (opening the upstream if needed); returns its consumer id.

        ``transport`` chooses how a *new* upstream carries RTP (default: the
        service's); a running stream is shared whatever it uses.
        """
        stream = self.streams.get(channel_id)
        if stream is None:
            # Concurrent viewers of a closed channel share one opening: one INVITE.
            opening = self._opening.get(channel_id)
            if opening is None:
                opening = self.loop.create_task(self._open(channel_id, transport or self.default_transport))
                self._opening[channel_id] = opening
                opening.add_done_callback(lambda _: self._opening.pop(channel_id, None))
            stream = await asyncio.shield(opening)
        await asyncio.wait_for(asyncio.shield(stream.started), self.play_timeout + 1)
        consumer = f"viewer-{next(self._viewer_seq)}"
        stream.fanout.attach(consumer, self.loop.time())
        if stream.linger is not None:
            stream.linger.cancel()
            stream.linger = None
        return stream, consumer

    async def snapshot(self, channel_id: str, wait: float = 5.0) -> bytes:
        """A JPEG of the channel's latest key frame, opening a short session if needed.

        Raises LiveError when the stream cannot be opened or gives no decodable
        key frame within ``wait`` seconds.
        """
        try:
            stream, viewer = await self.watch(channel_id)
        except (LiveError, TimeoutError) as exc:
            raise LiveError(f"cannot open {channel_id}: {exc or type(exc).__name__}") from exc
        try:
            units: list[Any] = []
            deadline = self.loop.time() + wait
            while self.loop.time() < deadline:
                if self.streams.get(channel_id) is not stream:
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
        """A viewer left; the last one starts the linger before the BYE."""
        stream = self.streams.get(channel_id)
        if stream is None or consumer not in stream.fanout.consumers:
            return
        stream.fanout.detach(consumer, self.loop.time())
        if stream.fanout.consumer_count == 0 and stream.linger is None:
            stream.linger = self.loop.call_later(LINGER, self.close, channel_id, "no_viewers")

    def close(self, channel_id: str, reason: str = "closed") -> None:
        """End a stream: BYE (if it was streaming) and release its port."""
        stream = self.streams.pop(channel_id, None)
        if stream is None:
            return
        log.info("live %s closed: %s", channel_id, reason)
        if stream.session.invite is not None:
            call_id = stream.session.invite.call_id
            self._by_call.pop(call_id, None)
            self._retired[call_id] = stream.session
            self.loop.call_later(RETIRED_FOR, self._retired.pop, call_id, None)
        for key, value in _counters(stream).items():
            self.closed_totals[key] = self.closed_totals.get(key, 0) + value
        stream.session.stop(self.loop.time())
        self._after(stream)
        if stream.transport is not None:
            stream.transport.close()
        for handle in (stream.timer, stream.linger):
            if handle is not None:
                handle.cancel()
        if not stream.started.done():
            stream.started.set_exception(LiveError(f"stream of {channel_id} closed: {reason}"))
        stream.wakeup.set()

    def media_closed(self, channel_id: str, reason: str) -> None:
        """The RTP transport ended by itself (no packets for the RTP timeout)."""
        stream = self.streams.get(channel_id)
        if stream is not None:
            stream.session.media_timeout(self.loop.time())
            self.close(channel_id, reason)

    # --- opening ------------------------------------------------------------------------

    async def _open(self, channel_id: str, mode: MediaTransport) -> LiveStream:
        device_id = self.channels.device_of(channel_id)
        if device_id is None:
            raise LiveError(f"unknown channel {channel_id}")
        peer = self.sip.peer_of(device_id)
        if peer is None:
            raise LiveError(f"device {device_id} of channel {channel_id} is not registered")
        sink = _Sink(self, channel_id)
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
        )
        self.streams[channel_id] = stream
        session.start(self.loop.time())
        self.invites_sent += 1
        if session.invite is not None:
            self._by_call[session.invite.call_id] = channel_id
        self._after(stream)
        return stream

    def video_codec(self, channel_id: str) -> StreamType | None:
        """The video stream type seen on a running stream (None before the first PSM/frame)."""
        stream = self.streams.get(channel_id)
        if stream is None:
            return None
        return next((t for t in stream.demuxer.stream_types.values() if t in (StreamType.H264, StreamType.H265)), None)

    # --- SIP events (the first handler on the router) ----------------------------------------

    def get_timer(self) -> float | None:
        """None: the play sessions' timers run on the loop (one per stream)."""
        return None

    def handle_timer(self, now: float) -> None:
        """Nothing: see :meth:`get_timer`."""

    def route(self, event: SipEvent, now: float) -> bool:
        """Take the SIP events of our play sessions (closed ones too, for a while); False for the rest."""
        session, stream = self._session_for(event)
        if session is None:
            return False
        if isinstance(event, RequestReceived):
            handled = session.handle_request(event, now)
        else:
            handled = session.handle_response(event, now)
        if handled and stream is not None:
            self._after(stream)
        elif handled:  # a closed stream's session: a late 2xx is ACKed and hung up (it sent that itself)
            while session.next_event() is not None:
                pass
        return handled

    def _session_for(self, event: SipEvent) -> tuple[PlaySession | None, LiveStream | None]:
        """The play session an event belongs to, and its stream while that is still open."""
        if isinstance(event, (ResponseReceived, TransactionTimedOut)) and isinstance(event.context, PlaySession):
            session: PlaySession | None = event.context
        else:
            message: Any
            if isinstance(event, ResponseReceived):
                message = event.response
            elif isinstance(event, RequestReceived):
                message = event.request
            else:
                return None, None
            try:
                call_id = message.call_id
            except GatewayError:
                return None, None
            channel_id = self._by_call.get(call_id)
            open_stream = self.streams.get(channel_id) if channel_id is not None else None
            session = open_stream.session if open_stream is not None else self._retired.get(call_id)
        if session is None:
            return None, None
        stream = self.streams.get(session.channel_id)
        return session, stream if stream is not None and stream.session is session else None

    def _after(self, stream: LiveStream) -> None:
        """Drain the session's events, re-arm its timer, and send what it queued."""
        session = stream.session
        while (event := session.next_event()) is not None:
            if isinstance(event, PlayStarted):
                log.info("live %s streaming (ssrc %s, %s)", stream.channel_id, event.spec.ssrc_text, stream.mode.name)
                stream.receiver.arm(*media_sources(event.spec, session))
                if stream.mode is MediaTransport.TCP_ACTIVE and stream.transport is None:
                    self.loop.create_task(self._connect_active(stream, event.spec.remote_host, event.spec.remote_port))
                elif not stream.started.done():
                    stream.started.set_result(None)
            elif isinstance(event, (PlayFailed, PlayEnded)):
                reason = f"{type(event).__name__}: {getattr(event, 'reason', '')}"
                if not stream.started.done():
                    stream.started.set_exception(LiveError(f"{stream.channel_id}: {reason}"))
                if self.streams.get(stream.channel_id) is stream:
                    self.loop.call_soon(self.close, stream.channel_id, reason)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        deadline = session.get_timer()
        if deadline is not None:
            stream.timer = self.loop.call_at(deadline, self._on_timer, stream)

    async def _connect_active(self, stream: LiveStream, host: str, port: int) -> None:
        """TCP active: connect to the device's listening port from its answer."""
        try:
            stream.transport = await connect_active(
                _Sink(self, stream.channel_id),
                host,
                port,
                connect_timeout=self.play_timeout,
                rtp_timeout=self.rtp_timeout,
            )
        except GatewayError as exc:
            log.warning("live %s: cannot connect to %s:%d for media: %s", stream.channel_id, host, port, exc)
            if not stream.started.done():
                stream.started.set_exception(LiveError(f"{stream.channel_id}: media connect failed"))
            self.close(stream.channel_id, "media_connect_failed")
            return
        if self.streams.get(stream.channel_id) is not stream:  # closed meanwhile
            stream.transport.close()
        elif not stream.started.done():
            stream.started.set_result(None)

    def _on_timer(self, stream: LiveStream) -> None:
        stream.timer = None
        stream.session.handle_timer(self.loop.time())
        self._after(stream)


class UnitTarget(Protocol):
    """Where demuxed access units go: a :class:`StreamFanout`, or a wrapper in front of one."""

    def publish(self, unit: AccessUnit, now: float) -> None: ...


def feed_rtp(
    receiver: RtpReceiver, demuxer: PsDemuxer, fanout: UnitTarget, data: bytes, source: tuple[str, int], now: float
) -> bool:
    """One RTP packet (or TCP frame) → receiver → PS demuxer → fanout; True when units were published."""
    receiver.receive(data, source, now)
    published = False
    while (packet := receiver.next_packet()) is not None:
        for unit in demuxer.feed(packet.payload):
            fanout.publish(unit, now)
            published = True
    return published


async def open_media_port(
    sink: MediaSink,
    receiver: RtpReceiver,
    mode: MediaTransport,
    host: str,
    ports: tuple[int, int] | int,
    connect_timeout: float,
    rtp_timeout: float,
) -> tuple[RtpTransport | None, int]:
    """The receiving side of a new session before the INVITE: its transport (None for TCP active) and m= port."""
    if mode is MediaTransport.UDP:
        udp = await UdpRtpReceiverTransport.open(sink, host=host, ports=ports, rtp_timeout=rtp_timeout)
        return udp, udp.port
    if mode is MediaTransport.TCP_PASSIVE:  # we listen; the device connects after the ACK
        tcp = await TcpPassiveRtpReceiver.open(
            sink,
            host=host,
            ports=ports,
            connect_timeout=connect_timeout,
            rtp_timeout=rtp_timeout,
            admit=lambda peer: receiver.admits_host(peer[0]),
        )
        return tcp, tcp.port
    # TCP active: we connect to the port in the device's answer once it has answered;
    # the m= port of an active offer is not used (RFC 4145: "9" = discard).
    return None, 9


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
