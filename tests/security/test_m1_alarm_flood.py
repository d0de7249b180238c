"""M1: a flood of alarms from one kindergarten's device cannot delay its one-button press.

500 tamper alarms claiming kindergarten 0's NVR, each with its own SN and AlarmTime, arrive as
fast as a bare SIP user agent can send them (from the NVR's host: until the SIP core binds
sessions to their address they are believed; a broken or hijacked device, which no address
check can refuse, looks the same), while the police webhook takes 40 ms per alarm. Then the kindergarten's alarm box is pressed:
it must reach the webhook within 3 s (it waited behind the whole flood, strict per-kindergarten
order, before), escalations must be per alarm and bounded, every message is answered, and the
collapsed repeats are counted on the alarm. Another kindergarten's press is not delayed either.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from simulators.fleet import alarm_device_of
from tests.conftest import free_ports, http_json, wait_for
from tests.security.alarm_ua import AlarmUa, gb_time

FLOOD = 500
WEBHOOK_DELAY = 0.04


class SlowWebhook:
    """A webhook receiver that takes ``WEBHOOK_DELAY`` per POST and notes when each alarm arrived."""

    def __init__(self) -> None:
        self.arrived: dict[tuple[str, int], float] = {}  # (device id, SN) of event "alarm" -> monotonic time
        self.escalations = 0
        self.runner: web.AppRunner | None = None
        self.port = free_ports(1)

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        await asyncio.sleep(WEBHOOK_DELAY)
        if payload["event"] == "alarm":
            self.arrived[(payload["device"]["id"], payload["device"]["sn"])] = time.monotonic()
        else:
            self.escalations += 1
        return web.json_response({"ok": True})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/alarms", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return f"http://127.0.0.1:{self.port}/alarms"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_a_flood_from_one_kindergarten_does_not_delay_its_one_button_press(
    gateway_factory: Any, fleet_factory: Any
) -> None:
    webhook = SlowWebhook()
    url = await webhook.start()
    try:
        service = await gateway_factory(webhook_url=url, webhook_secret="s", alarm_escalate_after=2.0)
        fleet = await fleet_factory(service, kindergartens=2, cameras=(2, 2))
        assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
        nvr = alarm_device_of(fleet.city[0], "tamper")
        camera = next(c.id for c in nvr.channels if c.kind == "camera")
        flooder = await AlarmUa(service.sip_port, gateway_id=service.config.id, realm=service.config.domain).open()
        start = datetime.now()

        async def one(i: int) -> int | None:
            return await flooder.alarm(
                nvr.id,
                sn=10_000 + i,
                source_id=camera,
                method="2",
                priority="3",
                alarm_type="2",
                alarm_time=gb_time(start + timedelta(seconds=i)),
                description="设备防拆报警",
            )

        flood = asyncio.gather(*(one(i) for i in range(FLOOD)))
        assert await wait_for(
            lambda: service.alarms.counters["received"] + service.alarms.counters.get("repeats", 0) >= FLOOD // 2, 60
        )
        pressed = time.monotonic()
        button = fleet.press(0, "button")
        other = fleet.press(1, "button")
        assert await wait_for(lambda: (button.device_id, button.sn) in webhook.arrived, 60)
        took = webhook.arrived[(button.device_id, button.sn)] - pressed
        assert took < 3.0, f"the one-button press reached the webhook after {took:.1f} s behind the flood"
        assert await wait_for(lambda: (other.device_id, other.sn) in webhook.arrived, 30)
        assert webhook.arrived[(other.device_id, other.sn)] - pressed < 3.0
        # Every message of the flood is answered (the device must not retry for ever) ...
        statuses = await asyncio.wait_for(flood, 120)
        assert all(s is not None for s in statuses)
        flooder.close()
        # ... and nothing is dropped silently: each became an alarm or a counted repeat of one.
        status, listed = await http_json(f"http://127.0.0.1:{service.http_port}/api/alarms?limit=1000")
        tamper = [a for a in listed["items"] if a["kind"] == "tamper"]
        assert sum(1 + a.get("repeats", 0) for a in tamper) == FLOOD
        assert len(tamper) <= 40, f"{len(tamper)} separate alarms for one flood"
        # Escalations are per alarm, not per repeat: wait until every open alarm escalated.
        assert await wait_for(lambda: service.alarms.counters["escalated"] >= len(tamper), 60)
        assert service.alarms.counters["escalated"] <= len(tamper) + 2
    finally:
        await webhook.stop()
