import asyncio, time
from tests.conftest import http_json, wait_for

async def test_smoke(gateway_factory, fleet_factory):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    cam = next(c.device_id for a in fleet.agents.values() for c in a.profile.channels if c.device_id[10:13] == "131")
    assert await wait_for(lambda: (ch := service.directory.channels.get(cam)) is not None and ch.online, 60)
    api = f"http://127.0.0.1:{service.http_port}"
    now = int(time.time())
    status, body = await http_json(f"{api}/api/channels/{cam}/downloads", {"start": now - 3600, "end": now - 3597, "speed": 1})
    print(status, body)
    for _ in range(100):
        status, body = await http_json(f"{api}/api/downloads/{body['id']}")
        print(body)
        if body["state"] != "running":
            break
        await asyncio.sleep(0.5)
    assert body["state"] == "done"
