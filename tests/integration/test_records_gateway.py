"""RecordInfo through the gateway over real sockets: a simulated NVR's index, split answers, silence (issue 11)."""

from __future__ import annotations

import asyncio
import time

from gateway.gb28181.device_records import DeviceRecords, RecordOptions
from tests.conftest import http_json, wait_for


def camera_with_records(service, fleet, options: RecordOptions) -> tuple[str, DeviceRecords]:
    """A camera channel of the fleet and its device's recordings feature, now answering with ``options``."""
    for agent in fleet.agents.values():
        for channel in agent.profile.channels:
            if channel.device_id[10:13] == "131":
                feature = next(f for f in agent.features if isinstance(f, DeviceRecords))
                feature.options = options
                return channel.device_id, feature
    raise AssertionError("no camera in the simulated kindergarten")


async def online(service, channel_id: str) -> None:
    def up() -> bool:
        channel = service.directory.channels.get(channel_id)
        return channel is not None and channel.online

    assert await wait_for(up, timeout=60)


async def test_search_lists_the_nvr_segments_split_over_messages(gateway_factory, fleet_factory):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id, records = camera_with_records(service, fleet, RecordOptions(items_per_message=3))
    await online(service, channel_id)
    end = int(time.time())
    start = end - 86400
    api = f"http://127.0.0.1:{service.http_port}"
    status, body = await http_json(f"{api}/api/channels/{channel_id}/records?start={start}&end={end}&type=all")
    assert status == 200, body
    expected = records.index.query(channel_id, start, end, end)
    assert len(expected) > 3, "a day of 30-minute files is more than one MESSAGE"
    assert body["complete"] is True and body["sum_num"] == len(expected) == len(body["items"])
    assert [(i["start"], i["end"], i["type"], i["file_size"], i["file_path"]) for i in body["items"]] == [
        (r.start, r.end, r.kind.value, r.file_size, r.file_path)
        for r in sorted(expected, key=lambda r: (r.start, r.end))
    ]
    assert records.stats.answers_sent >= len(expected) // 3
    # alarm only
    status, alarms = await http_json(f"{api}/api/channels/{channel_id}/records?start={start}&end={end}&type=alarm")
    assert status == 200 and all(i["type"] == "alarm" for i in alarms["items"])
    # bad input
    for query in (f"start={end}&end={start}", "start=x&end=1", f"start={start}&end={end}&type=bogus"):
        status, body = await http_json(f"{api}/api/channels/{channel_id}/records?{query}")
        assert status == 400, (query, body)
    status, _ = await http_json(f"{api}/api/channels/34020000001319999999/records?start={start}&end={end}")
    assert status == 404
    assert service.records.answers == {channel_id: True}  # the coverage dashboard's 录像 (answered searches only)


async def test_500_items_in_100_messages(gateway_factory, fleet_factory):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id, records = camera_with_records(
        service, fleet, RecordOptions(flood_items=500, flood_messages=100, max_items=1000)
    )
    await online(service, channel_id)
    end = int(time.time())
    status, body = await http_json(
        f"http://127.0.0.1:{service.http_port}/api/channels/{channel_id}/records?start={end - 86400}&end={end}"
    )
    assert status == 200, body
    assert body["complete"] is True and body["sum_num"] == 500 and len(body["items"]) == 500
    starts = [i["start"] for i in body["items"]]
    assert starts == sorted(starts) and len(set(starts)) == 500
    assert records.stats.answers_sent == 100


async def test_a_device_that_never_answers_gives_504(gateway_factory, fleet_factory):
    service = await gateway_factory(query_timeout=1.5)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id, records = camera_with_records(service, fleet, RecordOptions(never_answer=True))
    await online(service, channel_id)
    end = int(time.time())
    loop = asyncio.get_running_loop()
    began = loop.time()
    status, body = await http_json(
        f"http://127.0.0.1:{service.http_port}/api/channels/{channel_id}/records?start={end - 3600}&end={end}"
    )
    assert status == 504, body
    assert "did not answer" in body["error"] and "设备未" in body["error"]
    assert 1.0 <= loop.time() - began < 10
    assert records.stats.queries == 1
    # The coverage dashboard now knows this camera's recordings do not answer.
    assert service.records.answers == {channel_id: False}
    kindergarten = service.directory.channels[channel_id].kindergarten_id
    row = {r.facts.id: r for r in service.coverage.evaluate(fresh=True).rows}[kindergarten]
    assert row.facts.recording is False and "录像不可用" in row.reason_text
