"""Playback of a device's recordings: one device session per request (issue 11).

Unlike live view nothing is shared: every :meth:`PlaybackService.start` sends its own
Playback INVITE (``s=Playback``, ``u=<channel>:0``, ``t=<start> <end>`` in epoch
seconds, a history SSRC) through a :class:`~gateway.gb28181.play.PlaySession`, opens
its own RTP port, and feeds RTP → PS demuxer → its own
:class:`~gateway.media.relay.StreamFanout`, which WebRTC tracks read exactly as for
live view (the receiving pieces are shared with :mod:`gateway.live`).

Control goes to the device as MANSRTSP in INFOs (docs/gb28181.md §15.9): pause, play,
scale and seek (``Range: npt=<seconds from start>-``); :meth:`PlaybackService.control`
awaits the device's answer. The *position* (seconds from ``start`` of the recorded
time now shown) follows the stream's PTS from a base: the start (0) or the last seek.
The session ends on the device's ``MediaStatus 121`` (end of file; we hang up), its
BYE, an RTP timeout, :meth:`PlaybackService.stop`, or when nobody watched or touched it
for the idle timeout. Output PTS are kept monotonic across seeks (a browser's jitter
buffer must not see time run backwards).

The service is a handler on the SIP router: it takes the events of its sessions (by
Call-ID and transaction context) and leaves the rest to the next handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.errors import GatewayError
from gateway.gb28181.mansrtsp import (
    MAX_SCALE,
    MIN_SCALE,
    MansrtspError,
    MansrtspMethod,
    parse_request,
    pause,
    resume,
    seek,
    set_scale,
)
from gateway.gb28181.play import (
    PlayEnded,
    PlayFailed,
    PlayInfoAnswered,
    PlayMediaEnded,
    PlayNotStreaming,
    PlaySession,
    PlayStarted,
)
from gateway.gb28181.sdp import MediaTransport, SessionType, make_ssrc, offer_for_history
from gateway.history_uplink import HistoryUplink, rate_meter, speeds_from
from gateway.io.rtp_io import MediaTransport as RtpTransport
from gateway.live import (
    PS_PAYLOAD_TYPES,
    ChannelLocator,
    SipContext,
    feed_rtp,
    media_sources,
)
from gateway.media.ps import AccessUnit, PsDemuxer
from gateway.media.relay import StreamFanout
from gateway.media.rtp import RtpReceiver
from gateway.media_intake import connect_active, open_intake
from gateway.play_sessions import PlaySessionHandler, PlaySessions
from gateway.uplink import Reservation, UplinkExceeded

__all__ = ["Playback", "PlaybackError", "PlaybackPosition", "PlaybackService", "PlaybackState"]

log = logging.getLogger("kgw.playback")

PTS_HZ: Final = 90000
PTS_WRAP: Final = 1 << 33
MAX_PTS_JUMP: Final = 5 * PTS_HZ  # a larger jump without a seek is a discontinuity, not time passing
RETAIN_ENDED: Final = 300.0  # s an ended playback can still be read (state, end_reason)
MAX_ENDED: Final = 1000
ACTIONS: Final = ("pause", "play", "scale", "seek")


def outcome_label(reason: str) -> str:
    """A bounded metric label for an end reason: ``refused_<status>`` for a device's refusal, else the reason."""
    head = reason.split(" ", 1)[0]
    if head.isdigit():
        return f"refused_{head}"
    return reason.replace(" ", "_")[:40]


