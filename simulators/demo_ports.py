"""The ports of ``kgw demo``, planned in one place so that no two services can collide.

The demo runs the gateway, 18 monitoring platforms and the simulator's control
endpoint on fixed loopback ports (the Mosquitto broker and the platforms' SIP
sockets take free ports the kernel picks). Every fixed port comes from
:class:`DemoPorts`, which refuses a plan that reuses a port, and
:func:`ensure_free` says which planned port is already taken, and by which of
our services it was meant to be used, before anything starts.

The default plan::

    5060 udp+tcp  gateway SIP
    8080 tcp      gateway console and API
    8081 tcp      municipal platform console
    8082 tcp      police platform console
    8083-8098 tcp the 16 district platforms' consoles, by district code
    8099 tcp      simulator control endpoint (POST /press)
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from gateway.errors import ConfigError
from gateway.gb28181.ids import TIANJIN_DISTRICTS

__all__ = ["DemoPlatform", "DemoPorts", "PortUse", "demo_platforms", "ensure_free"]


@dataclass(frozen=True, slots=True)
class DemoPlatform:
    """One monitoring platform of the demo: its name, level and district (district level only)."""

    name: str
    level: str
    district: str | None = None


def demo_platforms() -> tuple[DemoPlatform, ...]:
    """The 18 platforms in port order: municipal, police, then the districts by civil code."""
    districts = tuple(DemoPlatform(f"district-{code}", "district", code) for code in sorted(TIANJIN_DISTRICTS))
    return (DemoPlatform("municipal", "municipal"), DemoPlatform("police", "police"), *districts)


@dataclass(frozen=True, slots=True)
class PortUse:
    """A port the plan gives to one service, on the protocols it binds."""

    port: int
    service: str
    protocols: tuple[str, ...] = ("tcp",)


@dataclass(frozen=True, slots=True)
class DemoPorts:
    """The demo's fixed ports: the gateway's, the platforms' after it, then the control endpoint.

    ``control`` defaults to the port after the last platform console (8099 by
    default). Raises :class:`ConfigError` for a plan that reuses a port or
    leaves 1-65535.
    """

    sip: int = 5060
    http: int = 8080
    control: int | None = None
    platforms: bool = True

    def __post_init__(self) -> None:
        seen: dict[int, str] = {}
        for use in self.uses():
            if not 1 <= use.port <= 65535:
                raise ConfigError(f"demo port {use.port} for {use.service} is outside 1-65535")
            if use.port in seen:
                raise ConfigError(f"demo port {use.port} would serve both {seen[use.port]} and {use.service}")
            seen[use.port] = use.service

    @property
    def platform_count(self) -> int:
        """How many platform consoles follow the gateway's HTTP port."""
        return len(demo_platforms()) if self.platforms else 0

    def platform_http(self, index: int) -> int:
        """The console port of the ``index``-th platform of :func:`demo_platforms` (0-based)."""
        return self.http + 1 + index

    @property
    def control_port(self) -> int:
        """The simulator's control endpoint: as given, or right after the platform consoles."""
        return self.control if self.control is not None else self.http + 1 + len(demo_platforms())

    def uses(self) -> list[PortUse]:
        """Every fixed port of the plan with the service it is for."""
        uses = [PortUse(self.sip, "gateway SIP", ("udp", "tcp")), PortUse(self.http, "gateway console/API")]
        for index, platform in enumerate(demo_platforms()[: self.platform_count]):
            uses.append(PortUse(self.platform_http(index), f"{platform.name} platform console"))
        uses.append(PortUse(self.control_port, "simulator control"))
        return uses

    def summary(self) -> str:
        """One line for the demo's banner."""
        parts = [f"SIP {self.sip} udp/tcp", f"gateway {self.http}"]
        if self.platform_count:
            first, last = self.platform_http(0), self.platform_http(self.platform_count - 1)
            parts.append(f"platforms {first}-{last} (municipal {first}, police {first + 1}, districts after)")
        parts.append(f"control {self.control_port}")
        return ", ".join(parts) + "; MQTT and platform SIP on free ports"


def ensure_free(uses: list[PortUse], host: str = "127.0.0.1") -> None:
    """Raise :class:`ConfigError` naming every planned port that is already in use on ``host``."""
    busy = [use for use in uses if not _free(host, use)]
    if busy:
        taken = "; ".join(f"{use.port}/{'+'.join(use.protocols)} ({use.service})" for use in busy)
        raise ConfigError(
            f"ports the demo needs are in use: {taken}. Stop what holds them (`ss -ltnup`), "
            "or move the demo with --sip-port, --http-port and --control-port"
        )


def _free(host: str, use: PortUse) -> bool:
    for protocol in use.protocols:
        kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, kind) as probe:
            if kind is socket.SOCK_STREAM:
                # What the listener will do: a port in TIME_WAIT is still usable.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, use.port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
    return True
