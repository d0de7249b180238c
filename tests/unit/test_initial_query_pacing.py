"""Registration storms: the DeviceInfo/Catalog queries of new registrations are paced, none is lost."""

from __future__ import annotations

from collections import Counter

import pytest
from gb_harness import GATEWAY_ID, REALM, make_harness

from gateway.gb28181.access import (
    AccessConfig,
    CatalogReceived,
    DeviceInfoReceived,
    DeviceRegistered,
)
from gateway.gb28181.device_agent import AgentState
from gateway.gb28181.pacer import Pacer


def ipc(n: int) -> str:
    return f"1201000000132{n:07d}"


def test_pacer_releases_a_burst_then_at_its_rate() -> None:
    pacer = Pacer(rate=10.0, burst=3)
    for n in range(8):
        pacer.add(f"k{n}")
    pacer.add("k0")  # already waiting: keeps its place, counted once
    assert list(pacer.release(0.0)) == ["k0", "k1", "k2"]
    assert pacer.get_timer() == pytest.approx(0.1)
    assert list(pacer.release(0.05)) == []
    assert list(pacer.release(0.1)) == ["k3"]
    pacer.discard("k4")
    assert list(pacer.release(0.3)) == ["k5", "k6"]  # k4 skipped without spending a token
    assert len(pacer) == 1
    assert list(pacer.release(10.0)) == ["k7"]
    assert pacer.get_timer() is None
    # after a quiet spell the bucket is full again, never more than the burst
    for n in range(5):
        pacer.add(f"later{n}")
    assert len(list(pacer.release(20.0))) == 3


def test_pacer_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Pacer(rate=0.0, burst=1)
    with pytest.raises(ValueError):
        Pacer(rate=1.0, burst=0)


def storm_harness(devices: int, rate: float, burst: int):  # type: ignore[no-untyped-def]
    config = AccessConfig(gateway_id=GATEWAY_ID, realm=REALM, initial_query_rate=rate, initial_query_burst=burst)
    h = make_harness(config=config)
    agents = [h.add_agent(ipc(n), n_channels=1) for n in range(devices)]
    h.host.start_all(h.clock.now, agents)
    return h, agents


def test_a_storm_registers_everyone_first_and_every_device_still_gets_its_catalog() -> None:
    h, agents = storm_harness(60, rate=20.0, burst=10)

    h.pump(until=0.5)  # registrations are not held back by the queries
    assert all(a.state is AgentState.REGISTERED for a in agents)
    assert len({e.device_id for e in h.of_type(DeviceRegistered)}) == 60
    asked = len(h.of_type(DeviceInfoReceived))
    assert 10 <= asked <= 10 + 0.5 * 20 + 1  # the burst, then 20 devices a second

    h.pump(until=6.0)
    infos = Counter(e.device_id for e in h.of_type(DeviceInfoReceived))
    catalogs = Counter(e.device_id for e in h.of_type(CatalogReceived))
    assert set(infos) == set(catalogs) == {ipc(n) for n in range(60)}
    assert max(infos.values()) == max(catalogs.values()) == 1  # each asked once
    assert all(len(e.items) == 1 for e in h.of_type(CatalogReceived))
    assert len(h.access.initial_queries) == 0 and h.access.get_timer() is not None  # keepalive timers remain


def test_a_device_that_unregisters_while_waiting_is_not_asked() -> None:
    h, agents = storm_harness(12, rate=1.0, burst=2)
    h.pump(until=0.2)
    waiting = agents[-1]
    assert waiting.profile.device_id not in {e.device_id for e in h.of_type(DeviceInfoReceived)}
    waiting.stop(h.clock.now, unregister=True)
    h.pump(until=30.0)
    asked = {e.device_id for e in h.of_type(DeviceInfoReceived)}
    assert waiting.profile.device_id not in asked
    assert asked == {a.profile.device_id for a in agents[:-1]}


def test_an_idle_gateway_asks_a_new_device_at_once() -> None:
    h, agents = storm_harness(1, rate=500.0, burst=200)
    h.pump()  # no timer runs: the queries went out with the 200 OK
    assert [e.device_id for e in h.of_type(DeviceInfoReceived)] == [ipc(0)]
    assert [e.device_id for e in h.of_type(CatalogReceived)] == [ipc(0)]
