"""The police side of the alarm integration, simulated: an MQTT subscriber and a webhook endpoint.

It checks what a real receiver would rely on — the schema-1 payload, the
webhook signature — and measures what the acceptance criteria talk about:
duplicates (QoS 1 and webhook retries may deliver twice; receivers dedupe on
``(alarm_id, event)``), arrival order per channel, and latency from the
gateway's ``received_at`` to arrival here. ``kgw police-receiver`` runs
:func:`run_receiver`; tests and benchmarks use :class:`PoliceReceiver` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import aiomqtt
from aiohttp import web

from gateway.alarms.signing import ALARM_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from gateway.alarms.sinks.mqtt import MqttTarget, parse_mqtt_url
from gateway.alarms.sinks.mqtt_client import MqttClient
from gateway.errors import ConfigError

__all__ = [
    "CHANNELS",
    "ChannelStats",
    "InvalidPayload",
    "MessageHook",
    "PoliceReceiver",
    "format_report",
    "run_receiver",
    "validate_payload",
]

log = logging.getLogger("kgw.simulate.police")

CHANNELS: Final = ("mqtt", "webhook")
EVENTS: Final = ("alarm", "escalated")
DEFAULT_TOPIC: Final = "kgw/alarms/#"
RFC3339_MS: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(?:Z|[+-]\d{2}:\d{2})")
_LATENCY_WINDOW: Final = 100_000  # latencies kept for percentiles (the newest)
_BACKOFF_MIN: Final = 0.1
_BACKOFF_MAX: Final = 5.0

MessageHook = Callable[[str, dict[str, Any], float], None]  # (channel, payload, arrival wall time)


class InvalidPayload(ValueError):
    """A message that is not a schema-1 alarm payload; ``key`` is the short reason counted."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key


