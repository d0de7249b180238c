"""DeviceAgent alarms: Notify/Alarm bodies per kind, answers, Response/Alarm, device-style retries.

The platform side is a bare :class:`SipEndpoint` driven by the test (no gateway
core), so each test decides exactly how the "gateway" answers: a status per
MESSAGE, or silence. Everything runs in memory on a fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pytest

import gateway.gb28181.device_agent as device_agent
from gateway.gb28181.device_agent import (
    ALARM_KINDS,
    AgentHost,
    AgentState,
    AgentTiming,
    AlarmRecord,
    DeviceAgent,
    DeviceProfile,
    Misbehaviour,
    ServerInfo,
)
from gateway.gb28181.manscdp import AlarmNotify, CatalogItem, ResultResponse, decode_message, serialize
from gateway.gb28181.requests import build_message, sip_uri
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint
from gateway.gb28181.sip.idsource import SeededIds
from gateway.gb28181.sip.message import SipRequest, make_response
from gateway.gb28181.sip.router import SipRouter
from gateway.gb28181.sip.testing import FakeClock
from gateway.gb28181.sip.transport import Peer, Transport

GATEWAY_ID = "12010000002090000001"
REALM = "1201000000"
BOX_ID = "12010100001340001001"  # one-key alarm box: one 134 channel with its own ID
PERIMETER_ID = "12010100001340001002"
NVR_ID = "12010100001180001000"
CAMERA_IDS = ("12010100001310001001", "12010100001310001002")
GW_PEER = Peer(Transport.UDP, "10.0.0.1", 5060)
DEV_PEER = Peer(Transport.UDP, "10.0.0.2", 5061)
WALL = datetime(2024, 5, 20, 10, 20, 11)
TIMER_F = 32.0  # 64 × T1: a MESSAGE with no answer times out after this

Answer = Callable[[SipRequest], int | None]


def alarm_device(device_id: str = BOX_ID) -> DeviceProfile:
    channel = CatalogItem(
        device_id=device_id, name="一键报警", parent_id=device_id, longitude=117.2008, latitude=39.0842, status="ON"
    )
    return DeviceProfile(device_id=device_id, password="12345678", name="box", channels=(channel,))


def nvr_device() -> DeviceProfile:
    cameras = tuple(
        CatalogItem(device_id=cid, name=f"cam-{i}", parent_id=NVR_ID, longitude=117.1 + i, latitude=39.1, status="ON")
        for i, cid in enumerate(CAMERA_IDS)
    )
    return DeviceProfile(device_id=NVR_ID, password="12345678", name="nvr", channels=cameras)


@dataclass
class Rig:
    """One device host and a scripted platform endpoint on a fake clock."""

    clock: FakeClock
    gw: SipEndpoint
    host: AgentHost
    answer: Answer = lambda _request: 200  # noqa: E731 - status for each MESSAGE, None = stay silent
    requests: list[tuple[float, SipRequest]] = field(default_factory=list)
    responses: list[ResponseReceived] = field(default_factory=list)

    @property
    def devices(self) -> SipRouter:
        """The devices' endpoint with the host on it (built once)."""
        if self._devices is None:
            self._devices = SipRouter(self.host.endpoint, [self.host], unclaimed_status=404)
        return self._devices

    _devices: SipRouter | None = None

    def add(
        self, profile: DeviceProfile, *, timing: AgentTiming | None = None, misbehaviour: Misbehaviour | None = None
    ) -> DeviceAgent:
        agent = DeviceAgent(
            profile,
            ServerInfo(GATEWAY_ID, REALM, GW_PEER),
            self.host.endpoint,
            timing=timing,
            misbehaviour=misbehaviour,
        )
        self.host.add(agent)
        return agent

    def deliver(self) -> None:
        while True:
            moved = 0
            for data, _dst in self.host.endpoint.data_to_send():
                moved += 1
                self.gw.receive(data, DEV_PEER, self.clock.now)
            self._platform()
            for data, _dst in self.gw.data_to_send():
                moved += 1
                self.devices.receive(data, GW_PEER, self.clock.now)
            if moved == 0:
                return

    def pump(self, until: float | None = None) -> None:
        """Deliver until quiet; with ``until``, also run both sides' timers up to it."""
        self.deliver()
        if until is None:
            return
        while True:
            due = [t for t in (self.gw.get_timer(), self.devices.get_timer()) if t is not None]
            if not due or min(due) > until:
                break
            self.clock.now = max(min(due), self.clock.now)
            self.gw.handle_timer(self.clock.now)
            self.devices.handle_timer(self.clock.now)
            self.deliver()
        self.clock.now = max(self.clock.now, until)

    def _platform(self) -> None:
        while (event := self.gw.next_event()) is not None:
            if isinstance(event, ResponseReceived):
                self.responses.append(event)
            elif isinstance(event, RequestReceived) and event.transaction is not None:
                self.requests.append((self.clock.now, event.request))
                status = self.answer(event.request)
                if status is not None:
                    self.gw.send_response(
                        event.transaction, make_response(event.request, status, to_tag="gwtag"), self.clock.now
                    )

    def alarms(self) -> list[tuple[float, SipRequest]]:
        """Alarm MESSAGE transactions the platform saw (retransmissions are absorbed)."""
        return [(at, r) for at, r in self.requests if r.method == "MESSAGE" and b"<CmdType>Alarm" in r.body]

    def send_response_message(self, target: str, body: bytes) -> None:
        """The platform's application-level acknowledgement, a MESSAGE to ``target`` (docs/gb28181.md §9.2)."""
        request = build_message(
            from_id=GATEWAY_ID,
            from_domain=REALM,
            from_tag=self.gw.new_tag(),
            to_id=target,
            to_domain=REALM,
            request_uri=sip_uri(target, DEV_PEER.host, DEV_PEER.port),
            call_id=self.gw.new_call_id(),
            cseq=1,
            body=body,
        )
        self.gw.send_request(request, DEV_PEER, self.clock.now)


