"""The demo's port plan: one place, no collisions (the control endpoint once took a district's console port)."""

from __future__ import annotations

import socket

import pytest

from gateway.errors import ConfigError
from simulators.demo import Demo, DemoOptions
from simulators.demo_ports import DemoPorts, PortUse, demo_platforms, ensure_free


def test_default_plan_gives_every_service_its_own_port() -> None:
    uses = DemoPorts().uses()
    ports = [use.port for use in uses]
    assert len(ports) == len(set(ports)) == 2 + 18 + 1
    assert all(1 <= port <= 65535 for port in ports)
    by_service = {use.service: use.port for use in uses}
    assert by_service["gateway SIP"] == 5060 and by_service["gateway console/API"] == 8080
    assert by_service["municipal platform console"] == 8081 and by_service["police platform console"] == 8082
    assert [by_service[f"{p.name} platform console"] for p in demo_platforms()] == list(range(8081, 8099))
    assert by_service["simulator control"] == 8099


def test_the_demo_starts_on_the_default_plan() -> None:
    assert Demo(DemoOptions()).ports == DemoPorts()
    assert DemoOptions().control_port is None


def test_platforms_are_the_18_in_port_order() -> None:
    platforms = demo_platforms()
    assert [p.level for p in platforms[:2]] == ["municipal", "police"]
    districts = [p.district for p in platforms[2:]]
    assert len(districts) == 16 and districts == sorted(districts)


def test_control_follows_a_moved_http_port_and_without_platforms_comes_right_after() -> None:
    assert DemoPorts(http=9000).control_port == 9019
    plan = DemoPorts(http=9000, platforms=False)
    assert [u.port for u in plan.uses()] == [5060, 9000, 9019]


@pytest.mark.parametrize(
    "kw",
    [
        {"control": 8090},  # the old default: 120111's console
        {"control": 8080},
        {"sip": 8080},
        {"http": 5059},  # the platforms would take 5060
        {"http": 65530},
        {"control": 0},
    ],
)
def test_a_colliding_or_impossible_plan_is_refused(kw: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        DemoPorts(**kw)


def test_a_taken_port_is_named_with_its_service() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            ensure_free([PortUse(port, "simulator control")])
    assert f"{port}/tcp (simulator control)" in str(info.value)


def test_free_ports_pass() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ensure_free([PortUse(port, "anything", ("udp", "tcp"))])


def test_the_banner_line_names_the_plan() -> None:
    line = DemoPorts().summary()
    assert "SIP 5060" in line and "gateway 8080" in line and "8081-8098" in line and "control 8099" in line
