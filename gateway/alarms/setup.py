"""The alarm service from the configuration: its store, its sinks and its settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.alarms.model import Alarm
from gateway.alarms.outbox import RetryPolicy
from gateway.alarms.payload import Enrichment
from gateway.alarms.service import AlarmService, AlarmSettings
from gateway.alarms.sinks.base import Sink
from gateway.alarms.store import open_alarm_store
from gateway.config import GatewayConfig

__all__ = ["start_alarm_service"]

log = logging.getLogger("kgw.alarms")


async def start_alarm_service(
    config: GatewayConfig,
    *,
    enrich: Callable[[Alarm], Enrichment],
    capture_snapshot: Callable[[Alarm], Awaitable[bytes | None]],
    upward: Sink | None = None,
) -> AlarmService:
    """Open the alarm outbox (its own connection and thread), build the configured sinks and start.

    ``upward`` is the GB/T 28181 sink to upper platforms, when the gateway has any.
    """
    sinks: list[Sink] = []
    if config.mqtt:
        from gateway.alarms.sinks.mqtt import MqttSink  # noqa: PLC0415 (only when configured)

        sinks.append(MqttSink(config.mqtt, config.mqtt_client_id or f"kgw-{config.id}"))
    if config.webhook_url:
        from gateway.alarms.sinks.webhook import WebhookSink  # noqa: PLC0415

        sinks.append(WebhookSink(config.webhook_url, config.webhook_secret, timeout=config.webhook_timeout))
    if upward is not None:
        sinks.append(upward)
    store = await asyncio.to_thread(open_alarm_store, config.db, config.node)
    settings = AlarmSettings(
        escalate_after=config.alarm_escalate_after,
        dedupe_window=config.alarm_dedupe_window,
        retry=RetryPolicy(cap=config.alarm_retry_cap, dead_after=config.alarm_dead_after),
        snapshot_budget=config.alarm_snapshot_budget,
    )
    service = AlarmService(store, sinks, settings, enrich=enrich, capture_snapshot=capture_snapshot)
    await service.start()
    if not sinks:
        log.info("no alarm sink configured (--mqtt, webhook_url, upper platforms): alarms reach the API and consoles")
    return service
