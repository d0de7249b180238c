"""Sans-I/O fan-out of one channel's access units to any number of consumers (issue 3).

The upstream session publishes :class:`~gateway.media.ps.AccessUnit` values; each consumer
(browser viewer, upper platform) has a bounded queue its I/O task drains with
:meth:`StreamFanout.pull`. ``publish`` never waits: a queue over its bound is cleared and
that consumer resumes at the next video key frame (:attr:`ConsumerState.SKIPPING`).

GOP cache: the units since the last video key frame (audio included, in arrival order),
so a late consumer starts on a key frame at once (aiortc ignores key-frame requests in
pass-through, docs/dependencies.md). A GOP over ``gop_cache_max_bytes`` drops the cache and stops
caching until the next key frame: keeping the key frame plus the newest deltas would hand
out deltas whose references are missing. A late joiner's queue may exceed the normal bound
by the GOP it was handed, until it first drains below the bound.

No consumer gets any unit (audio included) before its first video key frame, so an
audio-only stream never starts one; GB/T 28181 live streams always carry video.

:class:`FanoutRegistry` keeps at most one fanout per channel and tells the caller when
the first consumer of a channel needs an upstream INVITE.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from functools import partial

from gateway.errors import ConfigError, GatewayError
from gateway.media.ps import AccessUnit

__all__ = [
    "ConsumerAlreadyAttached",
    "ConsumerState",
    "ConsumerStats",
    "FanoutRegistry",
    "FanoutStats",
    "RelayError",
    "StreamFanout",
    "UnknownConsumer",
]

MIB = 1024 * 1024
DEFAULT_MAX_QUEUE_UNITS = 120
DEFAULT_MAX_QUEUE_BYTES = 8 * MIB
DEFAULT_GOP_CACHE_MAX_BYTES = 16 * MIB
DEFAULT_RATE_WINDOW = 2.0  # seconds of `now` over which fps and bitrate are estimated
_RATE_WINDOW_MAX_ENTRIES = 4096  # caps the estimator's memory when `now` barely moves


class RelayError(GatewayError):
    """Local misuse of the relay core (unknown or duplicate consumer, bad arguments)."""


class UnknownConsumer(RelayError, LookupError):
    """The consumer id is not attached to this fanout."""


class ConsumerAlreadyAttached(RelayError):
    """The consumer id is already attached to this fanout."""


class ConsumerState(Enum):
    """Where a consumer stands relative to the key frames of the stream."""

    WAITING_KEYFRAME = "waiting_keyframe"  # attached with no cached GOP: nothing until a key frame
    LIVE = "live"  # receiving every unit in order
    SKIPPING = "skipping"  # fell behind: queue cleared, resumes at the next key frame


@dataclass(frozen=True, slots=True)
class ConsumerStats:
    """Snapshot of one consumer's counters (:meth:`StreamFanout.consumer_stats`).

    ``dropped_*`` count units cleared on overflow plus units passed over while SKIPPING
    (not those before the first key frame: the consumer had not joined yet).
    """

    consumer_id: str
    state: ConsumerState
    attached_at: float
    queued_units: int
    queued_bytes: int
    delivered_units: int
    delivered_bytes: int
    skips: int
    dropped_units: int
    dropped_bytes: int


@dataclass(frozen=True, slots=True)
class FanoutStats:
    """Snapshot of one stream's counters (:meth:`StreamFanout.stats`)."""

    channel_id: str
    units: int
    bytes: int
    keyframes: int
    gop_cache_units: int
    gop_cache_bytes: int
    gop_cache_overflows: int
    consumers: int
    fps: float  # video units per second over the last `rate_window` seconds
    bitrate: float  # bits per second of audio and video payload, same window


@dataclass(slots=True)
class _Consumer:
    """Mutable per-consumer state; only :class:`StreamFanout` touches it."""

    attached_at: float
    state: ConsumerState
    queue: deque[AccessUnit]
    queued_bytes: int = 0
    burst_units: int = 0  # the cached GOP handed over at attach may exceed the normal bound
    burst_bytes: int = 0
    delivered_units: int = 0
    delivered_bytes: int = 0
    skips: int = 0
    dropped_units: int = 0
    dropped_bytes: int = 0


class _RateWindow:
    """Sliding-window fps and bitrate estimate driven by the caller's `now` values."""

    __slots__ = ("_entries", "_window")

    def __init__(self, window: float) -> None:
        self._window = window
        self._entries: deque[tuple[float, int, bool]] = deque(maxlen=_RATE_WINDOW_MAX_ENTRIES)

    def add(self, now: float, size: int, is_video: bool) -> None:
        self._entries.append((now, size, is_video))
        self._evict(now)

    def rates(self, now: float) -> tuple[float, float]:
        """(fps, bits per second); the oldest entry only opens the interval."""
        self._evict(now)
        if len(self._entries) < 2 or now <= self._entries[0][0]:
            return 0.0, 0.0
        span, rest = now - self._entries[0][0], list(self._entries)[1:]
        return sum(video for _, _, video in rest) / span, 8 * sum(size for _, size, _ in rest) / span

    def _evict(self, now: float) -> None:
        while self._entries and self._entries[0][0] < now - self._window:
            self._entries.popleft()


