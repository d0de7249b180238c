"""Where an upper platform may speak from and where its video may go (issue 10, C1)."""

from __future__ import annotations

import pytest

from gateway.cascade.upper_config import UpperPlatformConfig
from gateway.cascade.upper_trust import UpperAddresses, parse_networks, same_host
from gateway.errors import ConfigError
from gateway.gb28181.sip.transport import Peer, Transport


def _addresses(**kw: object) -> UpperAddresses:
    values: dict[str, object] = {"hosts": frozenset({"10.0.0.9"}), "port": 5060}
    values.update(kw)
    return UpperAddresses(**values)  # type: ignore[arg-type]


def test_only_the_registered_host_and_port_may_speak_for_the_upper() -> None:
    rule = _addresses()
    assert rule.signal_allowed(Peer(Transport.UDP, "10.0.0.9", 5060))
    assert rule.signal_allowed(Peer(Transport.TCP, "10.0.0.9", 5060, 7))
    assert rule.signal_allowed(Peer(Transport.UDP, "::ffff:10.0.0.9", 5060))
    assert not rule.signal_allowed(Peer(Transport.UDP, "10.0.0.9", 5061))
    assert not rule.signal_allowed(Peer(Transport.UDP, "10.0.0.99", 5060))
    assert not rule.signal_allowed(Peer(Transport.TCP, "10.0.0.99", 40000, 8))


def test_extra_signal_networks_allow_any_port_inside_them() -> None:
    rule = _addresses(signal_networks=parse_networks(["10.20.0.0/16"], "x"))
    assert rule.signal_allowed(Peer(Transport.UDP, "10.20.3.4", 40000))
    assert not rule.signal_allowed(Peer(Transport.UDP, "10.21.3.4", 5060))
    assert not rule.is_signalling_address(Peer(Transport.UDP, "10.20.3.4", 5060))  # no fall-back route by network


def test_media_goes_to_the_upper_host_by_default_or_to_its_media_networks() -> None:
    rule = _addresses()
    assert rule.media_allowed("10.0.0.9")
    assert not rule.media_allowed("127.0.0.1")
    assert not rule.media_allowed("0.0.0.0") and not rule.media_allowed("")
    assert not rule.media_allowed("attacker.example")
    wide = _addresses(media_networks=parse_networks(["10.30.0.0/24", "192.0.2.7"], "x"))
    assert wide.media_allowed("10.30.0.200") and wide.media_allowed("192.0.2.7")
    assert not wide.media_allowed("10.0.0.9")  # once listed, only the listed networks


def test_same_host_normalises_addresses() -> None:
    assert same_host("::ffff:127.0.0.1", "127.0.0.1") and same_host("[::1]", "::1")
    assert same_host("Police", "police") and not same_host("10.0.0.1", "10.0.0.2")


@pytest.mark.parametrize("field", ["signal_networks", "media_networks"])
def test_bad_networks_are_refused_at_start(field: str) -> None:
    config = UpperPlatformConfig(
        name="police", server_id="12010000002000000110", host="10.0.0.9", password="p", **{field: ["10.0.0.0/33"]}
    )
    with pytest.raises(ConfigError, match=field):
        config.validate()


def test_an_upper_needs_a_password() -> None:
    config = UpperPlatformConfig(name="police", server_id="12010000002000000110", host="10.0.0.9", password="")
    with pytest.raises(ConfigError, match="its own password"):
        config.validate()
