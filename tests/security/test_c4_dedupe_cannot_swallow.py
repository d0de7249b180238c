"""C4: forged alarms cannot make a real press a "repeat".

The attack: 60 forged one-button alarms for a known alarm box, one per second of AlarmTime
covering the next minute, all resolved through the API; then the box's real press within that
minute. It must become a new alarm and reach the police (MQTT), not be answered as a repeat of
a forged, resolved one. Real sockets: gateway, Mosquitto, the simulated box, a bare SIP UA.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from simulators.fleet import alarm_device_of
from simulators.mosquitto import MosquittoBroker
from tests.conftest import http_json, wait_for
from tests.security.alarm_ua import AlarmUa, gb_time
from tests.security.test_c3_forged_alarm_held_from_police import PoliceTopic


async def test_sixty_forged_resolved_alarms_cannot_swallow_the_real_press(
    mosquitto: MosquittoBroker, gateway_factory: Any, fleet_factory: Any
) -> None:
    service = await gateway_factory(mqtt=mosquitto.url)
    api = f"http://127.0.0.1:{service.http_port}"
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    box = alarm_device_of(fleet.city[0], "button")
    source = next(c.id for c in box.channels if c.kind == "alarm")
    forger = await AlarmUa(service.sip_port, gateway_id=service.config.id, realm=service.config.domain).open()
    try:
        start = datetime.now()
        statuses = await asyncio.gather(
            *(
                forger.alarm(box.id, sn=5000 + i, source_id=source, alarm_time=gb_time(start + timedelta(seconds=i)))
                for i in range(61)
            )
        )
        assert all(s is not None for s in statuses)
        status, listed = await http_json(f"{api}/api/alarms?limit=1000")
        # every forged one is an alarm or a counted repeat of one (a rate limit may collapse them)
        assert sum(1 + a.get("repeats", 0) for a in listed["items"]) == 61
        forged = listed["total"]
        for alarm in listed["items"]:
            status, body = await http_json(f"{api}/api/alarms/{alarm['id']}/resolve", {"user": "attacker"})
            assert status == 200, body
        async with PoliceTopic(mosquitto) as police:
            record = fleet.press(0, "button")  # the real press, within the forged minute
            assert start <= record.wall <= start + timedelta(seconds=60)
            assert await wait_for(lambda: record.answered, 30)
            assert await wait_for(
                lambda: any(m.get("device", {}).get("sn") == record.sn for m in police.messages), 30
            ), "the real press never reached the police"
        status, listed = await http_json(f"{api}/api/alarms?limit=1000")
        assert listed["total"] == forged + 1  # a new alarm, not a repeat
        real = [a for a in listed["items"] if a["state"] != "resolved"]
        assert len(real) == 1 and real[0]["device_id"] == box.id
    finally:
        forger.close()
