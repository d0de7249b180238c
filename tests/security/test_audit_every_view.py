"""Audit of every view (issue 10 ★): each live view, snapshot and WebRTC session is an audit record.

A started gateway (real sockets, a simulated camera) is watched by a 区级值班员
(live open/close, a snapshot) and a 公安 user (a WebRTC session): the trail holds
who, role, source address, what, when and how long, police views are marked, the
audit page is refused to anyone but a 市级管理员, and after the gateway stopped
``kgw audit verify`` finds the chain intact in the node's database file.

Each user is a real API token of the node (``Authorization: Bearer``), so the
principal is the one the authentication middleware makes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from gateway.config import load_config
from gateway.security.accounts import ApiToken, secret_digest
from gateway.security.principal import Role
from gbplatform.app import build_gateway
from tests.conftest import TEST_TOKEN_GRANT, wait_for
from tests.processes import KGW, ROOT


def _token(name: str, role: Role, district: str | None = None) -> tuple[str, ApiToken]:
    """A real API token of the node (Authorization: Bearer): the auth middleware makes the principal."""
    secret = f"kgw_audit_test_{name}_" + secrets.token_urlsafe(16)
    return secret, ApiToken(name, secret_digest(secret), role, district_code=district)


ADMIN, _ADMIN_GRANT = _token("admin", Role.CITY_ADMIN)
DUTY, _DUTY_GRANT = _token("li", Role.DISTRICT_DUTY, "120116")  # the fleet's one kindergarten: 滨海新区
POLICE, _POLICE_GRANT = _token("wang", Role.POLICE)
GRANTS = (TEST_TOKEN_GRANT, _ADMIN_GRANT, _DUTY_GRANT, _POLICE_GRANT)  # the fleet provisions with the first


async def call(url: str, user: str, data: Any = None, method: str | None = None) -> tuple[int, bytes]:
    def run() -> tuple[int, bytes]:
        body = None if data is None else json.dumps(data).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {user}"}
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    return await asyncio.to_thread(run)


async def audit_items(api: str, **query: str) -> list[dict[str, Any]]:
    q = "&".join(f"{k}={v}" for k, v in {"limit": "1000", **query}.items())
    status, body = await call(f"{api}/api/audit?{q}", ADMIN)
    assert status == 200, body
    return list(json.loads(body)["items"])


def camera_channel(fleet: Any) -> str:
    for kindergarten in fleet.city:
        for device in kindergarten.devices:
            for channel in device.channels:
                if channel.kind == "camera" and channel.area == "entrance":  # police may watch it
                    return str(channel.id)
    raise AssertionError("no camera in the simulated kindergarten")


async def test_every_view_is_an_audit_record_with_who_role_source_and_duration(
    tmp_path: Path, started_nodes: list[Any], fleet_factory: Any
) -> None:
    db = tmp_path / "kgw.db"
    config = load_config(None, sip_port=0, http_port=0, db=str(db), flush_interval=0.2, api_tokens=GRANTS)
    service = build_gateway(config)
    await service.start()
    started_nodes.append(service)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id = camera_channel(fleet)
    assert channel_id.startswith("120116"), "the duty officer's district is the kindergarten's"
    assert await wait_for(lambda: getattr(service.directory.channels.get(channel_id), "online", False), timeout=60)
    api = f"http://127.0.0.1:{service.http_port}"

    # A 区级值班员 opens the live stream, takes a snapshot, closes the stream.
    status, body = await call(f"{api}/api/channels/{channel_id}/live", DUTY, data={}, method="POST")
    assert status == 200, body
    status, jpeg = await call(f"{api}/api/channels/{channel_id}/snapshot.jpg", DUTY)
    assert status == 200 and jpeg[:2] == b"\xff\xd8"
    status, body = await call(f"{api}/api/channels/{channel_id}/live", DUTY, method="DELETE")
    assert status == 200, body

    # A 公安 user watches over WebRTC, then hangs up.
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver("video", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    status, body = await call(f"{api}/api/channels/{channel_id}/webrtc", POLICE, {"sdp": client.localDescription.sdp})
    assert status == 200, body
    await client.setRemoteDescription(RTCSessionDescription(sdp=json.loads(body)["sdp"], type="answer"))
    assert await wait_for(lambda: client.connectionState == "connected", timeout=30)
    await client.close()

    # Only a 市级管理员 reads the trail.
    status, body = await call(f"{api}/api/audit", DUTY)
    assert status == 403, body
    status, body = await call(f"{api}/api/audit/export.csv", POLICE)
    assert status == 403, body

    views = await audit_items(api, target=channel_id)
    by_action = {(r["action"], r["detail"].get("op")): r for r in views}
    opened = by_action[("live_view", "open")]
    closed = by_action[("live_view", "close")]
    snap = by_action[("snapshot", None)]
    for record in (opened, closed, snap):
        assert record["actor"] == "li" and record["role"] == "district_duty" and record["role_name"] == "区级值班员"
        assert record["source"] == "127.0.0.1" and record["outcome"] == "ok" and record["ts"] > 0
    assert closed["duration"] is not None and closed["duration"] > 0, closed
    started = by_action[("webrtc_session", "start")]
    assert started["actor"] == "wang" and started["role"] == "police" and started["police"] is True
    assert started["source"] == "127.0.0.1" and started["outcome"] == "started"

    async def webrtc_ended() -> dict[str, Any] | None:
        items = await audit_items(api, target=channel_id, action="webrtc_session")
        return next((r for r in items if r["detail"].get("op") == "end"), None)

    ended = None
    deadline = asyncio.get_running_loop().time() + 60
    while ended is None and asyncio.get_running_loop().time() < deadline:
        ended = await webrtc_ended()
        if ended is None:
            await asyncio.sleep(0.2)
    assert ended is not None, "the WebRTC session's end (with its duration) is recorded"
    assert ended["actor"] == "wang" and ended["police"] is True and ended["duration"] > 0

    refused = await audit_items(api, action="access_denied")
    assert {r["actor"] for r in refused} == {"li", "wang"}, refused

    # The chain in the node's database file is intact once the node stopped.
    await service.stop()
    result = subprocess.run(
        [*KGW, "audit", "verify", "--db", str(db)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "chain intact" in result.stdout


async def test_police_live_view_through_the_cascade_is_recorded_and_marked(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any, monkeypatch: Any
) -> None:
    from gateway import live as live_module
    from gateway.audit.store import AuditFilter
    from tests.integration.test_cascade_live import ENTRANCE, PLATFORM_IDS, _cascade, _decode

    monkeypatch.setattr(live_module, "LINGER", 0.3)
    gateway, _fleet, platforms = await _cascade(gateway_factory, platform_factory, fleet_factory, ("police",))
    police = platforms["police"]
    assert police.live is not None
    stream, viewer = await police.live.watch(ENTRANCE)
    assert len(await _decode(stream, viewer, 3)) >= 3
    police.live.leave(ENTRANCE, viewer)  # linger, then the police platform's BYE ends the call

    async def views() -> list[Any]:
        page = await gateway.audit.page(AuditFilter(action="upper_live_view", target=ENTRANCE))
        return page.items

    deadline = asyncio.get_running_loop().time() + 60
    records = await views()
    while len(records) < 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        records = await views()
    assert len(records) == 2, records
    ended, started = (r.entry for r in records)
    for entry in (started, ended):
        assert entry.actor == PLATFORM_IDS["police"] and entry.role == "police" and entry.via == "upper_platform"
        assert entry.source == f"127.0.0.1:{police.sip_port}"
        assert json.loads(entry.detail)["police"] is True and json.loads(entry.detail)["level"] == "police"
    assert started.outcome == "started" and started.duration is None
    assert ended.duration is not None and ended.duration > 0
