"""The gateway as a lower platform towards upper platforms (GB/T 28181 cascade, docs/gb28181.md §16), sans-I/O.

An :class:`UpperLink` presents the gateway to one upper platform (district,
municipal, police) as one big device (docs/gb28181.md §16.1). It is a role of the shared
lower-side core (:class:`~gateway.gb28181.lower.LowerClient`), which REGISTERs
with digest and refreshes, sends keepalives and notices when the upper is
gone, answers queries, accepts catalog SUBSCRIBEs and pushes catalog NOTIFYs in
their dialogs. The link says what this upper may see: the channel subset of
its sharing policy for Catalog / DeviceInfo / DeviceStatus; it forwards alarms
upward; calls (INVITE and friends) are handed to :attr:`UpperLink.on_call`
untouched.

Every link shares the gateway's :class:`SipEndpoint` (one socket towards
devices and uppers alike). :class:`CascadeHost` holds the links and, as a
handler of the endpoint's :class:`~gateway.gb28181.sip.router.SipRouter` ahead
of device access, claims the events that belong to an upper (:meth:`CascadeHost.route`).

Time comes in as ``now``; nothing here reads a clock, draws random numbers
(the endpoint's id source does) or touches a socket.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from gateway.cascade.upper_config import PlatformInfo, UpperPlatformConfig, valid_host
from gateway.cascade.upper_trust import UpperAddresses, parse_networks
from gateway.errors import ConfigError, SipError
from gateway.gb28181.ids import GbId, is_gb_id
from gateway.gb28181.lower import (
    CatalogSent,
    LowerClient,
    LowerEvent,
    LowerHost,
    LowerIdentity,
    LowerPolicy,
    MessageAnswered,
    MessageTimedOut,
    Registered,
    RegisterFailed,
    RegState,
    SubscriptionChanged,
    WentOffline,
)
from gateway.gb28181.manscdp import (
    AlarmNotify,
    CatalogItem,
    DeviceInfoQuery,
    DeviceInfoResponse,
    DeviceStatusQuery,
    DeviceStatusResponse,
    ManscdpMessage,
    serialize,
)
from gateway.gb28181.requests import sip_uri, target_id
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, SipEvent, TransactionTimedOut
from gateway.gb28181.sip.message import SipRequest, make_response
from gateway.gb28181.sip.transport import Peer

__all__ = [
    "AlarmAnswered",
    "CascadeHost",
    "CatalogSent",
    "PlatformInfo",
    "SubscriptionChanged",
    "UpperEvent",
    "UpperLink",
    "UpperOffline",
    "UpperOnline",
    "UpperPlatformConfig",
    "UpperState",
    "upper_policy",
]

log = logging.getLogger("kgw.cascade")

REFRESH_RATIO: Final = 0.8  # re-REGISTER at 80 % of the granted expiry, as the device agent does
TIMEOUT_STATUS: Final = 408  # what a transaction time-out is reported as
FORGED_STATUS: Final = 403  # a request claiming an upper's ID from an address that is not the upper's
FORGED_LOG_EVERY: Final = 1000  # after the first 10 forged requests of a link, log one in this many
ALLOW: Final = "MESSAGE, SUBSCRIBE, OPTIONS, INVITE, ACK, BYE, CANCEL, INFO"


class UpperCommands(Protocol):
    """Judges and carries out one kind of an upper's commands (DeviceControl, RecordInfo…)."""

    def status(self, link: UpperLink, message: ManscdpMessage) -> int | None:
        """The SIP status for the MESSAGE (403 outside the upper's policy…); None: not this handler's kind."""
        ...

    def relay(self, link: UpperLink, message: ManscdpMessage, now: float) -> bool:
        """Act on a MESSAGE :meth:`status` accepted; False: not this handler's kind."""
        ...


