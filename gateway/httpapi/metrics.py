"""Prometheus metrics of a gateway (names prefixed ``kgw_``).

Each service gets its own :class:`CollectorRegistry` so several gateways can
run in one process (tests, ``kgw demo``). Nothing is labelled by device or
channel ID: a scrape of 20k+ series would block the loop (LIBRARIES.md);
aggregates by district, method and status class are enough.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
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
        yield GaugeMetricFamily("kgw_registry_pending_writes", "Presence changes waiting for the next flush",
                                value=service.presence.pending)
        if service.live is not None:
            live = service.live
            yield GaugeMetricFamily("kgw_streams_active", "Live upstream streams open now", value=len(live.streams))
            yield GaugeMetricFamily("kgw_stream_viewers", "Viewers of all live streams",
                                    value=sum(s.fanout.consumer_count for s in live.streams.values()))
            totals = live.rtp_totals()
            for key, help_text in (("packets", "RTP packets received"), ("bytes", "RTP bytes received"),
                                   ("lost", "RTP packets lost")):
                yield CounterMetricFamily(f"kgw_rtp_{key}", help_text, value=totals[key])
            dropped = CounterMetricFamily("kgw_rtp_dropped", "RTP packets dropped, by reason", labels=["reason"])
            for key, value in totals.items():
                if key.startswith("dropped_"):
                    dropped.add_metric([key.removeprefix("dropped_")], value)
            yield dropped
            yield CounterMetricFamily("kgw_ps_resyncs", "MPEG-PS parser resynchronisations", value=totals["ps_resyncs"])
        if service.access is None:
            return
        stats = service.access.endpoint.stats
        requests = CounterMetricFamily("kgw_sip_requests", "SIP requests received by method", labels=["method"])
        responses = CounterMetricFamily(
            "kgw_sip_responses", "SIP responses sent by status class", labels=["class"]
        )
        dropped = CounterMetricFamily("kgw_sip_dropped", "SIP input dropped or refused, by reason", labels=["reason"])
        answered = CounterMetricFamily(
            "kgw_sip_requests_answered", "Final answers to SIP requests by method and status class",
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
        yield GaugeMetricFamily("kgw_sip_transactions", "Live SIP transactions",
                                value=service.access.endpoint.transaction_count)
