"""Alarms first (issue 12): the SIP driver serves alarm-looking messages before the bulk, which it slices.

The driver runs on the test's loop with a fake UDP socket (a queue of datagrams,
as the kernel would hold them) and a recording core; its slice clock is a fake
that advances a fixed cost per message, so the slices are deterministic.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque

import pytest

from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.idsource import RandomIds
from gateway.gb28181.sip.transport import Peer, Transport
from gateway.io import sip_io
from gateway.io.sip_io import SipDriver
from tests.unit.test_sip_triage import ALARM, REGISTER

COST = 0.0005  # s of fake CPU per message handed to the core


class FakeUdp:
    """What the driver uses of a UDP socket: recvfrom until EAGAIN, sendto."""

    def __init__(self) -> None:
        self.inbox: deque[tuple[bytes, tuple[str, int]]] = deque()
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def recvfrom(self, _size: int) -> tuple[bytes, tuple[str, int]]:
        if not self.inbox:
            raise BlockingIOError
        return self.inbox.popleft()

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.sent.append((data, addr))
        return len(data)


class RecordingCore:
    """A core that records what it was given; ``poison`` makes it raise (a bug on some input)."""

    def __init__(self, clock: list[float], poison: bytes | None = None) -> None:
        self.endpoint = SipEndpoint(RandomIds())
        self.received: list[tuple[bytes, Peer]] = []
        self.clock = clock
        self.poison = poison

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        self.clock[0] += COST
        self.received.append((data, peer))
        if self.poison is not None and data == self.poison:
            raise RuntimeError("core bug")

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def make_driver(poison: bytes | None = None) -> tuple[SipDriver, FakeUdp, RecordingCore, list[int]]:
    clock = [0.0]
    core = RecordingCore(clock, poison)
    flushes: list[int] = []
    driver = SipDriver(core, on_activity=lambda: flushes.append(len(core.received)))
    driver.clock = lambda: clock[0]
    fake = FakeUdp()
    driver.udp = fake  # type: ignore[assignment]
    return driver, fake, core, flushes


def registers(n: int, start: int = 0) -> list[tuple[bytes, tuple[str, int]]]:
    return [(REGISTER + str(i).encode(), ("10.0.0.2", 20_000 + i)) for i in range(start, start + n)]


async def run_turns(driver: SipDriver, core: RecordingCore, until: int, turns: int = 10_000) -> list[int]:
    """Let the loop turn until the core got ``until`` messages; the number it got per turn."""
    per_turn: list[int] = []
    for _ in range(turns):
        before = len(core.received)
        await asyncio.sleep(0)
        per_turn.append(len(core.received) - before)
        if len(core.received) >= until:
            return per_turn
    raise AssertionError(f"only {len(core.received)} of {until} messages served")


def bound(budget: float) -> int:
    """Most messages one slice can serve at COST each (the clock is read every BULK_CHECK_EVERY)."""
    return int(budget / COST) + sip_io.BULK_CHECK_EVERY


async def test_an_alarm_behind_5000_registers_is_handled_first_and_flushed_in_the_same_turn() -> None:
    driver, fake, core, flushes = make_driver()
    fake.inbox.extend(registers(5_000))
    fake.inbox.append((ALARM, ("10.0.0.9", 5060)))
    driver._on_readable()  # the socket became readable: one callback reads MAX_READ datagrams
    assert core.received == []  # the alarm is not among them yet, and no bulk is served in a read callback
    await asyncio.sleep(0)  # the next turn reads on and serves the alarm before any REGISTER
    assert core.received[0] == (ALARM, Peer(Transport.UDP, "10.0.0.9", 5060))
    assert flushes[0] == 1  # its events reached the app before the first bulk message was served
    per_turn = await run_turns(driver, core, 5_001)
    assert max(per_turn) <= bound(sip_io.BULK_BUDGET)
    assert [data for data, _ in core.received[1:]] == [data for data, _ in registers(5_000)]


async def test_an_alarm_read_with_the_burst_is_served_in_the_read_callback_itself() -> None:
    driver, fake, core, flushes = make_driver()
    fake.inbox.extend(registers(sip_io.MAX_READ - 1))
    fake.inbox.append((ALARM, ("10.0.0.9", 5060)))
    driver._on_readable()
    assert [data for data, _ in core.received] == [ALARM] and flushes == [1]


async def test_bulk_work_is_sliced_so_the_loop_turns_and_an_alarm_overtakes_the_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sip_io, "EXPEDITE_WINDOW", 1e9)  # however slow this machine is today
    driver, fake, core, _ = make_driver()
    fake.inbox.extend(registers(3_000))
    driver._on_readable()
    assert core.received == []  # nothing urgent: the bulk waits for the next turn
    per_turn = await run_turns(driver, core, 1)
    first_slice = per_turn[-1]
    assert 0 < first_slice <= bound(sip_io.BULK_BUDGET)
    served = len(core.received)
    fake.inbox.append((ALARM, ("10.0.0.9", 5060)))  # pressed while 2,900-odd REGISTERs wait
    await asyncio.sleep(0)
    assert core.received[served][0] == ALARM  # the next turn serves it before any more bulk
    # after an alarm, short slices for a while (the clock read after every message): its commit
    # and publish need loop turns
    per_turn = await run_turns(driver, core, served + 200)
    assert max(per_turn[1:]) <= int(sip_io.EXPEDITE_BUDGET / COST) + 1 < first_slice


async def test_forged_alarms_from_one_source_cannot_starve_registration() -> None:
    driver, fake, core, _ = make_driver()
    forger = ("10.6.6.6", 5060)
    for dev in registers(200):
        fake.inbox.extend([(ALARM, forger)] * 15)  # a flood of alarm-looking datagrams, one REGISTER between
        fake.inbox.append(dev)
    driver._on_readable()
    per_source = driver.lanes.per_source
    assert len(core.received) == per_source  # the forger got its share of the urgent lane, no more
    await run_turns(driver, core, 200 * 16)
    position = next(i for i, (data, _) in enumerate(core.received) if data.startswith(b"REGISTER"))
    assert position <= per_source + 15  # the first REGISTER right after the forger's share and its own turn
    assert sum(1 for data, _ in core.received if data.startswith(b"REGISTER")) == 200


async def test_a_flood_of_alarm_looking_datagrams_from_many_sources_still_lets_bulk_through_each_turn() -> None:
    driver, fake, core, _ = make_driver()
    fake.inbox.extend((ALARM, ("10.7.0.1", 10_000 + n)) for n in range(3_000))
    fake.inbox.extend(registers(50))
    driver._on_readable()
    urgent = sip_io.URGENT_PER_TURN
    assert len(core.received) == urgent  # bounded per turn
    assert driver.lanes.urgent_waiting == driver.lanes.max_urgent - urgent  # the rest of the lane was demoted
    await asyncio.sleep(0)  # the next turn: the next share of alarms, then a slice of bulk all the same
    assert len(core.received) > 2 * urgent
    assert driver.lanes.urgent_waiting > 0  # bulk was served although alarm-looking work still waits
    await run_turns(driver, core, 3_050)
    assert driver.lanes.counters.demoted == 3_000 - driver.lanes.max_urgent
    assert sum(1 for data, _ in core.received if data.startswith(b"REGISTER")) == 50


async def test_bad_input_and_core_bugs_do_not_stop_the_lanes() -> None:
    poison = ALARM + b"<bad/>"
    driver, fake, core, _ = make_driver(poison=poison)
    oversized = ALARM + b"x" * (driver.lanes.max_message + 1)
    garbage = b"MESSAGE \x00\xff<CmdType>Alarm<\r\n\r\n"
    fake.inbox.extend([(oversized, ("10.0.0.3", 1)), (garbage, ("10.0.0.3", 2)), (poison, ("10.0.0.3", 3))])
    fake.inbox.extend(registers(3))
    fake.inbox.append((ALARM, ("10.0.0.9", 5060)))
    driver._on_readable()  # the poisoned one raises inside the core: logged, the next is served
    assert [d for d, _ in core.received] == [garbage, poison, ALARM]
    await run_turns(driver, core, 7)
    assert core.received[3][0] == oversized  # never urgent: first in the bulk lane


async def test_a_full_bulk_lane_drops_udp_like_a_full_kernel_buffer_but_never_an_alarm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver, fake, core, _ = make_driver()
    driver.lanes.max_bulk_bytes = 100 * (len(REGISTER) + 4)
    fake.inbox.extend(registers(300))
    fake.inbox.append((ALARM, ("10.0.0.9", 5060)))
    driver._on_readable()
    assert core.received[0][0] == ALARM
    assert driver.core.endpoint.stats["dropped_backlog"] > 0
    assert driver.lanes.bulk_bytes <= driver.lanes.max_bulk_bytes


# --- real sockets: UDP and TCP ---------------------------------------------------------------------------


async def test_real_udp_socket_alarm_overtakes_a_queued_register_burst() -> None:
    clock = [0.0]
    core = RecordingCore(clock)
    driver = SipDriver(core)
    port = await driver.listen("127.0.0.1", 0, tcp=False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for data, _ in registers(1_000):  # all queued in the kernel before the loop looks
            sender.sendto(data, ("127.0.0.1", port))
        sender.sendto(ALARM, ("127.0.0.1", port))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(core.received) < 1_001 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert len(core.received) == 1_001
        assert core.received[0][0] == ALARM
    finally:
        sender.close()
        driver.close()


def _framed(method_line: bytes, body: bytes = b"") -> bytes:
    return (
        method_line
        + b"\r\nVia: SIP/2.0/TCP 127.0.0.1\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


async def test_tcp_alarm_in_a_burst_on_one_connection_is_served_first() -> None:
    core = RecordingCore([0.0])
    driver = SipDriver(core)
    port = await driver.listen("127.0.0.1", 0, tcp=True)
    body = b"<Notify><CmdType>Alarm</CmdType><SN>7</SN></Notify>"
    burst = b"".join(_framed(b"REGISTER sip:gw SIP/2.0") for _ in range(300))
    alarm = _framed(b"MESSAGE sip:gw SIP/2.0", body)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(burst + alarm)  # one write: the alarm comes last on the wire
        await writer.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(core.received) < 301 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert len(core.received) == 301
        alarm_at = next(i for i, (data, _) in enumerate(core.received) if data.endswith(body))
        # the framer hands over what one read holds; the alarm is served before the REGISTERs of its read
        assert alarm_at < 300
        assert core.received[alarm_at][1].transport is Transport.TCP
    finally:
        writer.close()
        driver.close()