class PlaybackError(GatewayError):
    """A playback request that cannot be served; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class PlaybackState(StrEnum):
    """What the API shows."""

    STARTING = "starting"
    PLAYING = "playing"
    PAUSED = "paused"
    ENDED = "ended"
    FAILED = "failed"


@dataclass(eq=False)
class Playback:
    """One playback: its device session, media path and where in the recording it is."""

    id: str
    owner: str
    channel_id: str
    device_id: str
    start: int
    end: int
    session: PlaySession
    transport: RtpTransport | None
    fanout: StreamFanout
    receiver: RtpReceiver
    demuxer: PsDemuxer
    started: asyncio.Future[None]
    mode: MediaTransport
    opened_at: float
    state: PlaybackState = PlaybackState.STARTING
    scale: float = 1.0
    end_reason: str | None = None
    touched: float = 0.0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None
    idle: asyncio.TimerHandle | None = None
    controls: dict[str, asyncio.Future[PlayInfoAnswered]] = field(default_factory=dict)
    cseq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    first_frame_at: float | None = None
    tracker: PlaybackPosition = field(default_factory=lambda: PlaybackPosition(0.0))
    uplink: Reservation | None = None  # its share of the kindergarten's uplink, released when it ends

    @property
    def position(self) -> float:
        """Seconds from ``start`` of the recorded time now shown (clamped to the window)."""
        return round(min(max(0.0, self.tracker.position), float(self.end - self.start)), 3)

    @property
    def active(self) -> bool:
        """Still starting or streaming."""
        return self.state in (PlaybackState.STARTING, PlaybackState.PLAYING, PlaybackState.PAUSED)

    def to_json(self) -> dict[str, Any]:
        """The API's view: id, channel, window, state, scale, position (and end_reason once ended)."""
        out: dict[str, Any] = {
            "id": self.id,
            "channel_id": self.channel_id,
            "start": self.start,
            "end": self.end,
            "state": self.state.value,
            "scale": self.scale,
            "position": self.position,
        }
        if self.end_reason is not None:
            out["end_reason"] = self.end_reason
        return out


@dataclass(slots=True)
class PlaybackPosition:
    """Where the recording stands, from the stream's PTS, and the output PTS kept monotonic.

    Position = ``base_position + (pts - base_pts) / 90 kHz``: the base is the start (0)
    or the last seek target, anchored at the first *key frame* after it (the frames in
    flight from before the seek are not the new position). A PTS jump of more than
    :data:`MAX_PTS_JUMP` without a seek is the device skipping a gap: the position goes
    on from there. Output PTS continue one 25 fps frame after the last one at every new
    base, so a browser's jitter buffer never sees time run backwards.
    """

    base_position: float
    base_pts: int | None = None
    last_pts: int | None = None
    pts_offset: int = 0
    last_out_pts: int | None = None
    rebase: bool = True  # the next video key frame with a PTS starts a new base

    @property
    def position(self) -> float:
        """Seconds from the window's start (not clamped)."""
        if self.base_pts is None or self.last_pts is None:
            return self.base_position
        return self.base_position + ((self.last_pts - self.base_pts) % PTS_WRAP) / PTS_HZ

    def seek(self, position: float) -> None:
        """The device accepted a seek to ``position``: the next key frame is the new base."""
        self.base_position, self.base_pts, self.last_pts, self.rebase = float(position), None, None, True

    def take(self, unit: AccessUnit) -> AccessUnit:
        """Track the position from a unit's PTS; the unit with its output PTS."""
        if unit.pts is None or not unit.is_video:
            return self._shift(unit)
        pts = unit.pts
        if self.rebase:
            if not unit.keyframe:
                return self._shift(unit)  # still the frames from before the seek
            self.rebase = False
            self.base_pts = pts
            self._continue_output(pts)
        elif self.last_pts is not None:
            ahead, behind = (pts - self.last_pts) % PTS_WRAP, (self.last_pts - pts) % PTS_WRAP
            if ahead > MAX_PTS_JUMP and behind > MAX_PTS_JUMP:
                self.base_position, self.base_pts = self.position, pts  # the device skipped on its own
                self._continue_output(pts)
        self.last_pts = pts
        return self._shift(unit)

    def _continue_output(self, pts: int) -> None:
        if self.last_out_pts is not None:
            self.pts_offset = self.last_out_pts + PTS_HZ // 25 - pts

    def _shift(self, unit: AccessUnit) -> AccessUnit:
        if unit.pts is None:
            return unit
        if self.pts_offset == 0:
            if unit.is_video:
                self.last_out_pts = unit.pts
            return unit
        pts = (unit.pts + self.pts_offset) % PTS_WRAP
        dts = (unit.dts + self.pts_offset) % PTS_WRAP if unit.dts is not None else None
        if unit.is_video:
            self.last_out_pts = pts
        return dataclasses.replace(unit, pts=pts, dts=dts)


