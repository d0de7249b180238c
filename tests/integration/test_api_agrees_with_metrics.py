"""The console never disagrees with itself: lists of current state agree with /metrics at once.

This used to fail: right after a kindergarten registered, ``/metrics`` said
``kgw_channels_online 2`` while ``GET /api/channels`` listed nothing until the
next write-behind flush (lists came from the store, the gauges from memory).
Here the store is written only every 60 s, so anything the lists show must come
from the same in-memory state the metrics read.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import http_json, http_text, wait_for


def _gauge(metrics: str, name: str) -> float:
    line = next(line for line in metrics.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


async def test_lists_agree_with_metrics_before_any_flush(gateway_factory: Any, fleet_factory: Any) -> None:
    service = await gateway_factory(flush_interval=60.0, keepalive_interval=1.0, keepalive_missed=3)
    api = f"http://127.0.0.1:{service.http_port}"
    fleet = await fleet_factory(service, kindergartens=2, cameras=(2, 2), keepalive_interval=0.5)
    channels = sum(len(a.profile.channels) for a in fleet.agents.values())
    assert await wait_for(lambda: service.directory.online_counts()[2] == channels, timeout=20)

    metrics = await http_text(f"{api}/metrics")
    status, listed = await http_json(f"{api}/api/channels?online=true&limit=1000")
    assert status == 200
    assert listed["total"] == _gauge(metrics, "kgw_channels_online") == channels
    status, devices = await http_json(f"{api}/api/devices?online=true")
    assert status == 200 and devices["total"] == _gauge(metrics, "kgw_devices_online") == len(fleet.agents)
    status, districts = await http_json(f"{api}/api/districts")
    assert sum(d["channels_online"] for d in districts["items"]) == channels
    assert sum(d["devices_online"] for d in districts["items"]) == len(fleet.agents)
    status, health = await http_json(f"{api}/healthz")
    assert health["channels_online"] == channels

    # Nothing of this reached the store yet: the lists did not come from it.
    stored = await service.store.call(lambda store: store.load_all_devices())
    assert stored == []

    # A device going silent (offline after three missed keepalives) shows in both at once, too.
    agent = next(a for a in fleet.agents.values() if a.profile.channels)
    agent.misbehaviour.silent = True
    gone = len(agent.profile.channels)
    assert await wait_for(lambda: service.directory.online_counts()[2] == channels - gone, timeout=20)
    metrics = await http_text(f"{api}/metrics")
    status, listed = await http_json(f"{api}/api/channels?online=true&limit=1000")
    assert listed["total"] == _gauge(metrics, "kgw_channels_online") == channels - gone
    status, offline = await http_json(f"{api}/api/devices?online=false")
    assert [d["id"] for d in offline["items"]] == [agent.profile.device_id]
