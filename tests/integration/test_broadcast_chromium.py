"""喊话 in the console: headless Chromium's fake microphone (a 1 kHz tone file) reaches the simulated device.

The console opens a camera in cell 1 (``/live/{id}``), the test holds the 喊话 button with
DevTools mouse events (pointerdown → getUserMedia + offer + POST /broadcast), waits until
the device's speaker reports the tone, then lets go (pointerup → DELETE → BYE).
"""

from __future__ import annotations

import asyncio
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import TEST_ADMIN, add_user, wait_for
from tests.integration.test_console_chromium import _camera_channel, _online, _poll, chromium_page

TONE_HZ = 1000.0
BUTTON = "(() => { const r = document.getElementById('talk').getBoundingClientRect(); return {x: r.x + r.width / 2, y: r.y + r.height / 2, shown: r.width > 0}; })()"


def _tone_wav(path: Path, hz: float = TONE_HZ, seconds: float = 3.0, rate: int = 48000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


async def _mouse(cdp: Any, session: str, kind: str, x: float, y: float) -> None:
    await cdp.call("Input.dispatchMouseEvent", session, type=kind, x=x, y=y, button="left", clickCount=1)


async def test_hold_talk_in_chromium_reaches_the_device(gateway_factory: Any, fleet_factory: Any) -> None:
    service = await gateway_factory()
    await add_user(service, *TEST_ADMIN)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id = _camera_channel(fleet)
    assert await wait_for(lambda: _online(service, channel_id), timeout=60)
    device_id = service.directory.device_of(channel_id)
    base = f"http://127.0.0.1:{service.http_port}"
    with tempfile.TemporaryDirectory(prefix="kgw-tone-") as tmp:
        tone = Path(tmp) / "tone.wav"
        _tone_wav(tone)
        flags = (
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={tone}",
        )
        async with (
            asyncio.timeout(100),
            chromium_page(f"{base}/live/{channel_id}", extra_flags=flags) as (cdp, session, _log),
        ):
            await _poll(cdp, session, "window.kgwConsole?.cells[0].channelId", lambda v: v == channel_id, what="cell 1")
            button = await _poll(cdp, session, BUTTON, lambda b: b and b["shown"], what="the 喊话 button")
            await _mouse(cdp, session, "mousePressed", button["x"], button["y"])
            talk = await _poll(
                cdp, session, "window.kgwConsole.talk", lambda t: t["state"] in ("talking", "failed"), what="喊话"
            )
            assert talk["state"] == "talking" and talk["speaker"] == TEST_ADMIN[0], talk

            def heard_tone() -> bool:
                report = fleet.heard(device_id)
                return report is not None and report.get("duration", 0) >= 1.0

            assert await wait_for(heard_tone, timeout=30), fleet.heard(device_id)
            report = fleet.heard(device_id)
            assert abs(report["dominant_hz"] - TONE_HZ) < 15 and report["rms"] > 0.05, report
            assert service.broadcasts.active[device_id].speaker == TEST_ADMIN[0]

            await _mouse(cdp, session, "mouseReleased", button["x"], button["y"])
            await _poll(cdp, session, "window.kgwConsole.talk.state", lambda s: s == "idle", what="let go")
            assert await wait_for(lambda: fleet.heard(device_id)["ended"] == "platform_bye", timeout=20)
            assert await wait_for(lambda: not service.broadcasts.active, timeout=20)