class _Sink:
    """RTP of one playback → receiver → PS demuxer → position tracking → fanout."""

    def __init__(self, service: PlaybackService, playback_id: str) -> None:
        self.service = service
        self.playback_id = playback_id

    def feed(self, data: bytes, source: tuple[str, int]) -> None:
        pb = self.service.playbacks.get(self.playback_id)
        if pb is None:
            return
        if feed_rtp(pb.receiver, pb.demuxer, _Tracking(pb), data, source, self.service.loop.time()):
            if pb.first_frame_at is None:
                pb.first_frame_at = self.service.loop.time()
            pb.wakeup.set()

    def on_closed(self, reason: str) -> None:
        self.service.media_closed(self.playback_id, reason)


class _Tracking:
    """A publish target that passes units through :meth:`Playback.take` to the fanout."""

    __slots__ = ("pb",)

    def __init__(self, pb: Playback) -> None:
        self.pb = pb

    def publish(self, unit: AccessUnit, now: float) -> None:
        self.pb.fanout.publish(self.pb.tracker.take(unit), now)


class PlaybackService(PlaySessionHandler["Playback"]):
    """Starts, controls and ends playback sessions; a SIP router handler for their events."""

    def __init__(
        self,
        sip: SipContext,
        channels: ChannelLocator,
        *,
        media_host: str = "127.0.0.1",
        play_timeout: float = 10.0,
        control_timeout: float = 5.0,
        default_transport: MediaTransport = MediaTransport.UDP,
        rtp_timeout: float = 10.0,
        media_ports: tuple[int, int] | None = None,
        idle_timeout: float = 60.0,
        per_user: int = 4,
        total: int = 32,
        ssrc_base: int = 5000,
        uplink: HistoryUplink | None = None,
        measure_after: float = 10.0,
    ) -> None:
        self.sip = sip
        self.channels = channels
        self.loop = asyncio.get_running_loop()
        self.media_host = media_host
        self.play_timeout = play_timeout
        self.control_timeout = control_timeout
        self.default_transport = default_transport
        self.rtp_timeout = rtp_timeout
        self.media_ports: tuple[int, int] | int = media_ports or 0
        self.idle_timeout = idle_timeout
        self.per_user = per_user
        self.total = total
        self.playbacks: dict[str, Playback] = {}
        self.ended: dict[str, Playback] = {}
        self._sessions: PlaySessions[Playback] = PlaySessions(self.loop)  # by Call-ID, ended ones a while
        # History SSRCs 1<domain digits><seq>: live uses 1.. upward, so playback counts from ssrc_base.
        self._ssrc_seq = itertools.count(ssrc_base)
        self.outcomes: Counter[str] = Counter()
        self.uplink = uplink  # None: no budget counted (tests, a platform without kindergartens)
        self.measure_after = measure_after  # s before the measured RTP rate replaces the uplink estimate

    # --- API ----------------------------------------------------------------------------

    async def start(
        self,
        channel_id: str,
        start: int,
        end: int,
        owner: str = "",
        transport: MediaTransport | None = None,
        *,
        session_type: SessionType = SessionType.PLAYBACK,
        download_speed: int | None = None,
    ) -> Playback:
        """Open a playback of ``channel_id`` for [start, end) (epoch s); returns once the device answered.

        ``session_type`` DOWNLOAD (with ``download_speed``) serves an upper platform's download
        through the cascade (:mod:`gateway.cascade.relay`): the same session, ``s=Download``.

        Raises :class:`PlaybackError`: 400 bad window, 404 unknown channel, 409 device
        offline, 429/503 caps, 502 the device refused, 504 it did not answer.
        """
        if not 0 < start < end:
            raise PlaybackError(400, "时间范围无效 (invalid time range: need 0 < start < end)")
        device_id = self.channels.device_of(channel_id)
        if device_id is None:
            raise PlaybackError(404, f"未知通道 (unknown channel {channel_id})")
        peer = self.sip.peer_of(device_id)
        if peer is None:
            raise PlaybackError(409, f"设备离线 (device {device_id} of channel {channel_id} is offline)")
        if len(self.playbacks) >= self.total:
            raise PlaybackError(503, "回放会话过多,请稍后再试 (too many playback sessions)")
        if sum(1 for pb in self.playbacks.values() if pb.owner == owner) >= self.per_user:
            raise PlaybackError(429, f"您的回放会话过多 (at most {self.per_user} playback sessions per user)")
        mode = transport or self.default_transport
        reservation, download_speed = self._reserve_uplink(channel_id, session_type, download_speed)
        playback_id = secrets.token_hex(8)
        sink = _Sink(self, playback_id)
        receiver = RtpReceiver(None, PS_PAYLOAD_TYPES, armed=False)  # armed by the device's answer
        try:
            media, port = await open_intake(
                sink,
                receiver,
                mode,
                host=self.media_host,
                ports=self.media_ports,
                connect_timeout=self.play_timeout,
                rtp_timeout=self.rtp_timeout,
            )
        except BaseException:
            if reservation is not None:
                reservation.release()
            raise
        ssrc = make_ssrc(self.sip.domain, next(self._ssrc_seq) % 10000, history=True)
        offer = offer_for_history(
            session_type=session_type,
            channel_id=channel_id,
            start=start,
            end=end,
            media_host=self.media_host,
            media_port=port,
            ssrc=ssrc,
            transport=mode,
            download_speed=download_speed,
        )
        session = PlaySession(
            self.sip.endpoint,
            self.sip.local_id,
            self.sip.domain,
            channel_id,
            peer,
            self.media_host,
            port,
            mode,
            ssrc,
            play_timeout=self.play_timeout,
            offer=offer,
        )
        now = self.loop.time()
        pb = Playback(
            id=playback_id,
            owner=owner,
            channel_id=channel_id,
            device_id=device_id,
            start=start,
            end=end,
            session=session,
            transport=media,
            fanout=StreamFanout(f"playback-{playback_id}"),
            receiver=receiver,
            demuxer=PsDemuxer(),
            started=self.loop.create_future(),
            mode=mode,
            opened_at=now,
            touched=now,
            uplink=reservation,
        )
        if reservation is not None and self.measure_after > 0:
            reservation.measure = rate_meter(receiver, now, self.loop.time, self.measure_after)
        self.playbacks[playback_id] = pb
        session.start(now)
        self._sessions.add(session, pb)
        self._after(pb)
        self._arm_idle(pb)
        try:
            await asyncio.wait_for(asyncio.shield(pb.started), self.play_timeout + 1)
        except TimeoutError:
            self.stop(playback_id, "play_timeout")
            raise PlaybackError(
                504, f"设备未应答回放请求 (device {device_id} did not answer the playback INVITE)"
            ) from None
        except PlaybackError:
            raise
        log.info("playback %s of %s started (%d..%d, %s)", playback_id, channel_id, start, end, mode.name)
        return pb

    def get(self, playback_id: str) -> Playback | None:
        """A running or recently ended playback."""
        pb = self.playbacks.get(playback_id) or self.ended.get(playback_id)
        if pb is not None and pb.active:
            pb.touched = self.loop.time()
        return pb

    async def control(
        self, playback_id: str, action: str, *, scale: float | None = None, position: float | None = None
    ) -> Playback:
        """Pause, play (resume), change the scale or seek; returns once the device accepted.

        Raises :class:`PlaybackError`: 404 unknown, 409 ended (MANSRTSP to a session
        that is over), 400 bad action/value, 502 refused, 504 not answered.
        """
        pb = self.playbacks.get(playback_id)
        if pb is None:
            if playback_id in self.ended:
                ended = self.ended[playback_id]
                raise PlaybackError(409, f"回放已结束 (playback {playback_id} has ended: {ended.end_reason})")
            raise PlaybackError(404, f"未知回放会话 (unknown playback {playback_id})")
        pb.touched = self.loop.time()
        if pb.state is PlaybackState.STARTING:
            raise PlaybackError(409, "回放尚未开始 (playback is still starting)")
        cseq = next(pb.cseq)
        if action == "pause":
            body = pause(cseq)
        elif action == "play":
            body = resume(cseq)
        elif action == "scale":
            if scale is None or not MIN_SCALE <= scale <= MAX_SCALE:
                raise PlaybackError(400, f"倍速无效 (scale must be {MIN_SCALE}..{MAX_SCALE})")
            body = set_scale(cseq, scale)
        elif action == "seek":
            if position is None or not 0 <= position < pb.end - pb.start:
                raise PlaybackError(400, f"位置无效 (position must be 0..{pb.end - pb.start} seconds from start)")
            body = seek(cseq, position)
        else:
            raise PlaybackError(400, f"未知操作 (action must be one of {', '.join(ACTIONS)})")
        answer = await self._exchange(pb, body)
        if answer.status == 408:
            raise PlaybackError(504, "设备未应答回放控制 (device did not answer the playback control)")
        if answer.status >= 300:
            raise PlaybackError(502, f"设备拒绝回放控制 (device refused {action}: {answer.status} {answer.reason})")
        self._apply(pb, action, scale, position)
        return pb

    async def forward(self, playback_id: str, body: bytes) -> PlayInfoAnswered:
        """Send an upper platform's MANSRTSP body verbatim in the device dialog (as WVP, docs/gb28181.md §15.9).

        Returns the device's answer (408 when it gave none); a PLAY/PAUSE the device
        accepted also moves this playback's state and position. Raises
        :class:`PlaybackError` 404/409 as :meth:`control`.
        """
        pb = self.playbacks.get(playback_id)
        if pb is None or pb.state is PlaybackState.STARTING:
            raise PlaybackError(409 if playback_id in self.ended or pb else 404, "回放未在进行 (no such playback)")
        pb.touched = self.loop.time()
        answer = await self._exchange(pb, body)
        if answer.status < 300:
            with contextlib.suppress(MansrtspError):
                request = parse_request(body)
                if request.method is MansrtspMethod.PAUSE:
                    self._apply(pb, "pause", None, None)
                elif request.is_seek and isinstance(request.range_start, float):
                    self._apply(pb, "seek", None, request.range_start)
                elif request.scale is not None:
                    self._apply(pb, "scale", request.scale, None)
                elif request.method is MansrtspMethod.PLAY:
                    self._apply(pb, "play", None, None)
        return answer

    async def _exchange(self, pb: Playback, body: bytes) -> PlayInfoAnswered:
        """One INFO in the device dialog and its answer."""
        try:
            key = pb.session.send_info(body, self.loop.time())
        except PlayNotStreaming as exc:
            raise PlaybackError(409, f"回放已结束 (playback {pb.id} is not streaming: {exc})") from exc
        future: asyncio.Future[PlayInfoAnswered] = self.loop.create_future()
        pb.controls[key] = future
        self._after(pb)
        try:
            return await asyncio.wait_for(future, self.control_timeout)
        except TimeoutError:
            raise PlaybackError(504, "设备未应答回放控制 (device did not answer the playback control)") from None
        finally:
            pb.controls.pop(key, None)

    def stop(self, playback_id: str, reason: str = "stopped") -> Playback | None:
        """End a playback now (BYE when streaming, CANCEL when still inviting)."""
        pb = self.playbacks.get(playback_id)
        if pb is None:
            return self.ended.get(playback_id)
        self._close(pb, PlaybackState.ENDED, reason)
        return pb

    def close_all(self, reason: str = "gateway stopping") -> None:
        """End every playback (shutdown)."""
        for playback_id in list(self.playbacks):
            self.stop(playback_id, reason)

    def media_closed(self, playback_id: str, reason: str) -> None:
        """The RTP transport ended by itself (no packets for the RTP timeout)."""
        pb = self.playbacks.get(playback_id)
        if pb is not None:
            pb.session.media_timeout(self.loop.time())
            self._close(pb, PlaybackState.ENDED, reason)

    def attach(self, pb: Playback, consumer_id: str) -> None:
        """Mark a viewer's arrival (the WebRTC track attaches itself to ``pb.fanout``)."""
        pb.touched = self.loop.time()

    def stats(self) -> dict[str, int]:
        """Counters for /metrics and tests."""
        return {"active": len(self.playbacks), **self.outcomes}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Playbacks running now, and how playbacks ended (or were refused over the uplink budget)."""
        yield GaugeMetricFamily("kgw_playbacks_active", "Playback sessions open now", value=len(self.playbacks))
        ended = CounterMetricFamily("kgw_playbacks", "Playback sessions by how they ended", labels=["outcome"])
        totals: Counter[str] = Counter()
        for reason, count in self.outcomes.items():
            totals[outcome_label(reason)] += count
        for label, count in sorted(totals.items()):
            ended.add_metric([label], count)
        yield ended

    def _reserve_uplink(
        self, channel_id: str, session_type: SessionType, download_speed: int | None
    ) -> tuple[Reservation | None, int | None]:
        """The session's share of the kindergarten's uplink (:mod:`gateway.history_uplink`); 503 over budget.

        A playback starts at scale 1 (one main stream); an upper's download through the
        cascade at main × its download speed, or the fastest lower speed that fits.
        Returns the reservation and the download speed to ask the device for.
        """
        if self.uplink is None:
            return None, download_speed
        try:
            if session_type is SessionType.DOWNLOAD:
                speeds = speeds_from(max(1, download_speed or 1))
                reservation, factor = self.uplink.reserve(channel_id, "download", speeds)
                return reservation, int(factor)
            reservation, _ = self.uplink.reserve(channel_id, "playback", (1.0,))
            return reservation, download_speed
        except UplinkExceeded as exc:
            self.outcomes["uplink_refused"] += 1
            log.info("playback of %s refused: %s", channel_id, exc)
            raise PlaybackError(503, str(exc)) from exc

    # --- internals ------------------------------------------------------------------------------

    def _apply(self, pb: Playback, action: str, scale: float | None, position: float | None) -> None:
        if not pb.active:
            return
        if action == "pause":
            pb.state = PlaybackState.PAUSED
        elif action == "play":
            pb.state = PlaybackState.PLAYING
        elif action == "scale" and scale is not None:
            pb.scale = scale
            if pb.uplink is not None and self.uplink is not None:
                pb.uplink.update(self.uplink.estimate(scale))  # the device now sends scale × as fast
        elif action == "seek" and position is not None:
            pb.tracker.seek(position)

    def _close(self, pb: Playback, state: PlaybackState, reason: str) -> None:
        if self.playbacks.pop(pb.id, None) is None:
            return
        log.info("playback %s of %s %s: %s", pb.id, pb.channel_id, state.value, reason)
        pb.state = state if pb.state is not PlaybackState.FAILED else pb.state
        if pb.end_reason is None:
            pb.end_reason = reason
        self.outcomes[pb.end_reason] += 1
        self._sessions.retire(pb.session)
        pb.session.stop(self.loop.time())
        if pb.uplink is not None:
            pb.uplink.release()
        self._drain(pb)
        if pb.transport is not None:
            pb.transport.close()
        for handle in (pb.timer, pb.idle):
            if handle is not None:
                handle.cancel()
        if not pb.started.done():
            pb.started.set_exception(PlaybackError(502, f"回放未能开始 (playback did not start: {reason})"))
            pb.started.exception()  # retrieved: nobody may be awaiting it any more
        for future in pb.controls.values():
            if not future.done():
                future.set_exception(PlaybackError(409, f"回放已结束 (playback ended: {reason})"))
        for consumer in pb.fanout.consumers:  # viewers' tracks end on their next pull
            pb.fanout.detach(consumer, self.loop.time())
        pb.wakeup.set()
        self.ended[pb.id] = pb
        self.loop.call_later(RETAIN_ENDED, self.ended.pop, pb.id, None)
        while len(self.ended) > MAX_ENDED:
            self.ended.pop(next(iter(self.ended)))

    def _arm_idle(self, pb: Playback) -> None:
        pb.idle = self.loop.call_later(self.idle_timeout, self._check_idle, pb)

    def _check_idle(self, pb: Playback) -> None:
        pb.idle = None
        if self.playbacks.get(pb.id) is not pb:
            return
        now = self.loop.time()
        if pb.fanout.consumer_count == 0 and now - pb.touched >= self.idle_timeout:
            self._close(pb, PlaybackState.ENDED, "idle")
            return
        if pb.fanout.consumer_count:
            pb.touched = now
        pb.idle = self.loop.call_at(pb.touched + self.idle_timeout, self._check_idle, pb)

    # --- SIP events (PlaySessionHandler routes them to the sessions) -------------------------------

    def _drain(self, pb: Playback) -> None:
        """Consume the session's events after it was stopped (nothing more to do with them)."""
        while (event := pb.session.next_event()) is not None:
            if isinstance(event, PlayInfoAnswered):
                future = pb.controls.get(event.transaction)
                if future is not None and not future.done():
                    future.set_result(event)

    def _after(self, pb: Playback) -> None:
        """Act on the session's events and re-arm its timer."""
        session = pb.session
        while (event := session.next_event()) is not None:
            if isinstance(event, PlayStarted):
                pb.receiver.arm(*media_sources(event.spec, session))
                pb.state = PlaybackState.PLAYING
                if pb.mode is MediaTransport.TCP_ACTIVE and pb.transport is None:
                    self.loop.create_task(self._connect_active(pb, event.spec.remote_host, event.spec.remote_port))
                elif not pb.started.done():
                    pb.started.set_result(None)
            elif isinstance(event, PlayInfoAnswered):
                future = pb.controls.get(event.transaction)
                if future is not None and not future.done():
                    future.set_result(event)
            elif isinstance(event, PlayMediaEnded):
                self.loop.call_soon(self._close, pb, PlaybackState.ENDED, "end_of_file")
            elif isinstance(event, PlayFailed):
                pb.state = PlaybackState.FAILED
                pb.end_reason = pb.end_reason or f"{event.status} {event.reason}"
                if not pb.started.done():
                    status = 504 if event.status == 408 else 502
                    pb.started.set_exception(
                        PlaybackError(status, f"设备拒绝回放 (device refused playback: {event.status} {event.reason})")
                    )
                self.loop.call_soon(self._close, pb, PlaybackState.FAILED, pb.end_reason)
            elif isinstance(event, PlayEnded):
                self.loop.call_soon(self._close, pb, PlaybackState.ENDED, event.reason)
        if pb.timer is not None:
            pb.timer.cancel()
            pb.timer = None
        deadline = session.get_timer()
        if deadline is not None and pb.id in self.playbacks:
            pb.timer = self.loop.call_at(deadline, self._on_timer, pb)

    def _on_timer(self, pb: Playback) -> None:
        pb.timer = None
        pb.session.handle_timer(self.loop.time())
        self._after(pb)

    async def _connect_active(self, pb: Playback, host: str, port: int) -> None:
        try:
            pb.transport = await connect_active(
                _Sink(self, pb.id), host, port, connect_timeout=self.play_timeout, rtp_timeout=self.rtp_timeout
            )
        except GatewayError as exc:
            log.warning("playback %s: cannot connect to %s:%d for media: %s", pb.id, host, port, exc)
            self._close(pb, PlaybackState.FAILED, "media_connect_failed")
            return
        if self.playbacks.get(pb.id) is not pb:
            pb.transport.close()
        elif not pb.started.done():
            pb.started.set_result(None)
