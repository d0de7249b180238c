"""Where an upper platform may speak from and where its video may go (issue 10, C1), sans-I/O.

An upper platform is recognised by its SIP ID *and* its address: a request
whose From names an upper is that upper's only when it arrives from the
address the gateway registers to (the configured host, resolved by the I/O
layer, and port; over TCP that is the connection the gateway opened, whose
remote end is exactly that host:port) or from one of the upper's configured
``signal_networks``. Anything else claiming the upper's ID is refused (403),
counted and logged by :class:`~gateway.cascade.upper.CascadeHost`.

The video of an upper's INVITE goes only to that upper: the SDP's ``c=``
address must lie in its ``media_networks`` — by default the upper's own
signalling address(es), since most platforms receive media on the host they
signal from. A platform with separate media servers lists their networks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from gateway.errors import ConfigError
from gateway.gb28181.sip.transport import Peer

__all__ = ["Network", "UpperAddresses", "parse_networks", "same_host"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNSPECIFIED: Final = frozenset({"", "0.0.0.0", "::"})


def parse_networks(texts: Iterable[str], label: str) -> tuple[Network, ...]:
    """CIDR networks (``10.20.0.0/16``, a bare address is a /32) or :class:`ConfigError` naming ``label``."""
    networks: list[Network] = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(str(text).strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"{label}: {text!r:.60} is not an IP network like 10.20.0.0/16") from exc
    return tuple(networks)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address (IPv4-mapped IPv6 unwrapped), or None for a name or garbage."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def same_host(a: str, b: str) -> bool:
    """Whether two host strings name the same address (textual equality for names)."""
    left, right = _address(a), _address(b)
    if left is None or right is None:
        return a.lower() == b.lower()
    return left == right


@dataclass(frozen=True, slots=True)
class UpperAddresses:
    """The addresses one upper platform owns: ``hosts`` are its signalling address(es), resolved."""

    hosts: frozenset[str]
    port: int
    signal_networks: tuple[Network, ...] = ()
    media_networks: tuple[Network, ...] = ()

    def is_signalling_address(self, peer: Peer) -> bool:
        """Exactly the host:port the gateway registers to (the fall-back route for other From users)."""
        return peer.port == self.port and any(same_host(peer.host, host) for host in self.hosts)

    def signal_allowed(self, peer: Peer) -> bool:
        """May a request claiming this upper come from ``peer``?"""
        if self.is_signalling_address(peer):
            return True
        address = _address(peer.host)
        return address is not None and any(address in network for network in self.signal_networks)

    def media_allowed(self, host: str) -> bool:
        """May this upper's video be sent to (or, TCP active, accepted from) ``host``?"""
        if host.strip() in UNSPECIFIED:
            return False
        if not self.media_networks:
            return any(same_host(host, own) for own in self.hosts)
        address = _address(host)
        return address is not None and any(address in network for network in self.media_networks)

    def media_host(self) -> str | None:
        """An address of the upper to expect a TCP media connection from, when its offer named none."""
        return min(self.hosts) if self.hosts else None
