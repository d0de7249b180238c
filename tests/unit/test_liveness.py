"""Liveness: online/offline from registrations and keepalives, on caller-supplied time."""

from __future__ import annotations

import pytest

from gateway.gb28181.liveness import Liveness, OfflineReason, RegistrationLapsed, WentOffline, WentOnline

DEV = "12010000001320000001"
OTHER = "12010000001320000002"


def live() -> Liveness:
    return Liveness(interval=60.0, missed=3)


def test_online_on_registration() -> None:
    lv = live()
    events = lv.registered(DEV, 3600, 0.0)
    assert events == [WentOnline(DEV, 0.0, "registered")]
    assert lv.is_online(DEV)
    assert lv.is_registered(DEV, 0.0)
    assert lv.online_count == 1
    assert lv.silence_limit == 180.0


def test_refresh_of_an_online_device_emits_nothing() -> None:
    lv = live()
    lv.registered(DEV, 3600, 0.0)
    assert lv.registered(DEV, 3600, 100.0) == []
    assert lv.last_seen(DEV) == 100.0


def test_offline_after_interval_times_missed_of_silence() -> None:
    lv = live()
    lv.registered(DEV, 3600, 0.0)
    assert lv.get_timer() == 180.0
    assert lv.handle_timer(179.999) == []
    assert lv.is_online(DEV)

    events = lv.handle_timer(180.0)

    assert events == [WentOffline(DEV, 180.0, OfflineReason.KEEPALIVE_TIMEOUT)]
    assert not lv.is_online(DEV)
    assert lv.is_registered(DEV, 180.0)  # still registered, just silent
    assert lv.online_count == 0


def test_keepalives_keep_device_online() -> None:
    lv = live()
    lv.registered(DEV, 3600, 0.0)
    for t in range(60, 1200, 60):
        assert lv.handle_timer(float(t)) == []
        assert lv.heard(DEV, float(t)) == []
    assert lv.is_online(DEV)
    assert lv.last_seen(DEV) == 1140.0
    assert lv.get_timer() is not None and lv.get_timer() <= 1140.0 + 180.0


def test_late_timer_after_keepalive_rearms_instead_of_offline() -> None:
    lv = live()
    lv.registered(DEV, 3600, 0.0)
    lv.heard(DEV, 170.0)
    assert lv.handle_timer(180.0) == []  # the first deadline surfaces, re-arms from last_seen
    assert lv.get_timer() == 350.0
    assert lv.handle_timer(350.0) == [WentOffline(DEV, 350.0, OfflineReason.KEEPALIVE_TIMEOUT)]


def test_keepalive_brings_device_back_online() -> None:
    lv = live()
    lv.registered(DEV, 3600, 0.0)
    lv.handle_timer(180.0)
    assert not lv.is_online(DEV)

    events = lv.heard(DEV, 200.0)

    assert events == [WentOnline(DEV, 200.0, "keepalive")]
    assert lv.is_online(DEV)
    assert lv.get_timer() == 380.0
    assert lv.handle_timer(380.0) == [WentOffline(DEV, 380.0, OfflineReason.KEEPALIVE_TIMEOUT)]


def test_offline_at_registration_expiry_despite_keepalives() -> None:
    lv = live()
    lv.registered(DEV, 300, 0.0)
    for t in (60.0, 120.0, 180.0, 240.0):
        lv.handle_timer(t)
        lv.heard(DEV, t)
    assert lv.handle_timer(299.0) == []

    events = lv.handle_timer(300.0)

    assert events == [WentOffline(DEV, 300.0, OfflineReason.REGISTRATION_EXPIRED), RegistrationLapsed(DEV, 300.0)]
    assert not lv.is_registered(DEV, 300.0)
    assert lv.last_seen(DEV) is None  # forgotten
    # a keepalive after expiry does not bring it back: it must register again
    assert lv.heard(DEV, 301.0) == []
    assert not lv.is_online(DEV)


