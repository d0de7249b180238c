"""WS-Discovery for ONVIF cameras, sans-I/O: the Probe we send, what a ProbeMatches may claim.

ONVIF devices answer WS-Discovery 2005/04 Probes (SOAP 1.2 over UDP, multicast
239.255.255.250:3702; ONVIF Core §7.3) with a unicast ProbeMatches. A
:class:`ProbeSession` is one probe: :meth:`~ProbeSession.probe` gives the datagram
to send, :meth:`~ProbeSession.receive` takes each reply with its source address
and returns the newly found :class:`DiscoveredDevice` (duplicates, other probes'
answers and junk give nothing; :attr:`~ProbeSession.dropped` counts why).

What a reply may claim (every field is a claim):

* It must be a ProbeMatches (Action, or the body element) relating to *our*
  MessageID — an unsolicited or replayed datagram is ignored.
* Sizes are bounded: :data:`MAX_DATAGRAM` bytes, :data:`MAX_MATCHES` matches,
  :data:`MAX_XADDRS` XAddrs and :data:`MAX_SCOPES` scopes per match, values cut.
* Types must name a video transmitter (``NetworkVideoTransmitter``) or an ONVIF
  ``Device``; a printer or a Windows PC answering the probe is not a camera.
* XAddrs must be http(s) URLs (:func:`gateway.onvif.urls.parse_xaddr`) **whose
  host is the reply's source address**; others are dropped and counted. A match
  left without an XAddr is dropped: the gateway never contacts a host because a
  datagram named it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote
from xml.etree.ElementTree import Element

from gateway.onvif import xml
from gateway.onvif.errors import DiscoveryParseError, OnvifAddressError
from gateway.onvif.urls import parse_xaddr

__all__ = [
    "DISCOVERY_PORT",
    "MAX_DATAGRAM",
    "MULTICAST_GROUP",
    "DiscoveredDevice",
    "Drop",
    "ProbeMatch",
    "ProbeSession",
    "build_probe",
    "parse_probe_matches",
]

MULTICAST_GROUP = "239.255.255.250"
DISCOVERY_PORT = 3702

#: Largest reply we parse (real ProbeMatches are 1–3 KiB; SOAP-over-UDP allows 64 KiB).
MAX_DATAGRAM = 32 * 1024
MAX_MATCHES = 8
MAX_XADDRS = 8
MAX_SCOPES = 32
MAX_TYPES = 16
MAX_VALUE = 256  # one scope, type or endpoint address
MAX_LABEL = 64  # name / hardware / location shown to an operator

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_DISCOVERY = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_NETWORK = "http://www.onvif.org/ver10/network/wsdl"
ACTION_PROBE = f"{NS_DISCOVERY}/Probe"
_PROBE_MATCHES = "ProbeMatches"  # the action's last segment in 2005/04 and 2009/01 alike
NS_DEVICE = "http://www.onvif.org/ver10/device/wsdl"
_NS_DECLARATION = re.compile(rb'xmlns:([A-Za-z_][\w.-]{0,40})\s*=\s*["\']([^"\']{1,200})["\']')
_SCOPE_PREFIX = "onvif://www.onvif.org/"


class Drop(StrEnum):
    """Why a datagram or match gave no device (bounded label set: safe for counters)."""

    TOO_LARGE = "too_large"
    NOT_XML = "not_xml"
    NOT_PROBE_MATCHES = "not_probe_matches"
    NOT_OURS = "not_ours"  # RelatesTo missing or another probe's
    NOT_A_CAMERA = "not_a_camera"
    NO_XADDR = "no_xaddr"  # no http(s) XAddr on the sender's own address
    FOREIGN_XADDR = "foreign_xaddr"  # one XAddr dropped: another host, bad scheme, junk
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class ProbeMatch:
    """One ProbeMatch as claimed (values bounded, XAddrs not yet checked)."""

    endpoint: str
    types: tuple[str, ...]
    scopes: tuple[str, ...]
    xaddrs: tuple[str, ...]
    metadata_version: int
    is_camera: bool  # Types names a NetworkVideoTransmitter or the ONVIF device service's Device

    def scope(self, category: str) -> str:
        """The first ``onvif://www.onvif.org/<category>/<value>`` scope's value, percent-decoded."""
        prefix = f"{_SCOPE_PREFIX}{category}/"
        for scope in self.scopes:
            if scope.lower().startswith(prefix.lower()):
                return _label(scope[len(prefix) :])
        return ""


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """A camera that answered our probe, with only the XAddrs on its own address."""

    address: str  # the reply's source IP
    endpoint: str  # its stable WS-Discovery endpoint reference (urn:uuid:…)
    xaddrs: tuple[str, ...]
    name: str
    hardware: str
    location: str
    types: tuple[str, ...]
    scopes: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        """The API's view."""
        return {
            "address": self.address,
            "endpoint": self.endpoint,
            "xaddrs": list(self.xaddrs),
            "name": self.name,
            "hardware": self.hardware,
            "location": self.location,
            "types": list(self.types),
            "scopes": list(self.scopes),
        }


