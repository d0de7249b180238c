"""Recording downloads over real sockets: Download INVITE → RTP/PS → MP4 file → HTTP (issue 11).

A started node (access gateway with the real routes and authentication) and a
simulated kindergarten whose NVR answers the Download INVITE. The MP4 is fetched
over HTTP and read back with ffprobe; progress is watched while it runs; a device
that hangs up mid-stream makes the download fail with the reason; scope: police
download only police-shareable (confirmed entrance/perimeter) cameras, a district
officer only their district, nobody but the requester (or a 市级管理员) sees a
download.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
import pytest

from gateway.app import GatewayService
from gateway.config import load_config
from gateway.gb28181.device_records import Cut, DeviceRecords
from gateway.gb28181.sdp import SessionType
from gateway.registry.model import AreaTag, Kindergarten
from gateway.registry.provisioning import AreaChoice
from gateway.security.principal import Principal, Role
from gbplatform.app import build_gateway
from simulators.city import SimChannel, SimKindergarten, build_city, installer_areas
from simulators.fleet import Fleet
from simulators.stamp import Stamp, read_stamp
from tests.conftest import TEST_TOKEN_GRANT, wait_for
from tests.scope_principals import MemoryAudit, audit_part, auth_headers, call, grants

CAMERAS = (9, 9)  # entrance, perimeter, classrooms, playground, kitchen, corridor, 午睡室
CITY = build_city(2, seed=2020, cameras_per_kindergarten=CAMERAS)
KG, OTHER = CITY[0], CITY[1]
assert KG.district_code != OTHER.district_code

PRINCIPALS = {
    "admin": Principal("admin", Role.CITY_ADMIN),
    "duty": Principal("值班员", Role.DISTRICT_DUTY, district_code=KG.district_code),
    "other_duty": Principal("外区值班员", Role.DISTRICT_DUTY, district_code=OTHER.district_code),
    "police": Principal("公安", Role.POLICE),
    "kg": Principal("园长", Role.KINDERGARTEN, kindergarten_id=KG.id),
}


def camera(kg: SimKindergarten, area: str) -> SimChannel:
    return next(c for d in kg.devices if d.kind == "nvr" for c in d.channels if c.area == area)


@dataclass
class Site:
    service: GatewayService
    fleet: Fleet
    audit: MemoryAudit

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"

    async def as_(self, who: str, path: str, data: Any = None, method: str | None = None) -> tuple[int, Any]:
        return await call(self.api + path, who, data, method)

    async def fetch(self, who: str, path: str) -> tuple[int, dict[str, str], bytes]:
        def run() -> tuple[int, dict[str, str], bytes]:
            import urllib.error
            import urllib.request

            request = urllib.request.Request(self.api + path, headers=auth_headers(who))
            try:
                with urllib.request.build_opener().open(request, timeout=30) as response:
                    return response.status, dict(response.headers), response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, dict(exc.headers), exc.read()

        return await asyncio.to_thread(run)

    async def until_finished(self, who: str, download_id: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll the download until it is no longer running; every state seen."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = await self.as_(who, f"/api/downloads/{download_id}")
            assert status == 200, body
            seen.append(body)
            if body["state"] != "running":
                return seen
            await asyncio.sleep(0.1)
        raise AssertionError(f"download still running after {timeout} s: {seen[-1]}")


@pytest.fixture
async def site(started_nodes: list[GatewayService], fleet_factory: Any, tmp_path: Path) -> AsyncIterator[Site]:
    audit = MemoryAudit()
    tokens = (TEST_TOKEN_GRANT, *grants(PRINCIPALS))
    # No uplink budget: these tests run several downloads of one kindergarten at once (4× alone estimates
    # 16 of the default 20 Mbit/s); downloads against the budget: tests/integration/test_history_uplink.py.
    config = load_config(
        None, sip_port=0, http_port=0, db=":memory:", flush_interval=0.2, api_tokens=tokens,
        download_dir=str(tmp_path / "downloads"), downloads_per_user=2, rtp_timeout=2.0, uplink_budget_mbps=0.0,
    )  # fmt: skip
    service = build_gateway(config, web_parts=(audit_part(audit),))
    await service.start()
    started_nodes.append(service)
    await service.provisioning.add_kindergartens(
        [Kindergarten(k.id, k.name, k.district_code, k.address, k.longitude, k.latitude) for k in CITY]
    )
    choices = [AreaChoice(c["id"], AreaTag(c["area"]), c["name"]) for k in CITY for c in installer_areas(k)]
    await service.provisioning.confirm_areas(choices, "installer", time.time())
    fleet = await fleet_factory(service, provision=False, kindergartens=len(CITY), cameras=CAMERAS)
    for area in ("entrance", "classroom"):
        cid = camera(KG, area).id
        assert await wait_for(lambda cid=cid: getattr(service.directory.channels.get(cid), "online", False), 60)
    yield Site(service, fleet, audit)


def _ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-print_format", "json",
         "-show_entries", "stream=codec_type,codec_name,nb_read_frames,width,height:format=duration", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(out.stdout)


async def test_download_gives_an_mp4_of_the_range_with_progress(site: Site, tmp_path: Path) -> None:
    gate = camera(KG, "entrance")
    start = int(time.time()) - 3600
    status, body = await site.as_("duty", f"/api/channels/{gate.id}/downloads", {"start": start, "end": start + 6})
    assert status == 200, body
    assert body["state"] == "running" and body["progress"] == 0.0 and body["channel_id"] == gate.id
    download = site.service.downloads.get(body["id"])
    assert download is not None and download.session is not None
    offer = download.session.offer
    assert offer.session_type is SessionType.DOWNLOAD and offer.download_speed == 4
    assert (offer.start_time, offer.end_time, offer.uri) == (start, start + 6, f"{gate.id}:0")
    assert offer.ssrc is not None and offer.ssrc.startswith("1"), "a history SSRC"

    seen = await site.until_finished("duty", body["id"])
    final = seen[-1]
    assert final["state"] == "done", final
    assert any(0.0 < s["progress"] < 1.0 and s["bytes"] > 0 for s in seen[:-1]), "progress visible while running"
    assert final["progress"] == 1.0 and final["file_size"] > 0 and final["error"] == ""
    assert final["end_reason"] == "end of file", "the NVR's MediaStatus 121 ended it"
    kg_name = next(k.name for k in CITY if k.id == KG.id)
    assert final["filename"].startswith(f"{kg_name}_") and final["filename"].endswith(".mp4")

    status, headers, data = await site.fetch("duty", f"/api/downloads/{body['id']}/file")
    assert status == 200 and headers["Content-Type"] == "video/mp4" and len(data) == final["file_size"]
    disposition = headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="kgw_') and "filename*=UTF-8''" in disposition
    assert urllib.parse.unquote(disposition.split("filename*=UTF-8''")[1]) == final["filename"]
    path = tmp_path / "got.mp4"
    path.write_bytes(data)
    probe = _ffprobe(path)
    (video,) = [s for s in probe["streams"] if s["codec_type"] == "video"]
    assert video["codec_name"] == "h264" and (video["width"], video["height"]) == (640, 360)
    assert float(probe["format"]["duration"]) == pytest.approx(6.0, abs=1.0), "the range, ± a GOP"
    first, last = _stamps(path)
    assert first == Stamp(start, 0), "the file starts at the requested start (burned-in recorded time)"
    assert last is not None and start + 5 <= last.epoch <= start + 6, "and ends at the requested end"
    assert any(r["action"] == "download" and r["detail"].get("op") == "file" for r in site.audit.records)

    # Only the requester (or a 市级管理员) sees it; others get the unknown download's 404.
    assert (await site.as_("police", f"/api/downloads/{body['id']}"))[0] == 404
    assert (await site.fetch("police", f"/api/downloads/{body['id']}/file"))[0] == 404
    assert (await site.as_("admin", f"/api/downloads/{body['id']}"))[0] == 200
    status, listing = await site.as_("police", "/api/downloads")
    assert status == 200 and listing["items"] == []
    status, listing = await site.as_("duty", "/api/downloads")
    assert [d["id"] for d in listing["items"]] == [body["id"]]

    status, gone = await site.as_("duty", f"/api/downloads/{body['id']}", method="DELETE")
    assert status == 200 and gone["was"] == "done" and not download.path.exists()
    assert (await site.as_("duty", f"/api/downloads/{body['id']}"))[0] == 404


def _stamps(path: Path) -> tuple[Stamp | None, Stamp | None]:
    """The recorded time burned into the first and the last picture of an MP4."""
    with av.open(str(path)) as container:
        frames = [read_stamp(f.to_ndarray(format="gray")) for f in container.decode(video=0)]
    return frames[0], frames[-1]


def _misbehave(fleet: Fleet, channel_id: str, cut: Cut, cut_at: float) -> None:
    """The simulated NVR serving ``channel_id`` ends its history calls early (nvrsim's misbehaviour)."""
    for agent in fleet.agents.values():
        if channel_id in agent.camera_ids:
            feature = next(f for f in agent.features if isinstance(f, DeviceRecords))
            feature.options = replace(feature.options, cut=cut, cut_at=cut_at)
            return
    raise AssertionError(f"no simulated device serves {channel_id}")


@pytest.mark.parametrize(("cut", "reason"), [(Cut.BYE, "device hung up"), (Cut.STALL, "media ended")])
async def test_device_ending_mid_stream_fails_with_the_reason(site: Site, cut: Cut, reason: str) -> None:
    gate = camera(KG, "entrance")
    _misbehave(site.fleet, gate.id, cut, 0.3)
    start = int(time.time()) - 7200
    window = {"start": start, "end": start + 20, "speed": 4}
    status, body = await site.as_("duty", f"/api/channels/{gate.id}/downloads", window)
    assert status == 200, body
    download = site.service.downloads.get(body["id"])
    assert download is not None
    seen = await site.until_finished("duty", body["id"])
    final = seen[-1]
    assert final["state"] == "failed", final
    assert reason in final["error"] and "of 20 s" in final["error"], final["error"]
    assert final["progress"] < 0.5 and final["file_size"] == 0, final  # the cut is at 30 % (less on a busy machine)
    status, _, _ = await site.fetch("duty", f"/api/downloads/{body['id']}/file")
    assert status == 410
    assert await wait_for(lambda: not download.path.exists(), 10), "no partial file is kept"


async def test_scope_limits_and_bad_requests(site: Site) -> None:
    gate, classroom = camera(KG, "entrance"), camera(KG, "classroom")
    other_gate = camera(OTHER, "entrance")
    start = int(time.time()) - 3600
    window = {"start": start, "end": start + 60}

    # Police: a confirmed entrance camera yes, a classroom never (answered like an unknown channel, audited).
    status, body = await site.as_("police", f"/api/channels/{classroom.id}/downloads", window)
    assert status == 404 and body["error"] == f"unknown channel {classroom.id}", "as for an unknown channel"
    assert site.audit.denied("公安"), "the refusal is audited"
    assert not site.service.downloads.downloads, "nothing was started for it"
    status, police_download = await site.as_("police", f"/api/channels/{gate.id}/downloads", window)
    assert status == 200, police_download

    # A district officer: not another district's camera; a 园方 account has no download right at all.
    assert (await site.as_("other_duty", f"/api/channels/{gate.id}/downloads", window))[0] == 404
    assert (await site.as_("other_duty", f"/api/downloads/{police_download['id']}"))[0] == 404
    assert (await site.as_("kg", f"/api/channels/{gate.id}/downloads", window))[0] == 403

    # Unknown channel, bad ranges and speeds.
    unknown = KG.id[:10] + "1310009999"
    assert (await site.as_("duty", f"/api/channels/{unknown}/downloads", window))[0] == 404
    for bad in (
        {"start": start, "end": start},
        {"start": start + 60, "end": start},
        {"start": "yesterday", "end": start},
        {"start": start, "end": start + 3 * 3600},
        {**window, "speed": 3},
        {**window, "speed": True},
    ):
        status, answer = await site.as_("duty", f"/api/channels/{gate.id}/downloads", bad)
        assert status == 400 and answer["error"], (bad, answer)

    # Per-user limit (2 in this node's configuration): the third running one is refused with 429.
    first = await site.as_("duty", f"/api/channels/{gate.id}/downloads", {**window, "speed": 1})
    second = await site.as_("duty", f"/api/channels/{classroom.id}/downloads", {**window, "speed": 1})
    assert first[0] == second[0] == 200
    status, answer = await site.as_("duty", f"/api/channels/{gate.id}/downloads", window)
    assert status == 429 and "下载任务过多" in answer["error"]

    # Cancelling a running download hangs up and frees the slot.
    status, gone = await site.as_("duty", f"/api/downloads/{first[1]['id']}", method="DELETE")
    assert status == 200 and gone["was"] == "running"
    assert (await site.as_("duty", f"/api/channels/{gate.id}/downloads", window))[0] == 200
    assert other_gate.id not in {d.channel_id for d in site.service.downloads.downloads.values()}


async def test_device_that_never_says_end_of_file_is_hung_up_when_the_range_arrived(site: Site) -> None:
    gate = camera(KG, "entrance")
    for agent in site.fleet.agents.values():
        if gate.id in agent.camera_ids:
            feature = next(f for f in agent.features if isinstance(f, DeviceRecords))
            feature.options = replace(feature.options, end_grace=120.0)  # its MediaStatus 121 would come far too late
    start = int(time.time()) - 3600
    status, body = await site.as_("duty", f"/api/channels/{gate.id}/downloads", {"start": start, "end": start + 4})
    assert status == 200, body
    download = site.service.downloads.get(body["id"])
    final = (await site.until_finished("duty", body["id"]))[-1]
    assert download is not None
    assert final["state"] == "done" and final["end_reason"] == "complete", (final, download.frames, download.received)
    assert download is not None and download.session is not None
    assert download.session.state.value == "closed", "we hung up (BYE answered)"
