"""WS-Discovery probing on the local network (asyncio adapter around :class:`ProbeSession`).

Multicast: one UDP socket on an ephemeral port sends the Probe to
239.255.255.250:3702 with TTL 1 (the local segment only, as SOAP-over-UDP says)
on the chosen interface; cameras answer unicast to that socket. Unicast: the same
Probe to one host (networks without multicast, a camera in another subnet, tests),
and only that host's answers count. The Probe is sent twice (SOAP-over-UDP's
MULTICAST_UDP_REPEAT), the answers are collected until the deadline, or until the
one unicast host has answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import uuid
from dataclasses import dataclass

from gateway.onvif.errors import OnvifAddressError
from gateway.onvif.wsdiscovery import DISCOVERY_PORT, MULTICAST_GROUP, DiscoveredDevice, ProbeSession

__all__ = ["DiscoveryResult", "discover"]

log = logging.getLogger("kgw.onvif.discovery")
REPEAT_DELAY = 0.2  # s between the two copies of the Probe


@dataclass(frozen=True, slots=True)
class DiscoveryResult:
    """The cameras that answered, and how many datagrams or matches were dropped, by reason."""

    devices: tuple[DiscoveredDevice, ...]
    dropped: dict[str, int]
    mode: str  # "multicast" or "unicast"

    def to_json(self) -> dict[str, object]:
        return {"mode": self.mode, "devices": [d.to_json() for d in self.devices], "dropped": self.dropped}


class _ProbeProtocol(asyncio.DatagramProtocol):
    def __init__(self, session: ProbeSession, only_from: str | None, done: asyncio.Event) -> None:
        self.session = session
        self.only_from = only_from
        self.done = done
        self.other_senders = 0
        self.send_errors = 0

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        source = str(addr[0])
        if self.only_from is not None and not _same_ip(source, self.only_from):
            self.other_senders += 1
            return
        try:
            found = self.session.receive(data, source)
        except Exception:  # never into the loop's handler: a bug here drops the datagram only
            log.exception("discovery: datagram from %s dropped", source)
            return
        if found and self.only_from is not None:
            self.done.set()

    def error_received(self, exc: Exception) -> None:
        """A failed send (no multicast route); the socket is not connected, so no ICMP errors come here."""
        self.send_errors += 1
        log.debug("discovery: %s", exc)


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _unicast_target(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise OnvifAddressError(f"unicast probe needs an IP address, not {host[:64]!r}") from exc
    if address.is_multicast or address.is_unspecified or address == ipaddress.IPv4Address("255.255.255.255"):
        raise OnvifAddressError("unicast probe to a multicast, broadcast or unspecified address")
    return address


def _multicast_socket(interface: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        if interface:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        sock.bind((interface or "0.0.0.0", 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def discover(
    *,
    host: str | None = None,
    port: int = DISCOVERY_PORT,
    interface: str | None = None,
    timeout: float = 3.0,
) -> DiscoveryResult:
    """Probe for ONVIF cameras: multicast on ``interface`` (an IPv4 address; default: the
    system's choice), or unicast to ``host``. ``port`` is the cameras' discovery port."""
    if not 0 < port < 65536:
        raise OnvifAddressError(f"discovery port {port} out of range")
    if interface is not None:
        try:
            ipaddress.IPv4Address(interface)
        except ValueError as exc:
            raise OnvifAddressError("interface must be an IPv4 address of this machine") from exc
    loop = asyncio.get_running_loop()
    session = ProbeSession(f"urn:uuid:{uuid.uuid4()}")
    done = asyncio.Event()
    if host is not None:
        target = _unicast_target(host)
        family = socket.AF_INET6 if target.version == 6 else socket.AF_INET
        local = (interface or ("::" if family == socket.AF_INET6 else "0.0.0.0"), 0)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _ProbeProtocol(session, str(target), done), local_addr=local, family=family
        )
        destination: tuple[str, int] = (str(target), port)
    else:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _ProbeProtocol(session, None, done), sock=_multicast_socket(interface)
        )
        destination = (MULTICAST_GROUP, port)
    try:
        datagram = session.probe()
        transport.sendto(datagram, destination)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REPEAT_DELAY):
                await done.wait()
        if not done.is_set():
            transport.sendto(datagram, destination)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, timeout - REPEAT_DELAY)):
                    await done.wait()
    finally:
        transport.close()
    dropped = {drop.value: count for drop, count in session.dropped.items()}
    if protocol.other_senders:
        dropped["other_sender"] = protocol.other_senders
    if protocol.send_errors:
        dropped["send_error"] = protocol.send_errors  # the probe could not leave (no multicast route)
    return DiscoveryResult(
        devices=tuple(session.devices.values()), dropped=dropped, mode="unicast" if host is not None else "multicast"
    )
