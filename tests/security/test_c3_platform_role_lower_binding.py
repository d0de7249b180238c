"""C3 (platform role): a platform believes its lower platform only from where that one registered.

``kgw platform`` is the gateway's node with a platform's catalog handling
(platform/gbplatform/app.py); it has no SIP path of its own: its lower
platforms' MESSAGEs and NOTIFYs go through the shared device-access core
(gateway/gb28181/access.py), whose fix belongs to the device side (helper
"sipdev"). This test pins the platform role's behaviour over real sockets:
the gateway registers with a police platform; an attacker who claims the
gateway's ID from another socket must not rename the channels the police
shows (a forged catalog NOTIFY turning the 大门口 camera into a 午睡室), and
its forged keepalive is refused.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from gateway.app import GatewayService
from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper import UpperPlatformConfig
from gateway.config import UpperSpec
from gateway.gb28181.manscdp import CatalogItem, CatalogResponse, Keepalive, Root, serialize
from simulators.city import build_city
from tests.conftest import wait_for

CITY = build_city(1, seed=2020, cameras_per_kindergarten=(3, 3))
KG = CITY[0]
ENTRANCE = next(c.id for d in KG.devices for c in d.channels if c.kind == "camera" and c.area == "entrance")
POLICE_ID = "12010000002000000110"
POLICE_PASSWORD = "police-own-secret"


class _Attacker(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: asyncio.Queue[int] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"SIP/2.0 ") else 0
        if status >= 200:
            self.answers.put_nowait(status)


async def _send_as(platform: GatewayService, method: str, from_id: str, body: bytes, extra: list[str]) -> int:
    """One request claiming ``from_id``, from a fresh loopback socket; the final status."""
    loop = asyncio.get_running_loop()
    transport, attacker = await loop.create_datagram_endpoint(_Attacker, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    token = secrets.token_hex(6)
    domain = platform.config.domain
    lines = [
        f"{method} sip:{platform.config.id}@{domain} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{token}",
        f"From: <sip:{from_id}@{from_id[:10]}>;tag={token}",
        f"To: <sip:{platform.config.id}@{domain}>",
        f"Call-ID: {token}@127.0.0.1",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
        "Content-Type: Application/MANSCDP+xml",
        *extra,
        f"Content-Length: {len(body)}",
    ]
    transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode() + body, ("127.0.0.1", platform.sip_port))
    try:
        return await asyncio.wait_for(attacker.answers.get(), 30)
    finally:
        transport.close()


async def test_forged_lower_platform_requests_change_nothing_at_the_platform(
    gateway_factory: Any, platform_factory: Any, fleet_factory: Any
) -> None:
    police = await platform_factory(id=POLICE_ID, role="police", password=POLICE_PASSWORD)
    link = UpperPlatformConfig(
        name="police",
        server_id=POLICE_ID,
        host="127.0.0.1",
        port=police.sip_port,
        password=POLICE_PASSWORD,
        register_retry_min=0.2,
        register_retry_max=1.0,
    )
    gateway = await gateway_factory(upper_platforms=(UpperSpec(link, SharePolicy(PolicyLevel.POLICE)),))
    await fleet_factory(gateway, kindergartens=1, cameras=(3, 3))
    gateway_id = gateway.config.id
    assert await wait_for(lambda: police.queries.is_registered(gateway_id), 30)
    assert await wait_for(lambda: police.queries.request_catalog(gateway_id) is not None, 30)  # taken once proven (H5)
    assert await wait_for(lambda: police.directory.device_of(ENTRANCE) == gateway_id, 30)
    before = police.directory.channels[ENTRANCE]

    # A catalog NOTIFY "from the gateway" renaming the entrance camera.
    renamed = CatalogItem(
        device_id=ENTRANCE, name=f"{KG.name}·午睡室", parent_id=before.kindergarten_id, status="ON", event="UPDATE"
    )
    body = serialize(CatalogResponse(sn=77, device_id=gateway_id, sum_num=1, items=(renamed,), root=Root.NOTIFY))
    status = await _send_as(police, "NOTIFY", gateway_id, body, ["Event: Catalog", "Subscription-State: active"])
    assert status >= 400, f"forged catalog NOTIFY answered {status}"
    # A keepalive "from the gateway".
    keepalive = serialize(Keepalive(sn=78, device_id=gateway_id))
    assert await _send_as(police, "MESSAGE", gateway_id, keepalive, []) >= 400

    # What the police console shows is what the real gateway said.
    assert police.directory.channels[ENTRANCE].name == before.name
    assert police.directory.device_of(ENTRANCE) == gateway_id
