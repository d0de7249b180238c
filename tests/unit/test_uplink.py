"""Uplink budget arithmetic: reservations, measured rates, release, and the refusal's message."""

from __future__ import annotations

import pytest

from gateway.uplink import UplinkBudget, UplinkExceeded

KG = "120101000021600001"
OTHER_KG = "120101000021600002"


def test_reservations_add_up_per_kindergarten_and_release_once() -> None:
    budget = UplinkBudget(10_000, {OTHER_KG: 1_000})
    a = budget.reserve(KG, 4_000, "live A main")
    budget.reserve(KG, 4_000, "live B main")
    assert budget.used(KG) == 8_000 and budget.fits(KG, 2_000) and not budget.fits(KG, 2_001)
    assert budget.used(OTHER_KG) == 0 and budget.budget_of(OTHER_KG) == 1_000

    a.release()
    a.release()  # idempotent
    assert budget.used(KG) == 4_000 and len(budget.sessions(KG)) == 1
    usage = budget.usage(KG)
    assert usage["free_kbps"] == 6_000 and [s["what"] for s in usage["sessions"]] == ["live B main"]
    assert budget.summary([KG, OTHER_KG]) == {
        KG: {"budget_kbps": 10_000, "used_kbps": 4_000, "sessions": 1},
        OTHER_KG: {"budget_kbps": 1_000, "used_kbps": 0, "sessions": 0},
    }


def test_a_session_over_the_budget_is_refused_naming_what_uses_the_line() -> None:
    budget = UplinkBudget(5_000)
    budget.reserve(KG, 4_000, "live 12010100001310000001 门口 main", channel_id="12010100001310000001")

    with pytest.raises(UplinkExceeded) as refused:
        budget.reserve(KG, 4_000, "playback 12010100001310000002", kind="playback")

    error = refused.value
    assert (error.used_kbps, error.budget_kbps, error.wanted_kbps) == (4_000, 5_000, 4_000)
    assert "门口 main 4.0 Mbit/s" in str(error) and "上行带宽不足" in str(error) and "exceeded" in str(error)
    assert error.users[0]["channel_id"] == "12010100001310000001"
    assert budget.refused == 1 and budget.used(KG) == 4_000, "a refusal takes nothing"


def test_a_measured_rate_replaces_the_estimate_once_known() -> None:
    budget = UplinkBudget(5_000)
    measured: list[float | None] = [None]
    r = budget.reserve(KG, 4_000, "live main", measure=lambda: measured[0])
    assert r.kbps == 4_000 and not r.measured

    measured[0] = 1_234.4
    assert r.kbps == 1_234 and r.measured and budget.fits(KG, 3_700)
    r.update(768, "live sub")
    assert r.kbps == 1_234 and r.what == "live sub" and r.estimate_kbps == 768


def test_zero_means_no_limit() -> None:
    budget = UplinkBudget(0)
    for n in range(10):
        budget.reserve(KG, 4_000, f"live {n}")
    assert budget.used(KG) == 40_000 and budget.usage(KG)["free_kbps"] is None
