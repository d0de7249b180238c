"""In-memory harness for the GB/T 28181 application cores (docs/design.md §2, §9).

A gateway :class:`DeviceAccess` on its :class:`SipRouter` (10.0.0.1:5060) and an :class:`AgentHost` of
simulated devices (10.0.0.2:5061) talk through :meth:`GbHarness.pump`, which
moves each side's ``data_to_send()`` into the other side's ``receive`` and,
when asked, advances a fake clock from timer to timer. Nothing here opens a
socket, sleeps or reads the wall clock; every id comes from ``SeededIds``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.gb28181.access import AccessConfig, AccessEvent, DeviceAccess
from gateway.gb28181.auth_throttle import AuthThrottle
from gateway.gb28181.device_agent import (
    AgentHost,
    AgentTiming,
    DeviceAgent,
    DeviceProfile,
    Misbehaviour,
    ServerInfo,
)
from gateway.gb28181.manscdp import CatalogItem
from gateway.gb28181.registrar import EnrolmentMode, Registrar, RegistrarConfig
from gateway.gb28181.sip.auth import DigestServer
from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.idsource import SeededIds
from gateway.gb28181.sip.message import SipMessage, parse_message
from gateway.gb28181.sip.router import SipRouter
from gateway.gb28181.sip.testing import FakeClock
from gateway.gb28181.sip.transport import Peer, Transport

GATEWAY_ID = "12010000002090000001"
REALM = "1201000000"
PASSWORD = "12345678"
NVR_ID = "12010000001180000001"
IPC_ID = "12010000001320000001"
GW_HOST, GW_PORT = "10.0.0.1", 5060
DEV_HOST, DEV_PORT = "10.0.0.2", 5061
GW_PEER = Peer(Transport.UDP, GW_HOST, GW_PORT)
DEV_PEER = Peer(Transport.UDP, DEV_HOST, DEV_PORT)
#: Wall time = loop time + this (2024-01-01T00:00:00Z), so REGISTER Date headers look real.
WALL_OFFSET = 1_704_067_200.0

Loss = Callable[[int], bool]


def make_registrar(
    *,
    mode: EnrolmentMode = EnrolmentMode.AUTO,
    provisioned: dict[str, str] | None = None,
    throttle: AuthThrottle | None = None,
    digest: DigestServer | None = None,
) -> Registrar:
    """The registrar of the brief; ``provisioned`` maps device IDs to their own passwords."""
    table = provisioned if provisioned is not None else {}
    return Registrar(
        RegistrarConfig(gateway_id=GATEWAY_ID, realm=REALM, device_password=PASSWORD, mode=mode),
        digest or DigestServer(REALM, b"k" * 32),
        throttle or AuthThrottle(),
        table.get,
        table.__contains__,
    )


def channels(n: int, *, parent: str = NVR_ID) -> tuple[CatalogItem, ...]:
    """``n`` camera channels (type 131) under ``parent``."""
    return tuple(
        CatalogItem(
            device_id=f"12010000001310{i:06d}",
            name=f"cam-{i}",
            manufacturer="kgw-sim",
            model="SIM-CAM",
            owner="Owner",
            civil_code="120100",
            address="Room",
            parental=0,
            parent_id=parent,
            register_way=1,
            secrecy=0,
            status="ON",
        )
        for i in range(1, n + 1)
    )


@dataclass
class Datagram:
    """One message that crossed the fake network (``delivered`` False when the loss pattern ate it)."""

    at: float
    src: str  # "gw" or "dev"
    data: bytes
    delivered: bool

    def parse(self) -> SipMessage:
        """The message, parsed."""
        return parse_message(self.data)


@dataclass
class GbHarness:
    """A gateway core and a host of simulated devices on one fake clock."""

    clock: FakeClock
    access: DeviceAccess
    host: AgentHost
    router: SipRouter  # the gateway's: device access on it
    devices: SipRouter  # the devices' endpoint: the agent host on it, 404 for unknown targets
    loss: Loss | None = None
    events: list[AccessEvent] = field(default_factory=list)
    wire: list[Datagram] = field(default_factory=list)
    sent: int = 0

    # --- building ---------------------------------------------------------------

    def add_agent(
        self,
        device_id: str = NVR_ID,
        *,
        password: str = PASSWORD,
        n_channels: int = 0,
        timing: AgentTiming | None = None,
        misbehaviour: Misbehaviour | None = None,
    ) -> DeviceAgent:
        """Attach (but do not start) a device agent on the shared device endpoint."""
        profile = DeviceProfile(
            device_id=device_id,
            password=password,
            name=f"dev-{device_id[-4:]}",
            channels=channels(n_channels, parent=device_id),
        )
        agent = DeviceAgent(
            profile,
            ServerInfo(GATEWAY_ID, REALM, GW_PEER),
            self.host.endpoint,
            timing=timing or AgentTiming(keepalive_interval=60.0),
            misbehaviour=misbehaviour,
        )
        self.host.add(agent)
        return agent

    def start(self, agent: DeviceAgent) -> None:
        """Start one agent now (its REGISTER is queued; call :meth:`pump`)."""
        self.host.start_all(self.clock.now, [agent])

    # --- moving data and time -------------------------------------------------------

    def deliver(self) -> int:
        """Move queued data both ways until both sides are quiet; returns datagrams moved."""
        moved_total = 0
        while True:
            moved = 0
            for data, _dst in self.access.endpoint.data_to_send():
                moved += 1
                if self._keep(data, "gw"):
                    self.devices.receive(data, GW_PEER, self.clock.now)
            for data, _dst in self.host.endpoint.data_to_send():
                moved += 1
                if self._keep(data, "dev"):
                    self.router.receive(data, DEV_PEER, self.clock.now)
            self._drain()
            moved_total += moved
            if moved == 0:
                return moved_total

    def pump(self, until: float | None = None) -> None:
        """Deliver until quiet; with ``until``, also run every timer of both sides up to it.

        The clock jumps to the earliest timer of either side, fires it, delivers
        what that caused, and so on; it ends at ``until``.
        """
        self.deliver()
        if until is None:
            return
        for _ in range(1_000_000):
            due = [t for t in (self.router.get_timer(), self.devices.get_timer()) if t is not None]
            if not due or min(due) > until:
                break
            now = max(min(due), self.clock.now)
            self.clock.now = now
            gw_timer, dev_timer = self.router.get_timer(), self.devices.get_timer()
            if gw_timer is not None and gw_timer <= now:
                self.router.handle_timer(now)
            if dev_timer is not None and dev_timer <= now:
                self.devices.handle_timer(now)
            self.deliver()
        else:  # pragma: no cover - a timer that never clears
            raise AssertionError("timers did not settle")
        self.clock.now = max(self.clock.now, until)

    def advance(self, seconds: float) -> None:
        """``pump(until=now + seconds)``."""
        self.pump(self.clock.now + seconds)

    def _keep(self, data: bytes, src: str) -> bool:
        lost = self.loss is not None and self.loss(self.sent)
        self.sent += 1
        self.wire.append(Datagram(self.clock.now, src, data, not lost))
        return not lost

    def _drain(self) -> None:
        while (event := self.access.next_event()) is not None:
            self.events.append(event)

    # --- looking ------------------------------------------------------------------

    def of_type(self, kind: type) -> list:
        """Collected access events of one type, in order."""
        self._drain()
        return [e for e in self.events if isinstance(e, kind)]

    def take(self) -> list[AccessEvent]:
        """Collected events so far; clears the list."""
        self._drain()
        out, self.events = self.events, []
        return out

    def messages(self, src: str | None = None, *, delivered_only: bool = True) -> list[SipMessage]:
        """Parsed wire log, optionally one direction."""
        return [d.parse() for d in self.wire if (src is None or d.src == src) and (d.delivered or not delivered_only)]


def make_harness(
    *,
    loss: Loss | None = None,
    registrar: Registrar | None = None,
    config: AccessConfig | None = None,
) -> GbHarness:
    """A gateway on 10.0.0.1:5060 and an empty agent host on 10.0.0.2:5061, clock at 0."""
    clock = FakeClock()
    gw_endpoint = SipEndpoint(SeededIds("gw"), local_host=GW_HOST, local_port=GW_PORT)
    dev_endpoint = SipEndpoint(SeededIds("dev"), local_host=DEV_HOST, local_port=DEV_PORT)
    access = DeviceAccess(
        gw_endpoint,
        registrar or make_registrar(),
        config or AccessConfig(gateway_id=GATEWAY_ID, realm=REALM, keepalive_interval=60.0, keepalive_missed=3),
        wall_offset=WALL_OFFSET,
    )
    host = AgentHost(dev_endpoint)
    return GbHarness(
        clock=clock,
        access=access,
        host=host,
        router=SipRouter(gw_endpoint, [access]),
        devices=SipRouter(dev_endpoint, [host], unclaimed_status=404),
        loss=loss,
    )
