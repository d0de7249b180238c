"""The node's SIP side, assembled: endpoint, registrar, device access, the router and its driver.

One endpoint (one UDP socket and TCP listener) serves devices below and upper
platforms above. Its :class:`~gateway.gb28181.sip.router.SipRouter` offers every
event to the handlers in order — live play sessions, the upper platforms'
calls and links, then device access, which answers every request left — and
the :class:`~gateway.io.sip_io.SipDriver` runs the router on the sockets.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.config import GatewayConfig, ProvisionedDevice
from gateway.gb28181.access import AccessConfig, DeviceAccess, DeviceSession
from gateway.gb28181.auth_throttle import AuthThrottle
from gateway.gb28181.registrar import EnrolmentMode, Registrar, RegistrarConfig
from gateway.gb28181.sip.auth import Algorithm, Credential, DigestServer
from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.idsource import RandomIds
from gateway.gb28181.sip.router import SipHandler, SipRouter
from gateway.gb28181.sip.transport import Peer, Transport
from gateway.io.sip_io import SipDriver
from gateway.registry.model import Device

__all__ = ["SipStack", "advertised_host"]

log = logging.getLogger("kgw.sip")


class SipStack(Collector):
    """Builds the SIP cores from the configuration; :meth:`listen` puts them on sockets."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        wall_offset: float,
        known_device: Callable[[str], bool],
        subscribe_catalogs: bool,
        expected_device: Callable[[str], bool] = lambda device_id: False,
    ) -> None:
        self.config = config
        provisioned: dict[str, ProvisionedDevice] = {d.id: d for d in config.devices}
        self.provisioned = provisioned  # the registrar's lookups read this dict: imports add to it at run time
        self.endpoint = SipEndpoint(
            RandomIds(),
            local_host=advertised_host(config),
            max_message_size=config.max_message_size,
            user_agent="kgw-gateway",
        )
        registrar = Registrar(
            RegistrarConfig(
                gateway_id=config.id,
                realm=config.domain,
                device_password=config.password,
                mode=EnrolmentMode(config.enrolment),
            ),
            # Challenge with MD5 (what GB/T 28181 devices expect) but accept SHA-256
            # credentials (RFC 7616) from peers that use it.
            DigestServer(
                config.domain, os.urandom(32), nonce_ttl=config.nonce_ttl, algorithms=(Algorithm.MD5, Algorithm.SHA256)
            ),
            AuthThrottle(),
            provisioned_credential=lambda d: _credential(provisioned.get(d)),
            is_provisioned=provisioned.__contains__,
            # Devices the directory holds, or numbered under a provisioned kindergarten, are not
            # "new" (H5's new-ID limit): a provisioned city registers at full speed.
            is_known=lambda d: known_device(d) or expected_device(d),
        )
        registrar.redirect_for = config.cluster.redirect_for  # 302 to the process serving another district
        self.access = DeviceAccess(
            self.endpoint,
            registrar,
            AccessConfig(
                gateway_id=config.id,
                realm=config.domain,
                keepalive_interval=config.keepalive_interval,
                keepalive_missed=config.keepalive_missed,
                query_timeout=config.query_timeout,
                subscribe_catalogs=subscribe_catalogs,
            ),
            wall_offset=wall_offset,
            known_device=known_device,  # their alarms are kept even when their registration lapsed
        )
        self.wall_offset = wall_offset
        self.router: SipRouter | None = None
        self.driver: SipDriver | None = None

    def restore_sessions(self, rows: Iterable[Device], now: float) -> None:
        """Devices whose registration is still valid need not re-register after a restart."""
        wall = now + self.wall_offset
        for row in rows:
            if row.registered_at is None or row.registered_at + row.expires <= wall or not row.host:
                continue
            transport = Transport(row.transport) if row.transport in ("UDP", "TCP") else Transport.UDP
            session = DeviceSession(
                row.id,
                Peer(transport, row.host, row.port),
                call_id="",
                expires=row.expires,
                registered_at=row.registered_at - self.wall_offset,
            )
            # We cannot know whether it kept alive while we were down: give every
            # device a full silence window from now to prove it (no offline flap).
            self.access.restore_session(
                session, online=row.online, last_seen=now, expires_at=row.registered_at + row.expires - self.wall_offset
            )

    async def listen(self, handlers: Sequence[SipHandler], on_activity: Callable[[], None]) -> SipDriver:
        """Route events through ``handlers`` then device access, and bind the SIP port (UDP and TCP)."""
        self.router = SipRouter(self.endpoint, [*handlers, self.access])
        self.driver = SipDriver(self.router, on_activity=on_activity)
        config = self.config
        await self.driver.listen(config.sip_host, config.sip_port, tcp=config.sip_tcp)
        return self.driver

    @property
    def local_id(self) -> str:
        """Our SIP ID."""
        return self.config.id

    @property
    def domain(self) -> str:
        """Our SIP domain (digest realm)."""
        return self.config.domain

    def peer_of(self, device_id: str) -> Peer | None:
        """Where a registered device is reached, or None."""
        session = self.access.sessions.get(device_id)
        return session.peer if session is not None else None

    @property
    def port(self) -> int:
        """The bound SIP port (UDP and TCP)."""
        return self.endpoint.local_port

    def close(self) -> None:
        """Send what is queued and close the sockets."""
        if self.driver is not None:
            self.driver.flush()
            self.driver.close()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """``kgw_sip_*``: requests in, answers and responses out, what was dropped, live transactions."""
        requests = CounterMetricFamily("kgw_sip_requests", "SIP requests received by method", labels=["method"])
        responses = CounterMetricFamily("kgw_sip_responses", "SIP responses sent by status class", labels=["class"])
        dropped = CounterMetricFamily("kgw_sip_dropped", "SIP input dropped or refused, by reason", labels=["reason"])
        answered = CounterMetricFamily(
            "kgw_sip_requests_answered",
            "Final answers to SIP requests by method and status class",
            labels=["method", "class"],
        )
        for key, value in sorted(self.endpoint.stats.items()):
            if key.startswith("in_request_"):
                requests.add_metric([key.removeprefix("in_request_")], value)
            elif key.startswith("answered_"):
                method, _, status_class = key.removeprefix("answered_").rpartition("_")
                answered.add_metric([method, status_class], value)
            elif key.startswith("out_response_"):
                responses.add_metric([key.removeprefix("out_response_")], value)
            elif key.startswith(("dropped_", "stray_", "refused_")):
                dropped.add_metric([key], value)
        yield from (requests, answered, responses, dropped)
        yield GaugeMetricFamily("kgw_sip_transactions", "Live SIP transactions", value=self.endpoint.transaction_count)


def advertised_host(config: GatewayConfig) -> str:
    """The address devices should reach us at (Via, Contact): never a wildcard."""
    if config.sip_advertise:
        return config.sip_advertise
    if config.sip_host not in ("0.0.0.0", "::"):
        return config.sip_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        log.warning("cannot tell this host's address; set sip_advertise in the config")
        return "127.0.0.1"


def _credential(device: ProvisionedDevice | None) -> Credential | None:
    """A provisioned device's own credential: stored HA1s (imports) or its password (config file)."""
    if device is None:
        return None
    if device.ha1_md5 is not None or device.ha1_sha256 is not None:
        return Credential(ha1_md5=device.ha1_md5, ha1_sha256=device.ha1_sha256)
    return Credential(device.password) if device.password else None
