"""Alarms first (issue 12): a real gateway process under a REGISTER flood still publishes an alarm at once.

``kgw gateway`` runs in its own process with a real Mosquitto; a few simulated
kindergartens register; then this test blasts 20,000 REGISTERs (unknown device
IDs, each a full parse and an answer) at the gateway's UDP port and presses one
button while they queue. The alarm must reach the police subscriber while most
of the flood is still waiting: the REGISTERs the gateway had answered when it
arrived are counted, and compared with what the flood cost it in the end.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiomqtt
import pytest

from gateway.gb28181.sip.transport import Transport
from simulators.fleet import Fleet, FleetOptions
from simulators.mosquitto import MosquittoBroker
from tests.conftest import free_sip_port, http_text, wait_for
from tests.processes import Proc, free_tcp_port, until_json

FLOOD = 20_000
GW = "12010000002090000001@1201000000"


def _register(n: int, port: int) -> bytes:
    device = f"1201{n % 100:02d}0000132{n:07d}"[:20]
    return (
        f"REGISTER sip:{GW} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKflood{n}\r\n"
        f"From: <sip:{device}@1201000000>;tag=f{n}\r\n"
        f"To: <sip:{device}@1201000000>\r\n"
        f"Call-ID: flood-{n}@127.0.0.1\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{device}@127.0.0.1:{port}>\r\n"
        "Max-Forwards: 70\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def _register_count(api: str) -> float:
    """REGISTERs the gateway's SIP core took in so far (its metrics)."""
    text = await http_text(f"{api}/metrics")
    line = next(x for x in text.splitlines() if x.startswith('kgw_sip_requests_total{method="REGISTER"}'))
    return float(line.rsplit(" ", 1)[1])


async def _settled(api: str, timeout: float = 120.0) -> float:
    """The REGISTER count once it stopped growing (the flood answered)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = -1.0
    while loop.time() < deadline:
        count = await _register_count(api)
        if count == last:
            return count
        last = count
        await asyncio.sleep(1.0)
    raise AssertionError(f"the gateway still takes REGISTERs after {timeout} s ({last})")


@pytest.mark.slow
async def test_an_alarm_overtakes_a_register_flood_to_the_police_subscriber(
    mosquitto: MosquittoBroker, tmp_path: Path, procs: list[Proc]
) -> None:
    sip_port, http_port = free_sip_port(), free_tcp_port()
    api = f"http://127.0.0.1:{http_port}"
    gateway = Proc(
        "gateway",
        ["gateway", "--sip-port", str(sip_port), "--http-port", str(http_port), "--db", str(tmp_path / "kgw.db")]
        + ["--mqtt", mosquitto.url, "--alarm-escalate-after", "0", "--log-level", "ERROR"],
        tmp_path,
    )
    procs.append(gateway)
    await until_json(f"{api}/healthz", lambda body: True, gateway)
    fleet = Fleet(
        FleetOptions(gateway_port=sip_port, kindergartens=3, cameras=(2, 2), api=api, transport=Transport.UDP)
    )
    await fleet.start()
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    flood.bind(("127.0.0.1", 0))
    try:
        assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="test-police-flood") as police:
            await police.subscribe("kgw/alarms/#", qos=1)
            port = flood.getsockname()[1]
            datagrams = [_register(n, port) for n in range(FLOOD)]
            for data in datagrams:  # as fast as the kernel takes them (a blocking socket)
                flood.sendto(data, ("127.0.0.1", sip_port))
            record = fleet.press(fleet.city[0].id, "button")
            message = await asyncio.wait_for(anext(aiter(police.messages)), 30)
            seen_at_arrival = await _register_count(api)
        payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
        assert payload["device"]["id"] == record.device_id and payload["device"]["sn"] == record.sn
        # the flood goes on being answered after the alarm got out
        seen_in_the_end = await _settled(api)
        assert seen_in_the_end > 2_000, "the flood did not reach the gateway: the test proves nothing"
        assert seen_at_arrival < seen_in_the_end / 2, (seen_at_arrival, seen_in_the_end)
    finally:
        flood.close()
        await fleet.stop(unregister=False)
