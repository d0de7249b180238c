"""Alarms to the police integration over a real Mosquitto: payload, outage, SIGKILL, credentials."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.gb28181.sip.transport import Transport
from simulators.fleet import Fleet, FleetOptions
from simulators.mosquitto import MosquittoBroker
from simulators.police_receiver import PoliceReceiver
from tests.conftest import free_sip_port, http_json, wait_for
from tests.processes import Proc, free_tcp_port, until_json

RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def _registered(fleet: Any, service: Any = None) -> None:
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    if service is not None:
        assert await wait_for(lambda: all(s.reported for s in service.directory.devices.values()), 60)


async def _broker_delivered_everything(broker: MosquittoBroker, police: PoliceReceiver) -> None:
    """Wait until every message the broker acknowledged so far has reached ``police``.

    A marker (a valid payload, event "escalated", so it is no alarm id) is published after
    them; the broker queues a subscriber's messages in order, so once the marker is there,
    so is everything published before it.
    """
    marker = f"marker-{uuid.uuid4().hex}"
    payload = {
        "schema": 1,
        "event": "escalated",
        "alarm_id": marker,
        "received_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "kindergarten": {},
        "device": {},
    }
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"test-{marker}") as client:
        await client.publish("kgw/alarms/test/marker", json.dumps(payload).encode(), qos=1)
    assert await wait_for(lambda: (marker, "escalated") in police.stats["mqtt"].seen, 60), police.report()


async def test_button_press_reaches_an_mqtt_subscriber_with_the_documented_payload(
    mosquitto: MosquittoBroker, gateway_factory: Any, fleet_factory: Any
) -> None:
    service = await gateway_factory(mqtt=mosquitto.url)
    fleet = await fleet_factory(service, kindergartens=2, cameras=(2, 2))
    await _registered(fleet, service)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-police") as client:
        await client.subscribe("kgw/alarms/#", qos=1)
        kg = fleet.city[1]
        record = fleet.press(kg.id, "button")
        message = await asyncio.wait_for(anext(aiter(client.messages)), 30)
    assert str(message.topic) == f"kgw/alarms/{kg.district_code}/{kg.id}"
    assert message.qos == 1
    payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
    assert payload["schema"] == 1 and payload["event"] == "alarm"
    assert re.fullmatch(r"[0-9a-f]{32}", payload["alarm_id"])
    assert RFC3339_MS.fullmatch(payload["received_at"])
    assert payload["kindergarten"]["name"] == kg.name and payload["kindergarten"]["address"] == kg.address
    assert payload["kindergarten"]["longitude"] == kg.longitude
    assert payload["device"]["id"] == record.device_id and payload["device"]["sn"] == record.sn
    assert payload["kind"] == "one_button" and payload["priority"] == 1 and payload["kind_name"]
    assert payload["device_time"] == record.alarm_time
    assert payload["live"]["url"].endswith("/live/" + payload["live"]["channel_id"])
    assert await wait_for(lambda: service.alarms.sinks["mqtt"].up is True, 30)  # the PUBACK may trail the message
    status, sinks = await http_json(f"http://127.0.0.1:{service.http_port}/api/alarm-sinks")
    assert sinks["items"][0]["sink"] == "mqtt" and sinks["items"][0]["up"] is True


async def test_broker_outage_alarms_wait_in_the_outbox_and_arrive_in_order(
    mosquitto: MosquittoBroker, gateway_factory: Any, fleet_factory: Any
) -> None:
    service = await gateway_factory(mqtt=mosquitto.url, alarm_retry_cap=0.5)
    fleet = await fleet_factory(service, kindergartens=3, cameras=(2, 2))
    await _registered(fleet, service)
    police = PoliceReceiver(mosquitto.url, client_id="police-outage", persistent=True)
    await police.start()
    try:
        await mosquitto.stop()
        pressed = []
        for kind in ("button", "perimeter", "video_loss", "tamper", "disk_fault"):
            for kg in fleet.city:
                with contextlib.suppress(LookupError):  # not every kindergarten has a perimeter detector
                    pressed.append((kg.id, fleet.press(kg.id, kind)))
            # every press is stored and answered while the broker is away; the next kind is
            # pressed after that, so per kindergarten the gateway's order is the pressing order
            assert await wait_for(lambda: all(r.answered for _, r in pressed), 30)
        assert await wait_for(lambda: service.alarms.outbox.depth("mqtt") == len(pressed), 30)
        # Deliveries were attempted (and failed) meanwhile: at least one per kindergarten.
        sink = service.alarms.sinks["mqtt"]
        assert await wait_for(lambda: sum(sink.errors.values()) >= len(fleet.city), 30), sink.errors
        assert police.report()["mqtt"]["received"] == 0
        assert service.alarms.outbox.depth("mqtt") == len(pressed)  # kept for later
        await mosquitto.restart()
        assert await wait_for(lambda: len(police.alarm_ids("mqtt")) == len(pressed), 60)
    finally:
        await police.stop()
    assert police.report()["mqtt"]["invalid"] == 0
    # per kindergarten, the police see them in the order they were pressed
    status, listed = await http_json(f"http://127.0.0.1:{service.http_port}/api/alarms?limit=1000")
    seq_of = {a["id"]: a["seq"] for a in listed["items"]}
    kg_of = {a["id"]: a["kindergarten_id"] for a in listed["items"]}
    arrived = police.alarm_ids("mqtt")
    for kg in fleet.city:
        seqs = [seq_of[i] for i in arrived if kg_of[i] == kg.id]
        assert seqs == sorted(seqs) and seqs
    assert listed["total"] == len(pressed)
    assert service.alarms.outbox.depth("mqtt") == 0


async def test_wrong_broker_credentials_keep_alarms_and_say_why(
    mosquitto_factory: Any, gateway_factory: Any, fleet_factory: Any
) -> None:
    broker = await mosquitto_factory(users={"gateway": "right"})
    service = await gateway_factory(mqtt=broker.url_for("gateway", "wrong"), alarm_retry_cap=0.3)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    await _registered(fleet)
    record = fleet.press(0, "button")
    assert await wait_for(lambda: record.answered, 30)
    assert await wait_for(lambda: service.alarms.sinks["mqtt"].errors.get("not_authorised", 0) >= 2, 30)
    assert service.alarms.outbox.depth("mqtt") == 1  # kept, still retried
    metrics = await asyncio.to_thread(
        lambda: __import__("urllib.request").request.urlopen(f"http://127.0.0.1:{service.http_port}/metrics").read()
    )
    assert b'kgw_alarm_sink_errors_total{reason="not_authorised",sink="mqtt"}' in metrics
    assert b'kgw_alarm_sink_up{sink="mqtt"} 0.0' in metrics


async def test_sigkill_after_answering_loses_nothing_and_duplicates_nothing(
    mosquitto: MosquittoBroker, tmp_path: Path, procs: list[Proc], db_url: str
) -> None:
    """The gateway dies (SIGKILL) with alarms stored but not all delivered; after a restart every
    stored alarm reaches the police exactly once by alarm_id, and no new alarm is made of a repeat.

    Both backends: ``--db`` is a SQLite file, then a PostgreSQL database."""
    sip_port, http_port = free_sip_port(), free_tcp_port()
    args = [
        "gateway",
        "--sip-port",
        str(sip_port),
        "--http-port",
        str(http_port),
        "--db",
        db_url,
        "--mqtt",
        mosquitto.url,
        "--log-level",
        "INFO",
    ]
    api = f"http://127.0.0.1:{http_port}"
    first = Proc("gateway-1", args, tmp_path)
    procs.append(first)
    await until_json(f"{api}/healthz", lambda body: True, first)
    police = PoliceReceiver(mosquitto.url, client_id="police-sigkill", persistent=True)
    await police.start()
    fleet = Fleet(
        FleetOptions(gateway_port=sip_port, kindergartens=6, cameras=(2, 2), api=api, transport=Transport.UDP)
    )
    await fleet.start()
    gateways = [first]

    async def restart(name: str) -> Proc:
        proc = Proc(name, args, tmp_path)
        procs.append(proc)
        gateways.append(proc)
        await until_json(f"{api}/healthz", lambda body: True, proc)
        return proc

    async def kill_current() -> None:
        gateways[-1].popen.send_signal(signal.SIGKILL)
        await asyncio.to_thread(gateways[-1].popen.wait, 10)

    try:
        await _registered(fleet)
        # 1. killed in the race: the broker is up, the gateway dies right after answering
        racing = fleet.press_all("tamper")
        assert await wait_for(lambda: all(r.answered for r in racing), 30)
        await kill_current()
        await restart("gateway-2")
        assert await wait_for(lambda: len(police.alarm_ids("mqtt")) >= len(racing), 60), police.report()
        # 2. killed with everything still in the outbox: the broker is down meanwhile
        await mosquitto.stop()
        waiting = fleet.press_all("button")
        # New events whatever the wall-clock second: a dedupe key starts with the source's ID,
        # and the buttons (alarm boxes) are other sources than the tampered cameras.
        assert not {r.source_id for r in waiting} & {r.source_id for r in racing}
        assert await wait_for(lambda: all(r.answered for r in waiting), 30)
        await kill_current()
        assert len(police.alarm_ids("mqtt")) == len(racing)  # none of the second batch got out
        await mosquitto.restart()
        second = await restart("gateway-3")
        stored = len(racing) + len(waiting)
        assert await wait_for(lambda: len(police.alarm_ids("mqtt")) >= stored, 60), police.report()
        # Anything extra would be in the restarted gateway's outbox: wait until it is empty,
        # then until the broker has handed the police everything it acknowledged.
        await until_json(f"{api}/api/alarm-sinks", lambda body: body["items"][0]["depth"] == 0, second)
        await _broker_delivered_everything(mosquitto, police)
        listed = await until_json(f"{api}/api/alarms?limit=1000", lambda body: body["total"] >= stored, second)
    finally:
        await police.stop()
        await fleet.stop(unregister=False)
    ids = police.alarm_ids("mqtt")
    assert len(ids) == len(set(ids)) == stored  # every stored alarm, once per alarm_id
    assert listed["total"] == stored  # no alarm was made twice
    assert set(ids) == {a["id"] for a in listed["items"]}
    assert police.report()["mqtt"]["invalid"] == 0
    assert fleet.alarm_summary()["unanswered"] == 0