UpperState = RegState
"""Registration state of one upper link (the lower side's states: idle, registering, …)."""


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpperOnline:
    """The upper accepted our registration (first 200, or the first after an outage)."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class UpperOffline:
    """We lost the upper: registration refused or timed out, keepalives failing, or stopped."""

    name: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class AlarmAnswered:
    """The final answer to an alarm sent with :meth:`UpperLink.send_alarm` (408 for a time-out)."""

    name: str
    key: object
    status: int


UpperEvent = UpperOnline | UpperOffline | AlarmAnswered | CatalogSent | SubscriptionChanged


def upper_policy(config: UpperPlatformConfig) -> LowerPolicy:
    """How an upper link differs from a device: doubling retry, keepalive loss re-registers, 403 when off."""
    return LowerPolicy(
        expires=config.expires,
        refresh_ratio=REFRESH_RATIO,
        retry_delay=config.register_retry_min,
        retry_max=config.register_retry_max,
        retry_doubles=True,
        relogin_delay=config.register_retry_min,
        keepalive_interval=config.keepalive_interval,
        keepalive_missed=config.keepalive_missed,
        unanswered_is_missed=True,
        catalog_per_message=config.catalog_per_message,
        user_agent=None,
        cnonce_bytes=8,
        random_sn_start=True,
        methods=frozenset({"MESSAGE", "SUBSCRIBE", "OPTIONS"}),
        allow=ALLOW,
        refuse_when_off=403,  # a switched-off upper is refused, not served
    )


# --- one upper platform ------------------------------------------------------------------------------


class UpperLink:
    """The gateway as lower platform towards one upper, on a shared endpoint: a role of :class:`LowerClient`.

    ``catalog`` returns the items this upper may see, in sending order (built by
    the sharing policy); ``channel_status`` says whether a shared channel is online
    (None: not shared with this upper). ``peer`` may be replaced by the I/O layer
    (e.g. with an open TCP connection) before :meth:`start`.

    Composition rather than a subclass: the link keeps its own API (``on_call``
    is an attribute the relay sets, :meth:`next_event` returns upper events)
    without clashing with the core's, and the core sees only the small
    :class:`~gateway.gb28181.lower.LowerRole` protocol.
    """

    def __init__(
        self,
        config: UpperPlatformConfig,
        local_id: str,
        local_domain: str,
        endpoint: SipEndpoint,
        *,
        catalog: Callable[[], Sequence[CatalogItem]],
        channel_status: Callable[[str], bool | None],
        device_info: PlatformInfo | None = None,
    ) -> None:
        config.validate()
        if not is_gb_id(local_id):
            raise ConfigError(f"our local ID must be 20 digits, got {local_id!r:.40}")
        if not valid_host(local_domain):
            raise ConfigError(f"bad local SIP domain {local_domain!r:.40}")
        self.config = config
        self.name = config.name
        self.local_id = local_id
        self.local_domain = local_domain
        self.endpoint = endpoint
        self.device_info = device_info or PlatformInfo()
        # Takes INVITE/ACK/BYE/CANCEL/INFO from the upper (the live relay); True when consumed.
        self.on_call: Callable[[RequestReceived, float], bool] | None = None
        # Judge and carry out the upper's commands (gateway/cascade/control_relay.py, upper_records.py,
        # broadcast_relay.py)).
        self.commands: list[UpperCommands] = []
        self.registered_at: float | None = None
        label = f"upper platform {config.name!r:.40}"
        self.addresses = UpperAddresses(
            frozenset({config.host}),
            config.port,
            parse_networks(config.signal_networks, f"{label} signal_networks"),
            parse_networks(config.media_networks, f"{label} media_networks"),
        )
        """Where this upper may speak from and send media to (:meth:`resolved` fills in its host's IPs)."""
        self.forged_requests = 0
        """Requests that claimed this upper's ID from elsewhere (refused 403)."""
        self._catalog = catalog
        self._channel_status = channel_status
        self._events: deque[UpperEvent] = deque()
        identity = LowerIdentity(
            name=config.name,
            local_id=local_id,
            local_domain=local_domain,
            server_id=config.server_id,
            server_domain=config.domain,
            server_uri=sip_uri(config.server_id, config.host, config.port),  # docs/gb28181.md §16.2
            username=config.username or local_id,
            password=config.password,
        )
        self.client = LowerClient(identity, upper_policy(config), endpoint, config.peer, self)
        """The lower-side core this link is a role of."""

    # --- state ---------------------------------------------------------------------------

    @property
    def state(self) -> RegState:
        """The registration state (idle, registering, registered, retry_wait, stopped)."""
        return self.client.state

    @property
    def registered(self) -> bool:
        """True while the upper accepts us (alarms may be sent)."""
        return self.client.registered

    @property
    def peer(self) -> Peer:
        """Where the upper is reached."""
        return self.client.peer

    @peer.setter
    def peer(self, peer: Peer) -> None:
        self.client.peer = peer

    def resolved(self, hosts: Sequence[str]) -> None:
        """The I/O layer resolved the configured host name to these addresses."""
        if hosts:  # the name stays too: an upper may name itself in its SDP (c=police)
            self.addresses = replace(self.addresses, hosts=frozenset({self.config.host, *hosts}))

    def accepts_from(self, peer: Peer) -> bool:
        """Whether a request claiming this upper may come from ``peer`` (issue 10, C1)."""
        return self.addresses.signal_allowed(peer)

    @property
    def last_error(self) -> str | None:
        """Why the last registration attempt or keepalive failed."""
        return self.client.last_error

    @property
    def keepalive_failures(self) -> int:
        """Keepalive failures in a row; ``keepalive_missed`` of them take the upper offline."""
        return self.client.keepalive_failures

    @property
    def consecutive_register_failures(self) -> int:
        """Failed registration attempts in a row (the back-off doubles with each)."""
        return self.client.consecutive_register_failures

    @property
    def subscriptions(self) -> int:
        """Live catalog subscriptions."""
        return len(self.client.subscriptions)

    @property
    def unregistering(self) -> bool:
        """True while our REGISTER with Expires: 0 waits for its final answer (or time-out)."""
        return self.client.unregistering

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin registering (again, after :meth:`stop`); no-op while running."""
        self.client.start(now)

    def retry_now(self, now: float) -> None:
        """Register again at once (the I/O layer opened a new TCP connection to the upper)."""
        self.client.retry_now(now)

    def stop(self, now: float, unregister: bool = True) -> None:
        """Stop every timer, drop subscriptions and pushes; send REGISTER Expires: 0 if registered."""
        self.client.stop(now, unregister)

    def get_timer(self) -> float | None:
        """This link's earliest deadline (the endpoint's own timers are not included)."""
        return self.client.get_timer()

    def handle_timer(self, now: float) -> None:
        """Run due timers: (re-)REGISTER, keepalive, subscription expiry."""
        self.client.handle_timer(now)

    def next_event(self) -> UpperEvent | None:
        """The next application event, or None."""
        return self._events.popleft() if self._events else None

    def status(self) -> dict[str, Any]:
        """A snapshot for the HTTP API and metrics (times are loop time)."""
        return {
            "name": self.name,
            "server_id": self.config.server_id,
            "host": self.config.host,
            "port": self.config.port,
            "transport": self.config.transport,
            "state": self.state.value,
            "registered_at": self.registered_at,
            "last_error": self.last_error,
            "keepalive_failures": self.keepalive_failures,
            "consecutive_register_failures": self.consecutive_register_failures,
            "subscriptions": self.subscriptions,
            "retry_at": self.client.retry_at,
            "forged_requests": self.forged_requests,
        }

    # --- alarms and catalog changes upward ----------------------------------------------------

    def send_alarm(self, notify: AlarmNotify, now: float, key: object) -> bool:
        """Send ``Notify/Alarm`` upward; False when not registered (the caller's outbox retries later).

        ``notify.device_id`` must already be the channel ID as this upper knows it.
        The final answer comes back as :class:`AlarmAnswered` with ``key``.
        """
        if not self.registered:
            return False
        self.client.send_message(serialize(notify, self.client.charset), now, key)
        return True

    def notify_catalog(self, items: Sequence[CatalogItem], now: float) -> int:
        """Push catalog changes (items carry their own ``Event``) to every live subscription.

        Returns the number of subscriptions notified (0 without any, or for no items).
        """
        return self.client.notify_catalog(items, now)

    # --- endpoint events (CascadeHost routes these to the client) ------------------------------------

    def handle_request(self, event: RequestReceived, now: float) -> None:
        """A request from this upper."""
        self.client.handle_request(event, now)

    def handle_response(self, event: ResponseReceived, now: float) -> None:
        """A response to something this link sent."""
        self.client.handle_response(event, now)

    def handle_timeout(self, event: TransactionTimedOut, now: float) -> None:
        """A request of this link got no final answer (Timer B/F, or the TCP connection broke)."""
        self.client.handle_timeout(event, now)

    # --- LowerRole hooks -----------------------------------------------------------------------------

    def catalog_items(self) -> Sequence[CatalogItem]:
        """What this upper may see (the sharing policy's tree, docs/gb28181.md §16.3)."""
        return self._catalog()

    def answer_device_info(self, query: DeviceInfoQuery) -> DeviceInfoResponse:
        """The gateway itself (counting shared channels only), or one shared channel (docs/gb28181.md §16.5)."""
        if query.device_id == self.local_id:
            info = self.device_info
            channels = sum(1 for item in self._catalog() if _is_channel(item.device_id))
            return DeviceInfoResponse(
                sn=query.sn,
                device_id=self.local_id,
                device_name=info.name,
                result="OK",
                manufacturer=info.manufacturer,
                model=info.model,
                firmware=info.firmware,
                channel=channels,
            )
        item = next((i for i in self._catalog() if i.device_id == query.device_id), None)
        if item is None or not _is_channel(item.device_id):
            return DeviceInfoResponse(sn=query.sn, device_id=query.device_id, result="ERROR")
        return DeviceInfoResponse(
            sn=query.sn,
            device_id=item.device_id,
            device_name=item.name,
            result="OK",
            manufacturer=item.manufacturer,
            model=item.model,
        )

    def answer_device_status(self, query: DeviceStatusQuery) -> DeviceStatusResponse:
        """Online state of the gateway or a shared channel; Result ERROR for one not shared."""
        online = True if query.device_id == self.local_id else self._channel_status(query.device_id)
        if online is None:
            # Not shared with this upper: 200 to the MESSAGE (every MESSAGE is answered 200),
            # Result ERROR in the Response -- the upper learns "no" without a failed transaction.
            return DeviceStatusResponse(sn=query.sn, device_id=query.device_id, result="ERROR")
        return DeviceStatusResponse(
            sn=query.sn,
            device_id=query.device_id,
            result="OK",
            online="ONLINE" if online else "OFFLINE",
            status="OK",
        )

    def message_status(self, message: ManscdpMessage) -> int:
        """200, or the refusal of the handler whose kind the command is (403 outside the upper's policy)."""
        for handler in self.commands:
            status = handler.status(self, message)
            if status is not None:
                return status
        return 200

    def on_message(self, message: ManscdpMessage, now: float) -> None:
        """Commands go to their handler; a keepalive, a Response/Alarm to our alarms: the 200 is all."""
        for handler in self.commands:
            if handler.relay(self, message, now):
                return

    def handle_call(self, event: RequestReceived, now: float) -> None:
        """Calls go to :attr:`on_call`; unclaimed ones get 404 (not shared), 488 (no relay) or 481."""
        if self.on_call is not None and self.on_call(event, now):
            return
        request = event.request
        if event.transaction is None or request.method == "ACK":
            return
        status = 481
        if request.method == "INVITE":
            target = target_id(request)
            shared = target == self.local_id or (target is not None and self._channel_status(target) is not None)
            status = 488 if shared else 404
        self.client.answer(request, event.transaction, status, now)

    def is_muted(self, now: float) -> bool:
        """Never: the gateway always answers its uppers."""
        return False

    def keepalive_body(self, body: bytes, number: int) -> bytes:
        """Keepalives go out as they are."""
        return body

    def on_timer(self, key: Hashable, now: float) -> None:
        """The link arms no timers of its own."""

    def on_event(self, event: LowerEvent) -> None:
        """Turn the core's events into the link's (:data:`UpperEvent`) and its log lines."""
        match event:
            case Registered(first=True, at=at):
                self.registered_at = at
                log.info("registered with upper %s (%s)", self.name, self.config.server_id)
                self._events.append(UpperOnline(self.name, at))
            case WentOffline(at=at, reason=reason):
                self.registered_at = None
                if reason != "stopped":  # our own shutdown is no news
                    log.warning("upper %s offline: %s", self.name, reason)
                self._events.append(UpperOffline(self.name, at, reason))
            case RegisterFailed(reason=reason) if "wrong password" in reason:
                log.warning("upper %s refused our credentials (wrong password?)", self.name)
            case MessageAnswered(key=key, status=status):
                self._events.append(AlarmAnswered(self.name, key, status))
            case MessageTimedOut(key=key):
                self._events.append(AlarmAnswered(self.name, key, TIMEOUT_STATUS))
            case CatalogSent() | SubscriptionChanged():
                self._events.append(event)
            case _:
                pass


# --- several uppers on one endpoint ----------------------------------------------------------------------------


class CascadeHost:
    """The upper links of one gateway, all on its (shared) endpoint.

    The device-access core offers every endpoint event to :meth:`route` first;
    what belongs to an upper is handled here and never reaches device access.
    The endpoint's own timers stay with the endpoint's owner.
    """

    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        self._links: dict[str, UpperLink] = {}
        self._host = LowerHost(endpoint, self._client_for)

    def add(self, link: UpperLink) -> UpperLink:
        """Attach a link (not started); names must be unique and the endpoint the shared one."""
        if link.endpoint is not self.endpoint:
            raise ConfigError(f"upper link {link.name!r} is not on this host's endpoint")
        if link.name in self._links:
            raise ConfigError(f"two upper platforms are named {link.name!r}")
        self._links[link.name] = link
        self._host.add(link.client)
        return link

    def remove(self, name: str, now: float, *, unregister: bool = True) -> UpperLink:
        """Stop and detach a link; answers to what it sent are still routed to it."""
        link = self._links.pop(name)
        link.stop(now, unregister)
        return link

    def link(self, name: str) -> UpperLink:
        """The link called ``name``; KeyError when there is none."""
        return self._links[name]

    @property
    def links(self) -> tuple[UpperLink, ...]:
        """Every attached link, in the order added."""
        return tuple(self._links.values())

    def start_all(self, now: float) -> None:
        """Start every link."""
        for link in self._links.values():
            link.start(now)

    def stop_all(self, now: float, *, unregister: bool = True) -> None:
        """Stop every link (unregistering those registered)."""
        for link in self._links.values():
            link.stop(now, unregister)

    def route(self, event: SipEvent, now: float) -> bool:
        """Handle ``event`` if it belongs to an upper; False leaves it to the device side.

        Requests belong to a link by the From user (the upper's server ID) *and*
        the upper's address (:meth:`UpperLink.accepts_from`), or by coming from
        the upper's configured host:port; a request naming an upper's ID from
        anywhere else is refused here with 403 and counted, never served and
        never handed to device access. Responses and time-outs belong to the
        context their request was sent with.
        """
        if isinstance(event, RequestReceived):
            claimed = self._claimed(event.request)
            if claimed and not any(link.accepts_from(event.peer) for link in claimed):
                self._refuse_forged(claimed[0], event, now)
                return True
        return self._host.route(event, now)

    def link_for(self, request: SipRequest, peer: Peer) -> UpperLink | None:
        """The link a request from ``peer`` belongs to, or None (then it is a device's, or forged)."""
        claimed = self._claimed(request)
        if claimed:
            return next((link for link in claimed if link.accepts_from(peer)), None)
        return next((link for link in self._links.values() if link.addresses.is_signalling_address(peer)), None)

    def _claimed(self, request: SipRequest) -> list[UpperLink]:
        """The links whose server ID the request's From names (two when misconfigured)."""
        try:
            user = request.from_.uri.user
        except SipError:
            return []
        if user is None:
            return []
        return [link for link in self._links.values() if link.config.server_id == user]

    def _refuse_forged(self, link: UpperLink, event: RequestReceived, now: float) -> None:
        link.forged_requests += 1
        count = link.forged_requests
        if count <= 10 or count % FORGED_LOG_EVERY == 0:
            log.warning(
                "refused %s claiming upper platform %s (%s) from %s, not its address %s:%d (%d so far)",
                event.request.method,
                link.name,
                link.config.server_id,
                event.peer,
                link.config.host,
                link.config.port,
                count,
            )
        if event.transaction is not None and event.request.method != "ACK":
            response = make_response(event.request, FORGED_STATUS, to_tag=self.endpoint.new_tag())
            self.endpoint.send_response(event.transaction, response, now)

    def get_timer(self) -> float | None:
        """The earliest deadline of any link."""
        return self._host.get_timer()

    def handle_timer(self, now: float) -> None:
        """Run every link's due timers."""
        self._host.handle_timer(now)

    def next_event(self) -> UpperEvent | None:
        """The next event of any link, or None."""
        for link in self._links.values():
            event = link.next_event()
            if event is not None:
                return event
        return None

    def status(self) -> list[dict[str, Any]]:
        """:meth:`UpperLink.status` of every link."""
        return [link.status() for link in self._links.values()]

    def _client_for(self, event: RequestReceived) -> LowerClient | None:
        link = self.link_for(event.request, event.peer)
        return link.client if link is not None else None


def _is_channel(device_id: str) -> bool:
    """A shared channel, not a tree node: 20 digits and not a platform-class type (200-299, 215/216 groups)."""
    return is_gb_id(device_id) and not GbId(device_id).is_platform
