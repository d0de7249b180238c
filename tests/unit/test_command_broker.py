"""CommandBroker pairs a command's answers by (sender, CmdType, SN), and device access sends commands."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from gateway.command_broker import CommandBroker, CommandFailed
from gateway.gb28181.access import CommandBody
from gateway.gb28181.access_events import CommandDelivered, ManscdpReceived, QueryFailed
from gateway.gb28181.device_agent import DeviceAgent, Misbehaviour
from gateway.gb28181.manscdp import ManscdpMessage, ResultResponse
from gateway.gb28181.sip.endpoint import RequestReceived
from tests.unit.gb_harness import GbHarness, make_harness


class FakeAccess:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.sn = 100

    def send_command(self, device_id: str, cmd_type: str, body: CommandBody, now: float) -> int | None:
        if device_id == "offline":
            return None
        self.sn += 1
        self.sent.append((device_id, cmd_type, body(self.sn, "GB2312")))
        return self.sn

    def is_registered(self, device_id: str) -> bool:
        return device_id != "offline"


def _body(sn: int, charset: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="{charset}"?>\r\n<Control>\r\n<CmdType>DeviceControl</CmdType>\r\n'
        f"<SN>{sn}</SN>\r\n<DeviceID>34020000001320000001</DeviceID>\r\n<TeleBoot>Boot</TeleBoot>\r\n</Control>\r\n"
    ).encode()


async def test_request_gets_the_answer_with_its_sn_from_its_sender_only() -> None:
    access = FakeAccess()
    broker = CommandBroker(access, timeout=5)
    task = asyncio.create_task(broker.request("dev", "DeviceControl", _body))
    await asyncio.sleep(0)
    assert [(d, c, b"<SN>101</SN>" in body) for d, c, body in access.sent] == [("dev", "DeviceControl", True)]
    # Another device's answer with the same SN, and the right device's answer to another SN, are not it.
    assert not broker.deliver("other", ResultResponse("DeviceControl", 101, "dev"))
    assert not broker.deliver("dev", ResultResponse("DeviceControl", 99, "dev"))
    assert broker.deliver("dev", ResultResponse("devicecontrol", 101, "chan", "OK"))
    answer = await task
    assert isinstance(answer, ResultResponse) and answer.ok
    assert not broker.deliver("dev", ResultResponse("DeviceControl", 101, "dev"))  # closed after the first


async def test_failure_and_timeout_and_offline() -> None:
    access = FakeAccess()
    broker = CommandBroker(access, timeout=5)
    assert await broker.request("offline", "DeviceControl", _body) is None
    task = asyncio.create_task(broker.request("dev", "RecordInfo", _body))
    await asyncio.sleep(0)
    assert broker.fail("dev", "RecordInfo", 101, "status_403")
    assert await task == CommandFailed("status_403")
    assert await broker.request("dev", "DeviceControl", _body, timeout=0.01) is None


async def test_open_collects_many_answers_and_listeners_take_unsolicited_ones() -> None:
    broker = CommandBroker(FakeAccess())
    stream = broker.open("nvr", "RecordInfo", _body)
    assert stream is not None
    try:
        for _ in range(3):
            assert broker.deliver("nvr", ResultResponse("RecordInfo", stream.sn, "chan"))
        got = [await stream.next(1) for _ in range(3)]
        assert all(isinstance(m, ResultResponse) for m in got)
        assert await stream.next(0.01) is None
    finally:
        stream.close()
    heard: list[str] = []
    stop = broker.listen("MediaStatus", lambda device, message: heard.append(device) is None)
    assert broker.deliver("nvr", ResultResponse("MediaStatus", 5, "chan"))
    stop()
    assert not broker.deliver("nvr", ResultResponse("MediaStatus", 6, "chan"))
    assert heard == ["nvr"]


class EchoFeature:
    """A device feature that answers DeviceControl with Result OK and records what it got."""

    def __init__(self) -> None:
        self.got: list[object] = []

    def on_message(self, agent: DeviceAgent, message: ManscdpMessage, now: float) -> bool:
        if str(message.cmd_type) != "DeviceControl":
            return False
        self.got.append(message)
        agent.client.reply(ResultResponse("DeviceControl", message.sn, message.device_id, "OK"), now)
        return True

    def on_call(self, agent: DeviceAgent, event: RequestReceived, now: float) -> bool:
        return False

    def on_timer(self, agent: DeviceAgent, key: Hashable, now: float) -> bool:
        return False


def _registered() -> tuple[GbHarness, DeviceAgent]:
    h = make_harness()
    agent = h.add_agent(n_channels=1)
    h.start(agent)
    h.pump(until=5)
    assert agent.registered
    h.take()
    return h, agent


def test_device_access_sends_a_command_and_a_device_feature_answers_it() -> None:
    h, agent = _registered()
    feature = EchoFeature()
    agent.features.append(feature)
    sn = h.access.send_command(agent.profile.device_id, "DeviceControl", _body, h.clock.now)
    assert sn is not None
    h.pump(until=h.clock.now + 1)
    assert len(feature.got) == 1
    answers = [e for e in h.take() if isinstance(e, ManscdpReceived)]
    assert [(e.device_id, e.message.sn) for e in answers] == [(agent.profile.device_id, sn)]
    assert h.access.send_command("34020000001320009999", "DeviceControl", _body, h.clock.now) is None


def test_device_access_reports_an_unanswered_command_as_query_failed() -> None:
    h, agent = _registered()
    agent.misbehaviour = Misbehaviour(silent=True)
    sn = h.access.send_command(agent.profile.device_id, "DeviceControl", _body, h.clock.now)
    h.pump(until=h.clock.now + 40)
    failed = [e for e in h.take() if isinstance(e, QueryFailed) and e.cmd_type == "DeviceControl"]
    assert [(e.sn, e.reason) for e in failed] == [(sn, "transport_timeout")]


async def test_wait_accepted_reports_the_sip_answer_to_the_message() -> None:
    broker = CommandBroker(FakeAccess())
    took = broker.open("dev", "DeviceControl", _body)
    refused = broker.open("dev", "DeviceControl", _body)
    silent = broker.open("dev", "DeviceControl", _body)
    assert took is not None and refused is not None and silent is not None
    broker.delivered("dev", "DeviceControl", took.sn)
    broker.fail("dev", "DeviceControl", refused.sn, "status_403")
    assert await took.wait_accepted(1) is True
    assert await refused.wait_accepted(1) == CommandFailed("status_403")
    assert await silent.wait_accepted(0.01) is None
    for stream in (took, refused, silent):
        stream.close()


def test_device_access_reports_a_2xx_to_a_command_as_delivered() -> None:
    h, agent = _registered()
    sn = h.access.send_command(agent.profile.device_id, "DeviceControl", _body, h.clock.now)
    h.pump(until=h.clock.now + 1)
    delivered = [e for e in h.take() if isinstance(e, CommandDelivered)]
    assert [(e.device_id, e.cmd_type, e.sn) for e in delivered] == [(agent.profile.device_id, "DeviceControl", sn)]
