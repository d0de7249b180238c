"""The daily coverage replay (gateway/coverage/history.py) and the 24 h RTP loss window (uplink.py)."""

from __future__ import annotations

from datetime import date

from gateway.coverage.history import CoverageDay, day_spans, replay_days
from gateway.coverage.model import UplinkSample
from gateway.coverage.uplink import LossWindow, StreamCounters

SPANS = day_spans(date(2026, 3, 1), date(2026, 3, 3))
D1, D2, D3 = SPANS
HOUR = 3600.0


def test_day_spans_are_local_calendar_days() -> None:
    assert [s.day for s in SPANS] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    assert D1.end == D2.start and D2.end == D3.start
    assert 23 * HOUR <= D1.end - D1.start <= 25 * HOUR


def test_replay_counts_complete_partial_missing_per_day() -> None:
    kindergartens = {"kgA": "120101", "kgB": "120101", "kgC": "120102", "kgEmpty": "120102"}
    devices = {"a1": "kgA", "a2": "kgA", "b1": "kgB", "c1": "kgC"}
    current = {"a1": True, "a2": True, "b1": True, "c1": True}
    events = [
        # a2 drops for 6 hours on day 2 (held < 90 %): kgA partial that day only.
        ("a2", False, D2.start + 2 * HOUR),
        ("a2", True, D2.start + 8 * HOUR),
        # b1 was offline before the window (its earlier event says so) and comes online on day 3 at noon.
        ("b1", True, D3.start + 12 * HOUR),
        # c1 was installed on day 2: its first event is "online", so it was offline before.
        ("c1", True, D2.start + HOUR),
        # a device of no kindergarten we count is ignored.
        ("stranger", False, D1.start + HOUR),
    ]
    before = {"b1": False}
    rows = replay_days(SPANS, kindergartens, devices, current, before, events)
    got = {(r.day, r.district_code): (r.complete, r.partial, r.missing) for r in rows}
    assert got == {
        ("2026-03-01", "120101"): (1, 0, 1),  # kgA complete, kgB missing (offline all day)
        ("2026-03-01", "120102"): (0, 0, 2),  # kgC not installed yet, kgEmpty has no device
        ("2026-03-02", "120101"): (0, 1, 1),  # kgA partial (a2 down 6 h), kgB still missing
        ("2026-03-02", "120102"): (1, 0, 1),  # kgC online from 01:00: 23 of 24 h held
        ("2026-03-03", "120101"): (1, 1, 0),  # kgB online half the day: partial
        ("2026-03-03", "120102"): (1, 0, 1),
    }
    day2 = next(r for r in rows if r.day == "2026-03-02" and r.district_code == "120102")
    assert day2.total == 2 and day2.rate == 0.5


def test_a_device_without_events_keeps_its_current_state() -> None:
    rows = replay_days(SPANS[:1], {"kg": "120101"}, {"d": "kg"}, {"d": False}, {}, [])
    assert rows == [CoverageDay("2026-03-01", "120101", 0, 0, 1)]
    rows = replay_days(SPANS[:1], {"kg": "120101"}, {"d": "kg"}, {"d": True}, {}, [])
    assert rows == [CoverageDay("2026-03-01", "120101", 1, 0, 0)]


def test_non_contiguous_days_replay_the_events_between_them() -> None:
    events = [("d", False, D1.start + HOUR), ("d", True, D2.start + HOUR)]
    rows = replay_days([D1, D3], {"kg": "120101"}, {"d": "kg"}, {"d": True}, {"d": True}, events)
    assert [(r.day, r.complete, r.partial, r.missing) for r in rows] == [
        ("2026-03-01", 0, 1, 0),
        ("2026-03-03", 1, 0, 0),
    ]


def test_loss_window_adds_increments_and_forgets_after_24_hours() -> None:
    window = LossWindow()
    t0 = 1_800_000_000.0
    window.sample([StreamCounters("s1", "kg", 1000, 10)], t0)
    window.sample([StreamCounters("s1", "kg", 3000, 30), StreamCounters("s2", "kg2", 500, 0)], t0 + 60)
    assert window.samples() == {"kg": UplinkSample(3000, 30), "kg2": UplinkSample(500, 0)}
    # s1 ended; a new stream of the same kindergarten starts again from zero.
    window.sample([StreamCounters("s3", "kg", 100, 100)], t0 + 120)
    assert window.samples()["kg"] == UplinkSample(3100, 130)
    assert round(window.samples()["kg"].loss_percent, 2) == round(100 * 130 / 3230, 2)
    window.sample([], t0 + 25 * HOUR)
    assert window.samples() == {}
