"""Online/offline detection from registrations and keepalives (docs/gb28181.md §4).

A device is online while its registration is valid and it was heard from
within ``interval × missed`` seconds (WVP's rule; default 60 s × 3). Any
MESSAGE from the device counts as a sign of life, as in Monibuca; devices
that never re-register rely on keepalives alone. State lives here, in
memory: a keepalive costs a dict update and, at most, a heap push — never a
database write.

Timers: one lazily-cleaned heap of (deadline, device) entries; stale entries
(the device was heard from since) are skipped when they surface.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import Enum


class OfflineReason(str, Enum):
    """Why a device went offline."""

    KEEPALIVE_TIMEOUT = "keepalive_timeout"
    REGISTRATION_EXPIRED = "registration_expired"
    UNREGISTERED = "unregistered"


@dataclass(frozen=True, slots=True)
class WentOnline:
    """A device became online at ``at`` (loop time)."""

    device_id: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class WentOffline:
    """A device became offline at ``at``."""

    device_id: str
    at: float
    reason: OfflineReason


@dataclass(frozen=True, slots=True)
class RegistrationLapsed:
    """A device's registration expired; its state is forgotten."""

    device_id: str
    at: float


LivenessEvent = WentOnline | WentOffline | RegistrationLapsed


@dataclass(slots=True)
class _State:
    online: bool
    last_seen: float
    expires_at: float
    scheduled: float | None = None  # deadline of this device's live heap entry


class Liveness:
    """Tracks every device's online state; the caller supplies time."""

    def __init__(self, *, interval: float = 60.0, missed: int = 3) -> None:
        if interval <= 0 or missed < 1:
            raise ValueError("keepalive interval must be > 0 and missed count >= 1")
        self.interval = interval
        self.missed = missed
        self._states: dict[str, _State] = {}
        self._heap: list[tuple[float, str]] = []

    @property
    def silence_limit(self) -> float:
        """Seconds of silence after which a device is offline."""
        return self.interval * self.missed

    def registered(self, device_id: str, expires: int, now: float) -> list[LivenessEvent]:
        """A (re-)registration: valid for ``expires`` seconds from ``now``."""
        state = self._states.get(device_id)
        expires_at = now + expires
        if state is None:
            state = self._states[device_id] = _State(online=False, last_seen=now, expires_at=expires_at)
        else:
            state.last_seen = now
            state.expires_at = expires_at
        events = self._set_online(device_id, state, now, "registered")
        self._schedule(device_id, state)
        return events

    def restore(self, device_id: str, *, online: bool, last_seen: float, expires_at: float) -> None:
        """Seed state after a restart (from the store), without emitting events."""
        state = _State(online=online, last_seen=last_seen, expires_at=expires_at)
        self._states[device_id] = state
        self._schedule(device_id, state)

    def heard(self, device_id: str, now: float) -> list[LivenessEvent]:
        """A keepalive (or any MESSAGE) arrived; unknown or expired devices are ignored."""
        state = self._states.get(device_id)
        if state is None or now >= state.expires_at:
            return []
        state.last_seen = now
        # The pending heap entry re-arms itself from last_seen when it surfaces,
        # so a keepalive normally pushes nothing.
        events = self._set_online(device_id, state, now, "keepalive")
        self._schedule(device_id, state)
        return events

    def unregistered(self, device_id: str, now: float) -> list[LivenessEvent]:
        """Expires: 0 — forget the device's registration."""
        state = self._states.pop(device_id, None)
        if state is None or not state.online:
            return []
        return [WentOffline(device_id, now, OfflineReason.UNREGISTERED)]

    def is_registered(self, device_id: str, now: float) -> bool:
        """True while the device's registration is valid."""
        state = self._states.get(device_id)
        return state is not None and now < state.expires_at

    def is_online(self, device_id: str) -> bool:
        """Current state."""
        state = self._states.get(device_id)
        return state is not None and state.online

    def last_seen(self, device_id: str) -> float | None:
        """When the device was last heard from."""
        state = self._states.get(device_id)
        return state.last_seen if state else None

    @property
    def online_count(self) -> int:
        """Devices online now."""
        return sum(1 for s in self._states.values() if s.online)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run."""
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, now: float) -> list[LivenessEvent]:
        """Declare offline every device whose deadline passed."""
        events: list[LivenessEvent] = []
        while self._heap and self._heap[0][0] <= now:
            at, device_id = heapq.heappop(self._heap)
            state = self._states.get(device_id)
            if state is None or state.scheduled != at:
                continue  # superseded entry
            state.scheduled = None
            if self._deadline(state) > now:
                self._schedule(device_id, state)  # heard from since: re-arm
                continue
            if state.online:
                state.online = False
                reason = (
                    OfflineReason.REGISTRATION_EXPIRED if now >= state.expires_at else OfflineReason.KEEPALIVE_TIMEOUT
                )
                events.append(WentOffline(device_id, now, reason))
            if now >= state.expires_at:
                del self._states[device_id]
                events.append(RegistrationLapsed(device_id, now))
            else:
                self._schedule(device_id, state)  # offline now; forget it at expiry
        return events

    def _deadline(self, state: _State) -> float:
        if not state.online:
            return state.expires_at
        return min(state.last_seen + self.silence_limit, state.expires_at)

    def _schedule(self, device_id: str, state: _State) -> None:
        deadline = self._deadline(state)
        if state.scheduled is not None and state.scheduled <= deadline:
            return  # the pending entry fires first and re-arms
        state.scheduled = deadline
        heapq.heappush(self._heap, (deadline, device_id))

    @staticmethod
    def _set_online(device_id: str, state: _State, now: float, reason: str) -> list[LivenessEvent]:
        if state.online:
            return []
        state.online = True
        return [WentOnline(device_id, now, reason)]
