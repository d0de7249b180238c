"""The alarm service's Prometheus metrics: counters updated as alarms flow, gauges read at scrape time.

No label carries a device, channel or alarm ID (a city's worth of series would
block the loop at every scrape); sinks, kinds and states are few.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter, Histogram, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.alarms.model import Alarm

__all__ = ["AlarmMetrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class AlarmMetrics(Collector):
    """Counters of the alarm flow, and gauges of the outbox, the sinks and open alarms."""

    def __init__(
        self,
        sink_status: Callable[[], list[dict[str, Any]]],
        open_alarms: Callable[[], list[Alarm]],
        held: Callable[[], int] = lambda: 0,
    ) -> None:
        self._sink_status = sink_status
        self._open_alarms = open_alarms
        self._held = held
        self.received = Counter(
            "kgw_alarms_received",
            "Alarms received (new, not repeats) by category and kind",
            ["category", "kind"],
            registry=None,
        )
        self.flawed = Counter(
            "kgw_alarms_with_problems", "Alarms kept although fields were missing, invalid or absurd", registry=None
        )
        self.duplicates = Counter(
            "kgw_alarms_duplicate", "Alarm notifications recognised as repeats of a stored alarm", registry=None
        )
        self.deliveries = Counter(
            "kgw_alarm_deliveries",
            "Alarm delivery attempts by sink and outcome (delivered, retry, rejected)",
            ["sink", "outcome"],
            registry=None,
        )
        self.latency = Histogram(
            "kgw_alarm_delivery_latency_seconds",
            "From the alarm MESSAGE's arrival to the sink's acknowledgement",
            ["sink"],
            registry=None,
            buckets=LATENCY_BUCKETS,
        )
        self.escalations = Counter(
            "kgw_alarm_escalations", "Alarms escalated to the municipal level (not acknowledged in time)", registry=None
        )
        self.unverified = Counter(
            "kgw_alarms_unverified",
            "Alarms not from the registered session's address: kept, shown, held from every sink; by reason",
            ["reason"],
            registry=None,
        )
        self.verified = Counter(
            "kgw_alarms_verified",
            "Held alarms released, by who verified them (device, operator)",
            ["by"],
            registry=None,
        )
        self.drills = Counter(
            "kgw_alarm_drills",
            "Drill alarms (验收演练) received: never counted in kgw_alarms_received or escalated",
            registry=None,
        )
        self.collapsed = Counter(
            "kgw_alarms_collapsed",
            "Alarm notifications beyond a device's rate limit counted as repeats of its open alarm",
            registry=None,
        )

    def collect(self) -> Iterator[Metric]:
        """The counters, then outbox depth, dead letters, sink health and open alarms."""
        for counter in (
            self.received,
            self.flawed,
            self.duplicates,
            self.deliveries,
            self.latency,
            self.escalations,
            self.unverified,
            self.verified,
            self.collapsed,
            self.drills,
        ):
            yield from counter.collect()
        held = GaugeMetricFamily("kgw_alarms_held", "Unverified open alarms held from every sink")
        held.add_metric([], self._held())
        yield held
        depth = GaugeMetricFamily(
            "kgw_alarm_outbox_depth", "Alarm deliveries not yet delivered, by sink", labels=["sink"]
        )
        dead = GaugeMetricFamily(
            "kgw_alarm_dead_letters",
            "Deliveries shown as dead-letter (still retried unless rejected), by sink",
            labels=["sink"],
        )
        up = GaugeMetricFamily(
            "kgw_alarm_sink_up", "1 when the sink's last contact worked, 0 when not", labels=["sink"]
        )
        errors = CounterMetricFamily(
            "kgw_alarm_sink_errors", "Sink errors by sink and reason", labels=["sink", "reason"]
        )
        for status in self._sink_status():
            depth.add_metric([status["sink"]], status["depth"])
            dead.add_metric([status["sink"]], status["dead"])
            up.add_metric([status["sink"]], 1 if status["up"] else 0)
            for reason, count in sorted(status["errors"].items()):
                errors.add_metric([status["sink"], reason], count)
        yield from (depth, dead, up, errors)
        open_alarms = GaugeMetricFamily("kgw_alarms_open", "Unresolved alarms by state", labels=["state"])
        counts: dict[str, int] = {}
        for alarm in self._open_alarms():
            counts[alarm.state.value] = counts.get(alarm.state.value, 0) + 1
        for state, count in sorted(counts.items()):
            open_alarms.add_metric([state], count)
        yield open_alarms
