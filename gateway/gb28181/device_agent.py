"""A GB/T 28181 device in the device role (sans-I/O), for simulators and tests.

:class:`DeviceAgent` is a role of the shared lower-side core
(:class:`~gateway.gb28181.lower.LowerClient`): the core registers with digest,
refreshes before expiry, sends keepalives and answers Catalog / DeviceInfo /
DeviceStatus queries; the agent says what an NVR, IPC or alarm box answers. A
device with camera channels (type 131/132) also answers live INVITEs for them
through a :class:`~gateway.gb28181.device_calls.DeviceCalls`; the media side
drains the call events with :meth:`AgentHost.next_call_event`.
:meth:`DeviceAgent.press_alarm` raises a ``Notify/Alarm`` and retries it like a
real device (:mod:`gateway.gb28181.device_alarms`). Many agents share one
:class:`SipEndpoint` (one socket per kindergarten, as behind a NAT);
:class:`AgentHost` routes the endpoint's events to them by target ID.
Misbehaviour switches (wrong password, silent, flapping, malformed bodies,
duplicated alarms) let tests and operators provoke every failure path of the
gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.gb28181.device_alarms import (
    ALARM_INPUT_TYPE_CODES,
    ALARM_KINDS,
    CAMERA_TYPE_CODES,
    MAX_ALARM_RECORDS,
    AlarmAttempt,
    AlarmKind,
    AlarmRecord,
    DeviceAlarms,
    is_alarm_input,
    is_alarm_response,
    is_camera,
)
from gateway.gb28181.device_calls import CallEvent, DeviceCalls
from gateway.gb28181.lower import Challenged as _Challenged
from gateway.gb28181.lower import (
    KeepaliveFailed,
    KeepaliveSent,
    LowerClient,
    LowerEvent,
    LowerHost,
    LowerIdentity,
    LowerPolicy,
    MessageAnswered,
    MessageReceived,
    MessageTimedOut,
    Redirected,
    Registered,
    RegisterFailed,
    RegState,
)
from gateway.gb28181.manscdp import (
    CatalogItem,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    ManscdpMessage,
)
from gateway.gb28181.requests import register_uri, target_id
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, SipEvent, TransactionTimedOut
from gateway.gb28181.sip.message import make_response
from gateway.gb28181.sip.transport import Peer

__all__ = [
    "ALARM_INPUT_TYPE_CODES",
    "ALARM_KINDS",
    "CALL_METHODS",
    "CAMERA_TYPE_CODES",
    "MAX_ALARM_RECORDS",
    "AgentHost",
    "AgentState",
    "AgentStats",
    "AgentTiming",
    "AlarmKind",
    "AlarmRecord",
    "DeviceAgent",
    "DeviceFeature",
    "DeviceProfile",
    "Misbehaviour",
    "ServerInfo",
    "device_policy",
    "is_alarm_input",
    "is_camera",
]

CALL_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL"})  # what a camera's DeviceCalls serves
FORBIDDEN_RETRY = 30.0  # s: a device told 403 (wrong password) waits at least this long
FORGOTTEN_STATUSES = frozenset({401, 403, 404, 481})  # to a keepalive: the platform lost our registration

AgentState = RegState
"""Registration state of a simulated device (the lower side's states: idle, registering, …)."""


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """Who the device is and what it reports."""

    device_id: str
    password: str
    name: str
    manufacturer: str = "kgw-sim"
    model: str = "SIM-1"
    firmware: str = "V1.0.0"
    channels: tuple[CatalogItem, ...] = ()
    user_agent: str = "kgw-sim"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """The platform the device registers with."""

    server_id: str
    domain: str
    peer: Peer
    # Where a 302 may send the device (GB/T 28181-2022 redirect): ``host`` or ``host:port`` of the city's
    # gateways; empty: redirects are not followed. A 302 elsewhere is a failed attempt, not a move.
    redirect_allow: frozenset[str] = frozenset()


@dataclass(slots=True)
class Misbehaviour:
    """Switches that make a device misbehave on purpose."""

    wrong_password: bool = False
    silent: bool = False  # stop keepalives (and answer nothing)
    flap_period: float = 0.0  # > 0: alternate silent/talking every period seconds
    malformed_every: int = 0  # > 0: every n-th keepalive body is broken XML
    alarm_duplicate: bool = False  # send every alarm MESSAGE twice, as two transactions
    alarm_silent: bool = False  # a press is recorded but no Notify/Alarm leaves (a broken alarm box)


@dataclass(frozen=True, slots=True)
class AgentTiming:
    """Registration and keepalive timing."""

    expires: int = 3600
    keepalive_interval: float = 60.0
    refresh_ratio: float = 0.8
    retry_delay: float = 5.0
    catalog_per_message: int = 4
    alarm_retry_delay: float = 2.0  # wait after a timeout or 5xx before resending an alarm
    alarm_retries: int = 5  # resends after the first attempt


@dataclass(slots=True)
class AgentStats:
    """What the device saw, for tests and the fleet summary."""

    registrations: int = 0
    challenges: int = 0
    refusals: int = 0
    keepalives_sent: int = 0
    keepalive_failures: int = 0
    queries_answered: int = 0
    last_refusal: int | None = None
    invites_received: int = 0
    alarms_sent: int = 0  # presses
    alarm_attempts: int = 0  # rounds: first sends and retries
    alarm_messages: int = 0  # MESSAGE transactions (duplicates included)
    alarms_answered: int = 0  # alarms that got a 2xx
    alarm_responses: int = 0  # alarms whose Response/Alarm MESSAGE arrived


def device_policy(
    timing: AgentTiming, profile: DeviceProfile, redirect_allow: frozenset[str] = frozenset()
) -> LowerPolicy:
    """How a device differs from an upper link: fixed retry, keepalive failures only counted, chunks of 4."""
    return LowerPolicy(
        expires=timing.expires,
        refresh_ratio=timing.refresh_ratio,
        retry_delay=timing.retry_delay,
        retry_max=timing.retry_delay,
        retry_doubles=False,
        retry_after_forbidden=FORBIDDEN_RETRY,
        relogin_delay=timing.retry_delay,
        keepalive_interval=timing.keepalive_interval,
        keepalive_missed=None,
        unanswered_is_missed=False,
        forgotten_statuses=FORGOTTEN_STATUSES,
        catalog_per_message=timing.catalog_per_message,
        user_agent=profile.user_agent,
        cnonce_bytes=4,
        methods=frozenset({"MESSAGE"}),
        redirect_allow=redirect_allow,
    )


class DeviceFeature(Protocol):
    """Something a simulated device can do beyond registering and live video (PTZ, recordings, broadcast…).

    Features are offered, in order, the server's MESSAGEs and call requests (INVITE,
    ACK, BYE, CANCEL, INFO) before the agent's own handling, and the timers they armed
    through ``agent.client.set_timer`` (keys they recognise). Each returns True for
    what it took (and answered).
    """

    def on_message(self, agent: DeviceAgent, message: ManscdpMessage, now: float) -> bool:
        """A MANSCDP MESSAGE of the server, already answered 200."""
        ...

    def on_call(self, agent: DeviceAgent, event: RequestReceived, now: float) -> bool:
        """An INVITE, ACK, BYE, CANCEL or INFO of the server."""
        ...

    def on_timer(self, agent: DeviceAgent, key: Hashable, now: float) -> bool:
        """A timer armed with ``agent.client.set_timer`` is due."""
        ...


class DeviceAgent:
    """One simulated device on a (possibly shared) endpoint: a :class:`LowerRole` of :class:`LowerClient`.

    Composition rather than a subclass: the agent's public API (``stop``'s
    keyword-only ``unregister``, ``stats``, ``alarms``) stays its own, and the
    core's hooks are the small :class:`~gateway.gb28181.lower.LowerRole` protocol.
    """

    def __init__(
        self,
        profile: DeviceProfile,
        server: ServerInfo,
        endpoint: SipEndpoint,
        *,
        timing: AgentTiming | None = None,
        misbehaviour: Misbehaviour | None = None,
    ) -> None:
        self.profile = profile
        self.server = server
        self.endpoint = endpoint
        self.timing = timing or AgentTiming()
        self.misbehaviour = misbehaviour or Misbehaviour()
        self.stats = AgentStats()
        password = "wrong-" + profile.password if self.misbehaviour.wrong_password else profile.password
        identity = LowerIdentity(
            name=profile.device_id,
            local_id=profile.device_id,
            local_domain=server.domain,  # docs/gb28181.md §3.2: a device's From/To carry the platform's domain
            server_id=server.server_id,
            server_domain=server.domain,
            server_uri=register_uri(server.server_id, server.domain),
            username=profile.device_id,
            password=password,
        )
        policy = device_policy(self.timing, profile, server.redirect_allow)
        self.client = LowerClient(identity, policy, endpoint, server.peer, self)
        """The lower-side core this device is a role of."""
        self._alarms = DeviceAlarms(
            profile.device_id,
            profile.channels,
            self.client,
            self.stats,
            retries=self.timing.alarm_retries,
            retry_delay=self.timing.alarm_retry_delay,
            duplicate=lambda: self.misbehaviour.alarm_duplicate,
            silent=lambda: self.misbehaviour.alarm_silent,
            next_sn=self.client.next_sn,
            max_records=MAX_ALARM_RECORDS,
        )
        self.alarms: dict[int, AlarmRecord] = self._alarms.records
        """Alarms this device raised, by SN (oldest dropped beyond MAX_ALARM_RECORDS)."""
        self._started_at = 0.0
        self.camera_ids = frozenset(c.device_id for c in profile.channels if is_camera(c))
        self.calls: DeviceCalls | None = DeviceCalls(endpoint) if self.camera_ids else None
        """Live calls of this device's cameras; None for a device without cameras."""
        self.on_redirect: Callable[[DeviceAgent, Redirected], None] | None = None
        """Hears each redirect followed (a TCP host opens the connection to the new server)."""
        self.features: list[DeviceFeature] = []
        """What else the device does (PTZ, recordings, broadcast…), offered messages and calls first."""

    # --- lifecycle -----------------------------------------------------------

    @property
    def state(self) -> RegState:
        """The registration state (idle, registering, registered, retry_wait, stopped)."""
        return self.client.state

    @property
    def registered(self) -> bool:
        """True once the server accepted the registration."""
        return self.client.registered

    def start(self, now: float) -> None:
        """Begin registering."""
        self._started_at = now
        self.client.start(now)

    def stop(self, now: float, *, unregister: bool = True) -> None:
        """Stop; optionally send REGISTER Expires: 0 first."""
        self.client.stop(now, unregister)
        self._alarms.cancel_retries()

    def owns(self, target_id: str) -> bool:
        """Whether a request for ``target_id`` is for this device (itself or a channel)."""
        return self._alarms.owns(target_id)

    def get_timer(self) -> float | None:
        """This agent's earliest deadline."""
        return self.client.get_timer()

    def handle_timer(self, now: float) -> None:
        """Run due timers."""
        self.client.handle_timer(now)

    def send_keepalive_now(self, now: float) -> None:
        """Send a keepalive immediately (tests, and after resuming)."""
        self.client.send_keepalive_now(now)

    # --- events from the shared endpoint -----------------------------------------

    def handle_request(self, event: RequestReceived, now: float, target: str | None = None) -> None:
        """A request addressed to this device (``target`` is accepted for compatibility; calls look it up)."""
        self.client.handle_request(event, now)

    def handle_response(self, event: ResponseReceived, now: float) -> None:
        """A response to something this device sent."""
        self.client.handle_response(event, now)

    def handle_timeout(self, event: TransactionTimedOut, now: float) -> None:
        """A request of this device got no answer."""
        self.client.handle_timeout(event, now)

    def next_call_event(self) -> CallEvent | None:
        """The next live-call event of this device's cameras, or None."""
        return self.calls.next_event() if self.calls is not None else None

    # --- alarms ----------------------------------------------------------------------------------

    def press_alarm(
        self,
        now: float,
        wall: datetime,
        *,
        kind: str = "button",
        source_id: str | None = None,
        description: str | None = None,
    ) -> AlarmRecord:
        """Raise an alarm: send ``Notify/Alarm`` now and keep it until the platform answers 2xx.

        ``wall`` gives AlarmTime (local time) because a sans-I/O core reads no clock.
        ``source_id`` defaults to the first channel that fits the kind (see
        :data:`ALARM_KINDS`), else the device itself. Raises ValueError for an
        unknown kind or a source that is not this device or one of its channels.
        A stopped device keeps the record but sends nothing.
        """
        return self._alarms.press(now, wall, kind=kind, source_id=source_id, description=description)

    # --- LowerRole hooks --------------------------------------------------------------------------

    def catalog_items(self) -> Sequence[CatalogItem]:
        """Every channel of the device (docs/gb28181.md §6.2)."""
        return self.profile.channels

    def answer_device_info(self, query: DeviceInfoQuery) -> DeviceInfoResponse:
        """The device itself, whichever of its IDs was asked (docs/gb28181.md §7)."""
        return DeviceInfoResponse(
            sn=query.sn,
            device_id=self.profile.device_id,
            device_name=self.profile.name,
            result="OK",
            manufacturer=self.profile.manufacturer,
            model=self.profile.model,
            firmware=self.profile.firmware,
            channel=len(self.profile.channels),
        )

    def answer_device_status(self, query: DeviceStatusQuery) -> DeviceStatusResponse:
        """Always fine: online, encoding, not recording (docs/gb28181.md §8)."""
        return DeviceStatusResponse(
            sn=query.sn,
            device_id=self.profile.device_id,
            result="OK",
            online="ONLINE",
            status="OK",
            encode="ON",
            record="OFF",
        )

    def message_status(self, message: ManscdpMessage) -> int:
        """A device takes every readable MESSAGE (it answers commands it cannot do with Result ERROR)."""
        return 200

    def on_message(self, message: ManscdpMessage, now: float) -> None:
        """Features first; the platform's ``Response/Alarm`` (docs/gb28181.md §9.2) marks our alarm."""
        if any(feature.on_message(self, message, now) for feature in self.features):
            return
        if is_alarm_response(message):
            self._alarms.on_response(message.sn, now)

    def handle_call(self, event: RequestReceived, now: float) -> None:
        """Calls for our cameras go to :attr:`calls`; other INVITEs get 501, other call requests 405."""
        request = event.request
        if request.method == "INVITE":
            self.stats.invites_received += 1
        if any(feature.on_call(self, event, now) for feature in self.features):
            return
        if self.calls is not None and request.method in CALL_METHODS:
            target = target_id(request)
            if target in self.camera_ids and self.calls.on_request(event, target, now):
                return
        if event.transaction is None:
            return  # an ACK that is no call's
        status = 501 if request.method == "INVITE" else 405
        self.endpoint.send_response(
            event.transaction, make_response(request, status, to_tag=self.endpoint.new_tag()), now
        )

    def is_muted(self, now: float) -> bool:
        """Silent, or in a silent phase of flapping: answer nothing, send no keepalive."""
        if self.misbehaviour.silent:
            return True
        period = self.misbehaviour.flap_period
        return period > 0 and int((now - self._started_at) / period) % 2 == 1

    def keepalive_body(self, body: bytes, number: int) -> bytes:
        """Every ``malformed_every``-th keepalive is broken XML, on purpose."""
        every = self.misbehaviour.malformed_every
        if every and number % every == 0:
            return body.replace(b"</Notify>", b"<Notify>")
        return body

    def on_timer(self, key: Hashable, now: float) -> None:
        """A feature's timer, or an alarm resend, is due."""
        if any(feature.on_timer(self, key, now) for feature in self.features):
            return
        self._alarms.on_timer(key, now)

    def on_event(self, event: LowerEvent) -> None:
        """Count what happened into :attr:`stats`; alarm answers go to the alarms."""
        match event:
            case Registered():
                self.stats.registrations += 1
            case _Challenged():
                self.stats.challenges += 1
            case RegisterFailed(status=status) if status is not None and status not in (401, 407):
                self.stats.refusals += 1
                self.stats.last_refusal = status
            case KeepaliveSent():
                self.stats.keepalives_sent += 1
            case KeepaliveFailed():
                self.stats.keepalive_failures += 1
            case MessageReceived(message=message) if not is_alarm_response(message):
                self.stats.queries_answered += 1
            case MessageAnswered(key=AlarmAttempt() as key, status=status):
                self._alarms.on_answer(key, status, now=event.at)
            case MessageTimedOut(key=AlarmAttempt() as key):
                self._alarms.on_timeout(key, event.at)
            case Redirected() if self.on_redirect is not None:
                self.on_redirect(self, event)
            case _:
                pass


class AgentHost:
    """Agents sharing one endpoint, as a handler of its :class:`~gateway.gb28181.sip.router.SipRouter`.

    Requests reach the agent whose ID or channel they name; put the host on a
    router with ``unclaimed_status=404`` so that an ID no agent owns is answered
    the way a device behind the same address would.
    """

    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        self.agents: dict[str, DeviceAgent] = {}
        self._routes: dict[str, DeviceAgent] = {}
        self._host = LowerHost(endpoint, self._client_for)

    def add(self, agent: DeviceAgent) -> None:
        """Attach an agent; requests for its ID or channel IDs reach it."""
        self.agents[agent.profile.device_id] = agent
        self._routes[agent.profile.device_id] = agent
        for channel in agent.profile.channels:
            self._routes.setdefault(channel.device_id, agent)
        self._host.add(agent.client)

    def start_all(self, now: float, agents: Iterable[DeviceAgent] | None = None) -> None:
        """Start agents (all by default)."""
        for agent in agents if agents is not None else self.agents.values():
            agent.start(now)

    def route(self, event: SipEvent, now: float) -> bool:
        """Hand an endpoint event to its agent; False when no agent here owns it."""
        return self._host.route(event, now)

    def device_for(self, target_id: str) -> DeviceAgent | None:
        """The agent that owns ``target_id`` (a device ID or one of its channels), or None."""
        return self._routes.get(target_id)

    def press_alarm(
        self,
        target_id: str,
        now: float,
        wall: datetime,
        *,
        kind: str = "button",
        description: str | None = None,
    ) -> AlarmRecord:
        """Raise an alarm on the device owning ``target_id`` and schedule its retries.

        ``target_id`` is a device ID (default source channel) or a channel ID (the
        source). Raises KeyError for an ID no agent here owns, ValueError for a bad kind.
        """
        agent = self._routes.get(target_id)
        if agent is None:
            raise KeyError(target_id)
        source = None if target_id == agent.profile.device_id else target_id
        return agent.press_alarm(now, wall, kind=kind, source_id=source, description=description)

    def next_call_event(self) -> tuple[DeviceAgent, CallEvent] | None:
        """The next live-call event of any camera on this endpoint, with its device, or None."""
        for agent in self.agents.values():
            if agent.calls is not None and (event := agent.calls.next_event()) is not None:
                return agent, event
        return None

    def get_timer(self) -> float | None:
        """Earliest deadline of every agent (the endpoint's are the router's)."""
        return self._host.get_timer()

    def handle_timer(self, now: float) -> None:
        """Run every agent's due timers."""
        self._host.handle_timer(now)

    def _client_for(self, event: RequestReceived) -> LowerClient | None:
        agent = self._routes.get(target_id(event.request) or "")
        return agent.client if agent is not None else None