def make_rig(answer: Answer | None = None) -> Rig:
    rig = Rig(
        clock=FakeClock(),
        gw=SipEndpoint(SeededIds("gw"), local_host=GW_PEER.host, local_port=GW_PEER.port),
        host=AgentHost(SipEndpoint(SeededIds("dev"), local_host=DEV_PEER.host, local_port=DEV_PEER.port)),
    )
    if answer is not None:
        rig.answer = answer
    return rig


def press(rig: Rig, target: str, kind: str = "button") -> AlarmRecord:
    return rig.host.press_alarm(target, rig.clock.now, WALL, kind=kind)


def notify_of(request: SipRequest) -> AlarmNotify:
    message, _ = decode_message(request.body)
    assert isinstance(message, AlarmNotify)
    return message


# --- bodies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "profile", "source", "fields"),
    [
        ("button", alarm_device(), BOX_ID, ("1", "1", None, None, "一键报警按钮按下")),
        ("perimeter", alarm_device(PERIMETER_ID), PERIMETER_ID, ("2", "5", "6", "1", "周界入侵")),
        ("video_loss", nvr_device(), CAMERA_IDS[0], ("3", "2", "1", None, "视频丢失")),
        ("tamper", nvr_device(), CAMERA_IDS[0], ("3", "2", "2", None, "设备防拆报警")),
        ("disk_fault", nvr_device(), NVR_ID, ("4", "6", "1", None, "存储设备磁盘故障")),
    ],
)
def test_pressed_alarm_is_a_notify_alarm_coded_for_its_kind(
    kind: str, profile: DeviceProfile, source: str, fields: tuple[str | None, ...]
) -> None:
    rig = make_rig()
    agent = rig.add(profile)

    record = press(rig, profile.device_id, kind)
    rig.pump()

    [(_, request)] = rig.alarms()
    assert request.from_.uri.user == profile.device_id  # the device sends; the body names the source
    notify = notify_of(request)
    assert (notify.priority, notify.method, notify.alarm_type, notify.event_type, notify.description) == fields
    assert notify.sn == record.sn and notify.device_id == source == record.source_id
    assert notify.alarm_time == "2024-05-20T10:20:11" == record.alarm_time
    channel = next((c for c in profile.channels if c.device_id == source), None)
    assert (notify.longitude, notify.latitude) == ((channel.longitude, channel.latitude) if channel else (None, None))
    assert request.body == record.body
    assert (record.device_id, record.kind, record.pressed_at, record.wall) == (profile.device_id, kind, 0.0, WALL)
    assert agent.alarms == {record.sn: record}


def test_alarm_kinds_and_retry_defaults() -> None:
    assert set(ALARM_KINDS) == {"button", "perimeter", "video_loss", "tamper", "disk_fault"}
    assert (AgentTiming().alarm_retries, AgentTiming().alarm_retry_delay) == (5, 2.0)


