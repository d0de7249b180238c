"""Alarms end to end over the webhook sink: simulated button → gateway → signed POST; API; bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.alarms.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from gateway.gb28181.requests import build_message, sip_uri
from gateway.gb28181.sip.message import SipResponse, parse_message
from simulators.fleet import alarm_device_of
from tests.conftest import AUTH_HEADERS, http_json, wait_for

SECRET = "s3cret-香港"
FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "manscdp"


class WebhookReceiver:
    """A police-integration stand-in: verifies signatures; can fail or hang on demand."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.hung = 0  # requests that arrived in "hang" mode
        self.mode = "ok"  # ok | fail | hang
        self.release = asyncio.Event()  # ends hanging requests at stop()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(
            SECRET.encode(),
            request.headers.get(SIGNATURE_HEADER),
            request.headers.get(TIMESTAMP_HEADER),
            body,
            now=time.time(),
        ):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.mode == "fail":
            return web.Response(status=503)
        if self.mode == "hang":
            self.hung += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 30)
            return web.Response(status=504)  # the gateway gave up on this request long ago
        self.received.append(json.loads(body))
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/alarms", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}/alarms"

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receiver() -> Any:
    r = WebhookReceiver()
    yield r
    await r.stop()


async def _city(gateway_factory: Any, fleet_factory: Any, receiver: WebhookReceiver, **overrides: Any) -> Any:
    url = await receiver.start()
    # A POST that merely answers late on a busy machine must not count as failed (and be sent
    # again): only the hang test wants a short webhook timeout, and sets it.
    settings = {"webhook_url": url, "webhook_secret": SECRET, "webhook_timeout": 10.0, "alarm_retry_cap": 0.5}
    settings.update(overrides)
    service = await gateway_factory(**settings)
    fleet = await fleet_factory(service, kindergartens=3, cameras=(2, 2))
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)
    assert await wait_for(lambda: all(s.reported for s in service.directory.devices.values()), 60)
    return service, fleet


async def test_button_press_reaches_the_webhook_signed_and_enriched(
    gateway_factory: Any, fleet_factory: Any, receiver: WebhookReceiver
) -> None:
    service, fleet = await _city(gateway_factory, fleet_factory, receiver)
    kg = fleet.city[1]
    record = fleet.press(kg.id, "button")
    assert await wait_for(lambda: len(receiver.received) == 1, 30)
    payload = receiver.received[0]
    assert payload["schema"] == 1 and payload["event"] == "alarm"
    assert payload["kindergarten"]["id"] == kg.id and payload["kindergarten"]["name"] == kg.name
    assert payload["kindergarten"]["address"] == kg.address and payload["kindergarten"]["district_name"]
    assert payload["device"]["id"] == record.device_id and payload["kind"] == "one_button"
    assert payload["priority"] == 1 and payload["problems"] == []
    assert payload["live"] is not None and payload["live"]["url"].endswith(payload["live"]["channel_id"])
    assert payload["snapshot_url"].endswith(f"/api/alarms/{payload['alarm_id']}/snapshot.jpg")
    assert receiver.bad_signatures == 0
    # the device got its 200 and the Response MESSAGE
    assert await wait_for(lambda: record.answered and record.response_at is not None, 30)

    base = f"http://127.0.0.1:{service.http_port}"
    status, listed = await http_json(f"{base}/api/alarms?kindergarten={kg.id}")
    assert status == 200 and listed["total"] == 1 and listed["items"][0]["id"] == payload["alarm_id"]
    assert await wait_for(lambda: service.alarms.lifecycle.get(payload["alarm_id"]).state.value == "delivered", 30)
    # Who acknowledged is the authenticated caller (here the tests' API token "tests"), never a
    # name typed into the body (issue 10, C2).
    status, ack = await http_json(f"{base}/api/alarms/{payload['alarm_id']}/ack", {"user": "张三", "note": "已出警"})
    assert status == 200 and ack["state"] == "acknowledged" and ack["acknowledged_by"] == "tests"
    status, again = await http_json(f"{base}/api/alarms/{payload['alarm_id']}/ack", {"note": "again"})
    assert status == 409
    status, bad_body = await http_json(f"{base}/api/alarms/{payload['alarm_id']}/resolve", ["not", "an", "object"])
    assert status == 400
    status, resolved = await http_json(f"{base}/api/alarms/{payload['alarm_id']}/resolve", {"note": "处置完毕"})
    assert status == 200 and resolved["state"] == "resolved" and resolved["resolved_by"] == "tests"
    status, details = await http_json(f"{base}/api/alarms/{payload['alarm_id']}")
    actions = [t["action"] for t in details["transitions"]]
    assert actions[:1] == ["received"] and "delivered" in actions and actions[-2:] == ["acknowledged", "resolved"]
    assert details["deliveries"][0]["state"] == "delivered" and details["deliveries"][0]["sink"] == "webhook"
    status, _ = await http_json(f"{base}/api/alarms/nope")
    assert status == 404
    status, filtered = await http_json(f"{base}/api/alarms?state=new")
    assert status == 200 and filtered["total"] == 0
    status, _ = await http_json(f"{base}/api/alarms?state=bogus")
    assert status == 400


