"""喊话 through the cascade: a municipal platform's staff speak to a kindergarten behind the gateway.

The platform (``kgw platform``) sends ``Notify/Broadcast`` to the gateway (its lower platform);
the gateway answers, INVITEs the platform for the audio like a device, and relays the PCMA to
the camera's device through its own broadcast. The police platform is refused (Result ERROR).
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCSessionDescription

from tests.conftest import http_json, wait_for
from tests.integration.test_broadcast import TONE_HZ, _speaker
from tests.integration.test_cascade_live import CLASSROOM, ENTRANCE, _cascade


async def test_municipal_platform_speaks_through_the_gateway(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    gateway, fleet, platforms = await _cascade(
        gateway_factory, platform_factory, fleet_factory, ("municipal", "police")
    )
    device_id = next(a.profile.device_id for a in fleet.agents.values() if a.owns(CLASSROOM))
    municipal = f"http://127.0.0.1:{platforms['municipal'].http_port}"
    pc, offer = await _speaker()
    try:
        status, body = await http_json(f"{municipal}/api/channels/{CLASSROOM}/broadcast", {"sdp": offer})
        assert status == 200, body
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))

        def heard() -> bool:
            report = fleet.heard(device_id)
            return report is not None and report.get("duration", 0) >= 1.0

        assert await wait_for(heard, timeout=30), fleet.heard(device_id)
        report = fleet.heard(device_id)
        assert abs(report["dominant_hz"] - TONE_HZ) < 15, report
        speaking = gateway.broadcasts.active[device_id]
        assert speaking.speaker == "上级平台 municipal"  # who speaks, as the gateway's own staff would see it

        # The police platform may not broadcast, even to a camera it is shared.
        police = f"http://127.0.0.1:{platforms['police'].http_port}"
        other, other_offer = await _speaker()
        try:
            status, refused = await http_json(f"{police}/api/channels/{ENTRANCE}/broadcast", {"sdp": other_offer})
            assert status == 502 and "拒绝" in refused["error"], refused
        finally:
            await other.close()

        # The gateway's own staff find the device busy, and are told who speaks.
        local = f"http://127.0.0.1:{gateway.http_port}"
        third, third_offer = await _speaker()
        try:
            status, busy = await http_json(f"{local}/api/channels/{CLASSROOM}/broadcast", {"sdp": third_offer})
            assert status == 409 and busy["speaker"] == "上级平台 municipal", busy
        finally:
            await third.close()

        status, _ = await http_json(f"{municipal}/api/channels/{CLASSROOM}/broadcast", method="DELETE")
        assert status == 200
        assert await wait_for(lambda: not gateway.broadcasts.active, timeout=20)  # the upper's BYE reached the device
        assert await wait_for(lambda: fleet.heard(device_id)["ended"] == "platform_bye", timeout=20)
    finally:
        await pc.close()
