"""WS-Discovery ProbeMatches: real-world shapes, and what a forged or oversized reply gets (nothing)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.onvif import xml
from gateway.onvif.errors import DiscoveryParseError
from gateway.onvif.wsdiscovery import (
    MAX_DATAGRAM,
    MAX_MATCHES,
    MAX_XADDRS,
    Drop,
    ProbeSession,
    build_probe,
    parse_probe_matches,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "onvif"
PROBE_ID = "urn:uuid:f5d4c2a0-6f1e-4c43-9b7e-1a2b3c4d5e6f"
HIK = (FIXTURES / "hikvision_style_probematches.xml").read_bytes()
DAHUA = (FIXTURES / "dahua_style_probematches.xml").read_bytes()


def _match(
    xaddrs: str = "http://10.0.0.5/onvif/device_service",
    types: str = "dn:NetworkVideoTransmitter",
    *,
    relates: str = PROBE_ID,
    extra: str = "",
) -> bytes:
    return (
        '<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery">'
        f"<e:Header><a:RelatesTo>{relates}</a:RelatesTo>"
        "<a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action></e:Header>"
        "<e:Body><d:ProbeMatches><d:ProbeMatch><a:EndpointReference><a:Address>urn:uuid:1</a:Address></a:EndpointReference>"
        f"<d:Types>{types}</d:Types><d:Scopes>onvif://www.onvif.org/name/X</d:Scopes><d:XAddrs>{xaddrs}</d:XAddrs>"
        f"<d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch>{extra}</d:ProbeMatches></e:Body></e:Envelope>"
    ).encode()


def test_probe_is_a_ws_discovery_probe_for_video_transmitters() -> None:
    root = xml.parse(build_probe("urn:uuid:abc"))
    assert root is not None
    assert xml.text_of(next(xml.descendants(root, "MessageID"))) == "urn:uuid:abc"
    assert xml.text_of(next(xml.descendants(root, "Action"))).endswith("/2005/04/discovery/Probe")
    assert xml.text_of(next(xml.descendants(root, "Types"))) == "dn:NetworkVideoTransmitter"


def test_hikvision_shape() -> None:
    session = ProbeSession(PROBE_ID)
    (device,) = session.receive(HIK, "192.168.1.64")
    assert device.address == "192.168.1.64"
    assert device.endpoint == "urn:uuid:4ca1d2a4-9f3e-11ef-8000-c42f90abcdef"
    assert device.xaddrs == ("http://192.168.1.64:80/onvif/device_service",)  # the IPv6 one is not the sender
    assert device.name == "HIKVISION DS-2CD2143G0-I"  # percent-decoded
    assert device.hardware == "DS-2CD2143G0-I"
    assert device.location == "china"
    assert session.dropped == {Drop.FOREIGN_XADDR: 1}


def test_dahua_shape() -> None:
    (match,) = parse_probe_matches(DAHUA, PROBE_ID)
    assert match.endpoint == "uuid:0b3f7e2a-5d1c-4e6b-8a9f-3c08a5d3e0f1"
    assert match.metadata_version == 1 and match.is_camera
    (device,) = ProbeSession(PROBE_ID).receive(DAHUA, "192.168.1.108")
    assert (device.name, device.hardware, device.location) == ("Dahua", "IPC-HDW4433C-A", "china")
    assert device.xaddrs == ("http://192.168.1.108:80/onvif/device_service",)


def test_another_probes_answer_is_ignored() -> None:
    session = ProbeSession("urn:uuid:someone-else")
    assert session.receive(HIK, "192.168.1.64") == []
    assert session.dropped == {Drop.NOT_OURS: 1}
    session = ProbeSession(PROBE_ID)
    assert session.receive(_match(relates=""), "10.0.0.5") == []  # no RelatesTo: unsolicited
    assert session.dropped == {Drop.NOT_OURS: 1}


def test_an_xaddr_naming_another_host_is_never_offered() -> None:
    session = ProbeSession(PROBE_ID)
    forged = _match("http://10.0.0.99/onvif/device_service http://gateway.internal:8080/api")
    assert session.receive(forged, "10.0.0.5") == []
    assert session.dropped == {Drop.FOREIGN_XADDR: 2, Drop.NO_XADDR: 1}


@pytest.mark.parametrize(
    "xaddr",
    [
        "ftp://10.0.0.5/onvif",
        "file:///etc/passwd",
        "http://admin:secret@10.0.0.5/onvif/device_service",
        "javascript:alert(1)",
        "http:///nohost",
        "http://10.0.0.5:0/x",
        "http://10.0.0.5:99999/x",
        "http://10.0.0.5/" + "a" * 600,
    ],
)
def test_junk_xaddrs_are_dropped(xaddr: str) -> None:
    session = ProbeSession(PROBE_ID)
    assert session.receive(_match(xaddr), "10.0.0.5") == []
    assert session.dropped[Drop.NO_XADDR] == 1


def test_not_a_camera() -> None:
    session = ProbeSession(PROBE_ID)
    printer = _match(types="wsdp:Device pub:Computer").replace(
        b"<e:Envelope ", b'<e:Envelope xmlns:wsdp="http://schemas.xmlsoap.org/ws/2006/02/devprof" '
    )
    assert session.receive(printer, "10.0.0.5") == []
    assert session.dropped == {Drop.NOT_A_CAMERA: 1}


def test_an_onvif_device_type_alone_is_a_camera() -> None:
    only_device = _match(types="tds:Device").replace(
        b"<e:Envelope ", b'<e:Envelope xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
    )
    assert len(ProbeSession(PROBE_ID).receive(only_device, "10.0.0.5")) == 1


def test_duplicates_count_once() -> None:
    session = ProbeSession(PROBE_ID)
    assert len(session.receive(_match(), "10.0.0.5")) == 1
    assert session.receive(_match(), "10.0.0.5") == []  # the second copy of a repeated probe's answer
    assert len(session.devices) == 1 and session.dropped == {Drop.DUPLICATE: 1}


def test_sizes_are_bounded() -> None:
    session = ProbeSession(PROBE_ID)
    assert session.receive(HIK + b" " * MAX_DATAGRAM, "192.168.1.64") == []
    assert session.dropped == {Drop.TOO_LARGE: 1}
    many_xaddrs = " ".join(f"http://10.0.0.5:{8000 + i}/onvif/device_service" for i in range(50))
    (match,) = parse_probe_matches(_match(many_xaddrs), PROBE_ID)
    assert len(match.xaddrs) == MAX_XADDRS
    one = _match().split(b"<d:ProbeMatch>", 1)[1].split(b"</d:ProbeMatch>", 1)[0]
    flood = _match(extra=("<d:ProbeMatch>" + one.decode() + "</d:ProbeMatch>") * 40)
    assert len(parse_probe_matches(flood, PROBE_ID)) == MAX_MATCHES
    long_name = _match().replace(b"name/X", b"name/" + b"%41" * 70)
    (device,) = ProbeSession(PROBE_ID).receive(long_name, "10.0.0.5")
    assert device.name == "A" * 64


def test_entities_and_dtds_are_refused() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        + _match(types="&b;").split(b"?>", 1)[-1]
    )
    external = b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + _match(types="&x;")
    for data in (laughs, external):
        with pytest.raises(DiscoveryParseError) as caught:
            parse_probe_matches(data, PROBE_ID)
        assert caught.value.drop == Drop.NOT_XML.value


def test_control_characters_in_labels_are_removed() -> None:
    forged = _match().replace(b"name/X", b"name/Cam%0D%0AFAKE%1B[2J")
    (device,) = ProbeSession(PROBE_ID).receive(forged, "10.0.0.5")
    assert device.name == "CamFAKE[2J"


@pytest.mark.parametrize("data", [HIK, DAHUA])
def test_every_truncation_gives_nothing_or_the_device_and_never_raises(data: bytes) -> None:
    source = "192.168.1.64" if data is HIK else "192.168.1.108"
    data = data.rstrip()
    for n in range(len(data)):
        session = ProbeSession(PROBE_ID)
        assert session.receive(data[:n], source) == []
        with pytest.raises(DiscoveryParseError):
            parse_probe_matches(data[:n], PROBE_ID)
    assert len(ProbeSession(PROBE_ID).receive(data + b"\n", source)) == 1  # trailing whitespace is fine


@pytest.mark.parametrize(
    "junk", [b"", b"\x00" * 100, b"<a>", b"HTTP/1.1 200 OK\r\n\r\n", "中文".encode("gb2312"), b"<Envelope/>"]
)
def test_junk_datagrams(junk: bytes) -> None:
    session = ProbeSession(PROBE_ID)
    assert session.receive(junk, "10.0.0.5") == []
    assert sum(session.dropped.values()) == 1


def test_hello_is_not_a_probe_match() -> None:
    hello = _match().replace(b"ProbeMatches</a:Action>", b"Hello</a:Action>")
    with pytest.raises(DiscoveryParseError) as caught:
        parse_probe_matches(hello, PROBE_ID)
    assert caught.value.drop == Drop.NOT_PROBE_MATCHES.value


@given(st.binary(max_size=4096))
def test_random_bytes_never_escape_our_error(data: bytes) -> None:
    session = ProbeSession(PROBE_ID)
    assert session.receive(data, "10.0.0.5") == []
    assert sum(session.dropped.values()) == 1


@given(st.integers(0, len(HIK) - 1), st.binary(min_size=1, max_size=8))
def test_mutated_captures_parse_or_raise_our_error(at: int, junk: bytes) -> None:
    data = HIK[:at] + junk + HIK[at + len(junk) :]
    with contextlib.suppress(DiscoveryParseError):
        parse_probe_matches(data, PROBE_ID)
    ProbeSession(PROBE_ID).receive(data, "192.168.1.64")  # never raises
