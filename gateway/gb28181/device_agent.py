"""A GB/T 28181 device in the device role (sans-I/O), for simulators and tests.

:class:`DeviceAgent` registers with digest, refreshes before expiry, sends
keepalives, and answers Catalog / DeviceInfo / DeviceStatus queries the way
an NVR, IPC or alarm box does. A device with camera channels (type 131/132)
also answers live INVITEs for them through a
:class:`~gateway.gb28181.device_calls.DeviceCalls`; the media side drains the
call events with :meth:`AgentHost.next_call_event`. :meth:`DeviceAgent.press_alarm`
raises a ``Notify/Alarm`` (notes §9.1) and retries it like a real device until
the platform answers 2xx; the platform's ``Response/Alarm`` MESSAGE (§9.2) is
recorded on the :class:`AlarmRecord`. Many agents share one
:class:`SipEndpoint` (one socket per kindergarten, as behind a NAT);
:class:`AgentHost` routes the endpoint's events to them. Misbehaviour switches (wrong password, silent,
flapping, malformed bodies, duplicated alarms) let tests and operators provoke every failure
path of the gateway.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from gateway.errors import GatewayError
from gateway.gb28181.device_calls import CallEvent, DeviceCalls
from gateway.gb28181.manscdp import (
    AlarmNotify,
    CatalogItem,
    CatalogQuery,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    Keepalive,
    ResultResponse,
    Root,
    UnknownCommand,
    decode_message,
    format_gb_time,
    serialize,
    split_catalog,
)
from gateway.gb28181.requests import build_message, build_register, register_uri, sip_uri
from gateway.gb28181.sip.auth import DigestClient
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, SipEvent, TransactionTimedOut
from gateway.gb28181.sip.message import SipRequest, make_response
from gateway.gb28181.sip.transport import Peer


CALL_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL"})
CAMERA_TYPE_CODES = frozenset({"131", "132"})  # camera, IPC (GB/T 28181 Annex D type codes)
ALARM_INPUT_TYPE_CODES = frozenset({"134"})  # alarm input: one-key button, perimeter detector
MAX_ALARM_RECORDS = 10_000


def is_camera(item: CatalogItem) -> bool:
    """Whether a catalog channel is a camera (type code 131 or 132 in its ID)."""
    return item.device_id[10:13] in CAMERA_TYPE_CODES


def is_alarm_input(item: CatalogItem) -> bool:
    """Whether a catalog channel is an alarm input (type code 134 in its ID)."""
    return item.device_id[10:13] in ALARM_INPUT_TYPE_CODES


@dataclass(frozen=True, slots=True)
class AlarmKind:
    """How one kind of alarm is coded in ``Notify/Alarm`` (notes §9.1) and which channel raises it.

    ``source`` names the channels that fit as default source: "alarm" (134 inputs),
    "camera" (131/132) or "device" (the device itself, e.g. its disk).
    """

    name: str
    method: str
    priority: str
    description: str
    source: str
    alarm_type: str | None = None
    event_type: str | None = None


ALARM_KINDS: dict[str, AlarmKind] = {
    k.name: k
    for k in (
        AlarmKind("button", method="1", priority="1", description="一键报警按钮按下", source="alarm"),
        AlarmKind(
            "perimeter",
            method="5",
            priority="2",
            description="周界入侵",
            source="alarm",
            alarm_type="6",
            event_type="1",
        ),
        AlarmKind("video_loss", method="2", priority="3", description="视频丢失", source="camera", alarm_type="1"),
        AlarmKind("tamper", method="2", priority="3", description="设备防拆报警", source="camera", alarm_type="2"),
        AlarmKind(
            "disk_fault", method="6", priority="4", description="存储设备磁盘故障", source="device", alarm_type="1"
        ),
    )
}
"""The alarms a simulated device can raise, by name."""


@dataclass(slots=True)
class AlarmRecord:
    """One pressed alarm as the device sees it: what it sent and what the platform answered.

    ``body`` is kept so that every retry resends exactly the same bytes (same SN,
    same AlarmTime): the platform must recognise the repeat, not count a new alarm.
    ``attempts`` counts rounds (first send + retries); ``messages`` counts MESSAGE
    transactions on the wire (twice the rounds with ``Misbehaviour.alarm_duplicate``).
    """

    device_id: str
    source_id: str
    sn: int
    kind: str
    pressed_at: float
    wall: datetime
    alarm_time: str
    body: bytes
    attempts: int = 0
    messages: int = 0
    timeouts: int = 0
    answered_at: float | None = None  # first 2xx to any attempt
    status: int | None = None  # last final status (None: only timeouts so far)
    response_at: float | None = None  # the platform's Response/Alarm MESSAGE arrived
    gave_up: bool = False  # stopped trying unanswered: retries used up, or a final 3xx/4xx/6xx

    @property
    def answered(self) -> bool:
        """True once some attempt got a 2xx."""
        return self.answered_at is not None


class AgentState(str, Enum):
    """Registration state of a simulated device."""

    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    RETRY_WAIT = "retry_wait"
    STOPPED = "stopped"


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


@dataclass(slots=True)
class Misbehaviour:
    """Switches that make a device misbehave on purpose."""

    wrong_password: bool = False
    silent: bool = False  # stop keepalives (and answer nothing)
    flap_period: float = 0.0  # > 0: alternate silent/talking every period seconds
    malformed_every: int = 0  # > 0: every n-th keepalive body is broken XML
    alarm_duplicate: bool = False  # send every alarm MESSAGE twice, as two transactions


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


class _Timer(str, Enum):
    REGISTER = "register"
    KEEPALIVE = "keepalive"


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


class DeviceAgent:
    """One simulated device on a (possibly shared) endpoint."""

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
        self.state = AgentState.IDLE
        self.stats = AgentStats()
        self._digest = DigestClient(
            profile.device_id, "wrong-" + profile.password if self.misbehaviour.wrong_password else profile.password
        )
        self._call_id = endpoint.new_call_id()
        self._from_tag = endpoint.new_tag()
        self._cseq = 0
        self._sn = 0
        self._challenge: str | None = None
        self._challenges_in_row = 0
        self._timers: dict[_Timer, float] = {}
        self._alarm_retries: dict[int, float] = {}  # SN -> when to resend
        self.alarms: dict[int, AlarmRecord] = {}
        """Alarms this device raised, by SN (oldest dropped beyond MAX_ALARM_RECORDS)."""
        self._catalog_queue: list[Any] = []
        self._started_at = 0.0
        self.camera_ids = frozenset(c.device_id for c in profile.channels if is_camera(c))
        self.calls: DeviceCalls | None = DeviceCalls(endpoint) if self.camera_ids else None
        """Live calls of this device's cameras; None for a device without cameras."""

    # --- lifecycle -----------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin registering."""
        self._started_at = now
        self._register(now, self.timing.expires)

    def stop(self, now: float, *, unregister: bool = True) -> None:
        """Stop; optionally send REGISTER Expires: 0 first."""
        if unregister and self.state is AgentState.REGISTERED:
            self._register(now, 0)
        self.state = AgentState.STOPPED
        self._timers.clear()
        self._alarm_retries.clear()

    @property
    def registered(self) -> bool:
        """True once the server accepted the registration."""
        return self.state is AgentState.REGISTERED

    def owns(self, target_id: str) -> bool:
        """Whether a request for ``target_id`` is for this device (itself or a channel)."""
        return target_id == self.profile.device_id or any(c.device_id == target_id for c in self.profile.channels)

    def get_timer(self) -> float | None:
        """This agent's earliest deadline."""
        deadlines = [*self._timers.values(), *self._alarm_retries.values()]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run due timers."""
        for timer, at in list(self._timers.items()):
            if at > now:
                continue
            del self._timers[timer]
            if timer is _Timer.REGISTER:
                self._register(now, self.timing.expires)
            elif timer is _Timer.KEEPALIVE:
                self._keepalive(now)
        for sn, at in list(self._alarm_retries.items()):
            if at <= now:
                del self._alarm_retries[sn]
                record = self.alarms.get(sn)
                if record is not None and not record.answered:
                    self._send_alarm(record, now)

    # --- events from the shared endpoint -----------------------------------------

    def handle_request(self, event: RequestReceived, now: float, target: str | None = None) -> None:
        """A request addressed to this device (``target``: the device or channel ID it names)."""
        request = event.request
        if event.transaction is None and request.method != "ACK":
            return
        if self._is_silent(now):
            return  # a dead device answers nothing; the gateway's transaction times out
        if request.method == "INVITE":
            self.stats.invites_received += 1
        if self._handle_call(event, target if target is not None else _target_id(request), now):
            return
        if event.transaction is None:
            return  # an ACK that is no call's
        if request.method != "MESSAGE":
            self._answer(request, event.transaction, 501 if request.method == "INVITE" else 405, now)
            return
        try:
            message, _ = decode_message(request.body)
        except GatewayError:
            self._answer(request, event.transaction, 400, now)
            return
        self._answer(request, event.transaction, 200, now)
        if _is_alarm_response(message):
            self._on_alarm_response(message.sn, now)
            return
        self._on_query(message, now)

    def _handle_call(self, event: RequestReceived, target: str | None, now: float) -> bool:
        """INVITE/ACK/BYE for one of our cameras go to :attr:`calls`; True when handled."""
        if self.calls is None or event.request.method not in CALL_METHODS or target not in self.camera_ids:
            return False
        return self.calls.on_request(event, target, now)

    def next_call_event(self) -> CallEvent | None:
        """The next live-call event of this device's cameras, or None."""
        return self.calls.next_event() if self.calls is not None else None

    def handle_response(self, event: ResponseReceived, now: float) -> None:
        """A response to something this device sent."""
        kind = event.context[1] if isinstance(event.context, tuple) else None
        status = event.response.status
        if kind == "register":
            self._on_register_response(event, now)
        elif kind == "keepalive" and status >= 300:
            self.stats.keepalive_failures += 1
            if status in (401, 403, 404, 481):  # the platform forgot us: register again
                self._reregister_soon(now)
        elif kind == "catalog" and status >= 200:
            self._send_next_catalog_chunk(now)
        elif kind == "alarm" and status >= 200 and isinstance(event.context, tuple):
            self._on_alarm_answer(event.context[2], event.context[3], status, now)

    def handle_timeout(self, event: TransactionTimedOut, now: float) -> None:
        """A request of this device got no answer."""
        kind = event.context[1] if isinstance(event.context, tuple) else None
        if kind == "register" and self.state is not AgentState.STOPPED:
            self.state = AgentState.RETRY_WAIT
            self._timers[_Timer.REGISTER] = now + self.timing.retry_delay
        elif kind == "keepalive":
            self.stats.keepalive_failures += 1
        elif kind == "catalog":
            self._send_next_catalog_chunk(now)
        elif kind == "alarm" and isinstance(event.context, tuple):
            record = self.alarms.get(event.context[2])
            if record is not None:
                record.timeouts += 1
                self._maybe_retry_alarm(record, event.context[3], now)

    # --- registration ------------------------------------------------------------------

    def _register(self, now: float, expires: int, authorization: str | None = None) -> None:
        if self.state is AgentState.STOPPED and expires > 0:
            return  # a stopped device may still finish its unregistration
        if authorization is None and self._challenge is not None:
            authorization = self._authorize(self._challenge)  # re-use the nonce (nc+1)
        self._cseq += 1
        host, port = self.endpoint.local_host, self.endpoint.local_port
        request = build_register(
            device_id=self.profile.device_id,
            domain=self.server.domain,
            server_id=self.server.server_id,
            contact_host=host,
            contact_port=port,
            from_tag=self._from_tag,
            call_id=self._call_id,
            cseq=self._cseq,
            expires=expires,
            authorization=authorization,
            user_agent=self.profile.user_agent,
        )
        if expires > 0:
            self.state = AgentState.REGISTERING
        self.endpoint.send_request(request, self.server.peer, now, context=(self, "register", expires))

    def _authorize(self, challenge: str) -> str:
        uri = register_uri(self.server.server_id, self.server.domain)
        return self._digest.authorization(challenge, "REGISTER", uri, cnonce=self.endpoint.ids.token(4))

    def _on_register_response(self, event: ResponseReceived, now: float) -> None:
        status = event.response.status
        expires = event.context[2] if isinstance(event.context, tuple) else self.timing.expires
        if status < 200:
            return
        if status == 401:
            challenge = event.response.headers.get("WWW-Authenticate")
            self.stats.challenges += 1
            self._challenges_in_row += 1
            if challenge is None or self._challenges_in_row > 3:  # never loop on 401s
                self._challenges_in_row = 0
                self._reregister_soon(now)
                return
            self._challenge = challenge
            try:
                authorization = self._authorize(challenge)
            except GatewayError:
                self._reregister_soon(now)
                return
            self._register(now, expires, authorization)
            return
        if 200 <= status < 300:
            self._challenges_in_row = 0
            if expires == 0:
                return
            self.state = AgentState.REGISTERED
            self.stats.registrations += 1
            self._timers[_Timer.REGISTER] = now + expires * self.timing.refresh_ratio
            if _Timer.KEEPALIVE not in self._timers:
                self._keepalive(now)
            return
        self.stats.refusals += 1
        self.stats.last_refusal = status
        self._challenge = None
        self._reregister_soon(now, delay=max(self.timing.retry_delay, 30.0) if status == 403 else None)

    def _reregister_soon(self, now: float, delay: float | None = None) -> None:
        if self.state is AgentState.STOPPED:
            return
        self.state = AgentState.RETRY_WAIT
        self._timers.pop(_Timer.KEEPALIVE, None)
        self._timers[_Timer.REGISTER] = now + (delay if delay is not None else self.timing.retry_delay)

    # --- keepalive ------------------------------------------------------------------------

    def _is_silent(self, now: float) -> bool:
        if self.misbehaviour.silent:
            return True
        period = self.misbehaviour.flap_period
        return period > 0 and int((now - self._started_at) / period) % 2 == 1

    def _keepalive(self, now: float) -> None:
        if self.state is not AgentState.REGISTERED:
            return
        self._timers[_Timer.KEEPALIVE] = now + self.timing.keepalive_interval
        if self._is_silent(now):
            return
        self.stats.keepalives_sent += 1
        body = serialize(Keepalive(sn=self._next_sn(), device_id=self.profile.device_id, status="OK"))
        every = self.misbehaviour.malformed_every
        if every and self.stats.keepalives_sent % every == 0:
            body = body.replace(b"</Notify>", b"<Notify>")  # broken on purpose
        self._send_message(body, now, "keepalive")

    def send_keepalive_now(self, now: float) -> None:
        """Send a keepalive immediately (tests, and after resuming)."""
        self._keepalive(now)

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
        spec = ALARM_KINDS.get(kind)
        if spec is None:
            raise ValueError(f"unknown alarm kind {kind!r}; known: {', '.join(ALARM_KINDS)}")
        if source_id is None:
            source_id = self._default_alarm_source(spec)
        elif not self.owns(source_id):
            raise ValueError(f"{source_id} is neither device {self.profile.device_id} nor one of its channels")
        channel = next((c for c in self.profile.channels if c.device_id == source_id), None)
        notify = AlarmNotify(
            sn=self._next_sn(),
            device_id=source_id,
            priority=spec.priority,
            method=spec.method,
            alarm_time=format_gb_time(wall),
            description=description if description is not None else spec.description,
            longitude=channel.longitude if channel is not None else None,
            latitude=channel.latitude if channel is not None else None,
            alarm_type=spec.alarm_type,
            event_type=spec.event_type,
        )
        record = AlarmRecord(
            device_id=self.profile.device_id,
            source_id=source_id,
            sn=notify.sn,
            kind=kind,
            pressed_at=now,
            wall=wall,
            alarm_time=notify.alarm_time or "",
            body=serialize(notify),
        )
        self._keep_alarm(record)
        self.stats.alarms_sent += 1
        self._send_alarm(record, now)
        return record

    def _default_alarm_source(self, spec: AlarmKind) -> str:
        fits = {"alarm": is_alarm_input, "camera": is_camera}.get(spec.source)
        if fits is not None:
            for channel in self.profile.channels:
                if fits(channel):
                    return channel.device_id
        return self.profile.device_id

    def _keep_alarm(self, record: AlarmRecord) -> None:
        self.alarms[record.sn] = record
        while len(self.alarms) > MAX_ALARM_RECORDS:
            oldest = next(iter(self.alarms))
            del self.alarms[oldest]
            self._alarm_retries.pop(oldest, None)

    def _send_alarm(self, record: AlarmRecord, now: float) -> None:
        """One round: the same body as a new transaction (twice when duplicating on purpose)."""
        if self.state is AgentState.STOPPED:
            return
        record.attempts += 1
        self.stats.alarm_attempts += 1
        for _ in range(2 if self.misbehaviour.alarm_duplicate else 1):
            record.messages += 1
            self.stats.alarm_messages += 1
            self._send_message(record.body, now, "alarm", record.sn, record.attempts)

    def _on_alarm_answer(self, sn: int, attempt: int, status: int, now: float) -> None:
        record = self.alarms.get(sn)
        if record is None:
            return
        record.status = status
        if 200 <= status < 300:
            if record.answered_at is None:
                record.answered_at = now
                self.stats.alarms_answered += 1
            record.gave_up = False
            self._alarm_retries.pop(sn, None)
        elif 500 <= status < 600:
            self._maybe_retry_alarm(record, attempt, now)
        elif status in (401, 404, 481) and not record.answered:
            # The platform does not know us (it lost our registration, e.g. after a crash):
            # register again at once, then send the alarm again, as devices do.
            self._reregister_soon(now, delay=0.0)
            self._maybe_retry_alarm(record, attempt, now)
        elif not record.answered:
            record.gave_up = True  # 3xx/4xx/6xx: resending the same body cannot help

    def _maybe_retry_alarm(self, record: AlarmRecord, attempt: int, now: float) -> None:
        """Schedule one resend after a failed round; late failures of older rounds change nothing."""
        if record.answered or attempt != record.attempts or record.sn in self._alarm_retries:
            return
        if record.attempts > self.timing.alarm_retries:
            record.gave_up = True
            return
        self._alarm_retries[record.sn] = now + self.timing.alarm_retry_delay

    def _on_alarm_response(self, sn: int, now: float) -> None:
        record = self.alarms.get(sn)
        if record is not None and record.response_at is None:
            record.response_at = now
            self.stats.alarm_responses += 1

    # --- queries ------------------------------------------------------------------------------

    def _on_query(self, message: Any, now: float) -> None:
        self.stats.queries_answered += 1
        device_id = self.profile.device_id
        if isinstance(message, DeviceInfoQuery):
            info = DeviceInfoResponse(
                sn=message.sn,
                device_id=device_id,
                device_name=self.profile.name,
                result="OK",
                manufacturer=self.profile.manufacturer,
                model=self.profile.model,
                firmware=self.profile.firmware,
                channel=len(self.profile.channels),
            )
            self._send_message(serialize(info), now, "response")
        elif isinstance(message, DeviceStatusQuery):
            status = DeviceStatusResponse(
                sn=message.sn,
                device_id=device_id,
                result="OK",
                online="ONLINE",
                status="OK",
                encode="ON",
                record="OFF",
            )
            self._send_message(serialize(status), now, "response")
        elif isinstance(message, CatalogQuery):
            chunks = split_catalog(message.sn, device_id, self.profile.channels, self.timing.catalog_per_message)
            self._catalog_queue = list(chunks)
            self._send_next_catalog_chunk(now)

    def _send_next_catalog_chunk(self, now: float) -> None:
        """Send chunks one at a time, each after the previous one's 200 (WVP's pacing)."""
        if not self._catalog_queue:
            return
        chunk = self._catalog_queue.pop(0)
        self._send_message(serialize(chunk), now, "catalog")

    def _next_sn(self) -> int:
        self._sn += 1
        return self._sn

    def _send_message(self, body: bytes, now: float, kind: str, *extra: object) -> None:
        self._cseq += 1
        request = build_message(
            from_id=self.profile.device_id,
            from_domain=self.server.domain,
            from_tag=self.endpoint.new_tag(),
            to_id=self.server.server_id,
            to_domain=self.server.domain,
            request_uri=sip_uri(self.server.server_id, self.server.domain),
            call_id=self.endpoint.new_call_id(),
            cseq=self._cseq,
            body=body,
        )
        self.endpoint.send_request(request, self.server.peer, now, context=(self, kind, *extra))

    def _answer(self, request: SipRequest, txn: str, status: int, now: float) -> None:
        self.endpoint.send_response(txn, make_response(request, status, to_tag=self.endpoint.new_tag()), now)


