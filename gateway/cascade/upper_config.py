"""Configuration of the links to upper platforms (``[[upper_platforms]]``, ``--upper``), validated.

A bad value is refused when the gateway starts, with a :class:`ConfigError`
that names the upper platform and the field, never discovered later as a
registration that cannot work.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from gateway.cascade.policy import SharePolicy
from gateway.cascade.upper_trust import parse_networks
from gateway.errors import ConfigError
from gateway.gb28181.ids import is_gb_id
from gateway.gb28181.sip.transport import Peer, Transport

__all__ = ["MAX_EXPIRES", "MIN_EXPIRES", "PlatformInfo", "UpperPlatformConfig", "UpperSpec", "valid_host"]

MIN_EXPIRES: Final = 30  # most registrars refuse less (WVP, our own registrar: 423)
MAX_EXPIRES: Final = 86_400

_TRANSPORTS: Final = frozenset(t.value for t in Transport)
_CTL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_HOST_RE: Final = re.compile(r"[A-Za-z0-9.\-:\[\]]+")


def valid_host(text: object) -> bool:
    """A host name, IPv4 or bracketed IPv6 address, or SIP domain (no spaces, no control characters)."""
    return isinstance(text, str) and bool(text) and _HOST_RE.fullmatch(text) is not None


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpperPlatformConfig:
    """One upper platform we register with (docs/gb28181.md §16.1, WVP's "上级平台").

    ``domain`` defaults to the first 10 digits of ``server_id``; ``username``
    (digest user) to our own local ID, which the link fills in. Times are seconds.
    ``password`` is this upper's own (never the device password, issue 10 H1).
    ``signal_networks`` (CIDR) are extra places the upper's requests may come
    from besides host:port; ``media_networks`` where its video may go (default:
    the upper's signalling host), see :mod:`gateway.cascade.upper_trust`.
    """

    name: str
    server_id: str
    domain: str = ""
    host: str
    port: int = 5060
    transport: str = "UDP"
    password: str
    username: str = ""
    expires: int = 3600
    keepalive_interval: float = 60.0
    keepalive_missed: int = 3
    catalog_per_message: int = 8
    register_retry_min: float = 2.0
    register_retry_max: float = 60.0
    signal_networks: tuple[str, ...] = ()
    media_networks: tuple[str, ...] = ()
    allow_ptz: bool = False  # a police upper may steer cameras (others always may; gateway/cascade/control_relay.py)

    def __post_init__(self) -> None:
        # Frozen: the derived defaults are written once, here.
        if not self.domain and isinstance(self.server_id, str):
            object.__setattr__(self, "domain", self.server_id[:10])
        for name in ("signal_networks", "media_networks"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):  # TOML gives lists
                object.__setattr__(self, name, tuple(str(v) for v in value))
        if isinstance(self.transport, str):
            object.__setattr__(self, "transport", self.transport.strip().upper())

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value that cannot work."""
        label = f"upper platform {self.name!r:.40}"
        if not isinstance(self.name, str) or not self.name.strip() or _CTL_RE.search(self.name):
            raise ConfigError("an upper platform needs a name (printable text)")
        if not is_gb_id(self.server_id):
            raise ConfigError(f"{label}: server_id must be 20 digits, got {self.server_id!r:.40}")
        if not isinstance(self.domain, str) or not self.domain or not valid_host(self.domain):
            raise ConfigError(f"{label}: bad SIP domain {self.domain!r:.40}")
        if not isinstance(self.host, str) or not self.host or not valid_host(self.host):
            raise ConfigError(f"{label}: bad host {self.host!r:.60}")
        if not _int(self.port) or not 0 < self.port < 65536:
            raise ConfigError(f"{label}: port must be 1-65535, got {self.port!r}")
        if self.transport not in _TRANSPORTS:
            raise ConfigError(f"{label}: transport must be UDP or TCP, got {self.transport!r:.20}")
        for field_name in ("password", "username"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or _CTL_RE.search(value):
                raise ConfigError(f"{label}: {field_name} must be text without control characters")
        if not _int(self.expires) or not MIN_EXPIRES <= self.expires <= MAX_EXPIRES:
            raise ConfigError(f"{label}: expires must be {MIN_EXPIRES}-{MAX_EXPIRES} s, got {self.expires!r}")
        if not _finite(self.keepalive_interval) or self.keepalive_interval < 1.0:
            raise ConfigError(f"{label}: keepalive_interval must be at least 1 s")
        if not _int(self.keepalive_missed) or self.keepalive_missed < 1:
            raise ConfigError(f"{label}: keepalive_missed must be an int >= 1")
        if not _int(self.catalog_per_message) or not 1 <= self.catalog_per_message <= 64:
            raise ConfigError(f"{label}: catalog_per_message must be 1-64 (WVP uses 1, 2, 4 or 8)")
        if not _finite(self.register_retry_min) or self.register_retry_min <= 0:
            raise ConfigError(f"{label}: register_retry_min must be a positive number of seconds")
        if not _finite(self.register_retry_max) or self.register_retry_max < self.register_retry_min:
            raise ConfigError(f"{label}: register_retry_max must be >= register_retry_min")
        if not self.password:
            raise ConfigError(f"{label}: needs its own password (password_file or password_env)")
        if not isinstance(self.allow_ptz, bool):
            raise ConfigError(f"{label}: allow_ptz must be true or false")
        for field_name in ("signal_networks", "media_networks"):
            value = getattr(self, field_name)
            if not isinstance(value, tuple):
                raise ConfigError(f"{label}: {field_name} must be a list of networks like 10.20.0.0/16")
            parse_networks(value, f"{label} {field_name}")

    @property
    def peer(self) -> Peer:
        """Where the upper is reached (the I/O layer may swap in a TCP connection)."""
        return Peer(Transport(self.transport), self.host, self.port)


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """What a DeviceInfo answer says about the gateway itself (WVP: ``WVP-28181-PRO``/``platform``, docs/gb28181.md §16.5)."""

    name: str = "kgw"
    manufacturer: str = "kgw"
    model: str = "gateway"
    firmware: str = "0.1.0"


@dataclass(frozen=True, slots=True)
class UpperSpec:
    """An upper platform to register with (``[[upper_platforms]]``) and the policy of what it may see."""

    link: UpperPlatformConfig
    policy: SharePolicy
