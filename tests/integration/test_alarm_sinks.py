"""Alarm sinks against real peers: Mosquitto, aiohttp servers, a fake SIP sender, the police receiver."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import aiomqtt
import pytest
from aiohttp import web

from gateway.alarms.model import Alarm, DeliveryEvent
from gateway.alarms.payload import Enrichment, KindergartenInfo, build_payload, encode_payload
from gateway.alarms.signing import (
    ALARM_ID_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify,
)
from gateway.alarms.sinks.base import OutboundMessage, Sink
from gateway.alarms.sinks.gb import GbAlarmSink
from gateway.alarms.sinks.mqtt import MqttSink
from gateway.alarms.sinks.webhook import WebhookSink
from gateway.errors import DeliveryError
from simulators.police_receiver import PoliceReceiver
from tests.conftest import wait_for
from tests.mqtt_broker import MosquittoBroker  # the fixtures come through tests/conftest.py

DISTRICT = "120101"
KG = "12010100002160000001"
SECRET = "s3cret-for-tests"
PLATFORM_A = "12000000002000000001"
PLATFORM_B = "12000000002000000002"

_seq = 0


def make_message(
    alarm_id: str | None = None,
    event: DeliveryEvent = DeliveryEvent.ALARM,
    *,
    kindergarten_id: str | None = KG,
    received_at: float | None = None,
) -> OutboundMessage:
    """An alarm (one-button box) with its real schema-1 body."""
    global _seq
    _seq += 1
    alarm = Alarm(
        id=alarm_id or f"alm-{_seq:06d}",
        seq=_seq,
        dedupe_key=f"key-{_seq}",
        device_id="12010100001340000001",
        source_id="12010100001340000001",
        kindergarten_id=kindergarten_id,
        district_code=DISTRICT,
        priority=1,
        method=2,
        alarm_type=None,
        event_type=None,
        alarm_time="2026-11-29T11:34:19",
        description="一键报警",
        longitude=117.2,
        latitude=39.1,
        sn=_seq,
        received_at=time.time() if received_at is None else received_at,
        escalated_at=time.time() if event is DeliveryEvent.ESCALATED else None,
    )
    info = Enrichment(
        gateway_id="12000000002000000000",
        kindergarten=KindergartenInfo(
            id=kindergarten_id or "",
            name="和平区第一幼儿园",
            district_code=DISTRICT,
            district_name="和平区",
        )
        if kindergarten_id
        else None,
        device_name="一键报警箱",
    )
    return OutboundMessage(alarm, event, encode_payload(build_payload(alarm, event, info)))


@asynccontextmanager
async def subscriber(broker: MosquittoBroker, topic: str = "kgw/#") -> AsyncIterator[aiomqtt.Client]:
    """An aiomqtt client subscribed with QoS 1."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"test-sub-{time.monotonic_ns()}") as client:
        await client.subscribe(topic, qos=1)
        yield client


async def next_message(client: aiomqtt.Client, timeout: float = 30.0) -> aiomqtt.Message:
    return await asyncio.wait_for(anext(client.messages), timeout)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def http_server(handler: Handler) -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 port 0 answering every POST with ``handler``; yields its URL."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- MQTT ------------------------------------------------------------------------------------------


def test_sinks_satisfy_the_protocol() -> None:
    async def send(_target: str, _message: OutboundMessage) -> int:
        return 200

    for sink in (
        MqttSink("mqtt://127.0.0.1:1", "x"),
        WebhookSink("http://127.0.0.1:1/", SECRET),
        GbAlarmSink(lambda _a: (), send),
    ):
        assert isinstance(sink, Sink)
        assert sink.up is None


async def test_mqtt_delivers_exact_bytes_with_qos1(mosquitto: MosquittoBroker) -> None:
    sink = MqttSink(mosquitto.url, "kgw-test-gw", connect_timeout=1.0)
    message = make_message()
    try:
        async with subscriber(mosquitto) as sub:
            await sink.deliver(message)
            got = await next_message(sub)
        assert str(got.topic) == f"kgw/alarms/{DISTRICT}/{KG}"
        assert got.qos == 1
        assert got.retain is False
        assert got.payload == message.body
        assert sink.up is True
        assert sink.errors == {}
    finally:
        await sink.close()


async def test_mqtt_escalation_and_unplaced_topics(mosquitto: MosquittoBroker) -> None:
    sink = MqttSink(mosquitto.url, "kgw-test-gw", topic_prefix="city")
    try:
        async with subscriber(mosquitto, "city/#") as sub:
            escalated = make_message(event=DeliveryEvent.ESCALATED)
            await sink.deliver(escalated)
            got = await next_message(sub)
            assert str(got.topic) == f"city/escalations/{DISTRICT}/{KG}"
            assert got.payload == escalated.body
            await sink.deliver(make_message(kindergarten_id=None))
            assert str((await next_message(sub)).topic) == f"city/alarms/{DISTRICT}/unplaced"
    finally:
        await sink.close()