@dataclass
class AgentHost:
    """Agents sharing one endpoint; routes endpoint events to the right agent."""

    endpoint: SipEndpoint
    agents: dict[str, DeviceAgent] = field(default_factory=dict)
    _routes: dict[str, DeviceAgent] = field(default_factory=dict)
    _heap: list[tuple[float, int, str]] = field(default_factory=list)
    _seq: int = 0
    unrouted: int = 0

    def add(self, agent: DeviceAgent) -> None:
        """Attach an agent; requests for its ID or channel IDs reach it."""
        self.agents[agent.profile.device_id] = agent
        self._routes[agent.profile.device_id] = agent
        for channel in agent.profile.channels:
            self._routes.setdefault(channel.device_id, agent)

    def start_all(self, now: float, agents: Iterable[DeviceAgent] | None = None) -> None:
        """Start agents (all by default)."""
        for agent in agents if agents is not None else self.agents.values():
            agent.start(now)
            self._schedule(agent)

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        """Feed bytes to the shared endpoint and route what comes out."""
        self.endpoint.receive(data, peer, now)
        self.process(now)

    def process(self, now: float) -> None:
        """Route every pending endpoint event."""
        while (event := self.endpoint.next_event()) is not None:
            self._route(event, now)

    def _route(self, event: SipEvent, now: float) -> None:
        if isinstance(event, RequestReceived):
            target = _target_id(event.request)
            agent = self._routes.get(target or "")
            if agent is None:
                self.unrouted += 1
                if event.transaction is not None:
                    response = make_response(event.request, 404, to_tag=self.endpoint.new_tag())
                    self.endpoint.send_response(event.transaction, response, now)
                return
            agent.handle_request(event, now, target)
            self._schedule(agent)
            return
        context = getattr(event, "context", None)
        agent = context[0] if isinstance(context, tuple) and context and isinstance(context[0], DeviceAgent) else None
        if agent is None:
            return
        if isinstance(event, ResponseReceived):
            agent.handle_response(event, now)
        else:
            agent.handle_timeout(event, now)
        self._schedule(agent)

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
        record = agent.press_alarm(now, wall, kind=kind, source_id=source, description=description)
        self._schedule(agent)
        return record

    def next_call_event(self) -> tuple[DeviceAgent, CallEvent] | None:
        """The next live-call event of any camera on this endpoint, with its device, or None."""
        for agent in self.agents.values():
            if agent.calls is not None and (event := agent.calls.next_event()) is not None:
                return agent, event
        return None

    def get_timer(self) -> float | None:
        """Earliest deadline of the endpoint and every agent."""
        candidates = [t for t in (self.endpoint.get_timer(), self._heap[0][0] if self._heap else None) if t is not None]
        return min(candidates) if candidates else None

    def handle_timer(self, now: float) -> None:
        """Run due endpoint and agent timers."""
        self.endpoint.handle_timer(now)
        self.process(now)
        while self._heap and self._heap[0][0] <= now:
            _, _, device_id = heapq.heappop(self._heap)
            agent = self.agents.get(device_id)
            if agent is None:
                continue
            agent.handle_timer(now)
            self.process(now)
            self._schedule(agent)

    def _schedule(self, agent: DeviceAgent) -> None:
        deadline = agent.get_timer()
        if deadline is not None:
            self._seq += 1
            heapq.heappush(self._heap, (deadline, self._seq, agent.profile.device_id))


def _is_alarm_response(message: Any) -> bool:
    """The platform's ``Response/Alarm`` acknowledgement (notes §9.2), with or without a Result."""
    if isinstance(message, ResultResponse):
        return message.cmd_type.strip().lower() == "alarm"
    return isinstance(message, UnknownCommand) and message.root is Root.RESPONSE and message.cmd_type.lower() == "alarm"


def _target_id(request: SipRequest) -> str | None:
    """The device or channel a request is for: Request-URI user, else To user."""
    try:
        user = request.uri.split(":", 1)[1].split("@", 1)[0] if "@" in request.uri else None
        return user or request.to.uri.user
    except GatewayError:
        return None
