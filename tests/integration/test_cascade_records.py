"""Recordings through the cascade: a district platform above the gateway, a simulated NVR below (issue 11).

The platform (``kgw platform``) uses the same RecordService/PlaybackService/DownloadService
as the gateway's console; to it the gateway is the device, so its RecordInfo, Playback
and Download INVITEs and MANSRTSP INFOs go to the gateway, which serves each through its
own device session (docs/gb28181.md §16.4, §16.5). The pictures carry the recorded time
burned in (:mod:`simulators.stamp`), so a seek through two levels is checked on the picture.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.gb28181.device_records import Cut, DeviceRecords, RecordOptions
from gateway.gb28181.sdp import SessionType, build_sdp, offer_for_history
from gateway.gb28181.sip.endpoint import ResponseReceived, SipEvent
from gateway.records import RecordSearchError
from tests.conftest import http_json, wait_for
from tests.integration.test_cascade_live import (
    CLASSROOM,
    ENTRANCE,
    _camera_agent,
    _cascade,
    _pretend_known,
    _raw_invite,
)
from tests.integration.test_playback_gateway import Viewer

WINDOW = 8  # s of recording played back end to end (MediaStatus 121 at its end)


def _records(fleet: Any) -> list[DeviceRecords]:
    return [f for a in fleet.agents.values() for f in a.features if isinstance(f, DeviceRecords)]


def _nvr_stat(fleet: Any, name: str) -> int:
    return sum(getattr(r.stats, name) for r in _records(fleet))


async def test_records_playback_info_and_media_status_through_a_district_platform(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    gateway, fleet, platforms = await _cascade(gateway_factory, platform_factory, fleet_factory, ("district",))
    district = platforms["district"]
    api = f"http://127.0.0.1:{district.http_port}"
    loop = asyncio.get_running_loop()
    now = int(time.time())

    # RecordInfo: the platform's API lists exactly what the NVR has, split upward like a catalog.
    start, end = now - 6 * 3600, now - 60
    status, found = await http_json(f"{api}/api/channels/{ENTRANCE}/records?start={start}&end={end}&type=all")
    assert status == 200, found
    direct = await gateway.records.search(ENTRANCE, start, end)  # the gateway asking the NVR itself
    assert found["complete"] and found["items"], found
    assert found["items"] == direct.to_json()["items"]
    assert found["sum_num"] == len(found["items"])
    assert gateway.cascade is not None and gateway.cascade.record_queries is not None
    counters = gateway.cascade.record_queries.counters
    assert counters["answered"] == 1
    assert counters["messages"] == -(-len(found["items"]) // 8)  # catalog_per_message 8 items per MESSAGE

    # Playback: the platform's session → the gateway → its own device session; seek lands on the picture.
    begin = now - 3600
    status, body = await http_json(f"{api}/api/channels/{ENTRANCE}/playback", {"start": begin, "end": begin + WINDOW})
    assert status == 200, body
    pb = district.playback.playbacks[body["id"]]
    below = [p for p in gateway.playback.playbacks.values() if p.owner == "upper:district"]
    assert len(below) == 1 and (below[0].start, below[0].end) == (begin, begin + WINDOW)
    viewer = Viewer(pb)
    try:
        assert await wait_for(lambda: len(viewer.times()) >= 5, timeout=30)
        assert viewer.times()[0] == begin
        status, body = await http_json(f"{api}/api/playback/{pb.id}/control", {"action": "seek", "position": 5})
        assert status == 200, body
        sought = loop.time()
        assert await wait_for(lambda: any(t >= begin + 5 for t in viewer.times(sought)), timeout=30)
        assert [t for t in viewer.times(sought) if t >= begin + 4][0] == begin + 5
        assert await wait_for(lambda: below[0].position >= 5, timeout=10), "the gateway's session followed"
        assert _nvr_stat(fleet, "controls") >= 1

        # The NVR's MediaStatus 121 reaches the platform in its dialog: it ends with end_of_file and BYEs.
        assert await wait_for(lambda: not pb.active, timeout=30)
        assert pb.end_reason == "end_of_file", pb.end_reason
        assert await wait_for(lambda: not below[0].active and not gateway.cascade.relay.status(), timeout=15)
    finally:
        await viewer.close()

    # MANSRTSP to the ended session: the platform refuses it (409) and the gateway knows no such dialog (481).
    status, body = await http_json(f"{api}/api/playback/{pb.id}/control", {"action": "pause"})
    assert status == 409, body
    assert await _info_in_dialog(district, pb) == 481


async def test_silent_device_hang_ups_either_way(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    gateway, fleet, platforms = await _cascade(gateway_factory, platform_factory, fleet_factory, ("district",))
    district = platforms["district"]
    api = f"http://127.0.0.1:{district.http_port}"
    nvr = next(f for f in _camera_agent(fleet).features if isinstance(f, DeviceRecords))
    now = int(time.time())

    # An NVR that never answers RecordInfo: the gateway gives up (its timeout) and answers SumNum 0 upward.
    gateway.records.timeout = 1.0
    nvr.options = RecordOptions(never_answer=True)
    status, found = await http_json(f"{api}/api/channels/{ENTRANCE}/records?start={now - 3600}&end={now}")
    assert status == 200 and found["items"] == [] and found["sum_num"] == 0, found
    assert gateway.cascade is not None and gateway.cascade.record_queries is not None
    assert gateway.cascade.record_queries.counters["empty_after_failure"] == 1

    # The NVR hangs up mid-stream: the gateway BYEs the platform, whose playback ends device_bye.
    nvr.options = RecordOptions(cut=Cut.BYE, cut_at=0.5)
    begin = now - 7200
    status, body = await http_json(f"{api}/api/channels/{ENTRANCE}/playback", {"start": begin, "end": begin + 6})
    assert status == 200, body
    pb = district.playback.playbacks[body["id"]]
    assert await wait_for(lambda: not pb.active, timeout=30)
    assert pb.end_reason == "device_bye", pb.end_reason

    # The platform ends its playback: the gateway's device session ends too (BYE to the NVR).
    nvr.options = RecordOptions()
    status, body = await http_json(f"{api}/api/channels/{ENTRANCE}/playback", {"start": begin, "end": begin + 600})
    assert status == 200, body
    assert await wait_for(lambda: len(gateway.playback.playbacks) == 1, timeout=10)
    status, body = await http_json(f"{api}/api/playback/{body['id']}", method="DELETE")
    assert status == 200
    assert await wait_for(lambda: not gateway.playback.playbacks and not gateway.cascade.relay.status(), timeout=15)
    assert await wait_for(lambda: not any(n.playback.streams for n in fleet.nodes if n.playback), timeout=15)


async def _info_in_dialog(platform: Any, pb: Any) -> int:
    """Send a PAUSE INFO in ``pb``'s (ended) dialog from the platform's own endpoint; the final status."""
    session = pb.session
    assert session.dialog is not None
    answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    sentinel = object()
    route = platform.playback.route

    def capture(event: SipEvent, now: float) -> bool:
        if isinstance(event, ResponseReceived) and event.context is sentinel:
            if event.response.status >= 200 and not answered.done():
                answered.set_result(event.response.status)
            return True
        return route(event, now)  # type: ignore[no-any-return]

    platform.playback.route = capture
    try:
        request = session.dialog.new_request(
            "INFO", b"PAUSE RTSP/1.0\r\nCSeq: 9\r\nPauseTime: now\r\n", "Application/MANSRTSP"
        )
        platform.sip.endpoint.send_request(request, session.device_peer, asyncio.get_running_loop().time(), sentinel)
        return await asyncio.wait_for(answered, 30)
    finally:
        platform.playback.route = route


async def test_download_through_the_platform_gives_an_mp4(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any, tmp_path: Path
) -> None:
    gateway, fleet, platforms = await _cascade(gateway_factory, platform_factory, fleet_factory, ("district",))
    api = f"http://127.0.0.1:{platforms['district'].http_port}"
    begin = int(time.time()) - 7200
    status, body = await http_json(
        f"{api}/api/channels/{ENTRANCE}/downloads", {"start": begin, "end": begin + 6, "speed": 4}
    )
    assert status == 200, body
    download_id = body["id"]

    async def finished() -> dict[str, Any]:
        while True:
            status, state = await http_json(f"{api}/api/downloads/{download_id}")
            assert status == 200
            if state["state"] != "running":
                return state  # type: ignore[no-any-return]
            await asyncio.sleep(0.2)

    state = await asyncio.wait_for(finished(), 60)
    assert state["state"] == "done", state
    assert _nvr_stat(fleet, "downloads") == 1
    path = tmp_path / "cascade.mp4"

    def fetch() -> None:
        with urllib.request.urlopen(f"{api}/api/downloads/{download_id}/file", timeout=30) as answer:
            path.write_bytes(answer.read())

    await asyncio.to_thread(fetch)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_entries",
         "stream=codec_type,codec_name:format=duration", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    info = json.loads(probe.stdout)
    assert info["streams"][0]["codec_name"] == "h264"
    assert 4.0 <= float(info["format"]["duration"]) <= 8.0, info


async def test_police_may_not_look_back_at_a_classroom_and_forgeries_are_refused(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    gateway, fleet, platforms = await _cascade(gateway_factory, platform_factory, fleet_factory, ("police",))
    police = platforms["police"]
    api = f"http://127.0.0.1:{police.http_port}"
    now = int(time.time())
    # The police platform does not even know the classroom: its API says 404.
    status, _ = await http_json(f"{api}/api/channels/{CLASSROOM}/records?start={now - 3600}&end={now}")
    assert status == 404
    # Asked anyway (a guessed ID): the gateway answers the MESSAGE 403 and never asks the NVR.
    _pretend_known(police, gateway, CLASSROOM)
    queries = _nvr_stat(fleet, "queries")
    try:
        await police.records.search(CLASSROOM, now - 3600, now)
        raise AssertionError("the gateway served a classroom's recordings to the police")
    except RecordSearchError as exc:
        assert exc.status == 502 and "403" in exc.message, exc.message
    assert gateway.cascade is not None and gateway.cascade.record_queries is not None
    assert gateway.cascade.record_queries.counters["refused"] == 1
    # Again: a catalog NOTIFY from the gateway (a channel's status) may have replaced the platform's
    # list meanwhile, and the pretence must stand for the playback to be asked at all.
    _pretend_known(police, gateway, CLASSROOM)
    status, body = await http_json(f"{api}/api/channels/{CLASSROOM}/playback", {"start": now - 3600, "end": now - 3590})
    assert status == 502 and "403" in body["error"], body
    assert _nvr_stat(fleet, "queries") == queries and _nvr_stat(fleet, "playbacks") == 0
    # The entrance is shared with the police: its recordings are listed.
    records = await police.records.search(ENTRANCE, now - 3600, now - 60)
    assert records.items

    # A Playback INVITE claiming the police platform's ID from another address: 403, the NVR hears nothing.
    offer = offer_for_history(
        session_type=SessionType.PLAYBACK, channel_id=ENTRANCE, start=now - 3600, end=now - 3590,
        media_host="127.0.0.1", media_port=9, ssrc="1100000009",
    )  # fmt: skip
    assert await _raw_invite(gateway, police.config.id, ENTRANCE, build_sdp(offer)) == 403
    talk = replace(offer, session_type=SessionType.TALK)
    assert await _raw_invite(gateway, police.config.id, ENTRANCE, build_sdp(talk)) == 403
    assert _nvr_stat(fleet, "playbacks") == 0 and not gateway.playback.playbacks
    assert gateway.cascade.host.link("police").forged_requests == 2
