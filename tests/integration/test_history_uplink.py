"""Playbacks and downloads count against the kindergarten's uplink budget; playbacks in /metrics (issue 11).

Over real sockets with a simulated NVR: a playback reserves one main stream (4 Mbit/s
estimate), a download main × its speed (a slower speed when that does not fit); a
session that would take the kindergarten over its budget gets 503 whose message names
what uses the line, as live view's does; every session shows in
``GET /api/kindergartens/{id}/uplink`` and gives its share back when it ends (API
delete, end of file, a download's completion).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from tests.conftest import http_json, http_text, wait_for
from tests.integration.test_playback_gateway import camera


def _metric(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def test_playback_and_download_take_the_uplink_and_are_refused_over_it(
    gateway_factory: Any, fleet_factory: Any
) -> None:
    # 10 Mbit/s: a playback (4) and a download at 1× (4) fit, a download at 2× next to the playback does not.
    service = await gateway_factory(uplink_budget_mbps=10.0, uplink_measure_after=0.0)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id = await camera(service, fleet)
    kindergarten = service.directory.channels[channel_id].kindergarten_id
    assert kindergarten is not None
    api = f"http://127.0.0.1:{service.http_port}"
    uplink = f"{api}/api/kindergartens/{kindergarten}/uplink"
    start = int(time.time()) - 7200

    status, played = await http_json(f"{api}/api/channels/{channel_id}/playback", {"start": start, "end": start + 600})
    assert status == 200, played
    status, usage = await http_json(uplink)
    assert status == 200 and usage["used_kbps"] == 4000, usage
    assert [(s["kind"], s["channel_id"], s["kbps"]) for s in usage["sessions"]] == [("playback", channel_id, 4000)]
    metrics = await http_text(f"{api}/metrics")
    assert _metric(metrics, "kgw_playbacks_active") == 1, metrics

    # A download at 2× (8 Mbit/s) does not fit beside it: the device is asked for 1× instead.
    status, download = await http_json(
        f"{api}/api/channels/{channel_id}/downloads", {"start": start, "end": start + 4, "speed": 2}
    )
    assert status == 200 and download["speed"] == 1, download
    status, usage = await http_json(uplink)
    assert usage["used_kbps"] == 8000 and {s["kind"] for s in usage["sessions"]} == {"playback", "download"}, usage

    # A second playback would need 4 more: refused, naming both users in zh-CN and English.
    status, refused = await http_json(f"{api}/api/channels/{channel_id}/playback", {"start": start, "end": start + 60})
    assert status == 503, refused
    message = refused["error"]
    assert "上行带宽不足" in message and "uplink budget" in message, message
    assert f"playback {channel_id}" in message and f"download {channel_id}" in message, message
    assert "8.0 Mbit/s" in message and "10.0 Mbit/s" in message, message
    # So is a download even at 1×; nothing reached the NVR for either.
    status, refused = await http_json(
        f"{api}/api/channels/{channel_id}/downloads", {"start": start, "end": start + 4, "speed": 1}
    )
    assert status == 503 and "上行带宽不足" in refused["error"], refused
    assert len(service.playback.playbacks) == 1

    # The download completes: its share is given back.
    async def state() -> str:
        status, body = await http_json(f"{api}/api/downloads/{download['id']}")
        assert status == 200
        return str(body["state"])

    deadline = time.monotonic() + 60
    while (current := await state()) == "running" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert current == "done"
    status, usage = await http_json(uplink)
    assert usage["used_kbps"] == 4000, usage

    # A scale change: the device sends twice as fast, the estimate follows.
    status, body = await http_json(f"{api}/api/playback/{played['id']}/control", {"action": "scale", "scale": 2})
    assert status == 200, body
    status, usage = await http_json(uplink)
    assert usage["used_kbps"] == 8000, usage

    # Deleted: released, and /metrics says how it ended and that one was refused.
    status, body = await http_json(f"{api}/api/playback/{played['id']}", method="DELETE")
    assert status == 200
    status, usage = await http_json(uplink)
    assert usage["used_kbps"] == 0 and usage["sessions"] == [], usage
    metrics = await http_text(f"{api}/metrics")
    assert _metric(metrics, "kgw_playbacks_active") == 0, metrics
    assert _metric(metrics, "kgw_playbacks_total", '{outcome="stopped_by_API"}') == 1, metrics
    assert _metric(metrics, "kgw_playbacks_total", '{outcome="uplink_refused"}') == 1, metrics
    assert _metric(metrics, "kgw_downloads_total", '{outcome="uplink_refused"}') == 1, metrics

    # A playback that runs to the end of its recording releases its share too.
    status, short = await http_json(f"{api}/api/channels/{channel_id}/playback", {"start": start, "end": start + 3})
    assert status == 200, short
    ended = service.playback.playbacks[short["id"]]
    assert await wait_for(lambda: not ended.active, timeout=30)
    assert ended.end_reason == "end_of_file", ended.end_reason
    status, usage = await http_json(uplink)
    assert usage["used_kbps"] == 0, usage
    metrics = await http_text(f"{api}/metrics")
    assert _metric(metrics, "kgw_playbacks_total", '{outcome="end_of_file"}') == 1, metrics
