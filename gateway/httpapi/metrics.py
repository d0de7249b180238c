"""``/healthz``, ``/metrics`` and ``/api/upper-platforms``: what the node says about itself.

``/metrics`` is one Prometheus registry to which every service adds itself
(each reports its own metrics with ``collect()``), so several nodes can run in
one process (tests, ``kgw demo``). Nothing is labelled by device or channel ID:
a scrape of 20k+ series would block the loop (docs/dependencies.md); aggregates
by district, method and status class are enough. Labels are bounded: a district
label is one of the city's 16 codes (or a code this node was told to serve), any
other civil code a device claims is counted as ``other``; sinks, uppers and the
node name come from configuration. The dashboard and alerting rules that read
these series are in ``deploy/`` (README, "Monitoring").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Metric, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.gb28181.ids import TIANJIN_DISTRICTS
from gateway.httpapi.common import json_error, json_response
from gateway.httpapi.guard import public, requires
from gateway.httpapi.identity import principal_of
from gateway.registry.directory import Directory
from gateway.security.scope import Capability, Narrowing, narrowing

__all__ = [
    "FAILURE_CLASSES",
    "KINDERGARTEN_STATES",
    "DirectoryMetrics",
    "NodeInfo",
    "NodeMetrics",
    "RegistrationFailures",
    "UpperStatus",
    "add_node_routes",
    "failure_class",
    "kindergarten_state",
    "metrics_registry",
]

OTHER_DISTRICT = "other"  # every civil code outside the city (and this node's districts) shares one series

#: ``kgw_district_kindergartens{state}``: ``online`` every device of the kindergarten is online, ``partial``
#: some are, ``offline`` none is (the kindergarten is blind: alert), ``no_devices`` none is known yet.
KINDERGARTEN_STATES = ("online", "partial", "offline", "no_devices")

#: ``kgw_registration_failures_total{reason}``: REGISTER refusals in four classes an operator acts on, plus
#: ``busy`` (rate limits: the device retries) and ``other``. A 401 challenge is the handshake, not a failure.
FAILURE_CLASSES = ("auth", "forbidden", "redirect", "malformed", "busy", "other")
_FAILURE_OF_RESULT = {
    "bad_password": "auth",
    "username_mismatch": "auth",
    "replayed": "auth",
    "nonce_address_mismatch": "auth",
    "auth_rate_limited": "auth",
    "not_provisioned": "forbidden",
    "refused": "forbidden",
    "bad_id": "malformed",
    "missing_expires": "malformed",
    "interval_too_brief": "malformed",
    "malformed_auth": "malformed",
    "throttled": "busy",
    "new_device_rate_limited": "busy",
    "redirected": "redirect",  # 302 to the gateway process serving the device's district (gateway/cluster.py)
    "district_not_served": "forbidden",  # 403: no gateway process of the city serves that district
}
_NOT_FAILURES = frozenset({"ok", "refresh", "unregistered", "challenged", "stale_nonce"})

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


def failure_class(result: str) -> str | None:
    """The failure class of a ``kgw_registrations_total`` result, or None when it is no failure.

    Every refusal reason the registrar has is in the table (a test holds it complete);
    anything else is ``other``.
    """
    if result in _NOT_FAILURES:
        return None
    return _FAILURE_OF_RESULT.get(result, "other")


def kindergarten_state(devices: int, online: int) -> str:
    """One of :data:`KINDERGARTEN_STATES` for a kindergarten with ``online`` of its ``devices`` online."""
    if devices == 0:
        return "no_devices"
    if online == 0:
        return "offline"
    return "online" if online >= devices else "partial"


class DirectoryMetrics(Collector):
    """Devices, channels and kindergartens known and online, from the directory at scrape time.

    ``districts``: the districts this node serves (``--districts``; empty: all). In a
    deployment of several nodes sharing one database, each node reports only its own
    districts' presence, so ``sum by (district)`` over the nodes counts each device once.
    """

    def __init__(self, directory: Directory, districts: Collection[str] = ()) -> None:
        self.directory = directory
        self.districts = frozenset(districts)

    def _label(self, code: str) -> str | None:
        """The district label of a civil code; None for a district another node serves."""
        if self.districts:
            return code if code in self.districts else None
        return code if code in TIANJIN_DISTRICTS else OTHER_DISTRICT

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """``kgw_devices_known``, ``kgw_devices_online``, ``kgw_channels_online``, ``kgw_channels_known``; per
        district devices known/online and kindergartens by state; catalog conflicts and refused kindergarten nodes."""
        directory = self.directory
        known, online, channels_up = directory.online_counts()
        yield GaugeMetricFamily("kgw_devices_known", "Devices known to the gateway", value=known)
        yield GaugeMetricFamily("kgw_devices_online", "Devices online now", value=online)
        yield GaugeMetricFamily("kgw_channels_online", "Channels online now", value=channels_up)
        yield GaugeMetricFamily(
            "kgw_channels_known", "Channels known (every device's last catalog)", value=len(directory.channels)
        )
        yield from self._districts()
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

    def _districts(self) -> Iterator[GaugeMetricFamily]:
        """Per district: devices known and online, kindergartens by :func:`kindergarten_state`."""
        directory = self.directory
        devices_known: dict[str, int] = {}
        devices_online: dict[str, int] = {}
        per_kindergarten: dict[str, list[int]] = {}  # kindergarten id -> [devices, online]
        for entry in directory.devices.values():
            row = entry.row
            label = self._label(row.district_code)
            if label is not None:
                devices_known[label] = devices_known.get(label, 0) + 1
                devices_online[label] = devices_online.get(label, 0) + row.online
            if row.kindergarten_id is not None:
                counts = per_kindergarten.setdefault(row.kindergarten_id, [0, 0])
                counts[0] += 1
                counts[1] += row.online
        states: dict[tuple[str, str], int] = {}
        for kindergarten in directory.kindergartens.values():
            label = self._label(kindergarten.district_code)
            if label is None:
                continue
            devices, up = per_kindergarten.get(kindergarten.id, (0, 0))
            key = (label, kindergarten_state(devices, up))
            states[key] = states.get(key, 0) + 1
        known_family = GaugeMetricFamily(
            "kgw_district_devices_known", "Devices known by district civil code", labels=["district"]
        )
        online_family = GaugeMetricFamily(
            "kgw_district_devices_online", "Devices online by district civil code", labels=["district"]
        )
        for district, count in sorted(devices_known.items()):
            known_family.add_metric([district], count)
            online_family.add_metric([district], devices_online[district])
        kindergartens = GaugeMetricFamily(
            "kgw_district_kindergartens",
            "Kindergartens by district and state: online (all devices online), partial (some), "
            "offline (none), no_devices (none known)",
            labels=["district", "state"],
        )
        for district in sorted({d for d, _ in states}):
            for state in KINDERGARTEN_STATES:
                kindergartens.add_metric([district, state], states.get((district, state), 0))
        yield from (known_family, online_family, kindergartens)


class RegistrationFailures(Collector):
    """``kgw_registration_failures_total{reason}``: ``kgw_registrations_total`` refusals in :data:`FAILURE_CLASSES`.

    Read from the registration counter at scrape time (one source of truth); every
    class is always exported, so ``rate()`` has a series before the first failure.
    """

    def __init__(self, registrations: Collector) -> None:
        self.registrations = registrations

    def collect(self) -> Iterator[Metric]:
        """Sum the refusal results into their classes."""
        totals = dict.fromkeys(FAILURE_CLASSES, 0.0)
        for family in self.registrations.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                failure = failure_class(sample.labels.get("result", ""))
                if failure is not None:
                    totals[failure] += sample.value
        family = CounterMetricFamily(
            "kgw_registration_failures",
            "REGISTER refusals by class: auth (wrong credentials, replay, blocked), forbidden (not provisioned, "
            "not served here), redirect (302 to the gateway serving the district), malformed, busy (rate limited)",
            labels=["reason"],
        )
        for failure, value in totals.items():
            family.add_metric([failure], value)
        yield family


class NodeMetrics(Collector):
    """``kgw_node_info{node,gateway_id,role}`` = 1: tells the gateway processes in one Prometheus apart."""

    def __init__(self, node: str, gateway_id: str, role: str, districts: Collection[str] = ()) -> None:
        self.node, self.gateway_id, self.role = node, gateway_id, role
        self.districts = tuple(sorted(districts))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The info gauge and, per district served (bounded by the city's 16), ``kgw_node_district``."""
        info = GaugeMetricFamily(
            "kgw_node_info",
            "This gateway process: its node name, SIP ID and role",
            labels=["node", "gateway_id", "role"],
        )
        info.add_metric([self.node, self.gateway_id, self.role], 1)
        yield info
        served = GaugeMetricFamily(
            "kgw_node_district", "1 for each district this process serves (all: city-wide)", labels=["node", "district"]
        )
        for district in self.districts or ("all",):
            served.add_metric([self.node, district], 1)
        yield served


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