async def test_mqtt_start_does_not_raise_when_the_broker_is_down() -> None:
    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}", "kgw-test-gw", connect_timeout=1.0)
    try:
        await sink.start()
        assert await wait_for(lambda: sink.up is False, timeout=30)
        assert sink.errors == {"unreachable": 1}
    finally:
        await sink.close()


async def test_mqtt_broker_down_is_transient_then_recovers(
    mosquitto: MosquittoBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Timers far longer than the test's own guard: failing fast must come from noticing the
    # broker is gone (a lost connection, a refused connect), never from a timer running out.
    sink = MqttSink(mosquitto.url, "kgw-test-gw", connect_timeout=60.0, publish_timeout=60.0)
    caplog.set_level(logging.INFO, logger="kgw.alarms.mqtt")
    try:
        await sink.start()
        await sink.deliver(make_message())
        await mosquitto.stop()
        for _ in range(3):
            with pytest.raises(DeliveryError) as info:
                async with asyncio.timeout(30):  # TimeoutError (not DeliveryError) if it waits for a timer
                    await sink.deliver(make_message())
            assert info.value.permanent is False
            assert "broker" in info.value.reason and "within" not in info.value.reason, info.value.reason
        assert sink.up is False
        assert sum(sink.errors.values()) == 3 and "timeout" not in sink.errors
        await mosquitto.start()
        async with subscriber(mosquitto) as sub:
            message = make_message()
            await sink.deliver(message)  # the same sink object reconnects by itself
            assert (await next_message(sub)).payload == message.body
        assert sink.up is True
        own = [r for r in caplog.records if r.name == "kgw.alarms.mqtt"]
        assert [r.levelname for r in own].count("WARNING") == 1  # once on the way down, not per attempt
        assert any(r.levelname == "INFO" and "back up" in r.getMessage() for r in own)
    finally:
        await sink.close()


async def test_mqtt_silent_broker_times_out_quickly() -> None:
    """A peer that accepts TCP but never sends CONNACK: transient error within connect_timeout."""
    peers: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = MqttSink(f"mqtt://127.0.0.1:{port}", "kgw-test-gw", connect_timeout=0.5)
    try:
        with pytest.raises(DeliveryError) as info:
            async with asyncio.timeout(30):  # TimeoutError (not DeliveryError) if it hangs
                await sink.deliver(make_message())
        # Our own connect_timeout ended it (aiomqtt's CONNACK wait is 1 s longer and says otherwise).
        assert "no answer from" in info.value.reason and "within 0.5 s" in info.value.reason, info.value.reason
        assert not info.value.permanent
        assert "unreachable" in info.value.reason
        assert sink.errors == {"unreachable": 1}
    finally:
        await sink.close()
        for writer in peers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_mqtt_wrong_password_is_reported_without_leaking_it(
    mosquitto_factory: Callable[..., Awaitable[MosquittoBroker]],
) -> None:
    broker = await mosquitto_factory(users={"kgw": "right-pw"})
    bad = MqttSink(broker.url_for("kgw", "wrong-pw"), "kgw-test-gw", connect_timeout=1.0)
    good = MqttSink(broker.url_for("kgw", "right-pw"), "kgw-test-gw2", connect_timeout=1.0)
    try:
        with pytest.raises(DeliveryError) as info:
            await bad.deliver(make_message())
        assert not info.value.permanent
        assert "credentials" in info.value.reason and "not authorised" in info.value.reason
        assert "wrong-pw" not in info.value.reason and "wrong-pw" not in repr(bad.target)
        assert bad.errors == {"not_authorised": 1}
        assert bad.up is False
        await good.deliver(make_message())
        assert good.up is True
    finally:
        await bad.close()
        await good.close()


async def test_mqtt_concurrent_deliveries_share_one_client(mosquitto: MosquittoBroker) -> None:
    sink = MqttSink(mosquitto.url, "kgw-test-gw")
    messages = [make_message() for _ in range(20)]
    try:
        async with subscriber(mosquitto) as sub:
            await asyncio.gather(*(sink.deliver(m) for m in messages))
            got = [await next_message(sub) for _ in messages]
        assert sorted(bytes(m.payload) for m in got if isinstance(m.payload, bytes)) == sorted(m.body for m in messages)
        log_text = mosquitto.log_tail(200)
        assert log_text.count("as kgw-test-gw ") == 1  # one connection for all 20
        assert "as kgw-test-gw (p2, c0," in log_text  # MQTT 3.1.1 (p2), persistent session (c0)
    finally:
        await sink.close()


# --- webhook ------------------------------------------------------------------------------------------


async def test_webhook_signs_and_sends_headers() -> None:
    seen: list[tuple[dict[str, str], bytes, bool]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify(
            SECRET.encode(),
            request.headers.get(SIGNATURE_HEADER),
            request.headers.get(TIMESTAMP_HEADER),
            body,
            now=time.time(),
        )
        seen.append((dict(request.headers), body, ok))
        return web.Response(status=204)

    message = make_message()
    async with http_server(handler) as url:
        sink = WebhookSink(url, SECRET)
        try:
            await sink.deliver(message)
        finally:
            await sink.close()
    headers, body, ok = seen[0]
    assert ok and body == message.body
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers[ALARM_ID_HEADER] == message.alarm_id
    assert headers[EVENT_HEADER] == "alarm"
    assert headers["Idempotency-Key"] == f"{message.alarm_id}:alarm"
    assert headers[SIGNATURE_HEADER] == sign(SECRET.encode(), int(headers[TIMESTAMP_HEADER]), body)
    assert sink.up is True


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (500, False),
        (503, False),
        (429, False),
        (408, False),
        (400, True),
        (404, True),
        (301, True),
    ],
)
async def test_webhook_status_outcomes(status: int, permanent: bool) -> None:
    async def handler(_request: web.Request) -> web.Response:
        headers = {"Location": "http://127.0.0.1:1/elsewhere"} if status == 301 else None
        return web.Response(status=status, headers=headers)

    async with http_server(handler) as url:
        sink = WebhookSink(url, SECRET)
        try:
            with pytest.raises(DeliveryError) as info:
                await sink.deliver(make_message())
        finally:
            await sink.close()
    assert info.value.permanent is permanent
    assert info.value.reason.startswith(f"http {status}")
    assert sink.errors == {f"http_{status // 100}xx": 1}
    assert sink.up is permanent  # a rejection still means the receiver is up


