"""Two gateway processes on one database: redirects, the whole city on either console, kill -9 and restart.

A small city (6 kindergartens) registers at gateway A's address only; A serves
the first kindergarten's district, B the others, and A redirects B's devices
(302). Then B is SIGKILLed with an alarm pressed just before: A's console shows
B's devices offline (B's heartbeat went stale), B is started again with the
same flags, its devices are online again within one registration interval
(their keepalives reach the restored sessions; no re-registration needed), and
the alarm is stored once and reaches the police MQTT subscriber once.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from gateway.gb28181.sip.transport import Transport
from simulators.city import build_city
from simulators.fleet import Fleet, FleetOptions
from simulators.mosquitto import MosquittoBroker
from simulators.police_receiver import PoliceReceiver
from tests.conftest import TEST_TOKEN, free_ports, http_json, wait_for
from tests.processes import Proc, until_json

pytestmark = pytest.mark.slow

A_ID, B_ID = "12010000002090000001", "12010000002090000002"
SEED = 2020
KEEPALIVE = 2.0  # s: devices and gateways (offline after 3 missed)


def _gateway_args(
    node: str, gateway_id: str, districts: list[str], peer: str, sip: int, http: int, db: str, mqtt: str
) -> list[str]:
    return [
        "gateway",
        "--node",
        node,
        "--id",
        gateway_id,
        "--districts",
        ",".join(districts),
        "--peer",
        peer,
        "--sip-port",
        str(sip),
        "--http-port",
        str(http),
        "--db",
        db,
        "--mqtt",
        mqtt,
        "--keepalive-interval",
        str(KEEPALIVE),
        "--log-level",
        "INFO",
    ]


def _online(body: dict[str, Any]) -> dict[str, bool]:
    return {d["id"]: d["online"] for d in body["items"]}


@pytest.fixture
def cluster_db(tmp_path: Path) -> str:
    """The database both processes share: one SQLite file (WAL) until the gateway's device credentials, audit
    trail and accounts run on PostgreSQL too (i12-pgalarms); then ``postgres_url`` — the test is the same."""
    return str(tmp_path / "city.db")


async def test_kill_9_one_gateway_process_and_restart_it(
    cluster_db: str, mosquitto: MosquittoBroker, tmp_path: Path, procs: list[Proc]
) -> None:
    city = build_city(6, seed=SEED, cameras_per_kindergarten=(2, 2))
    districts = sorted({kg.district_code for kg in city})
    assert len(districts) >= 2, districts
    a_districts, b_districts = districts[:1], districts[1:]
    b_devices = {d.id for kg in city if kg.district_code in b_districts for d in kg.devices}
    a_devices = {d.id for kg in city if kg.district_code in a_districts for d in kg.devices}
    first = free_ports(4)  # four consecutive free ports: SIP of A and B, then their consoles
    a_sip, b_sip, a_http, b_http = first, first + 1, first + 2, first + 3
    a_args = _gateway_args(
        "a", A_ID, a_districts, f"{','.join(b_districts)}=127.0.0.1:{b_sip}/{B_ID}", a_sip, a_http, cluster_db,
        mosquitto.url,
    )  # fmt: skip
    b_args = _gateway_args(
        "b", B_ID, b_districts, f"{','.join(a_districts)}=127.0.0.1:{a_sip}/{A_ID}", b_sip, b_http, cluster_db,
        mosquitto.url,
    )  # fmt: skip
    a_api, b_api = f"http://127.0.0.1:{a_http}", f"http://127.0.0.1:{b_http}"
    a = Proc("gateway-a", a_args, tmp_path)
    procs.append(a)
    await until_json(f"{a_api}/healthz", lambda body: True, a)  # A first: it migrates the schema
    b = Proc("gateway-b", b_args, tmp_path)
    procs.append(b)
    await until_json(f"{b_api}/healthz", lambda body: True, b)
    police = PoliceReceiver(mosquitto.url, client_id="police-cluster", persistent=True)
    await police.start()
    fleet = Fleet(
        FleetOptions(
            gateway_port=a_sip,  # ONE city address: A's
            gateway_id=A_ID,
            kindergartens=6,
            seed=SEED,
            cameras=(2, 2),
            keepalive_interval=KEEPALIVE,
            expires=60,
            api=a_api,
            also_provision=(b_api,),
            api_token=TEST_TOKEN,
            transport=Transport.UDP,
        )
    )
    await fleet.start()
    try:
        assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60), fleet.summary()
        # Redirected: B's devices registered with B (its address and ID), A's with A.
        for device_id in b_devices:
            client = fleet.agents[device_id].client
            assert (client.peer.port, client.identity.server_id) == (b_sip, B_ID)
        for device_id in a_devices:
            assert fleet.agents[device_id].client.peer.port == a_sip
        everyone = a_devices | b_devices
        # The whole city on either console, online.
        for api, proc in ((a_api, a), (b_api, b)):
            await until_json(
                f"{api}/api/devices?limit=1000",
                lambda body: {k for k, v in _online(body).items() if v} == everyone,
                proc,
                timeout=30,
            )
        nodes = await until_json(f"{a_api}/api/nodes", lambda body: len(body["items"]) == 2, a)
        assert {(n["name"], n["alive"]) for n in nodes["items"]} == {("a", True), ("b", True)}
        # A live view of B's camera asked of A: 409 naming B and its console, not a puzzling 404.
        camera = next(
            c.id for kg in city if kg.district_code in b_districts for d in kg.devices for c in d.channels
            if c.kind == "camera"
        )  # fmt: skip
        status, body = await http_json(f"{a_api}/api/channels/{camera}/live", {}, "POST")
        assert (status, body["node"], body["console"]) == (409, "b", b_api), body
        status, _ = await http_json(f"{a_api}/api/channels/{camera}/live", {}, "POST", headers={})
        assert status == 401  # only after the login

        # An alarm of B's district pressed around the kill.
        button = next(kg.id for kg in city if kg.district_code in b_districts)
        record = fleet.press(button, "button")
        b.popen.send_signal(signal.SIGKILL)
        await asyncio.to_thread(b.popen.wait, 10)

        # Nobody can mark B's devices offline: A's console shows them offline once B's heartbeat is stale.
        await until_json(
            f"{a_api}/api/devices?limit=1000",
            lambda body: not any(_online(body)[d] for d in b_devices) and all(_online(body)[d] for d in a_devices),
            a,
            timeout=30,
        )
        restarted = Proc("gateway-b2", b_args, tmp_path)
        procs.append(restarted)
        await until_json(f"{b_api}/healthz", lambda body: True, restarted)
        loop = asyncio.get_running_loop()
        back_from = loop.time()
        await until_json(
            f"{a_api}/api/devices?limit=1000",
            lambda body: all(_online(body)[d] for d in everyone),
            a,
            timeout=60,
        )
        took = loop.time() - back_from
        assert took < 60, took  # within one registration interval (expires=60)
        assert await wait_for(lambda: record.answered, 30)  # the device's retries reached the restarted B
        assert await wait_for(lambda: len(police.alarm_ids("mqtt")) >= 1, 30), police.report()
        listed = await until_json(f"{a_api}/api/alarms?limit=100", lambda body: body["total"] >= 1, a)
        await asyncio.sleep(3 * KEEPALIVE)  # any duplicate would have had its chance
    finally:
        await police.stop()
        await fleet.stop(unregister=False)
    mine = [x for x in listed["items"] if x.get("device_id") == record.device_id]
    assert len(mine) == 1, listed["items"]  # stored once
    ids = police.alarm_ids("mqtt")
    assert len(ids) == len(set(ids)) == 1, ids  # delivered once