def _parse_rfc3339(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time with milliseconds (validated by the caller)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def validate_payload(body: bytes) -> tuple[dict[str, Any], float]:
    """The payload and its ``received_at`` as epoch seconds; raises :class:`InvalidPayload`."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPayload("not_json", str(exc)) from None
    if not isinstance(payload, dict):
        raise InvalidPayload("not_object", type(payload).__name__)
    schema = payload.get("schema")
    if type(schema) is not int or schema != 1:  # True == 1 in Python: insist on a real int
        raise InvalidPayload("schema", repr(schema))
    if payload.get("event") not in EVENTS:
        raise InvalidPayload("event", repr(payload.get("event")))
    alarm_id = payload.get("alarm_id")
    if not isinstance(alarm_id, str) or not alarm_id:
        raise InvalidPayload("alarm_id", repr(alarm_id))
    received_at = payload.get("received_at")
    if not isinstance(received_at, str) or not RFC3339_MS.fullmatch(received_at):
        raise InvalidPayload("received_at", repr(received_at))
    try:
        received = _parse_rfc3339(received_at)
    except ValueError as exc:  # e.g. month 13
        raise InvalidPayload("received_at", str(exc)) from None
    for key in ("kindergarten", "device"):
        if not isinstance(payload.get(key), dict):
            raise InvalidPayload(key, repr(payload.get(key)))
    return payload, received


def _percentile(ordered: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of a sorted list."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class ChannelStats:
    """What one channel saw. ``received`` = unique + duplicates + invalid + bad_signatures."""

    received: int = 0
    duplicates: int = 0
    invalid: int = 0
    bad_signatures: int = 0
    invalid_reasons: Counter[str] = field(default_factory=Counter)
    seen: set[tuple[str, str]] = field(default_factory=set)
    order: list[tuple[str, str]] = field(default_factory=list)  # first arrivals: (alarm_id, event)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))

    @property
    def unique(self) -> int:
        """Distinct (alarm_id, event) pairs."""
        return len(self.seen)

    def report(self) -> dict[str, Any]:
        """Counters and latency percentiles (ms, rounded to µs)."""
        ordered = sorted(self.latencies_ms)

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "received": self.received,
            "unique": self.unique,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "invalid_reasons": dict(self.invalid_reasons),
            "bad_signatures": self.bad_signatures,
            "latency_ms": {
                "p50": rounded(_percentile(ordered, 0.50)),
                "p99": rounded(_percentile(ordered, 0.99)),
                "max": rounded(ordered[-1] if ordered else None),
                "count": len(ordered),
            },
        }


class PoliceReceiver:
    """Receives alarms over MQTT and/or a webhook and keeps per-channel statistics.

    ``start()`` returns once the subscription is active and the webhook is
    listening (so a test can publish right after); the MQTT side then keeps
    reconnecting by itself if the broker goes away.
    """

    def __init__(
        self,
        mqtt_url: str | MqttTarget | None = None,
        *,
        topic: str | tuple[str, ...] = DEFAULT_TOPIC,
        client_id: str | None = None,
        persistent: bool = False,
        webhook: tuple[str, int] | None = None,
        secret: str | bytes | None = None,
        max_age: float = 300.0,
        on_message: MessageHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mqtt_target = parse_mqtt_url(mqtt_url) if isinstance(mqtt_url, str) else mqtt_url
        self.topics = (topic,) if isinstance(topic, str) else tuple(topic)
        self.topic = ", ".join(self.topics)
        # A real integration keeps a persistent session (fixed client id, clean_session off):
        # the broker then queues QoS 1 alarms while the receiver is away.
        self.persistent = persistent
        self.client_id = client_id or f"kgw-police-{uuid.uuid4().hex[:12]}"
        self.webhook_address = webhook
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.max_age = max_age
        self.on_message = on_message
        self.clock = clock
        self.stats: dict[str, ChannelStats] = {channel: ChannelStats() for channel in CHANNELS}
        self.mqtt_ready = asyncio.Event()  # set while subscribed
        self.mqtt_connects = 0
        self.webhook_port: int | None = None
        self._mqtt_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._mqtt_down_logged = False

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self, ready_timeout: float = 10.0) -> None:
        """Start the webhook server and the MQTT loop; wait for the first subscription."""
        if self.webhook_address is not None:
            if self.secret is None:
                log.warning("webhook signatures are not checked: no secret given")
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._webhook)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            host, port = self.webhook_address
            await web.TCPSite(self._runner, host, port).start()
            self.webhook_port = int(self._runner.addresses[0][1])
            log.info("webhook receiver listening on http://%s:%d/", host, self.webhook_port)
        if self.mqtt_target is not None:
            self._mqtt_task = asyncio.get_running_loop().create_task(self._mqtt_loop(), name="kgw-police-mqtt")
            try:
                await asyncio.wait_for(self.mqtt_ready.wait(), ready_timeout)
            except TimeoutError:
                log.warning("MQTT not subscribed after %g s; still trying", ready_timeout)

    async def stop(self) -> None:
        """Stop both sides."""
        if self._mqtt_task is not None:
            self._mqtt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mqtt_task
            self._mqtt_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def webhook_url(self) -> str:
        """Where the gateway should POST (after ``start``)."""
        if self.webhook_address is None or self.webhook_port is None:
            raise RuntimeError("the webhook endpoint is not running")
        return f"http://{self.webhook_address[0]}:{self.webhook_port}/alarms"

    # --- statistics ------------------------------------------------------------------------

    def report(self) -> dict[str, dict[str, Any]]:
        """Per channel: received, unique, duplicates, invalid, bad_signatures, latency_ms."""
        return {channel: stats.report() for channel, stats in self.stats.items()}

    def alarm_ids(self, channel: str, event: str = "alarm") -> list[str]:
        """Alarm ids of ``event`` in first-arrival order on ``channel``."""
        return [alarm_id for alarm_id, ev in self.stats[channel].order if ev == event]

    def handle(self, channel: str, body: bytes, arrival: float, *, header_alarm_id: str | None = None) -> str:
        """Account one message; returns ``ok``, ``duplicate`` or ``invalid:<reason>``.

        ``header_alarm_id`` is the webhook's alarm-id header, which must match the body.
        """
        stats = self.stats[channel]
        stats.received += 1
        try:
            payload, received_at = validate_payload(body)
            if header_alarm_id is not None and header_alarm_id != payload["alarm_id"]:
                raise InvalidPayload("alarm_id_header", f"{header_alarm_id!r} != {payload['alarm_id']!r}")
        except InvalidPayload as exc:
            stats.invalid += 1
            stats.invalid_reasons[exc.key] += 1
            log.debug("%s: invalid payload: %s", channel, exc)
            return f"invalid:{exc.key}"
        key = (payload["alarm_id"], payload["event"])
        outcome = "ok"
        if key in stats.seen:
            stats.duplicates += 1
            outcome = "duplicate"
        else:
            stats.seen.add(key)
            stats.order.append(key)
            stats.latencies_ms.append((arrival - received_at) * 1000.0)
        if self.on_message is not None:
            self.on_message(channel, payload, arrival)
        return outcome

    # --- MQTT ----------------------------------------------------------------------------------

    async def _mqtt_loop(self) -> None:
        """Subscribe and consume; reconnect with backoff whenever the connection fails."""
        target = self.mqtt_target
        assert target is not None
        backoff = _BACKOFF_MIN
        while True:
            try:
                async with MqttClient(
                    target.host,
                    target.port,
                    username=target.username,
                    password=target.password,
                    identifier=self.client_id,
                    clean_session=not self.persistent,
                    timeout=5.0,
                    keepalive=30,
                ) as client:
                    for topic in self.topics:
                        await client.subscribe(topic, qos=1)
                    self.mqtt_connects += 1
                    self.mqtt_ready.set()
                    backoff = _BACKOFF_MIN
                    if self._mqtt_down_logged:
                        log.info("MQTT subscription back on %s (%s)", target.redacted, self.topic)
                        self._mqtt_down_logged = False
                    else:
                        log.info("subscribed to %s on %s", self.topic, target.redacted)
                    async for message in client.messages:
                        payload = message.payload
                        body = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
                        self.handle("mqtt", body, self.clock())
            except aiomqtt.MqttError as exc:
                self.mqtt_ready.clear()
                if not self._mqtt_down_logged:
                    log.warning("MQTT connection to %s failed: %s; reconnecting", target.redacted, exc)
                    self._mqtt_down_logged = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    # --- webhook ----------------------------------------------------------------------------------

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrival = self.clock()
        stats = self.stats["webhook"]
        if self.secret is not None and not verify(
            self.secret,
            request.headers.get(SIGNATURE_HEADER),
            request.headers.get(TIMESTAMP_HEADER),
            body,
            now=arrival,
            max_age=self.max_age,
        ):
            stats.received += 1
            stats.bad_signatures += 1
            return web.Response(status=401, text="bad or stale signature\n")
        outcome = self.handle("webhook", body, arrival, header_alarm_id=request.headers.get(ALARM_ID_HEADER))
        if outcome.startswith("invalid:"):
            return web.Response(status=400, text=f"{outcome}\n")
        return web.Response(status=200, text=f"{outcome}\n")


def format_report(report: dict[str, dict[str, Any]]) -> str:
    """One log line for every channel."""
    parts = []
    for channel, data in report.items():
        latency = data["latency_ms"]
        p50 = "-" if latency["p50"] is None else f"{latency['p50']:.1f}"
        p99 = "-" if latency["p99"] is None else f"{latency['p99']:.1f}"
        top = "-" if latency["max"] is None else f"{latency['max']:.1f}"
        parts.append(
            f"{channel}: {data['received']} received, {data['unique']} unique, {data['duplicates']} dup, "
            f"{data['invalid']} invalid, {data['bad_signatures']} bad sig, "
            f"latency ms p50 {p50} p99 {p99} max {top}"
        )
    return " | ".join(parts)


async def run_receiver(
    mqtt_url: str | None,
    webhook: tuple[str, int] | None,
    secret: str | None,
    report_every: float,
) -> None:
    """Run until cancelled, logging a one-line report every ``report_every`` seconds."""
    if mqtt_url is None and webhook is None:
        raise ConfigError("police receiver needs an MQTT URL, a webhook address, or both")
    receiver = PoliceReceiver(
        mqtt_url,
        topic=(DEFAULT_TOPIC, "kgw/escalations/#"),
        client_id="kgw-police-receiver",
        persistent=True,
        webhook=webhook,
        secret=secret,
    )
    await receiver.start()
    try:
        while True:
            await asyncio.sleep(report_every)
            log.info("%s", format_report(receiver.report()))
    finally:
        await receiver.stop()
        log.info("final: %s", format_report(receiver.report()))
