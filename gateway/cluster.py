"""Several gateway processes sharing one city, the GB/T 28181 way (docs/architecture.md "Beyond one machine").

Each process serves a configured set of districts (``--districts``) and knows
who serves the others (``--peer 120103,120104=HOST:PORT[/GATEWAYID]``). A
REGISTER from a device of another district is answered ``302 Moved
Temporarily`` with the serving gateway in ``Contact`` (GB/T 28181-2022
§9.1.2.3, docs/gb28181.md §3.6); a device of a district nobody serves gets
403. Devices may thus all be configured with one city address.

The redirect is decided from the device ID alone (its district, digits 1-6),
*before* the digest: it reveals only the public topology (which address
serves which district), saves the 401 round trip, and leaves nothing behind —
no nonce, no throttle entry, no session, no store row. Devices of served
districts go on to the registrar's policy exactly as before.

Pure: no I/O, clock or randomness.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConfigError
from gateway.gb28181.ids import is_gb_id
from gateway.gb28181.registrar import RefusalReason, RegisterDecision
from gateway.gb28181.requests import sip_uri

__all__ = [
    "DEFAULT_NODE",
    "Cluster",
    "PeerGateway",
    "check_node_name",
    "parse_districts",
    "parse_peer",
]

DEFAULT_NODE = "gateway"
NOT_SERVED_STATUS = 403


@dataclass(frozen=True, slots=True)
class PeerGateway:
    """Another gateway process of the city: the districts it serves and where devices register with it."""

    districts: frozenset[str]
    host: str
    port: int
    gateway_id: str

    @property
    def contact(self) -> str:
        """``<sip:GATEWAYID@HOST:PORT>``: the Contact of our 302 (the device re-registers there)."""
        return f"<{sip_uri(self.gateway_id, self.host, self.port)}>"

    def spec(self) -> str:
        """The ``--peer`` text of this peer."""
        return f"{','.join(sorted(self.districts))}={self.host}:{self.port}/{self.gateway_id}"


def parse_districts(raw: object) -> tuple[str, ...]:
    """``"120101,120102"`` or a list of codes: six-digit district codes, sorted, without duplicates."""
    if isinstance(raw, str):
        items: Iterable[object] = raw.split(",")
    elif isinstance(raw, list | tuple | frozenset | set):
        items = raw
    else:
        raise ConfigError(f"districts must be a list of 6-digit codes, not {raw!r}")
    codes = {str(item).strip() for item in items if str(item).strip()}
    for code in codes:
        if len(code) != 6 or not code.isascii() or not code.isdigit():
            raise ConfigError(f"a district is a 6-digit civil code such as 120101, not {code!r}")
    return tuple(sorted(codes))


def parse_peer(raw: object, default_id: str) -> PeerGateway:
    """``120103,120104=HOST:PORT[/GATEWAYID]`` (flag, or a string in the TOML ``peers`` list), or a TOML table
    ``{districts = [...], host = "...", port = 5060, id = "..."}``. Without an ID the peer is taken to use ours."""
    if isinstance(raw, PeerGateway):
        return raw
    if isinstance(raw, Mapping):
        extra = set(raw) - {"districts", "host", "port", "id"}
        if extra or not {"districts", "host", "port"} <= set(raw):
            raise ConfigError("each [[peers]] entry needs districts, host, port (and optionally id)")
        districts, host, port_text, gateway_id = raw["districts"], str(raw["host"]), str(raw["port"]), raw.get("id")
    elif isinstance(raw, str):
        districts, sep, address = raw.partition("=")
        hostport, _, gateway_id_text = address.partition("/")
        host, _, port_text = hostport.rpartition(":")
        gateway_id = gateway_id_text or None
        if not sep:
            raise ConfigError(f"--peer wants DISTRICT[,DISTRICT...]=HOST:PORT[/GATEWAYID], not {raw!r}")
    else:
        raise ConfigError(f"a peer is DISTRICTS=HOST:PORT[/GATEWAYID], not {raw!r}")
    codes = parse_districts(districts)
    if not codes:
        raise ConfigError(f"peer {raw!r} names no district")
    if not host or any(c in host for c in ' /@;<>"') or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"peer {raw!r}: the address must be HOST:PORT")
    gateway_id = str(gateway_id or default_id)
    if not is_gb_id(gateway_id):
        raise ConfigError(f"peer {raw!r}: the gateway ID must be 20 digits")
    return PeerGateway(frozenset(codes), host.strip("[]"), int(port_text), gateway_id)


def check_node_name(name: str) -> str:
    """A node name (stored with what the node owns, shown in the console, a metric label): short and plain."""
    if not name or len(name) > 40 or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
        raise ConfigError(f"node must be 1-40 letters, digits, '-', '_' or '.', not {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class Cluster:
    """Which districts this process serves and who serves the others."""

    node: str = DEFAULT_NODE
    districts: frozenset[str] = frozenset()  # empty: every district (one process serves the city)
    peers: tuple[PeerGateway, ...] = ()
    _by_district: Mapping[str, PeerGateway] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_district: dict[str, PeerGateway] = {}
        for peer in self.peers:
            for code in peer.districts:
                if code in self.districts:
                    raise ConfigError(f"district {code} is served here and by peer {peer.host}:{peer.port}")
                if code in by_district:
                    raise ConfigError(f"district {code} has two peers ({by_district[code].spec()}, {peer.spec()})")
                by_district[code] = peer
        object.__setattr__(self, "_by_district", by_district)

    @classmethod
    def from_settings(cls, node: str, districts: Iterable[str], peers: Iterable[Any], own_id: str) -> Cluster:
        """From the configuration's ``node``, ``districts`` and ``peers`` (validated)."""
        return cls(
            check_node_name(node),
            frozenset(parse_districts(tuple(districts))),
            tuple(parse_peer(p, own_id) for p in peers),
        )

    @property
    def serves_everything(self) -> bool:
        """True when this process serves every district (a single-process deployment)."""
        return not self.districts

    def serves(self, district: str) -> bool:
        """Whether devices of ``district`` (a 6-digit code) register here."""
        return not self.districts or district in self.districts

    def peer_for(self, district: str) -> PeerGateway | None:
        """The gateway that serves ``district`` when it is not this one."""
        return None if self.serves(district) else self._by_district.get(district)

    def redirect_for(self, device_id: str) -> RegisterDecision | None:
        """The registrar's hook: None for a device of a served district (or an ID that is not one: the
        registrar refuses those itself), else ``302`` to the peer serving it, or ``403`` when none does."""
        if not is_gb_id(device_id) or self.serves(device_id[:6]):
            return None
        peer = self._by_district.get(device_id[:6])
        if peer is None:
            warning = f'399 kgw "district {device_id[:6]} is not served by this city\'s gateways"'
            return RegisterDecision(
                NOT_SERVED_STATUS,
                [("Warning", warning)],
                refusal=RefusalReason.DISTRICT_NOT_SERVED,
                device_id=device_id,
            )
        return RegisterDecision(302, [("Contact", peer.contact)], refusal=RefusalReason.REDIRECTED, device_id=device_id)
