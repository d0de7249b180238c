"""Playback/download uplink reservations (gateway/history_uplink.py) and playback metric labels."""

from __future__ import annotations

import pytest

from gateway.history_uplink import HistoryUplink, speeds_from
from gateway.playback import outcome_label
from gateway.uplink import UplinkBudget, UplinkExceeded


class _Places:
    def kindergarten_of(self, channel_id: str) -> str | None:
        return "KG1" if channel_id.startswith("1") else None

    def label(self, channel_id: str, number: int) -> str:
        return f"{channel_id} 大门 {'main' if number == 0 else 'sub'}"


def test_a_download_falls_back_to_a_slower_speed_then_is_refused_naming_the_users() -> None:
    budget = UplinkBudget(10_000)
    uplink = HistoryUplink(budget, _Places())
    played, factor = uplink.reserve("1001", "playback", (1.0,))
    assert played is not None and factor == 1.0 and played.kbps == 4000 and played.what == "playback 1001 大门 main"
    fetched, factor = uplink.reserve("1002", "download", speeds_from(4))
    assert fetched is not None and factor == 1 and fetched.kbps == 4000 and fetched.what.endswith("×1")
    with pytest.raises(UplinkExceeded) as refused:
        uplink.reserve("1003", "download", speeds_from(2))
    assert "playback 1001" in str(refused.value) and "download 1002" in str(refused.value)
    assert "8.0 Mbit/s" in str(refused.value) and budget.refused == 1
    fetched.release()
    again, factor = uplink.reserve("1003", "download", speeds_from(2))
    assert again is not None and factor == 1 and budget.used("KG1") == 8000


def test_no_kindergarten_no_reservation_and_speed_lists() -> None:
    uplink = HistoryUplink(UplinkBudget(1), _Places())
    assert uplink.reserve("9001", "download", [8, 4]) == (None, 8)
    assert speeds_from(8) == [8, 4, 2, 1] and speeds_from(1) == [1] and speeds_from(3) == [3, 2, 1]


def test_outcome_labels_are_bounded() -> None:
    assert outcome_label("end_of_file") == "end_of_file"
    assert outcome_label("486 Busy Here because of a long vendor reason") == "refused_486"
    assert outcome_label("stopped by API") == "stopped_by_API"