def test_expiry_shorter_than_silence_limit() -> None:
    lv = live()
    lv.registered(DEV, 100, 0.0)
    assert lv.get_timer() == 100.0
    assert lv.handle_timer(100.0) == [
        WentOffline(DEV, 100.0, OfflineReason.REGISTRATION_EXPIRED),
        RegistrationLapsed(DEV, 100.0),
    ]


def test_reregistration_with_shorter_expiry_moves_deadline_earlier() -> None:
    lv = live()
    lv.registered(DEV, 3600, 0.0)
    lv.registered(DEV, 50, 10.0)
    assert lv.get_timer() == 60.0
    assert lv.handle_timer(60.0) == [
        WentOffline(DEV, 60.0, OfflineReason.REGISTRATION_EXPIRED),
        RegistrationLapsed(DEV, 60.0),
    ]


def test_unregister_goes_offline_unregistered() -> None:
    lv = live()
    lv.registered(DEV, 3600, 0.0)

    events = lv.unregistered(DEV, 30.0)

    assert events == [WentOffline(DEV, 30.0, OfflineReason.UNREGISTERED)]
    assert not lv.is_online(DEV)
    assert not lv.is_registered(DEV, 30.0)
    assert lv.heard(DEV, 31.0) == []
    assert lv.handle_timer(10_000.0) == []  # the old deadline is stale, no second offline


def test_unregister_of_unknown_or_offline_device_is_silent() -> None:
    lv = live()
    assert lv.unregistered(DEV, 0.0) == []
    lv.registered(DEV, 3600, 0.0)
    lv.handle_timer(180.0)
    assert lv.unregistered(DEV, 200.0) == []


def test_keepalive_from_unknown_device_is_ignored() -> None:
    lv = live()
    assert lv.heard(OTHER, 5.0) == []
    assert not lv.is_online(OTHER)
    assert lv.last_seen(OTHER) is None
    assert lv.get_timer() is None
    assert lv._heap == []


def test_devices_are_independent() -> None:
    lv = live()
    lv.registered(DEV, 3600, 0.0)
    lv.registered(OTHER, 3600, 100.0)
    assert lv.handle_timer(180.0) == [WentOffline(DEV, 180.0, OfflineReason.KEEPALIVE_TIMEOUT)]
    assert lv.is_online(OTHER)
    assert lv.handle_timer(280.0) == [WentOffline(OTHER, 280.0, OfflineReason.KEEPALIVE_TIMEOUT)]


def test_restore_seeds_state_without_events() -> None:
    lv = live()
    lv.restore(DEV, online=True, last_seen=0.0, expires_at=3600.0)
    assert lv.is_online(DEV)
    assert lv.get_timer() == 180.0
    assert lv.handle_timer(180.0) == [WentOffline(DEV, 180.0, OfflineReason.KEEPALIVE_TIMEOUT)]


@pytest.mark.parametrize("run_timers", [True, False], ids=["with_timers", "keepalives_only"])
def test_heap_stays_small_under_many_keepalives(run_timers: bool) -> None:
    lv = live()
    lv.registered(DEV, 3600, 0.0)
    for i in range(1, 10_001):
        now = i * 0.3  # 3000 s of keepalives, well inside the registration
        if run_timers:
            assert lv.handle_timer(now) == []
        lv.heard(DEV, now)
        assert len(lv._heap) <= 2
    assert lv.is_online(DEV)


def test_invalid_parameters_refused() -> None:
    with pytest.raises(ValueError):
        Liveness(interval=0.0)
    with pytest.raises(ValueError):
        Liveness(missed=0)


def test_silent_device_is_forgotten_after_registration_expiry() -> None:
    lv = live()
    lv.registered(DEV, 300, 0.0)
    lv.handle_timer(180.0)
    lv.handle_timer(10_000.0)
    assert lv.last_seen(DEV) is None
