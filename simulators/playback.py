"""Simulated NVRs play back and download recordings: the media side of their history calls (asyncio).

The SIP side is sans-I/O (:class:`~gateway.gb28181.device_records.DeviceRecords`, a
feature of each recording :class:`~gateway.gb28181.device_agent.DeviceAgent`). This
module is the I/O that answers it, one :class:`PlaybackHub` per kindergarten (per shared
SIP endpoint, next to the live :class:`~simulators.streamer.StreamHub`) and one
:class:`PlaybackStreamer` per call:

* ``MediaRequested``: open the sender exactly as a live call does (the streamer *is* a
  :class:`~simulators.streamer.CameraStreamer`: UDP, TCP passive or TCP active), then
  :meth:`DeviceRecords.accept` with its port.
* ``MediaStarted`` (the ACK): connect if needed, then send. What is due is read from the
  session's :class:`~gateway.gb28181.playback_clock.PlaybackClock`: frame ``k`` of the
  call shows recorded time ``start + k / fps`` and is sent when the clock's position
  reaches ``k / fps`` — so ``Scale`` changes the pace (recorded seconds per wall
  second), a download runs at ``downloadspeed``, PAUSE sends nothing, and a seek starts
  again at the key frame of second ``floor(npt)``. At 4x and faster a playback sends
  only each second's key frame (as NVRs do). Both the PS PTS and the RTP timestamp are
  the npt in 90 kHz ticks (``k * 90000 / fps``): recorded time, not wall time.
* ``PlaybackChanged`` (a MANSRTSP control): re-read the clock now.
* ``MediaStopped`` (BYE), TEARDOWN, the stall misbehaviour, or the end of the range: stop
  sending (the feature sends ``MediaStatus`` 121 at the end); a lost connection hangs up.

Every frame carries the recorded time burned in (:mod:`simulators.stamp`). The GOPs come
from a shared :class:`~simulators.playback_video.SecondCache`, encoded in worker
threads a few seconds ahead of the position, so the loop never waits on an encoder.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from bisect import bisect_right
from collections.abc import Callable

from gateway.gb28181.device_agent import AgentHost, DeviceAgent
from gateway.gb28181.device_calls import MediaRequested, MediaStarted, MediaStopped
from gateway.gb28181.device_recordings import IndexOptions, RecordingIndex
from gateway.gb28181.device_records import DeviceRecords, PlaybackChanged, PlaybackSession, RecordEvent, RecordOptions
from gateway.gb28181.sdp import SessionType
from gateway.media.ps import AccessUnit, PsMuxer, StreamId
from gateway.media.rtp.sender import ReplayFrame
from simulators.playback_video import EncodedSecond, SecondCache, SecondKey
from simulators.streamer import CallHub, CameraStreamer
from simulators.video import VideoProfile

__all__ = ["KEY_ONLY_SCALE", "PlaybackHub", "PlaybackStreamer", "attach_recordings", "site_seed"]

log = logging.getLogger("kgw.simulate.playback")
KEY_ONLY_SCALE = 4.0  # a playback at this scale or faster sends one key frame per recorded second
AHEAD = 2  # seconds encoded ahead of the position (times the pace)
CLOCK_RATE = 90000


class PlaybackStreamer(CameraStreamer):
    """The media half of one playback or download call (a live streamer with another frame source)."""

    def __init__(
        self,
        request: MediaRequested,
        session: PlaybackSession,
        cache: SecondCache,
        *,
        title: str,
        subtitle: str,
        profile: VideoProfile,
        recorded: list[tuple[int, int]],
        local_host: str,
        on_lost: Callable[[CameraStreamer, str], None],
    ) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(request, loop.create_future(), local_host=local_host, on_lost=on_lost)  # no clip: GOPs
        self.session = session
        self.cache = cache
        self.title, self.subtitle, self.profile = title, subtitle, profile
        self.total_frames = (session.end - session.start) * profile.fps
        self.next_frame = 0
        self.seconds_sent: list[int] = []  # recorded seconds whose key frame went out (newest last, capped)
        self._recorded = recorded  # (start, end) of the files covering the range, sorted
        self._starts = [s for s, _ in recorded]
        self._generation = -1
        self._jumps = -1
        self._key_only = False
        self._muxer = PsMuxer(profile.stream_type)
        self._pending: dict[SecondKey, asyncio.Future[EncodedSecond]] = {}
        self._waiting: SecondKey | None = None

    # --- setup ----------------------------------------------------------------------------

    async def _start(self) -> None:
        """The ACK arrived: connect if we must (no clip to wait for), then send."""
        if not self.closed and await self._connect():
            self._maybe_begin()

    def _maybe_begin(self) -> None:
        ready = self._sender is not None and self._sender.connected
        if self.closed or self.sending or not self.started or not ready:
            return
        self.sending = True
        self._tick()

    def poke(self) -> None:
        """The clock moved (a control): re-read it now."""
        if self.sending and not self.closed:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._tick()

    # --- what is shown ------------------------------------------------------------------------

    def key_for(self, epoch: int) -> SecondKey:
        """The cache key of the recorded second ``epoch`` in the current mode."""
        i = bisect_right(self._starts, epoch) - 1
        gap = not any(s <= epoch < e for s, e in self._recorded[max(0, i - 4) : i + 1])
        return SecondKey(self.title, self.subtitle, self.profile, epoch, gap, self._key_only)

    def _want(self, key: SecondKey) -> EncodedSecond | None:
        """The encoded second if cached; otherwise start encoding it in a thread and return None."""
        second = self.cache.peek(key)
        if second is not None or key in self._pending:
            return second
        future = asyncio.ensure_future(asyncio.to_thread(self.cache.get, key))
        self._pending[key] = future
        future.add_done_callback(lambda f, k=key: self._encoded(k, f))  # type: ignore[misc]
        return None

    def _encoded(self, key: SecondKey, future: asyncio.Future[EncodedSecond]) -> None:
        self._pending.pop(key, None)
        if future.cancelled():
            return
        if future.exception() is not None:
            log.warning("playback encode of %s failed: %s", key.epoch, future.exception())
            self._lost("encode_failed")
            return
        if self._waiting == key and not self.closed:
            self._waiting = None
            self._tick()

    # --- sending ----------------------------------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        if self.closed or self.session.stalled:
            return
        try:
            self._send_due()
        except Exception:  # a bug: stop this stream only
            log.exception("playback of %s failed", self.channel_id)
            self._lost("error")

    def _send_due(self) -> None:
        now = self._loop.time()
        clock, fps = self.session.clock, self.profile.fps
        if clock.generation != self._generation:  # a control: re-read the pace (and the position on a jump)
            self._generation = clock.generation
            key_only = self.session.kind is SessionType.PLAYBACK and clock.scale >= KEY_ONLY_SCALE
            if clock.jumps != self._jumps:  # start or seek: from the key frame of this second
                self._jumps = clock.jumps
                self.next_frame = int(clock.position(now)) * fps
            elif key_only and not self._key_only:  # go on from the next key frame
                self.next_frame = -(-self.next_frame // fps) * fps
            self.next_frame = min(self.next_frame, self.total_frames)
            self._key_only = key_only
        due = min(self.total_frames, math.floor(clock.position(now) * fps + 1e-6) + 1)
        if due - self.next_frame > 2 * fps:  # more than two seconds late: drop to the latest second
            self.next_frame = (due - 1) // fps * fps
        while self.next_frame < due and not self.closed:
            second, n = divmod(self.next_frame, fps)
            key = self.key_for(self.session.start + second)
            encoded = self._want(key)
            if encoded is None:
                self._waiting = key  # _encoded ticks again
                return
            if n < len(encoded.units):
                data, keyframe = encoded.units[n]
                pts = self.next_frame * CLOCK_RATE // fps
                unit = AccessUnit(self.profile.stream_type, StreamId.VIDEO, pts, pts, data, keyframe)
                self._send_frame(ReplayFrame(self._muxer.mux(unit), pts, keyframe))
                if n == 0:
                    self.seconds_sent.append(key.epoch)
                    del self.seconds_sent[:-64]
            self.next_frame = (second + 1) * fps if self._key_only else self.next_frame + 1
        if self.next_frame >= self.total_frames:
            return  # the whole range went out; MediaStatus is the feature's job
        pace = math.ceil(clock.scale) if clock.playing else 0
        start_second = self.next_frame // fps
        for ahead in range(AHEAD * max(1, pace) + 1):
            epoch = self.session.start + start_second + ahead
            if epoch < self.session.end:
                self._want(self.key_for(epoch))
        at = clock.time_at(self.next_frame / fps)
        if at is not None:
            self._timer = self._loop.call_at(max(at, now), self._tick)

    def close(self, reason: str) -> None:
        """Stop sending; drop the encodes we are waiting for (they stay in the cache when done)."""
        self._waiting = None
        super().close(reason)


class PlaybackHub(CallHub[PlaybackStreamer]):
    """The playback media side of one shared SIP endpoint: feature events in, streamers out."""

    def __init__(
        self,
        host: AgentHost,
        title: str,
        cache: SecondCache,
        profile: VideoProfile,
        *,
        local_host: str,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(local_host)
        self.host = host
        self.title = title
        self.cache = cache
        self.profile = profile
        self.wall = wall
        self._features: list[tuple[DeviceAgent, DeviceRecords]] = []

    def add(self, agent: DeviceAgent, feature: DeviceRecords) -> None:
        """Serve ``feature``'s calls (the agent must carry it in ``agent.features``)."""
        self._features.append((agent, feature))

    # --- events from the SIP side -------------------------------------------------------------

    def drain(self) -> None:
        """Take every pending event of every feature (the driver's ``on_activity`` hook)."""
        for agent, feature in self._features:
            while (event := feature.next_event()) is not None:
                try:
                    self._on_event(agent, feature, event)
                except Exception:
                    log.exception("playback event %s failed", event)

    def _on_event(self, agent: DeviceAgent, feature: DeviceRecords, event: RecordEvent) -> None:
        if isinstance(event, MediaRequested):
            self._requested(agent, feature, event)
        elif isinstance(event, MediaStarted):
            if (streamer := self.streams.get(event.call_id)) is not None:
                streamer.start()
        elif isinstance(event, PlaybackChanged):
            if (streamer := self.streams.get(event.call_id)) is not None:
                streamer.poke()
        elif isinstance(event, MediaStopped):
            self._stopped(event.call_id, event.reason)

    def _requested(self, agent: DeviceAgent, feature: DeviceRecords, event: MediaRequested) -> None:
        session = feature.sessions.get(event.call_id)
        if session is None:
            return
        recorded = sorted(
            {
                (r.start, r.end)
                for r in feature.index.query(session.channel_id, session.start, session.end, int(self.wall()))
            }
        )
        streamer = PlaybackStreamer(
            event,
            session,
            self.cache,
            title=self.title,
            subtitle=_camera_name(agent, session.channel_id),
            profile=self.profile,
            recorded=recorded,
            local_host=self.local_host,
            on_lost=self._on_lost,
        )
        self._serve(
            streamer, feature, lambda port: feature.accept(streamer.call_id, self.local_host, port, self._loop.time())
        )


def site_seed(seed: int, site_id: str) -> int:
    """A recording seed per site (kindergarten), stable across runs: neighbours get other gaps and alarms."""
    return seed ^ zlib.crc32(site_id.encode())


def attach_recordings(
    hub: PlaybackHub,
    index_options: IndexOptions | None = None,
    options: RecordOptions | None = None,
    *,
    wall_offset: float,
) -> RecordingIndex:
    """Give every camera device on ``hub``'s endpoint (NVR channels, IPCs) recordings from one site index.

    ``wall_offset`` is Unix time minus the loop's clock. Returns the index (the fleet
    adds the site's alarms to it).
    """
    index = RecordingIndex(index_options or IndexOptions())
    for agent in hub.host.agents.values():
        if agent.camera_ids:
            feature = DeviceRecords(index, options or RecordOptions(), wall_offset=wall_offset)
            agent.features.append(feature)
            hub.add(agent, feature)
    return index


def _camera_name(agent: DeviceAgent, channel_id: str) -> str:
    for channel in agent.profile.channels:
        if channel.device_id == channel_id:
            return channel.name or channel.device_id
    return channel_id