def test_default_source_falls_back_to_the_device_and_channel_targets_are_sources() -> None:
    rig = make_rig()
    rig.add(nvr_device())

    assert press(rig, NVR_ID, "button").source_id == NVR_ID  # an NVR has no alarm input
    assert press(rig, CAMERA_IDS[1], "tamper").source_id == CAMERA_IDS[1]
    record = rig.host.press_alarm(NVR_ID, 0.0, WALL, kind="video_loss", description="lens covered")
    rig.pump()
    assert notify_of(rig.alarms()[-1][1]).description == "lens covered" and record.source_id == CAMERA_IDS[0]
    assert rig.host.device_for(CAMERA_IDS[1]) is rig.host.device_for(NVR_ID) is not None
    assert rig.host.device_for(BOX_ID) is None


def test_bad_kind_source_or_target_is_refused_before_sending() -> None:
    rig = make_rig()
    agent = rig.add(alarm_device())

    with pytest.raises(ValueError, match="unknown alarm kind"):
        agent.press_alarm(0.0, WALL, kind="fire")
    with pytest.raises(ValueError, match="neither"):
        agent.press_alarm(0.0, WALL, source_id=CAMERA_IDS[0])
    with pytest.raises(KeyError):
        rig.host.press_alarm(NVR_ID, 0.0, WALL)
    rig.pump()
    assert rig.alarms() == [] and agent.alarms == {} and agent.stats.alarms_sent == 0


# --- answers --------------------------------------------------------------------------------------------


def test_200_marks_the_alarm_answered_and_nothing_is_resent() -> None:
    rig = make_rig()
    agent = rig.add(alarm_device())

    record = press(rig, BOX_ID)
    rig.pump(until=300.0)

    assert len(rig.alarms()) == 1
    assert (record.answered, record.answered_at, record.status, record.attempts, record.gave_up) == (
        True,
        0.0,
        200,
        1,
        False,
    )
    assert (agent.stats.alarms_sent, agent.stats.alarm_attempts, agent.stats.alarms_answered) == (1, 1, 1)
    assert record.response_at is None and agent.stats.alarm_responses == 0
    assert agent.get_timer() is None


def test_platform_response_message_marks_response_at() -> None:
    rig = make_rig()
    agent = rig.add(alarm_device())
    record = press(rig, BOX_ID)
    rig.pump()
    rig.clock.now = 0.005

    rig.send_response_message(BOX_ID, serialize(ResultResponse("Alarm", record.sn, BOX_ID, "OK")))
    rig.send_response_message(BOX_ID, serialize(ResultResponse("Alarm", record.sn + 100, BOX_ID, "OK")))
    rig.pump()

    assert record.response_at == 0.005
    assert agent.stats.alarm_responses == 1
    assert agent.stats.queries_answered == 0  # an acknowledgement is no query
    assert [e.response.status for e in rig.responses] == [200, 200]  # the device answers both MESSAGEs


def test_response_without_result_is_accepted_too() -> None:
    rig = make_rig()
    rig.add(alarm_device())
    record = press(rig, BOX_ID)
    rig.pump()
    body = (
        f'<?xml version="1.0"?><Response><CmdType>Alarm</CmdType><SN>{record.sn}</SN>'
        f"<DeviceID>{BOX_ID}</DeviceID></Response>".encode()
    )

    rig.send_response_message(BOX_ID, body)
    rig.pump()

    assert record.response_at == 0.0


# --- retries --------------------------------------------------------------------------------------------


def test_unanswered_alarm_is_resent_with_the_same_body_and_new_call_ids() -> None:
    rig = make_rig(lambda _r: None)  # the platform is dead (e.g. SIGKILLed)
    agent = rig.add(alarm_device(), timing=AgentTiming(alarm_retries=3, alarm_retry_delay=2.0))

    record = press(rig, BOX_ID)
    rig.pump(until=1000.0)

    alarms = rig.alarms()
    assert len(alarms) == 4 == record.attempts  # first send + alarm_retries
    assert [at for at, _ in alarms] == [0.0, 34.0, 68.0, 102.0]  # Timer F + retry delay apart
    assert len({r.call_id for _, r in alarms}) == 4
    assert {r.body for _, r in alarms} == {record.body}
    assert (record.answered, record.status, record.timeouts, record.gave_up) == (False, None, 4, True)
    assert agent.stats.alarm_attempts == 4 and agent.stats.alarms_answered == 0
    assert agent.get_timer() is None


def test_retries_stop_once_an_attempt_is_answered() -> None:
    answers = iter([None, None, 200])
    rig = make_rig(lambda _r: next(answers))
    agent = rig.add(alarm_device())

    record = press(rig, BOX_ID)
    rig.pump(until=1000.0)

    assert len(rig.alarms()) == 3
    assert (record.attempts, record.answered_at, record.status, record.gave_up) == (3, 68.0, 200, False)
    assert agent.stats.alarms_answered == 1