def _label(raw: str) -> str:
    text = unquote(raw, errors="replace")
    text = "".join(ch for ch in text if ch.isprintable())
    return text.strip()[:MAX_LABEL]


def _values(element: Element | None, limit: int) -> tuple[str, ...]:
    """A whitespace-separated list element (Types, Scopes, XAddrs), bounded in count and length."""
    text = "" if element is None or element.text is None else element.text[: limit * (MAX_VALUE + 1)]
    return tuple(v for v in text.split() if len(v) <= MAX_VALUE and v.isprintable())[:limit]


def build_probe(message_id: str, types: str = "dn:NetworkVideoTransmitter") -> bytes:
    """The Probe datagram (``message_id`` a ``urn:uuid:…`` the caller made unique).

    Types is ``dn:NetworkVideoTransmitter``: some cameras answer no other type (the
    D-Link DCS-2310L did not answer ``tds:Device``, ZoneMinder PR #1645).
    """
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP12}" xmlns:a="{NS_ADDRESSING}" xmlns:d="{NS_DISCOVERY}" xmlns:dn="{NS_NETWORK}">'
        "<s:Header>"
        f'<a:Action s:mustUnderstand="1">{ACTION_PROBE}</a:Action>'
        f"<a:MessageID>{xml.escape(message_id)}</a:MessageID>"
        f"<a:ReplyTo><a:Address>{NS_ADDRESSING}/role/anonymous</a:Address></a:ReplyTo>"
        '<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>'
        "</s:Header>"
        f"<s:Body><d:Probe><d:Types>{xml.escape(types)}</d:Types></d:Probe></s:Body>"
        "</s:Envelope>"
    ).encode()


def parse_probe_matches(data: bytes, message_id: str) -> tuple[ProbeMatch, ...]:
    """The matches of a ProbeMatches answering ``message_id``; :class:`DiscoveryParseError` otherwise.

    The error's ``drop`` says why (a :class:`Drop`).
    """
    if len(data) > MAX_DATAGRAM:
        raise _refused(Drop.TOO_LARGE, f"datagram of {len(data)} bytes")
    root = xml.parse(data)
    if root is None or xml.local(root.tag) != "Envelope":
        raise _refused(Drop.NOT_XML, "not a SOAP envelope")
    header = xml.child(root, "Header")
    body = xml.child(root, "Body")
    matches = xml.child(body, _PROBE_MATCHES)
    action = xml.text_of(xml.child(header, "Action"))
    if matches is None or (action and not action.endswith("/" + _PROBE_MATCHES)):
        raise _refused(Drop.NOT_PROBE_MATCHES, f"action {action[:80]!r}")
    relates_to = xml.text_of(xml.child(header, "RelatesTo"))
    if relates_to != message_id:
        raise _refused(Drop.NOT_OURS, "RelatesTo is not our probe's MessageID")
    namespaces = {m.group(1).decode(): m.group(2).decode(errors="replace") for m in _NS_DECLARATION.finditer(data)}
    found: list[ProbeMatch] = []
    for element in list(xml.children(matches, "ProbeMatch"))[:MAX_MATCHES]:
        reference = xml.child(element, "EndpointReference")
        version = xml.text_of(xml.child(element, "MetadataVersion"), 12)
        types = _values(xml.child(element, "Types"), MAX_TYPES)
        found.append(
            ProbeMatch(
                endpoint=xml.text_of(xml.child(reference, "Address"), MAX_VALUE),
                types=types,
                scopes=_values(xml.child(element, "Scopes"), MAX_SCOPES),
                xaddrs=_values(xml.child(element, "XAddrs"), MAX_XADDRS),
                metadata_version=int(version) if version.isdigit() else 0,
                is_camera=any(_is_camera_type(t, namespaces) for t in types),
            )
        )
    return tuple(found)