async def test_webhook_hanging_receiver_times_out() -> None:
    release = asyncio.Event()

    async def handler(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    async with http_server(handler) as url:
        sink = WebhookSink(url, SECRET, timeout=0.5)
        try:
            with pytest.raises(DeliveryError) as info:
                async with asyncio.timeout(30):  # TimeoutError (not DeliveryError) if the sink has no timeout
                    await sink.deliver(make_message())
            assert info.value.reason == "no answer within 0.5 s"
        finally:
            release.set()
            await sink.close()
    assert not info.value.permanent
    assert sink.errors == {"timeout": 1} and sink.up is False


async def test_webhook_connection_refused_is_transient(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kgw.alarms.webhook")
    sink = WebhookSink(f"http://127.0.0.1:{free_port()}/hook", SECRET)
    try:
        for _ in range(2):
            with pytest.raises(DeliveryError) as info:
                await sink.deliver(make_message())
            assert not info.value.permanent
            assert "unreachable" in info.value.reason
    finally:
        await sink.close()
    assert sink.errors == {"unreachable": 2} and sink.up is False
    assert [r.levelname for r in caplog.records if r.name == "kgw.alarms.webhook"] == ["WARNING"]


async def test_webhook_uses_a_given_session_and_leaves_it_open() -> None:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=200)

    async with http_server(handler) as url, aiohttp.ClientSession() as session:
        sink = WebhookSink(url, SECRET.encode(), session=session)
        await sink.deliver(make_message())
        await sink.close()
        assert not session.closed


# --- GB/T 28181 upper platforms ---------------------------------------------------------------------------


class FakeSender:
    """Answers with scripted statuses per platform and records every send."""

    def __init__(self, statuses: dict[str, int | Exception]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, target: str, message: OutboundMessage) -> int:
        self.calls.append((target, message.alarm_id))
        await asyncio.sleep(0)
        result = self.statuses[target]
        if isinstance(result, Exception):
            raise result
        return result


async def test_gb_retry_resends_only_to_failed_platforms() -> None:
    sender = FakeSender({PLATFORM_A: 200, PLATFORM_B: 503})
    sink = GbAlarmSink(lambda _alarm: [PLATFORM_A, PLATFORM_B], sender)
    message = make_message()
    with pytest.raises(DeliveryError) as info:
        await sink.deliver(message)
    assert not info.value.permanent
    assert PLATFORM_B in info.value.reason and "503" in info.value.reason and PLATFORM_A not in info.value.reason
    assert sink.acknowledged(message.alarm_id, "alarm") == {PLATFORM_A}
    sender.statuses[PLATFORM_B] = 200
    await sink.deliver(message)
    assert sender.calls == [
        (PLATFORM_A, message.alarm_id),
        (PLATFORM_B, message.alarm_id),
        (PLATFORM_B, message.alarm_id),
    ]
    assert sink.acknowledged(message.alarm_id, "alarm") == frozenset()  # forgotten once all acked
    assert sink.up is True


@pytest.mark.parametrize(
    ("statuses", "permanent"),
    [
        ({PLATFORM_A: 404, PLATFORM_B: 404}, True),
        ({PLATFORM_A: 403, PLATFORM_B: 404}, True),
        ({PLATFORM_A: 200, PLATFORM_B: 404}, True),
        ({PLATFORM_A: 404, PLATFORM_B: 500}, False),
        ({PLATFORM_A: 404, PLATFORM_B: ConnectionError("no route")}, False),
    ],
)
async def test_gb_failure_classification(statuses: dict[str, int | Exception], permanent: bool) -> None:
    sink = GbAlarmSink(lambda _alarm: [PLATFORM_A, PLATFORM_B], FakeSender(statuses))
    with pytest.raises(DeliveryError) as info:
        await sink.deliver(make_message())
    assert info.value.permanent is permanent


async def test_gb_without_targets_is_delivered_at_once() -> None:
    sender = FakeSender({})
    sink = GbAlarmSink(lambda _alarm: [], sender)
    await sink.deliver(make_message())
    assert sender.calls == []


# --- the police receiver ------------------------------------------------------------------------------------


async def test_police_receiver_over_mqtt_and_webhook(mosquitto: MosquittoBroker) -> None:
    arrivals: list[tuple[str, str]] = []
    receiver = PoliceReceiver(
        mosquitto.url,
        webhook=("127.0.0.1", 0),
        secret=SECRET,
        on_message=lambda channel, payload, _t: arrivals.append((channel, payload["alarm_id"])),
    )
    await receiver.start()
    mqtt_sink = MqttSink(mosquitto.url, "kgw-test-gw")
    webhook_sink = WebhookSink(receiver.webhook_url, SECRET)
    try:
        messages = [make_message() for _ in range(3)]
        for message in messages:
            await mqtt_sink.deliver(message)
            await webhook_sink.deliver(message)
        await mqtt_sink.deliver(messages[0])  # a retry: duplicate on both channels
        await webhook_sink.deliver(messages[0])
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as raw:  # an invalid payload on MQTT
            await raw.publish(f"kgw/alarms/{DISTRICT}/{KG}", b'{"schema": 2}', qos=1)
        bad_sig = WebhookSink(receiver.webhook_url, "not-the-secret")
        with pytest.raises(DeliveryError) as info:
            await bad_sig.deliver(make_message())
        await bad_sig.close()
        assert info.value.reason == "http 401" and info.value.permanent
        invalid = make_message()
        wrong = json.loads(invalid.body) | {"schema": "1"}
        invalid = OutboundMessage(invalid.alarm, invalid.event, json.dumps(wrong).encode())
        with pytest.raises(DeliveryError) as info:
            await webhook_sink.deliver(invalid)
        assert info.value.reason == "http 400"

        assert await wait_for(lambda: receiver.stats["mqtt"].received == 5, timeout=30)
        report = receiver.report()
        expected_ids = [m.alarm_id for m in messages]
        for channel in ("mqtt", "webhook"):
            assert receiver.alarm_ids(channel) == expected_ids
            data = report[channel]
            assert data["unique"] == 3 and data["duplicates"] == 1
            assert data["invalid"] == 1 and data["invalid_reasons"] == {"schema": 1}
            assert data["latency_ms"]["count"] == 3
            assert 0 <= data["latency_ms"]["p50"] <= data["latency_ms"]["p99"] <= data["latency_ms"]["max"] < 60_000
        assert report["webhook"]["bad_signatures"] == 1 and report["webhook"]["received"] == 6
        assert report["mqtt"]["bad_signatures"] == 0 and report["mqtt"]["received"] == 5
        assert arrivals.count(("mqtt", messages[0].alarm_id)) == 2  # the hook sees duplicates too
    finally:
        await mqtt_sink.close()
        await webhook_sink.close()
        await receiver.stop()


async def test_police_receiver_resubscribes_after_broker_restart(mosquitto: MosquittoBroker) -> None:
    receiver = PoliceReceiver(mosquitto.url)
    await receiver.start()
    sink = MqttSink(mosquitto.url, "kgw-test-gw", connect_timeout=1.0)
    try:
        await sink.deliver(make_message())
        await mosquitto.restart()
        assert await wait_for(lambda: receiver.mqtt_connects == 2, timeout=30)
        await sink.deliver(make_message())
        assert await wait_for(lambda: receiver.stats["mqtt"].unique == 2, timeout=30)
    finally:
        await sink.close()
        await receiver.stop()