async def test_snapshot_of_the_entrance_camera_is_captured(
    gateway_factory: Any, fleet_factory: Any, receiver: WebhookReceiver
) -> None:
    service, fleet = await _city(gateway_factory, fleet_factory, receiver)
    fleet.press(fleet.city[0].id, "button")
    assert await wait_for(lambda: len(receiver.received) == 1, 30)
    alarm_id = receiver.received[0]["alarm_id"]
    assert await wait_for(lambda: alarm_id in service.alarms.snapshots, 30)
    async with (
        aiohttp.ClientSession(headers=AUTH_HEADERS) as session,
        session.get(receiver.received[0]["snapshot_url"]) as response,
    ):
        assert response.status == 200 and response.content_type == "image/jpeg"
        assert (await response.read())[:2] == b"\xff\xd8"


async def test_webhook_outage_is_retried_in_order_and_a_hang_does_not_stall(
    gateway_factory: Any, fleet_factory: Any, receiver: WebhookReceiver
) -> None:
    service, fleet = await _city(gateway_factory, fleet_factory, receiver, webhook_timeout=1.0)
    receiver.mode = "fail"
    kg = fleet.city[0]
    records = []
    for kind in ("button", "video_loss", "tamper"):
        records.append(fleet.press(kg.id, kind))
        # every press is answered (stored) although the sink is down; the next one is pressed
        # after that, so the gateway's order (seq) is the order of the presses
        assert await wait_for(lambda: records[-1].answered, 30)
    assert await wait_for(lambda: service.alarms.outbox.depth("webhook") == 3, 30)
    assert await wait_for(lambda: service.alarms.sinks["webhook"].up is False, 30)  # an attempt failed
    status, sinks = await http_json(f"http://127.0.0.1:{service.http_port}/api/alarm-sinks")
    assert sinks["items"][0]["up"] is False and sinks["items"][0]["depth"] == 3
    receiver.mode = "hang"
    hung = receiver.hung
    # A second hanging request means the first was given up on (webhook_timeout) and retried:
    # the hang did not stall the outbox; meanwhile nothing was delivered.
    assert await wait_for(lambda: receiver.hung >= hung + 2, 30)
    assert receiver.received == [] and service.alarms.outbox.depth("webhook") == 3
    receiver.mode = "ok"
    assert await wait_for(lambda: len(receiver.received) == 3, 60)
    assert [p["kind"] for p in receiver.received] == ["one_button", "video_loss", "tamper"]  # kindergarten order kept
    assert await wait_for(lambda: service.alarms.outbox.depth("webhook") == 0, 30)  # the gateway has the 204s
    metrics = await asyncio.to_thread(
        lambda: (
            __import__("urllib.request")
            .request.urlopen(f"http://127.0.0.1:{service.http_port}/metrics")
            .read()
            .decode()
        )
    )
    assert 'kgw_alarm_deliveries_total{outcome="retry",sink="webhook"}' in metrics
    assert 'kgw_alarm_outbox_depth{sink="webhook"} 0.0' in metrics


async def test_duplicate_transactions_make_one_alarm(
    gateway_factory: Any, fleet_factory: Any, receiver: WebhookReceiver
) -> None:
    service, fleet = await _city(gateway_factory, fleet_factory, receiver)
    kg = fleet.city[2]
    box = fleet.agents[alarm_device_of(kg, "button").id]
    box.misbehaviour.alarm_duplicate = True
    record = fleet.press(kg.id, "button")
    assert await wait_for(lambda: record.answered, 30)
    # Both transactions reached the alarm service: one alarm, one repeat (which adds no delivery).
    assert await wait_for(lambda: service.alarms.counters["duplicates"] >= 1, 30)
    assert await wait_for(lambda: len(receiver.received) == 1, 30)
    # The outbox is empty: the one delivery is done and nothing else is left to send.
    assert await wait_for(lambda: service.alarms.outbox.depth("webhook") == 0, 30)
    assert len(receiver.received) == 1
    assert service.alarms.counters["received"] == 1


