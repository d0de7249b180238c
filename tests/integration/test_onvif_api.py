"""``/api/onvif``: scoped to the installers (运维, 市级管理员), audited with the host, the password never echoed."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from gateway.security.accounts import ApiToken, secret_digest
from gateway.security.principal import Role
from tests.conftest import TEST_TOKEN_GRANT, GatewayFactory, http_json
from tests.onvif_camera import CameraFactory

PASSWORD = "admin12345"


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
