"""``/api/onvif``: scoped to the installers (运维, 市级管理员), audited with the host, the password never echoed."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from gateway.registry.model import Kindergarten
from gateway.rtsp.model import CameraState
from gateway.rtsp.puller import PullerTiming
from gateway.security.accounts import ApiToken, secret_digest
from gateway.security.principal import Role
from tests.conftest import TEST_TOKEN_GRANT, GatewayFactory, http_json, wait_for
from tests.onvif_camera import CameraFactory
from tests.rtsp_server import RtspServerFactory

PASSWORD = "admin12345"
KG = Kindergarten("12010100112160012300", "和平区第一幼儿园", "120101", "和平路 1 号")


def _grant(role: Role, district: str | None = None) -> tuple[dict[str, str], ApiToken]:
    secret = f"kgw_onvif_{role.value}_" + secrets.token_urlsafe(16)
    return {"Authorization": f"Bearer {secret}"}, ApiToken(f"onvif-{role.value}", secret_digest(secret), role, district)


async def test_discover_and_profiles_through_the_api(
    gateway_factory: GatewayFactory, onvif_camera: CameraFactory
) -> None:
    maintenance, maintenance_grant = _grant(Role.MAINTENANCE)
    duty, duty_grant = _grant(Role.DISTRICT_DUTY, "120101")
    police, police_grant = _grant(Role.POLICE)
    gateway = await gateway_factory(api_tokens=(TEST_TOKEN_GRANT, maintenance_grant, duty_grant, police_grant))
    camera = await onvif_camera(rtsp_url="rtsp://127.0.0.1:18554/kg/gate", manufacturer="HIKVISION")
    base = f"http://127.0.0.1:{gateway.http_port}/api/onvif"

    for headers in (duty, police):  # may not make the gateway probe a network
        status, _ = await http_json(f"{base}/discover", {"host": "127.0.0.1"}, headers=headers)
        assert status == 403
    status, _ = await http_json(f"{base}/profiles", {"xaddr": camera.xaddr}, headers={})
    assert status == 401

    status, found = await http_json(
        f"{base}/discover", {"host": "127.0.0.1", "port": camera.discovery_port, "timeout": 5}, headers=maintenance
    )
    assert status == 200, found
    assert found["mode"] == "unicast"
    assert [d["xaddrs"] for d in found["devices"]] == [[camera.xaddr]]

    request = {"xaddr": camera.xaddr, "username": "admin", "password": PASSWORD}
    status, profiles = await http_json(f"{base}/profiles", request, headers=maintenance)
    assert status == 200, profiles
    assert profiles["manufacturer"] == "HIKVISION"
    assert [(p["token"], p["rtsp_uri"]) for p in profiles["profiles"]] == [
        ("Profile_1", "rtsp://127.0.0.1:18554/kg/gate"),
        ("Profile_2", "rtsp://127.0.0.1:18554/kg/gate"),
    ]

    wrong = {**request, "password": "not-" + PASSWORD}
    status, refused = await http_json(f"{base}/profiles", wrong, headers=maintenance)
    assert (status, refused) == (422, {"error": "用户名或密码错误,摄像机拒绝访问", "kind": "auth"})
    status, bad = await http_json(f"{base}/profiles", {"xaddr": "file:///etc/passwd"}, headers=maintenance)
    assert status == 400 and bad["kind"] == "address"
    status, bad = await http_json(f"{base}/discover", {"host": "239.255.255.250"}, headers=maintenance)
    assert status == 400 and bad["kind"] == "address"
    assert PASSWORD not in json.dumps([found, profiles, refused])

    records: list[dict[str, Any]] = []

    def audited() -> bool:
        return sum(1 for r in records if (r.get("detail") or {}).get("op", "").startswith("onvif")) >= 5

    async def fetch() -> bool:
        status, page = await http_json(f"http://127.0.0.1:{gateway.http_port}/api/audit?action=provisioning&limit=100")
        records[:] = page["items"] if status == 200 and isinstance(page, dict) else []
        return audited()

    for _ in range(200):  # the trail writes in the background: poll the API (wait_for takes a sync predicate)
        if await fetch():
            break
        await asyncio.sleep(0.1)
    assert audited(), records
    onvif = [r for r in records if (r.get("detail") or {}).get("op", "").startswith("onvif")]
    by_outcome = {(r["detail"]["op"], r["outcome"], r["target"]) for r in onvif}
    origin = f"http://127.0.0.1:{camera.http_port}"
    assert ("onvif discover", "ok", "127.0.0.1") in by_outcome
    assert ("onvif profiles", "ok", origin) in by_outcome
    assert ("onvif profiles", "http_422", origin) in by_outcome
    assert ("onvif profiles", "http_400", "file:///etc/passwd") in by_outcome
    assert all(r["actor"] == "onvif-maintenance" for r in onvif)
    assert PASSWORD not in json.dumps(onvif)
    status, page = await http_json(f"http://127.0.0.1:{gateway.http_port}/api/audit?action=access_denied&limit=100")
    refusals = {(r["actor"], r["target"]) for r in page["items"]}
    assert {("onvif-district_duty", "/api/onvif/discover"), ("onvif-police", "/api/onvif/discover")} <= refusals


async def test_a_discovered_profile_added_through_the_api_becomes_an_rtsp_camera(
    gateway_factory: GatewayFactory, onvif_camera: CameraFactory, rtsp_server_factory: RtspServerFactory
) -> None:
    """Discover → profiles → ``POST /api/rtsp-cameras`` with the profile's URI and the same login → 在线."""
    server = rtsp_server_factory(user="admin", password=PASSWORD)  # the camera's RTSP side, same login as ONVIF
    camera = await onvif_camera(rtsp_url=server.url, password=PASSWORD)
    service = await gateway_factory()
    await service.provisioning.add_kindergartens([KG])
    service.rtsp.timing = PullerTiming(
        backoff_base=0.2, backoff_cap=1.0, refused_retry=3600.0, open_timeout=5.0, read_timeout=3.0
    )
    base = f"http://127.0.0.1:{service.http_port}/api"

    status, found = await http_json(f"{base}/onvif/discover", {"host": "127.0.0.1", "port": camera.discovery_port})
    assert status == 200, found
    (device,) = found["devices"]
    login = {"username": "admin", "password": PASSWORD}
    status, profiles = await http_json(f"{base}/onvif/profiles", {"xaddr": device["xaddrs"][0], **login})
    assert status == 200, profiles
    main = profiles["profiles"][0]
    body = {"kindergarten_id": KG.id, "name": "大门口", "area": "entrance", "url": main["rtsp_uri"], **login}
    status, added = await http_json(f"{base}/rtsp-cameras", body)
    assert status == 201, added
    assert added["url"] == server.url and added["has_password"] is True
    channel_id = added["channel_id"]
    assert await wait_for(lambda: service.rtsp.camera(channel_id)[1].state is CameraState.ONLINE, 30)
    assert channel_id in service.directory.channels
