"""GB/T 28181 upper-platform sink: an Alarm Notify MESSAGE to every platform whose policy covers the alarm.

This is the interface the cascade plugs into: ``targets`` says which upper
platforms want an alarm and ``send`` does the SIP work (one MANSCDP Alarm
MESSAGE, the final status back). One delivery row covers all platforms, so the
sink remembers which ones already answered 2xx for an (alarm, event) and a
retry only goes to the ones that failed — an upper platform that works is not
flooded with duplicates because another one is down.

Each upper's own answer is reported to ``on_target`` (the service writes an
``upper_acknowledged`` audit line per 2xx, so the per-upper proof of a drill is
durable) and its last error is kept for the delivery proof (:meth:`errors_of`).
``level_of`` names the level an upper serves (district, municipal, police).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from gateway.alarms.model import Alarm
from gateway.alarms.sinks.base import OutboundMessage
from gateway.alarms.sinks.health import ReportsHealth, SinkHealth
from gateway.errors import ConfigError, DeliveryError

__all__ = ["PERMANENT_SIP_STATUSES", "GbAlarmSink", "SendAlarm", "TargetListener", "TargetPolicy"]

log = logging.getLogger("kgw.alarms.gb")

TargetPolicy = Callable[[Alarm], Sequence[str]]
SendAlarm = Callable[[str, OutboundMessage], Awaitable[int]]
# (message, upper, error): error "" when the upper answered 2xx
TargetListener = Callable[[OutboundMessage, str, str], None]

# 403 (the platform forbids us) and 404 (it does not know the device): sending again cannot help.
PERMANENT_SIP_STATUSES: Final = frozenset({403, 404})
_MAX_REMEMBERED: Final = 10_000  # (alarm, event) pairs with partial acknowledgements kept


class GbAlarmSink(ReportsHealth):
    """Fans one alarm event out to upper platforms; acknowledged when every one answered 2xx.

    Error reasons: send_failed (an exception), sip_error (a transient status), rejected.
    """

    name = "gb"

    def __init__(
        self,
        targets: TargetPolicy,
        send: SendAlarm,
        *,
        max_inflight: int = 64,
        level_of: Callable[[str], str] = lambda name: name,
    ) -> None:
        if max_inflight < 1:
            raise ConfigError("gb sink max_inflight must be at least 1")
        self.max_inflight = max_inflight
        self._targets = targets
        self._send = send
        self.level_of = level_of
        self.on_target: TargetListener | None = None
        self._acked: OrderedDict[tuple[str, str], set[str]] = OrderedDict()
        self._errors: OrderedDict[str, dict[str, str]] = OrderedDict()  # alarm id -> upper -> last error
        self._health = SinkHealth(self.name, log)

    def targets_of(self, alarm: Alarm) -> list[str]:
        """The upper platforms this alarm goes to now (empty when the policy fails)."""
        try:
            return list(dict.fromkeys(self._targets(alarm)))
        except Exception:  # noqa: BLE001 - a policy bug shows as "no target" in a proof, deliver() reports it
            return []

    def errors_of(self, alarm_id: str) -> dict[str, str]:
        """Each upper's last error for the alarm's ``alarm`` event (only those that failed and not since answered)."""
        return dict(self._errors.get(alarm_id, {}))

    def acknowledged(self, alarm_id: str, event: str) -> frozenset[str]:
        """Platforms that already answered 2xx for a partly delivered event (for tests and the API)."""
        return frozenset(self._acked.get((alarm_id, event), ()))

    async def start(self) -> None:
        """Nothing to prepare: ``send`` owns the SIP side."""

    async def close(self) -> None:
        """Forget partial acknowledgements (a restart re-sends to every platform)."""
        self._acked.clear()

    async def deliver(self, message: OutboundMessage) -> None:
        """Send to every covering platform that has not acknowledged yet; raise unless all did."""
        key = (message.alarm_id, message.event.value)
        try:
            wanted = list(dict.fromkeys(self._targets(message.alarm)))
        except Exception as exc:  # a policy bug must not kill the outbox; retry later
            self._health.failed("send_failed", f"target policy failed: {exc!r}")
            raise DeliveryError(f"target policy failed: {exc!r}") from exc
        acked = self._acked.get(key, set())
        pending = [target for target in wanted if target not in acked]
        if not pending:
            self._acked.pop(key, None)
            if wanted:
                self._health.ok()
            return
        results = await asyncio.gather(*(self._send(target, message) for target in pending), return_exceptions=True)
        failures: list[tuple[str, int | BaseException]] = []
        for target, result in zip(pending, results):
            if isinstance(result, int) and 200 <= result <= 299:
                acked.add(target)
                self._report(message, target, "")
            else:
                failures.append((target, result))
                self._report(message, target, _describe(result))
        if not failures:
            self._acked.pop(key, None)
            self._health.ok()
            return
        self._remember(key, acked)
        detail = ", ".join(f"{target} {_describe(result)}" for target, result in failures)
        reason = f"{len(failures)} of {len(wanted)} upper platforms failed: {detail}"
        if all(isinstance(result, int) and result in PERMANENT_SIP_STATUSES for _, result in failures):
            self._health.rejected("rejected", reason)
            raise DeliveryError(reason, permanent=True)
        raised = any(isinstance(result, BaseException) for _, result in failures)
        self._health.failed("send_failed" if raised else "sip_error", reason)
        raise DeliveryError(reason)

    def _report(self, message: OutboundMessage, target: str, error: str) -> None:
        if message.event.value == "alarm":
            errors = self._errors.setdefault(message.alarm_id, {})
            if error:
                errors[target] = error
            else:
                errors.pop(target, None)
            self._errors.move_to_end(message.alarm_id)
            while len(self._errors) > _MAX_REMEMBERED:
                self._errors.popitem(last=False)
        if self.on_target is not None:
            try:
                self.on_target(message, target, error)
            except Exception:  # the listener's bug must not fail the delivery
                log.exception("gb sink target listener failed")

    def _remember(self, key: tuple[str, str], acked: set[str]) -> None:
        """Keep the partial acknowledgements for the retry, bounded (oldest forgotten first)."""
        self._acked[key] = acked
        self._acked.move_to_end(key)
        while len(self._acked) > _MAX_REMEMBERED:
            self._acked.popitem(last=False)


def _describe(result: int | BaseException) -> str:
    if isinstance(result, BaseException):
        return f"error {type(result).__name__}: {result}" if str(result) else f"error {type(result).__name__}"
    return f"sip {result}"
