"""Write-behind buffer for presence: keepalives touch memory, the store sees batches.

At 25k devices keeping alive every 60 s, one store write per keepalive would be
~400 commits a second. Instead the event-loop thread records changes here, and
every few seconds the app drains one :class:`PresenceBatch` and hands it to the
store worker, which writes it with ONE ``update_presence`` and ONE
``append_status_events`` call. Pure: no I/O, no clock, no locks (loop thread only).

Typical flush::

    batch = buffer.drain()                      # on the loop thread
    if not batch.is_empty:
        try:
            await loop.run_in_executor(store_executor, write_presence_batch, store, batch)
        except StoreError:
            buffer.restore(batch)               # newer marks still win; retry next tick
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gateway.errors import ConfigError
from gateway.registry.model import StatusEvent

__all__ = ["DEFAULT_MAX_EVENTS", "PresenceBatch", "PresenceBuffer"]

#: Events kept while the store is unreachable; beyond it the oldest are dropped
#: (presence itself is bounded by the number of devices and is never dropped).
DEFAULT_MAX_EVENTS = 100_000


@dataclass(frozen=True, slots=True)
class PresenceBatch:
    """One flush worth of changes, shaped like ``Store.update_presence`` arguments."""

    devices: tuple[tuple[str, bool, float | None], ...] = ()
    channels: tuple[tuple[str, bool], ...] = ()
    events: tuple[StatusEvent, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to write."""
        return not (self.devices or self.channels or self.events)


class PresenceBuffer:
    """Latest online/last_seen per id plus an ordered event log, until drained."""

    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        if max_events < 1:
            raise ConfigError("max_events must be positive")
        self._devices: dict[str, tuple[bool, float | None]] = {}
        self._channels: dict[str, bool] = {}
        self._events: deque[StatusEvent] = deque(maxlen=max_events)
        self.dropped_events = 0
        """Events discarded because the log was full (export it as a metric)."""

    @property
    def pending(self) -> int:
        """Distinct devices and channels with unwritten state, plus queued events."""
        return len(self._devices) + len(self._channels) + len(self._events)

    def mark_device(self, device_id: str, online: bool, last_seen: float | None = None) -> None:
        """Record a device's presence; a ``None`` last_seen keeps the one already buffered."""
        if last_seen is None:
            previous = self._devices.get(device_id)
            last_seen = None if previous is None else previous[1]
        self._devices[device_id] = (online, last_seen)

    def mark_channel(self, channel_id: str, online: bool) -> None:
        """Record a channel's presence; the latest mark wins."""
        self._channels[channel_id] = online

    def add_event(self, event: StatusEvent) -> None:
        """Queue a status transition for the history, in order."""
        self._append_event(event)

    def _append_event(self, event: StatusEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped_events += 1
        self._events.append(event)

    def drain(self) -> PresenceBatch:
        """Take everything buffered and start empty again."""
        batch = PresenceBatch(
            devices=tuple((i, on, seen) for i, (on, seen) in self._devices.items()),
            channels=tuple(self._channels.items()),
            events=tuple(self._events),
        )
        self._devices = {}
        self._channels = {}
        self._events.clear()
        return batch

    def restore(self, batch: PresenceBatch) -> None:
        """Put back a batch whose write failed, without overriding newer marks.

        Events from the batch are older than any queued since, so they go first.
        """
        for device_id, online, last_seen in batch.devices:
            current = self._devices.get(device_id)
            if current is None:
                self._devices[device_id] = (online, last_seen)
            elif current[1] is None and last_seen is not None:
                self._devices[device_id] = (current[0], last_seen)
        for channel_id, online in batch.channels:
            self._channels.setdefault(channel_id, online)
        newer = list(self._events)
        self._events.clear()
        for event in (*batch.events, *newer):
            self._append_event(event)
