"""On-demand H.265 → H.264 for browser viewers: one transcode per camera, shared (issue 11).

:class:`TranscodeService` runs :class:`~gateway.media.transcode.HevcToH264` for a camera
while browsers watch it. The first browser viewer of an H.265 camera starts it; every
later one reads the same output :class:`~gateway.media.relay.StreamFanout` (what
:class:`~gateway.media.webrtc.FanoutVideoTrack` reads for an H.264 camera, unchanged);
the last one leaving starts a linger, then it stops and gives its place on the camera's
live stream back (whose own linger then ends the INVITE).

A transcode is two tasks on the loop and one worker thread of its own:

* the *reader* pulls the camera's units from the live stream's fanout as they come and
  stamps their arrival (:class:`~gateway.media.transcode.Backlog`), so the lag is measured
  in wall time, whatever the camera's timestamps say;
* the *pump* hands batches to the worker thread (decoding and encoding never run on the
  loop; PyAV releases the GIL meanwhile), publishes what comes back and wakes the viewers.
  A backlog older than ``max_lag`` loses whole GOPs instead of falling further behind.

``max_transcodes`` bounds the CPU spent: past it, a new camera's viewer is refused
(:class:`TranscodeLimitReached`, HTTP 503) — after an idle, lingering transcode has been
given up for it. A transcode reads the live stream it is given — main or sub-stream (its
``stream_number``), which keys it next to the channel; the WebRTC route gives it the
camera's sub-stream when there is one (``prefer_sub``, gateway/httpapi/transcode_routes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.errors import GatewayError
from gateway.gb28181.play import PlayState
from gateway.media.ps import AccessUnit, StreamType
from gateway.media.relay import RelayError, StreamFanout
from gateway.media.transcode import Backlog, HevcToH264, TranscodeSettings, TranscodeStats
from gateway.substreams import stream_name

__all__ = [
    "DEFAULT_MAX_TRANSCODES",
    "LINGER",
    "Transcode",
    "TranscodeLimitReached",
    "TranscodeService",
    "wait_video_codec",
]

log = logging.getLogger("kgw.transcode")

DEFAULT_MAX_TRANSCODES = 4  # 2 cores: bench/transcode.py measured ~4 720p streams per core, keep half for the rest
LINGER = 5.0  # s a transcode keeps running after its last viewer left (a quick re-open is free)
BATCH_UNITS = 5  # units per worker call: a burst (the GOP cache) reaches viewers in steps, not at its end
_OPEN_STATES = frozenset({PlayState.INVITING, PlayState.STREAMING})
KEYFRAME_EVERY = 1.0  # s: at most one forced key frame per second, however many viewers join


class TranscodeLimitReached(GatewayError):
    """All ``max_transcodes`` transcodes are in use (by watched cameras)."""

    def __init__(self, limit: int) -> None:
        if limit:
            message = (
                f"转码路数已满 ({limit} 路), 请稍后再试 / "
                f"all {limit} H.265 transcodes are in use by other cameras, try again later"
            )
        else:
            message = "H.265 摄像机需要转码, 转码已关闭 / H.265 camera: transcoding is disabled (max_transcodes = 0)"
        super().__init__(message)
        self.limit = limit


class SessionState(Protocol):
    """Where the live stream's INVITE stands."""

    @property
    def state(self) -> PlayState: ...


class MediaSource(Protocol):
    """What a transcode reads: a live stream (gateway.live.LiveStream) or a playback (gateway.playback.Playback)."""

    @property
    def channel_id(self) -> str: ...
    @property
    def session(self) -> SessionState | None: ...  # None: an external feed (RTSP), only ever H.264: never transcoded
    @property
    def fanout(self) -> StreamFanout: ...
    @property
    def wakeup(self) -> asyncio.Event: ...


class SourceStream(MediaSource, Protocol):
    """A live stream as a transcode reads it: which of the camera's streams it is, too."""

    @property
    def key(self) -> str: ...  # in LiveService.streams
    @property
    def stream_number(self) -> int: ...  # 0 main, 1 sub


GiveBack = Callable[[str, str], None]
"""``(channel_id, consumer)``: give a transcode's place on its source back (``LiveService.leave``…)."""