def test_500_is_retried_after_the_retry_delay() -> None:
    answers = iter([500, 503, 200])
    rig = make_rig(lambda _r: next(answers))
    rig.add(alarm_device(), timing=AgentTiming(alarm_retry_delay=1.5))

    record = press(rig, BOX_ID)
    rig.pump(until=100.0)

    assert [at for at, _ in rig.alarms()] == [0.0, 1.5, 3.0]
    assert (record.attempts, record.status, record.answered_at) == (3, 200, 3.0)


def test_403_is_final_and_not_retried() -> None:
    rig = make_rig(lambda _r: 403)
    agent = rig.add(alarm_device())

    record = press(rig, BOX_ID)
    rig.pump(until=300.0)

    assert len(rig.alarms()) == 1
    assert (record.attempts, record.status, record.answered, record.gave_up) == (1, 403, False, True)
    assert agent.get_timer() is None


def test_duplicating_device_sends_two_transactions_per_attempt() -> None:
    rig = make_rig()
    agent = rig.add(alarm_device(), misbehaviour=Misbehaviour(alarm_duplicate=True))

    record = press(rig, BOX_ID)
    rig.pump(until=300.0)

    alarms = rig.alarms()
    assert len(alarms) == 2
    assert alarms[0][1].call_id != alarms[1][1].call_id
    assert alarms[0][1].body == alarms[1][1].body == record.body
    assert (record.attempts, record.messages, record.answered) == (1, 2, True)
    assert (agent.stats.alarm_attempts, agent.stats.alarm_messages, agent.stats.alarms_answered) == (1, 2, 1)


def test_duplicated_failures_schedule_one_retry_per_round() -> None:
    rig = make_rig(lambda _r: 500)
    rig.add(alarm_device(), timing=AgentTiming(alarm_retries=2), misbehaviour=Misbehaviour(alarm_duplicate=True))

    record = press(rig, BOX_ID)
    rig.pump(until=300.0)

    assert [at for at, _ in rig.alarms()] == [0.0, 0.0, 2.0, 2.0, 4.0, 4.0]
    assert (record.attempts, record.messages, record.gave_up) == (3, 6, True)


def test_several_alarms_retry_independently() -> None:
    rig = make_rig(lambda _r: None)
    agent = rig.add(alarm_device(), timing=AgentTiming(alarm_retries=1))

    first = press(rig, BOX_ID)
    rig.pump()
    rig.clock.now = 10.0
    second = press(rig, BOX_ID, "perimeter")
    rig.pump(until=300.0)

    assert [(at, notify_of(r).sn) for at, r in rig.alarms()] == [
        (0.0, first.sn),
        (10.0, second.sn),
        (34.0, first.sn),
        (44.0, second.sn),
    ]
    assert first.sn != second.sn and set(agent.alarms) == {first.sn, second.sn}


def test_stop_cancels_pending_retries() -> None:
    rig = make_rig(lambda _r: 500)
    agent = rig.add(alarm_device())
    record = press(rig, BOX_ID)
    rig.pump()
    assert agent.get_timer() == 2.0

    agent.stop(rig.clock.now)
    rig.pump(until=100.0)

    assert agent.state is AgentState.STOPPED and agent.get_timer() is None
    assert record.attempts == 1 and len(rig.alarms()) == 1


def test_alarm_records_are_capped_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_agent, "MAX_ALARM_RECORDS", 3)
    rig = make_rig()
    agent = rig.add(alarm_device())

    records = [press(rig, BOX_ID) for _ in range(5)]

    assert list(agent.alarms) == [r.sn for r in records[2:]]


def test_404_makes_the_device_register_again_and_resend() -> None:
    """A platform that lost our registration (a crash) answers 404: register, then resend the alarm."""
    answers = iter([404])
    rig = make_rig(lambda r: next(answers, 200) if r.method == "MESSAGE" and b"<CmdType>Alarm" in r.body else 200)
    rig.add(alarm_device())

    record = press(rig, BOX_ID)
    rig.pump(until=30.0)

    registers = [at for at, r in rig.requests if r.method == "REGISTER"]
    alarms = rig.alarms()
    assert registers and registers[0] < alarms[1][0]  # registered again before the resend
    assert len(alarms) == 2 and alarms[0][1].body == alarms[1][1].body
    assert (record.status, record.answered, record.gave_up) == (200, True, False)
