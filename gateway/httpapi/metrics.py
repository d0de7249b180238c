"""``/healthz``, ``/metrics`` and ``/api/upper-platforms``: what the node says about itself.

``/metrics`` is one Prometheus registry to which every service adds itself
(each reports its own metrics with ``collect()``), so several nodes can run in
one process (tests, ``kgw demo``). Nothing is labelled by device or channel ID:
a scrape of 20k+ series would block the loop (docs/dependencies.md); aggregates
by district, method and status class are enough.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.httpapi.common import json_error, json_response
from gateway.httpapi.guard import public, requires
from gateway.httpapi.identity import principal_of
from gateway.registry.directory import Directory
from gateway.security.scope import Capability, Narrowing, narrowing

__all__ = ["DirectoryMetrics", "NodeInfo", "UpperStatus", "add_node_routes", "metrics_registry"]

# ``*_created`` timestamps double the series count and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client 0.26 leaves it unannotated


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Who this node is, for ``/healthz`` (the console reads its role there)."""

    id: str
    role: str
    sip_port: Callable[[], int]


class UpperStatus(Protocol):
    """The cascade's link states (``/api/upper-platforms``)."""

    def status(self) -> list[dict[str, Any]]: ...


def metrics_registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry of the node's services (each yields its own metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


class DirectoryMetrics(Collector):
    """Devices and channels known and online, from the directory at scrape time."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """``kgw_devices_known``, ``kgw_devices_online``, ``kgw_channels_online``, ``kgw_channels_known``, per district;
        catalog conflicts and refused kindergarten nodes."""
        directory = self.directory
        known, online, channels_up = directory.online_counts()
        yield GaugeMetricFamily("kgw_devices_known", "Devices known to the gateway", value=known)
        yield GaugeMetricFamily("kgw_devices_online", "Devices online now", value=online)
        yield GaugeMetricFamily("kgw_channels_online", "Channels online now", value=channels_up)
        yield GaugeMetricFamily(
            "kgw_channels_known", "Channels known (every device's last catalog)", value=len(directory.channels)
        )
        by_district = GaugeMetricFamily(
            "kgw_district_devices_online", "Devices online by district civil code", labels=["district"]
        )
        counts: dict[str, int] = {}
        for entry in directory.devices.values():
            if entry.row.online:
                counts[entry.row.district_code] = counts.get(entry.row.district_code, 0) + 1
        for district, count in sorted(counts.items()):
            by_district.add_metric([district], count)
        yield by_district
        yield CounterMetricFamily(
            "kgw_catalog_conflicts",
            "Catalog items naming a channel another device owns (refused, not moved)",
            value=directory.conflicts_total,
        )
        yield CounterMetricFamily(
            "kgw_catalog_unknown_kindergartens",
            "Kindergarten (216) nodes in catalogs that were not created (not the sender's to create)",
            value=directory.unknown_kindergartens_total,
        )


NODE = web.AppKey("kgw_node", NodeInfo)
DIRECTORY = web.AppKey("kgw_node_directory", Directory)
REGISTRY = web.AppKey("kgw_metrics", CollectorRegistry)
UPPERS: web.AppKey[UpperStatus | None] = web.AppKey("kgw_uppers")


@public
async def healthz(request: web.Request) -> web.Response:
    """Liveness, who we are, and a one-line summary (open: probes and the console's login page read it)."""
    node = request.app[NODE]
    known, online, channels_online = request.app[DIRECTORY].online_counts()
    return json_response(
        {
            "status": "ok",
            "gateway_id": node.id,
            "role": node.role,
            "sip_port": node.sip_port(),
            "devices_known": known,
            "devices_online": online,
            "channels_online": channels_online,
        }
    )


def _city_wide(request: web.Request) -> None:
    """System status is the whole city's: a district-narrowed account gets 403."""
    if narrowing(principal_of(request), Capability.SYSTEM_STATUS) != Narrowing():
        raise json_error(web.HTTPForbidden, "system status is city-wide; your account is narrowed (无权限)")


@requires(Capability.SYSTEM_STATUS)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    _city_wide(request)
    return web.Response(body=generate_latest(request.app[REGISTRY]), headers={"Content-Type": CONTENT_TYPE_LATEST})


@requires(Capability.SYSTEM_STATUS)
async def upper_platforms(request: web.Request) -> web.Response:
    """GET /api/upper-platforms: each upper platform link (state, policy, failures, subscriptions, calls)."""
    _city_wide(request)
    uppers = request.app[UPPERS]
    return json_response({"items": uppers.status() if uppers is not None else []})


def add_node_routes(
    app: web.Application,
    node: NodeInfo,
    directory: Directory,
    registry: CollectorRegistry,
    uppers: UpperStatus | None,
) -> None:
    """Register ``/healthz``, ``/metrics`` and ``/api/upper-platforms``."""
    app[NODE], app[DIRECTORY], app[REGISTRY] = node, directory, registry
    app[UPPERS] = uppers
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/upper-platforms", upper_platforms)
