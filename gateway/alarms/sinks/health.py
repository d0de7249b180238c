"""Health of an alarm sink: up/down and error counts for metrics, logged on changes only.

A broker that is down for an hour must produce two log lines (down, back up), not one
per delivery attempt; the counters feed ``kgw_alarm_sink_up`` and ``kgw_alarm_sink_errors``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

__all__ = ["ReportsHealth", "SinkHealth"]


@dataclass(slots=True)
class SinkHealth:
    """Up/down state and error counters of one sink; logs state changes, never each attempt."""

    name: str
    logger: logging.Logger
    up: bool | None = None
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    _last_rejection: str | None = None

    def ok(self) -> None:
        """The destination acknowledged something."""
        if self.up is False:
            self.logger.info("%s sink is back up", self.name)
        elif self.up is None:
            self.logger.info("%s sink is up", self.name)
        self.up = True
        self._last_rejection = None

    def failed(self, key: str, reason: str) -> None:
        """A transient failure: the destination is down (warn on the transition only)."""
        self._count(key, reason)
        if self.up is not False:
            self.logger.warning("%s sink is down: %s", self.name, reason)
        self.up = False

    def rejected(self, key: str, reason: str) -> None:
        """A permanent rejection: the destination answered, so it is up, but it refused the message."""
        self._count(key, reason)
        if self.up is False:
            self.logger.info("%s sink is back up", self.name)
        self.up = True
        if self._last_rejection != key:
            self.logger.warning("%s sink rejects deliveries: %s", self.name, reason)
            self._last_rejection = key

    def _count(self, key: str, reason: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1
        self.last_error = reason


class ReportsHealth:
    """Mixin for sinks: ``up`` and ``errors`` (the Sink protocol's metrics) come from ``_health``."""

    _health: SinkHealth

    @property
    def up(self) -> bool | None:
        """Whether the last contact with the destination worked (None before the first one)."""
        return self._health.up

    @property
    def errors(self) -> dict[str, int]:
        """Failures by short reason (see each sink for its reasons)."""
        return self._health.errors
