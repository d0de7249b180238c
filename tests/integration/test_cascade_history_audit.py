"""A district platform's playbacks and downloads through the gateway: audited, and within the uplink budget (issue 11).

The gateway's audit trail records an upper platform's look back at a recording as
``upper_playback`` / ``upper_download`` (start, then end with its duration and outcome,
the recording's window in the detail), as it records live views as ``upper_live_view``.
The gateway's device session for an upper's playback takes the kindergarten's uplink
like any other; over the budget the upper's INVITE is refused with 486.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from gateway.audit.store import AuditFilter
from tests.conftest import http_json, wait_for
from tests.integration.test_cascade_live import ENTRANCE, PLATFORM_IDS, _cascade
from tests.integration.test_cascade_records import _nvr_stat


async def _records(gateway: Any, action: str, want: int) -> list[Any]:
    """The gateway's audit entries of ``action`` on the entrance camera, oldest first, once ``want`` are there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        page = await gateway.audit.page(AuditFilter(action=action, target=ENTRANCE))
        if len(page.items) >= want or loop.time() > deadline:
            return [r.entry for r in reversed(page.items)]
        await asyncio.sleep(0.2)


async def test_uppers_playback_and_download_are_audited_and_count_against_the_uplink(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    gateway, fleet, platforms = await _cascade(gateway_factory, platform_factory, fleet_factory, ("district",))
    district = platforms["district"]
    api = f"http://127.0.0.1:{district.http_port}"
    kindergarten = gateway.live.planner.kindergarten_of(ENTRANCE)
    assert kindergarten is not None and gateway.live.uplink is not None
    begin = int(time.time()) - 3600

    # A playback through the district: the gateway's device session shows in the kindergarten's uplink.
    status, body = await http_json(f"{api}/api/channels/{ENTRANCE}/playback", {"start": begin, "end": begin + 4})
    assert status == 200, body
    pb = district.playback.playbacks[body["id"]]
    sessions = gateway.live.uplink.usage(kindergarten)["sessions"]
    assert [(s["kind"], s["channel_id"]) for s in sessions] == [("playback", ENTRANCE)], sessions
    assert await wait_for(lambda: not pb.active, timeout=30)
    assert await wait_for(lambda: not gateway.cascade.relay.status(), timeout=15)
    assert gateway.live.uplink.used(kindergarten) == 0

    started, ended = await _records(gateway, "upper_playback", 2)
    for entry in (started, ended):
        detail = json.loads(entry.detail)
        assert entry.actor == PLATFORM_IDS["district"] and entry.via == "upper_platform", entry
        assert detail["session"] == "playback" and (detail["start"], detail["end"]) == (begin, begin + 4), detail
    assert started.outcome == "started" and started.duration is None
    assert json.loads(ended.detail)["op"] == "end" and ended.outcome and ended.outcome != "started"
    assert ended.duration is not None and ended.duration > 0
    assert await _records(gateway, "upper_live_view", 0) == [], "a playback is not a live view"

    # A download through the district: recorded as a download.
    status, body = await http_json(
        f"{api}/api/channels/{ENTRANCE}/downloads", {"start": begin, "end": begin + 4, "speed": 4}
    )
    assert status == 200, body
    download = district.downloads.get(body["id"])
    assert await wait_for(lambda: download.state.value != "running", timeout=60)
    assert download.state.value == "done", download.as_json()
    started, ended = await _records(gateway, "upper_download", 2)
    assert json.loads(started.detail)["session"] == "download" and started.outcome == "started"
    assert ended.duration is not None and ended.duration > 0
    assert await wait_for(lambda: gateway.live.uplink.used(kindergarten) == 0, timeout=15)

    # The kindergarten's line is too small for a main stream: the district's playback is refused (486 upward).
    gateway.live.uplink.overrides[kindergarten] = 3000
    playbacks = _nvr_stat(fleet, "playbacks")
    status, body = await http_json(f"{api}/api/channels/{ENTRANCE}/playback", {"start": begin, "end": begin + 4})
    assert status == 502 and "486" in body["error"], body
    assert gateway.playback.outcomes["uplink_refused"] == 1
    assert _nvr_stat(fleet, "playbacks") == playbacks, "the NVR was not asked"
    assert len(await _records(gateway, "upper_playback", 2)) == 2, "a refused call is not a view"