class StreamFanout:
    """Fan one channel's access units out to bounded per-consumer queues (see module doc)."""

    def __init__(
        self,
        channel_id: str,
        *,
        max_queue_units: int = DEFAULT_MAX_QUEUE_UNITS,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        gop_cache_max_bytes: int = DEFAULT_GOP_CACHE_MAX_BYTES,
        rate_window: float = DEFAULT_RATE_WINDOW,
    ) -> None:
        if min(max_queue_units, max_queue_bytes, gop_cache_max_bytes) <= 0 or rate_window <= 0:
            raise ConfigError("relay queue, GOP cache and rate window limits must be positive")
        self.channel_id = channel_id
        self.max_queue_units = max_queue_units
        self.max_queue_bytes = max_queue_bytes
        self.gop_cache_max_bytes = gop_cache_max_bytes
        self.idle_since: float | None = None
        """When the last consumer detached; None while any is attached (or none ever left)."""
        self._consumers: dict[str, _Consumer] = {}
        self._gop: list[AccessUnit] = []  # empty: no key frame yet, or caching stopped
        self._gop_bytes = 0
        self._rates = _RateWindow(rate_window)
        self._last_now = 0.0
        self._units = self._bytes = self._keyframes = self._gop_overflows = 0

    def publish(self, unit: AccessUnit, now: float) -> None:
        """Take one unit from the upstream session; never blocks on any consumer."""
        is_key = unit.is_video and unit.keyframe
        size = len(unit.data)
        self._units += 1
        self._bytes += size
        self._keyframes += is_key
        self._last_now = now
        self._rates.add(now, size, unit.is_video)
        self._cache(unit, size, is_key)
        for consumer in self._consumers.values():
            self._offer(consumer, unit, size, is_key)

    def _cache(self, unit: AccessUnit, size: int, is_key: bool) -> None:
        if is_key:
            self._gop, self._gop_bytes = [unit], size
        elif self._gop:
            self._gop.append(unit)
            self._gop_bytes += size
        if self._gop_bytes > self.gop_cache_max_bytes:
            self._gop_overflows += 1
            self._gop, self._gop_bytes = [], 0

    def _offer(self, consumer: _Consumer, unit: AccessUnit, size: int, is_key: bool) -> None:
        if consumer.state is not ConsumerState.LIVE:
            if not is_key:
                if consumer.state is ConsumerState.SKIPPING:
                    consumer.dropped_units += 1
                    consumer.dropped_bytes += size
                return
            consumer.state = ConsumerState.LIVE
        consumer.queue.append(unit)
        consumer.queued_bytes += size
        if (
            len(consumer.queue) > self.max_queue_units + consumer.burst_units
            or consumer.queued_bytes > self.max_queue_bytes + consumer.burst_bytes
        ):
            self._skip(consumer, unit if is_key else None)

    def _skip(self, consumer: _Consumer, restart: AccessUnit | None) -> None:
        """Clear an overflowing queue; restart at `restart` when it is a key frame itself."""
        kept = [restart] if restart is not None else []
        kept_bytes = sum(len(u.data) for u in kept)
        consumer.skips += 1
        consumer.dropped_units += len(consumer.queue) - len(kept)
        consumer.dropped_bytes += consumer.queued_bytes - kept_bytes
        consumer.queue = deque(kept)
        consumer.queued_bytes, consumer.burst_units, consumer.burst_bytes = kept_bytes, 0, 0
        consumer.state = ConsumerState.LIVE if kept else ConsumerState.SKIPPING

    def attach(self, consumer_id: str, now: float) -> None:
        """Add a consumer; its queue starts with the cached GOP (a key frame) if there is one."""
        if consumer_id in self._consumers:
            raise ConsumerAlreadyAttached(consumer_id)
        consumer = _Consumer(attached_at=now, state=ConsumerState.WAITING_KEYFRAME, queue=deque(self._gop))
        if self._gop:
            consumer.state = ConsumerState.LIVE
            consumer.queued_bytes = consumer.burst_bytes = self._gop_bytes
            consumer.burst_units = len(self._gop)
        self._consumers[consumer_id] = consumer
        self.idle_since = None

    def detach(self, consumer_id: str, now: float) -> None:
        """Remove a consumer; the last one leaving sets :attr:`idle_since` to `now`."""
        if self._consumers.pop(consumer_id, None) is None:
            raise UnknownConsumer(consumer_id)
        if not self._consumers:
            self.idle_since = now

    def pull(self, consumer_id: str, max_units: int | None = None) -> list[AccessUnit]:
        """Take up to `max_units` (all when None) queued units, oldest first."""
        consumer = self._consumer(consumer_id)
        if max_units is not None and max_units < 0:
            raise RelayError(f"max_units must not be negative, not {max_units}")
        count = len(consumer.queue) if max_units is None else min(max_units, len(consumer.queue))
        out = [consumer.queue.popleft() for _ in range(count)]
        size = sum(len(u.data) for u in out)
        consumer.queued_bytes -= size
        consumer.delivered_units += count
        consumer.delivered_bytes += size
        if len(consumer.queue) <= self.max_queue_units and consumer.queued_bytes <= self.max_queue_bytes:
            consumer.burst_units = consumer.burst_bytes = 0  # caught up: the normal bound applies
        return out

    def state(self, consumer_id: str) -> ConsumerState:
        """The consumer's :class:`ConsumerState`."""
        return self._consumer(consumer_id).state

    def consumer_stats(self, consumer_id: str) -> ConsumerStats:
        """A snapshot of one consumer's counters."""
        c = self._consumer(consumer_id)
        return ConsumerStats(
            consumer_id,
            c.state,
            c.attached_at,
            len(c.queue),
            c.queued_bytes,
            c.delivered_units,
            c.delivered_bytes,
            c.skips,
            c.dropped_units,
            c.dropped_bytes,
        )

    @property
    def consumers(self) -> tuple[str, ...]:
        """Attached consumer ids, in attach order."""
        return tuple(self._consumers)

    @property
    def consumer_count(self) -> int:
        """Number of attached consumers."""
        return len(self._consumers)

    @property
    def has_keyframe(self) -> bool:
        """True when the GOP cache holds a key frame a new consumer could start from."""
        return bool(self._gop)

    def stats(self, now: float | None = None) -> FanoutStats:
        """A snapshot of the stream counters; rates as of `now` (default: the last publish)."""
        fps, bitrate = self._rates.rates(self._last_now if now is None else now)
        return FanoutStats(
            self.channel_id,
            self._units,
            self._bytes,
            self._keyframes,
            len(self._gop),
            self._gop_bytes,
            self._gop_overflows,
            len(self._consumers),
            fps,
            bitrate,
        )

    def _consumer(self, consumer_id: str) -> _Consumer:
        try:
            return self._consumers[consumer_id]
        except KeyError:
            raise UnknownConsumer(consumer_id) from None


