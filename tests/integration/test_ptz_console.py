"""The console's PTZ pad in headless Chromium: holding a direction moves the simulated camera, releasing stops it."""

from __future__ import annotations

import asyncio
import json

from gateway.gb28181.device_ptz import PtzCameras
from gateway.gb28181.manscdp.control import PtzControl
from simulators.city import build_city
from simulators.video import VideoProfile
from tests.conftest import TEST_ADMIN, add_user, wait_for
from tests.integration.test_console_chromium import _poll, chromium_page

CITY = build_city(1, seed=2020, cameras_per_kindergarten=(3, 3))
_CAMERAS = {c.area: c.id for d in CITY[0].devices for c in d.channels if c.kind == "camera"}
ENTRANCE, CLASSROOM = _CAMERAS["entrance"], _CAMERAS["classroom"]
PAD_SHOWN = "(() => { const p = document.getElementById('ptz-pad'); return p && !p.hidden; })()"


def _pointer(action: str, kind: str) -> str:
    selector = json.dumps(f'#ptz-pad button[data-action="{action}"]')
    return (
        f"(() => {{ const b = document.querySelector({selector}); if (!b) return false;"
        f" b.dispatchEvent(new PointerEvent({json.dumps(kind)}, {{bubbles: true, pointerId: 1}})); return true; }})()"
    )


async def test_holding_a_direction_moves_the_camera_and_release_stops_it(gateway_factory, fleet_factory):
    service = await gateway_factory()
    await add_user(service, *TEST_ADMIN)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(3, 3), video=VideoProfile(width=320, height=180))
    camera = next(a for a in fleet.agents.values() if ENTRANCE in {c.device_id for c in a.profile.channels})
    feature = next(f for f in camera.features if isinstance(f, PtzCameras))

    def ready() -> bool:
        channel = service.directory.channels.get(ENTRANCE)
        return channel is not None and channel.online and channel.ptz_type == 1

    assert await wait_for(ready, 60)
    base = f"http://127.0.0.1:{service.http_port}"
    async with asyncio.timeout(100), chromium_page(f"{base}/live/{ENTRANCE}") as (cdp, session, _log):
        await _poll(cdp, session, PAD_SHOWN, bool, what="the PTZ pad of the entrance ball camera")
        # A fixed camera in the selected cell: no pad.
        await cdp.evaluate(session, f"window.kgwConsole.play({json.dumps(CLASSROOM)}, '', 0)")
        await _poll(cdp, session, PAD_SHOWN, lambda shown: shown is False, what="no pad for a fixed camera")
        await cdp.evaluate(session, f"window.kgwConsole.play({json.dumps(ENTRANCE)}, '', 0)")
        await _poll(cdp, session, PAD_SHOWN, bool, what="the pad again")

        before = feature.received_total
        assert await cdp.evaluate(session, _pointer("right", "pointerdown"))
        assert await wait_for(lambda: feature.moving(ENTRANCE), 20), "the held button's move reached the camera"
        move = feature.received[-1].command
        assert isinstance(move, PtzControl) and move.command.pan == 1 and move.command.data1 == 128
        assert await cdp.evaluate(session, _pointer("right", "pointerup"))
        assert await wait_for(lambda: not feature.moving(ENTRANCE), 20), "the release's stop reached the camera"
        stop = feature.received[-1].command
        assert isinstance(stop, PtzControl) and stop.command.is_stop
        # Leaving the button while holding it stops too (and only once).
        assert await cdp.evaluate(session, _pointer("zoom_in", "pointerdown"))
        assert await wait_for(lambda: feature.moving(ENTRANCE), 20)
        assert await cdp.evaluate(session, _pointer("zoom_in", "pointerleave"))
        assert await cdp.evaluate(session, _pointer("zoom_in", "pointerup"))
        assert await wait_for(lambda: not feature.moving(ENTRANCE), 20)
        sent = await cdp.evaluate(session, "window.kgwPtz.sent.map((s) => s.action)")
        assert sent == ["right", "stop", "zoom_in", "stop"], sent
        assert await wait_for(lambda: feature.received_total == before + 4, 20)
        assert not cdp.page_errors(), cdp.page_errors()
