"""Prometheus metrics of a gateway (names prefixed ``kgw_``).

Each service gets its own :class:`CollectorRegistry` so several gateways can
run in one process (tests, ``kgw demo``). Nothing is labelled by device or
channel ID: a scrape of 20k+ series would block the loop (LIBRARIES.md);
aggregates by district, method and status class are enough.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.app import GatewayService

# ``*_created`` timestamps double the series count and no dashboard of ours reads them.
disable_created_metrics()


class GatewayMetrics:
    """Counters updated on events, and gauges computed at scrape time."""

    def __init__(self, service: GatewayService) -> None:
        self.registry = CollectorRegistry()
        self.registrations = Counter(
            "kgw_registrations", "REGISTER outcomes by result", ["result"], registry=self.registry
        )
        self.catalogs = Counter("kgw_catalogs", "Catalogs received by completeness", ["result"], registry=self.registry)
        self.query_failures = Counter(
            "kgw_query_failures", "Queries to devices that failed, by CmdType", ["cmd"], registry=self.registry
        )
        self.messages_refused = Counter(
            "kgw_messages_refused", "MESSAGEs answered with an error, by status", ["status"], registry=self.registry
        )
        self.received = Counter(
            "kgw_alarms_received",
            "Alarms received (new, not repeats) by category and kind",
            ["category", "kind"],
            registry=self.registry,
        )
        self.alarms_refused = Counter(
            "kgw_alarms_refused",
            "Alarm notifications refused, by reason (unknown_device)",
            ["reason"],
            registry=self.registry,
        )
        self.flawed = Counter(
            "kgw_alarms_with_problems",
            "Alarms kept although fields were missing, invalid or absurd",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "kgw_alarms_duplicate",
            "Alarm notifications recognised as repeats of a stored alarm",
            registry=self.registry,
        )
        self.deliveries = Counter(
            "kgw_alarm_deliveries",
            "Alarm delivery attempts by sink and outcome (delivered, retry, rejected)",
            ["sink", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kgw_alarm_delivery_latency_seconds",
            "From the alarm MESSAGE's arrival to the sink's acknowledgement",
            ["sink"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
        )
        self.escalations = Counter(
            "kgw_alarm_escalations",
            "Alarms escalated to the municipal level (not acknowledged in time)",
            registry=self.registry,
        )
        self.upper_transitions = Counter(
            "kgw_upper_platform_transitions",
            "Upper platform links going online/offline",
            ["platform", "state"],
            registry=self.registry,
        )
        self.upper_catalog_items = Counter(
            "kgw_upper_catalog_items",
            "Catalog items sent to an upper platform (answers and NOTIFYs)",
            ["platform"],
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(service))


class _LiveCollector(Collector):
    """Gauges from the service's in-memory state and the SIP endpoint's counters."""

    def __init__(self, service: GatewayService) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        service = self.service
        registered, devices_online, channels_online = service.online_counts()
        yield GaugeMetricFamily("kgw_devices_known", "Devices known to the gateway", value=registered)
        yield GaugeMetricFamily("kgw_devices_online", "Devices online now", value=devices_online)
        yield GaugeMetricFamily("kgw_channels_online", "Channels online now", value=channels_online)
        yield GaugeMetricFamily(
            "kgw_channels_known", "Channels known (every device's last catalog)", value=len(service.channels)
        )
        by_district = GaugeMetricFamily(
            "kgw_district_devices_online", "Devices online by district civil code", labels=["district"]
        )
        counts: dict[str, int] = {}
        for state in service.devices.values():
            if state.row.online:
                counts[state.row.district_code] = counts.get(state.row.district_code, 0) + 1
        for district, count in sorted(counts.items()):
            by_district.add_metric([district], count)
        yield by_district
        yield GaugeMetricFamily(
            "kgw_registry_pending_writes", "Presence changes waiting for the next flush", value=service.presence.pending
        )
        if service.live is not None:
            live = service.live
            yield GaugeMetricFamily("kgw_streams_active", "Live upstream streams open now", value=len(live.streams))
            yield GaugeMetricFamily(
                "kgw_stream_viewers",
                "Viewers of all live streams",
                value=sum(s.fanout.consumer_count for s in live.streams.values()),
            )
            totals = live.rtp_totals()
            for key, help_text in (
                ("packets", "RTP packets received"),
                ("bytes", "RTP bytes received"),
                ("lost", "RTP packets lost"),
            ):
                yield CounterMetricFamily(f"kgw_rtp_{key}", help_text, value=totals[key])
            dropped = CounterMetricFamily("kgw_rtp_dropped", "RTP packets dropped, by reason", labels=["reason"])
            for key, value in totals.items():
                if key.startswith("dropped_"):
                    dropped.add_metric([key.removeprefix("dropped_")], value)
            yield dropped
            yield CounterMetricFamily("kgw_ps_resyncs", "MPEG-PS parser resynchronisations", value=totals["ps_resyncs"])
        if service.alarms is not None:
            yield from _alarm_gauges(service)
        if service.cascade is not None:
            up = GaugeMetricFamily(
                "kgw_upper_platform_registered",
                "1 while registered with the upper platform",
                labels=["platform", "level"],
            )
            for link in service.cascade.status():
                up.add_metric([link["name"], link["level"]], 1 if link["state"] == "registered" else 0)
            yield up
        if service.access is None:
            return
        stats = service.access.endpoint.stats
        requests = CounterMetricFamily("kgw_sip_requests", "SIP requests received by method", labels=["method"])
        responses = CounterMetricFamily("kgw_sip_responses", "SIP responses sent by status class", labels=["class"])
        dropped = CounterMetricFamily("kgw_sip_dropped", "SIP input dropped or refused, by reason", labels=["reason"])
        answered = CounterMetricFamily(
            "kgw_sip_requests_answered",
            "Final answers to SIP requests by method and status class",
            labels=["method", "class"],
        )
        for key, value in sorted(stats.items()):
            if key.startswith("in_request_"):
                requests.add_metric([key.removeprefix("in_request_")], value)
            elif key.startswith("answered_"):
                method, _, status_class = key.removeprefix("answered_").rpartition("_")
                answered.add_metric([method, status_class], value)
            elif key.startswith("out_response_"):
                responses.add_metric([key.removeprefix("out_response_")], value)
            elif key.startswith(("dropped_", "stray_", "refused_")):
                dropped.add_metric([key], value)
        yield requests
        yield answered
        yield responses
        yield dropped
        yield GaugeMetricFamily(
            "kgw_sip_transactions", "Live SIP transactions", value=service.access.endpoint.transaction_count
        )


def _alarm_gauges(service: GatewayService) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """Outbox depth, dead letters, sink health and open alarms, from memory."""
    assert service.alarms is not None
    depth = GaugeMetricFamily("kgw_alarm_outbox_depth", "Alarm deliveries not yet delivered, by sink", labels=["sink"])
    dead = GaugeMetricFamily(
        "kgw_alarm_dead_letters",
        "Deliveries shown as dead-letter (still retried unless rejected), by sink",
        labels=["sink"],
    )
    up = GaugeMetricFamily("kgw_alarm_sink_up", "1 when the sink's last contact worked, 0 when not", labels=["sink"])
    errors = CounterMetricFamily("kgw_alarm_sink_errors", "Sink errors by sink and reason", labels=["sink", "reason"])
    for status in service.alarms.sink_status():
        depth.add_metric([status["sink"]], status["depth"])
        dead.add_metric([status["sink"]], status["dead"])
        up.add_metric([status["sink"]], 1 if status["up"] else 0)
        for reason, count in sorted(status["errors"].items()):
            errors.add_metric([status["sink"], reason], count)
    yield depth
    yield dead
    yield up
    yield errors
    open_alarms = GaugeMetricFamily("kgw_alarms_open", "Unresolved alarms by state", labels=["state"])
    counts: dict[str, int] = {}
    for alarm in service.alarms.lifecycle.open_alarms():
        counts[alarm.state.value] = counts.get(alarm.state.value, 0) + 1
    for state, count in sorted(counts.items()):
        open_alarms.add_metric([state], count)
    yield open_alarms