class LiveSource(Protocol):
    """The live service as a transcode needs it: its loop, and giving a viewer's place back."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def leave(self, channel_id: str, consumer: str) -> None: ...


@dataclass(eq=False)
class Transcode:
    """One camera stream being transcoded, and the fanout its browser viewers read."""

    channel_id: str
    stream: str  # "main" | "sub" | "playback <id>"
    source: MediaSource
    source_consumer: str  # our place on the source's fanout
    give_back: GiveBack  # how that place is given back
    fanout: StreamFanout
    transcoder: HevcToH264
    backlog: Backlog
    executor: ThreadPoolExecutor
    started_at: float
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)  # set after each publish: viewers pull
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set when the reader queued units
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    linger: asyncio.TimerHandle | None = None
    last_forced_key: float = float("-inf")
    lag: float = 0.0  # s the batch just taken had waited
    max_lag_seen: float = 0.0
    stopped: bool = False

    @property
    def stats(self) -> TranscodeStats:
        """The transcode's counters (decoder, encoder and backlog share one)."""
        return self.transcoder.stats


class TranscodeService:
    """Transcodes of H.265 cameras for browsers, keyed by (channel, stream); see the module doc."""

    def __init__(
        self,
        live: LiveSource,
        *,
        max_transcodes: int = DEFAULT_MAX_TRANSCODES,
        settings: TranscodeSettings | None = None,
        linger: float = LINGER,
        prefer_sub: bool = True,
    ) -> None:
        self.live = live
        self.prefer_sub = prefer_sub  # transcode a camera's sub-stream when it has one (the route asks for it)
        self.known_hevc: set[str] = set()  # channels seen sending H.265 (their next viewers open the sub-stream)
        self.max_transcodes = max_transcodes
        self.settings = settings or TranscodeSettings()
        self.linger = linger
        self.transcodes: dict[tuple[str, str], Transcode] = {}
        self.refused = 0
        self.started = 0
        self._closed_totals = TranscodeStats()
        self._seq = itertools.count(1)

    # --- viewers -----------------------------------------------------------------------------

    def join(self, source: SourceStream, source_consumer: str) -> tuple[Transcode, str]:
        """A browser viewer of an H.265 live stream: (the transcode it reads, its consumer id there).

        ``source_consumer`` is the viewer's place on the live stream (from ``LiveService.watch``);
        it is taken over (by a new transcode) or given back (joining a running one) in every case,
        also when :class:`TranscodeLimitReached` is raised.
        """
        self.known_hevc.add(source.channel_id)
        return self.join_source(source, source_consumer, stream=stream_name(source.stream_number))

    def join_source(
        self, source: MediaSource, source_consumer: str, *, stream: str, give_back: GiveBack | None = None
    ) -> tuple[Transcode, str]:
        """A browser viewer of any H.265 source (a playback too): as :meth:`join`, one transcode per
        (channel, ``stream``); ``give_back`` returns ``source_consumer`` (default: the live service's)."""
        release = give_back or self.live.leave
        key = (source.channel_id, stream)
        running = self.transcodes.get(key)
        if running is not None and running.source is not source:  # the camera's stream was reopened
            self._stop(running, "source reopened")
            running = None
        if running is not None:
            release(source.channel_id, source_consumer)
        else:
            try:
                running = self._start(key, source, source_consumer, release)
            except BaseException:
                release(source.channel_id, source_consumer)
                raise
        consumer = f"transcode-viewer-{next(self._seq)}"
        now = self.live.loop.time()
        running.fanout.attach(consumer, now)
        if running.linger is not None:
            running.linger.cancel()
            running.linger = None
        if running.fanout.stats().gop_cache_units > 1 and now - running.last_forced_key >= KEYFRAME_EVERY:
            running.last_forced_key = now  # the cached GOP shows a picture at once; a fresh key frame ends the burst
            running.transcoder.request_keyframe()  # read by the worker thread: a flag, set before its next frame
        return running, consumer

    def leave(self, channel_id: str, consumer: str) -> None:
        """A viewer left (idempotent); the last one starts the linger."""
        for transcode in [t for t in self.transcodes.values() if t.channel_id == channel_id]:
            if consumer in transcode.fanout.consumers:
                transcode.fanout.detach(consumer, self.live.loop.time())
            self._linger_if_unwatched(transcode)

    def _linger_if_unwatched(self, transcode: Transcode) -> None:
        """No viewer left (they left, or their tracks detached themselves): stop after the linger."""
        if transcode.fanout.consumer_count == 0 and transcode.linger is None and not transcode.stopped:
            transcode.linger = self.live.loop.call_later(self.linger, self._stop, transcode, "no viewers")

    def close(self) -> None:
        """Stop every transcode (the gateway is stopping)."""
        for transcode in list(self.transcodes.values()):
            self._stop(transcode, "gateway stopping")

    # --- running -----------------------------------------------------------------------------

    def _start(self, key: tuple[str, str], source: MediaSource, source_consumer: str, give_back: GiveBack) -> Transcode:
        if len(self.transcodes) >= self.max_transcodes:
            idle = [t for t in self.transcodes.values() if t.fanout.consumer_count == 0]
            if not idle:
                self.refused += 1
                raise TranscodeLimitReached(self.max_transcodes)
            self._stop(min(idle, key=lambda t: t.fanout.idle_since or 0.0), "limit: given to another camera")
        stats = TranscodeStats()
        transcode = Transcode(
            channel_id=key[0],
            stream=key[1],
            source=source,
            source_consumer=source_consumer,
            give_back=give_back,
            fanout=StreamFanout(key[0]),
            transcoder=HevcToH264(self.settings, stats),
            backlog=Backlog(self.settings.max_lag, stats),
            executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kgw-transcode-{key[0]}"),
            started_at=self.live.loop.time(),
        )
        self.transcodes[key] = transcode
        self.started += 1
        loop = self.live.loop
        transcode.tasks = [
            loop.create_task(self._read(transcode), name=f"kgw-transcode-read-{key[0]}"),
            loop.create_task(self._pump(transcode), name=f"kgw-transcode-pump-{key[0]}"),
        ]
        log.info("transcoding %s (%s stream) H.265 → H.264 for browsers", key[0], key[1])
        return transcode

    async def _read(self, transcode: Transcode) -> None:
        """Move the camera's units into the backlog as they arrive; stop when the live stream ends."""
        source = transcode.source
        try:
            while not transcode.stopped:
                if source.session is not None and source.session.state not in _OPEN_STATES:
                    self._stop(transcode, "camera stream ended")
                    return
                units = source.fanout.pull(transcode.source_consumer)
                if units:
                    transcode.backlog.add(units, self.live.loop.time())
                    transcode.arrived.set()
                    continue
                source.wakeup.clear()  # nothing queued: clear and wait in one step (no lost wake-up)
                await source.wakeup.wait()
        except RelayError:  # our consumer was taken off the live stream (it closed)
            self._stop(transcode, "camera stream ended")
        except Exception:  # a bug: contain it to this camera
            log.exception("transcode reader of %s failed", transcode.channel_id)
            self._stop(transcode, "reader failed")

    async def _pump(self, transcode: Transcode) -> None:
        """Hand the backlog to the worker thread batch by batch; publish the H.264 that comes back."""
        loop = self.live.loop
        try:
            while not transcode.stopped:
                if not transcode.backlog:
                    transcode.arrived.clear()
                    await transcode.arrived.wait()
                    continue
                now = loop.time()
                transcode.lag = transcode.backlog.lag(now)
                transcode.max_lag_seen = max(transcode.max_lag_seen, transcode.lag)
                batch = transcode.backlog.take(now, BATCH_UNITS)
                if not batch:
                    continue
                out = await loop.run_in_executor(transcode.executor, transcode.transcoder.transcode, batch)
                if transcode.stopped:
                    return
                self._publish(transcode, out)
        except Exception:  # a bug, or PyAV without the codecs: contain it to this camera
            log.exception("transcode of %s failed", transcode.channel_id)
            self._stop(transcode, "transcoder failed")

    def _publish(self, transcode: Transcode, units: list[AccessUnit]) -> None:
        if not units:
            return
        now = self.live.loop.time()
        for unit in units:
            transcode.fanout.publish(unit, now)
        transcode.wakeup.set()
        self._linger_if_unwatched(transcode)  # a track that ended by itself detached without telling us

    def _stop(self, transcode: Transcode, reason: str) -> None:
        """End a transcode: its tasks, its thread (after the batch in hand), its place on the camera, its viewers."""
        if transcode.stopped:
            return
        transcode.stopped = True
        key = (transcode.channel_id, transcode.stream)
        if self.transcodes.get(key) is transcode:
            del self.transcodes[key]
        log.info("transcode of %s stopped: %s", transcode.channel_id, reason)
        if transcode.linger is not None:
            transcode.linger.cancel()
            transcode.linger = None
        current = asyncio.current_task() if self.live.loop.is_running() else None
        for task in transcode.tasks:
            if task is not current:
                task.cancel()
        transcode.executor.shutdown(wait=False, cancel_futures=True)
        transcode.give_back(transcode.channel_id, transcode.source_consumer)
        now = self.live.loop.time()
        for consumer in transcode.fanout.consumers:  # their tracks end (MediaStreamError) instead of freezing
            with contextlib.suppress(RelayError):
                transcode.fanout.detach(consumer, now)
        transcode.wakeup.set()
        _add_stats(self._closed_totals, transcode.stats)

    # --- what it costs -----------------------------------------------------------------------

    def totals(self) -> TranscodeStats:
        """Counters over every transcode so far, running and stopped."""
        total = TranscodeStats()
        _add_stats(total, self._closed_totals)
        for transcode in self.transcodes.values():
            _add_stats(total, transcode.stats)
        return total

    def describe(self, allowed: Callable[[str], bool] = lambda _: True) -> list[dict[str, object]]:
        """The running transcodes whose channel `allowed` admits, for the API."""
        now = self.live.loop.time()
        items: list[dict[str, object]] = []
        for t in self.transcodes.values():
            if not allowed(t.channel_id):
                continue
            s = t.stats
            items.append(
                {
                    "channel_id": t.channel_id,
                    "stream": t.stream,
                    "viewers": t.fanout.consumer_count,
                    "width": s.width,
                    "height": s.height,
                    "frames_in": s.frames_in,
                    "frames_out": s.frames_out,
                    "dropped_frames": s.dropped_frames,
                    "gop_drops": s.gop_drops,
                    "decode_errors": s.decode_errors,
                    "fps": round(t.fanout.stats(now).fps, 1),
                    "bitrate": round(t.fanout.stats(now).bitrate),
                    "lag_s": round(t.lag, 3),
                    "age_s": round(now - t.started_at, 1),
                }
            )
        return items

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Prometheus: active transcodes and their viewers, frames in/out, drops, lag."""
        yield GaugeMetricFamily(
            "kgw_transcodes_active", "H.265 to H.264 transcodes running", value=len(self.transcodes)
        )
        yield GaugeMetricFamily("kgw_transcodes_max", "Configured limit of concurrent transcodes", self.max_transcodes)
        yield GaugeMetricFamily(
            "kgw_transcode_viewers",
            "Browser viewers reading transcoded streams",
            value=sum(t.fanout.consumer_count for t in self.transcodes.values()),
        )
        yield GaugeMetricFamily(
            "kgw_transcode_lag_seconds",
            "Longest wait of a camera unit before its transcode took it, over running transcodes",
            value=max((t.lag for t in self.transcodes.values()), default=0.0),
        )
        totals = self.totals()
        for name, help_text, value in (
            ("started", "Transcodes started", self.started),
            ("refused", "Viewers refused because every transcode was in use (HTTP 503)", self.refused),
            ("frames_in", "H.265 pictures decoded for transcoding", totals.frames_in),
            ("frames_out", "H.264 frames encoded for browsers", totals.frames_out),
            ("bytes_out", "H.264 bytes encoded for browsers", totals.bytes_out),
            (
                "dropped_frames",
                "H.265 frames dropped (whole GOPs) by transcodes that fell behind",
                totals.dropped_frames,
            ),
            ("gop_drops", "Times a transcode that fell behind dropped whole GOPs", totals.gop_drops),
            ("decode_errors", "H.265 units the transcoder could not decode or encode", totals.decode_errors),
            ("keyframes_forced", "Key frames made at once for a joining viewer", totals.keyframes_forced),
        ):
            yield CounterMetricFamily(f"kgw_transcode_{name}", help_text, value=value)


def _add_stats(total: TranscodeStats, part: TranscodeStats) -> None:
    for name in TranscodeStats.__dataclass_fields__:
        if name not in ("width", "height"):
            setattr(total, name, getattr(total, name) + getattr(part, name))


class CodecSource(Protocol):
    """The live service as :func:`wait_video_codec` needs it."""

    def video_codec(self, key: str) -> StreamType | None: ...


async def wait_video_codec(live: CodecSource, source: SourceStream, timeout: float) -> StreamType | None:
    """The stream's video codec, waiting up to `timeout` s for its first PSM or frame (a just-opened stream)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (codec := live.video_codec(source.key)) is None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        source.wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(remaining, 0.25)):  # re-check: another waiter may have cleared it
                await source.wakeup.wait()
    return codec