def _is_camera_type(qname: str, namespaces: dict[str, str]) -> bool:
    """``NetworkVideoTransmitter`` (any prefix: no other protocol uses the name), or ``Device`` of
    the ONVIF device service namespace — a Windows PC's ``wsdp:Device`` is not a camera. ONVIF Core
    §7.3.2.2 makes ``tds:Device`` the type every device carries; older ones carry only the NVT."""
    prefix, _, name = qname.rpartition(":")
    if name == "NetworkVideoTransmitter":
        return True
    return name == "Device" and namespaces.get(prefix) == NS_DEVICE


def _refused(drop: Drop, reason: str) -> DiscoveryParseError:
    return DiscoveryParseError(f"{drop.value}: {reason}", drop=drop.value)


class ProbeSession:
    """One probe and the devices that answered it (sans-I/O; the adapter moves the datagrams)."""

    def __init__(self, message_id: str, *, max_devices: int = 256) -> None:
        self.message_id = message_id
        self.max_devices = max_devices
        self.devices: dict[str, DiscoveredDevice] = {}  # by endpoint (else by address)
        self.dropped: Counter[Drop] = Counter()

    def probe(self) -> bytes:
        """The datagram to send (unicast or multicast, as often as the adapter repeats it)."""
        return build_probe(self.message_id)

    def receive(self, data: bytes, source_host: str) -> list[DiscoveredDevice]:
        """A reply from ``source_host``: the devices it newly reveals (never raises for bad input)."""
        try:
            matches = parse_probe_matches(data, self.message_id)
        except DiscoveryParseError as exc:
            self.dropped[Drop(exc.drop)] += 1
            return []
        new: list[DiscoveredDevice] = []
        for match in matches:
            device = self._accept(match, source_host)
            if device is None:
                continue
            key = device.endpoint or device.address
            if key in self.devices or len(self.devices) >= self.max_devices:
                self.dropped[Drop.DUPLICATE] += 1
                continue
            self.devices[key] = device
            new.append(device)
        return new

    def _accept(self, match: ProbeMatch, source_host: str) -> DiscoveredDevice | None:
        if not match.is_camera:
            self.dropped[Drop.NOT_A_CAMERA] += 1
            return None
        xaddrs: list[str] = []
        for claimed in match.xaddrs:
            try:
                address = parse_xaddr(claimed)
            except OnvifAddressError:
                self.dropped[Drop.FOREIGN_XADDR] += 1
                continue
            if not address.same_host(source_host):
                self.dropped[Drop.FOREIGN_XADDR] += 1
                continue
            xaddrs.append(address.url)
        if not xaddrs:
            self.dropped[Drop.NO_XADDR] += 1
            return None
        return DiscoveredDevice(
            address=source_host,
            endpoint="".join(ch for ch in match.endpoint if ch.isprintable()),
            xaddrs=tuple(dict.fromkeys(xaddrs)),
            name=match.scope("name"),
            hardware=match.scope("hardware"),
            location=match.scope("location/country") or match.scope("location/city") or match.scope("location"),
            types=match.types,
            scopes=match.scopes,
        )