class FanoutRegistry:
    """At most one :class:`StreamFanout` per channel (created with these limits); one upstream each."""

    def __init__(
        self,
        *,
        max_queue_units: int = DEFAULT_MAX_QUEUE_UNITS,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        gop_cache_max_bytes: int = DEFAULT_GOP_CACHE_MAX_BYTES,
        rate_window: float = DEFAULT_RATE_WINDOW,
    ) -> None:
        self._new = partial(
            StreamFanout,
            max_queue_units=max_queue_units,
            max_queue_bytes=max_queue_bytes,
            gop_cache_max_bytes=gop_cache_max_bytes,
            rate_window=rate_window,
        )
        self._fanouts: dict[str, StreamFanout] = {}

    def get_or_create(self, channel_id: str) -> StreamFanout:
        """The channel's fanout, created if missing."""
        fanout = self._fanouts.get(channel_id)
        if fanout is None:
            fanout = self._fanouts[channel_id] = self._new(channel_id)
        return fanout

    def get(self, channel_id: str) -> StreamFanout | None:
        """The channel's fanout, or None."""
        return self._fanouts.get(channel_id)

    def remove(self, channel_id: str) -> StreamFanout | None:
        """Forget the channel's fanout (upstream closed); returns it so its consumers can be told."""
        return self._fanouts.pop(channel_id, None)

    def channels(self) -> list[str]:
        """Channel ids that have a fanout."""
        return list(self._fanouts)

    def attach(self, channel_id: str, consumer_id: str, now: float) -> bool:
        """Attach a consumer; True when the caller must open the upstream session (new fanout).

        A fanout that lingers with no consumers still has its upstream, so attaching to it
        returns False; after :meth:`remove` the next attach returns True again.
        """
        created = channel_id not in self._fanouts
        self.get_or_create(channel_id).attach(consumer_id, now)
        return created

    def detach(self, channel_id: str, consumer_id: str, now: float) -> None:
        """Detach a consumer; the fanout stays (see ``idle_since``) until :meth:`remove`."""
        fanout = self._fanouts.get(channel_id)
        if fanout is None:
            raise UnknownConsumer(f"{channel_id}/{consumer_id}")
        fanout.detach(consumer_id, now)