async def test_console_websocket_streams_alarm_events(
    gateway_factory: Any, fleet_factory: Any, receiver: WebhookReceiver
) -> None:
    service, fleet = await _city(gateway_factory, fleet_factory, receiver)
    base = f"http://127.0.0.1:{service.http_port}"
    async with (
        aiohttp.ClientSession(headers=AUTH_HEADERS) as session,
        session.ws_connect(f"{base}/api/alarms/ws") as ws,
    ):
        hello = await ws.receive_json(timeout=30)
        assert hello["type"] == "hello"
        with_perimeter = next(k for k in fleet.city if any(d.kind == "perimeter_alarm" for d in k.devices))
        fleet.press(with_perimeter.id, "perimeter")
        seen: dict[str, dict[str, Any]] = {}
        while "alarm" not in seen or "delivery" not in seen:
            event = await ws.receive_json(timeout=30)
            seen.setdefault(event["type"], event)
        alarm = seen["alarm"]["alarm"]
        assert alarm["kind"] == "perimeter_intrusion" and alarm["kindergarten_name"] == with_perimeter.name
        assert seen["delivery"]["delivery"]["sink"] == "webhook"
        status, _ = await http_json(f"{base}/api/alarms/{alarm['id']}/ack", {})
        assert status == 200
        while True:
            event = await ws.receive_json(timeout=30)
            if event["type"] == "updated" and event["alarm"]["state"] == "acknowledged":
                assert event["alarm"]["acknowledged_by"] == "tests"  # the caller's token, not a typed name
                break


async def test_malformed_alarm_from_a_real_socket_is_kept_with_its_problems(
    gateway_factory: Any, fleet_factory: Any, receiver: WebhookReceiver
) -> None:
    """Bad fields do not lose an alarm; an unknown sender is refused 404; garbage is 400.

    The alarm comes from another socket than the box registered from: kept as unverified, held until confirmed."""
    service, fleet = await _city(gateway_factory, fleet_factory, receiver)
    box_id = alarm_device_of(fleet.city[0], "button").id
    body = (FIXTURE_DIR / "alarm_missing_and_invalid_fields_utf8.xml").read_bytes()
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]

        async def send(sender: str, payload: bytes, call_id: str) -> int:
            request = build_message(
                from_id=sender,
                from_domain="1201000000",
                from_tag="t1",
                to_id=service.config.id,
                to_domain="1201000000",
                request_uri=sip_uri(service.config.id, "1201000000"),
                call_id=call_id,
                cseq=1,
                body=payload,
            )
            request.headers.prepend("Via", f"SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{call_id}")
            transport.sendto(bytes(request), ("127.0.0.1", service.sip_port))
            while True:
                message = parse_message(await asyncio.wait_for(answers.get(), 30))
                if isinstance(message, SipResponse) and message.call_id == call_id:
                    return message.status

        # Not from the registered address: kept (untrusted), then answered 404 so that the box registers (issue 10, C3).
        assert await send(box_id, body, "bad-fields-1") == 404
        assert await send(box_id, body, "bad-fields-1") == 404  # the same datagram again: a retransmission
        assert await send("12010000001340009999", body, "stranger-1") == 404
        assert await send(box_id, b"<Notify><CmdType>Alarm</CmdType>", "garbage-1") == 400
    finally:
        transport.close()
    # Kept with its problems and held from every sink (unverified sender, issue 10, C3) until an
    # operator confirms it; then delivered once, problems and all.
    api = f"http://127.0.0.1:{service.http_port}"
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        status, page = await http_json(f"{api}/api/alarms?kindergarten={fleet.city[0].id}")
        if status == 200 and page["total"] >= 1 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    (held,) = page["items"]
    assert held["verified"] is False and held["unverified_reason"] == "address_mismatch"
    assert receiver.received == []
    status, _ = await http_json(f"{api}/api/alarms/{held['id']}/verify", {"note": "guard called back"})
    assert status == 200
    assert await wait_for(lambda: len(receiver.received) == 1, 30)
    payload = receiver.received[0]
    assert payload["device"]["id"] == box_id and payload["priority"] is None
    assert any("AlarmPriority" in p for p in payload["problems"])
    status, details = await http_json(f"{api}/api/alarms/{payload['alarm_id']}")
    assert "problems" in details["transitions"][0]["detail"]
    # Every MESSAGE above got its final answer, so the service saw them all; with the outbox
    # empty nothing else is on its way to the webhook.
    assert await wait_for(lambda: service.alarms.outbox.depth("webhook") == 0, 30)
    assert len(receiver.received) == 1 and service.alarms.counters["received"] == 1  # the retransmission too
    metrics = await asyncio.to_thread(
        lambda: (
            __import__("urllib.request")
            .request.urlopen(f"http://127.0.0.1:{service.http_port}/metrics")
            .read()
            .decode()
        )
    )
    assert 'kgw_alarms_refused_total{reason="unknown_device"} 1.0' in metrics
    assert "kgw_alarms_with_problems_total 1.0" in metrics
