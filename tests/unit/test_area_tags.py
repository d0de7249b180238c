"""Area tags from names are suggestions (police see only operator-confirmed areas); indoor words must always win."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.registry import AreaTag, guess_area
from gateway.registry.model import name_allows_public


@pytest.mark.parametrize(
    ("name", "area"),
    [
        ("大门口", AreaTag.ENTRANCE),
        ("和平区第三幼儿园 · 大门口", AreaTag.ENTRANCE),
        ("西门出入口", AreaTag.ENTRANCE),
        ("Main Gate", AreaTag.ENTRANCE),
        ("north ENTRANCE 2", AreaTag.ENTRANCE),
        ("东侧周界", AreaTag.PERIMETER),
        ("南围墙", AreaTag.PERIMETER),
        ("Fence West", AreaTag.PERIMETER),
        ("教室门口", AreaTag.CLASSROOM),  # a doorway looking into a classroom: private
        ("大二班", AreaTag.CLASSROOM),
        ("Classroom 3", AreaTag.CLASSROOM),
        ("午睡室", AreaTag.DORMITORY),
        ("寝室门口", AreaTag.DORMITORY),
        ("小班睡眠室", AreaTag.DORMITORY),
        ("操场", AreaTag.PLAYGROUND),
        ("户外活动场东", AreaTag.PLAYGROUND),
        ("厨房", AreaTag.KITCHEN),
        ("食堂入口", AreaTag.KITCHEN),
        ("二楼走廊", AreaTag.CORRIDOR),
        ("楼道口", AreaTag.CORRIDOR),
        ("ＧＡＴＥ", AreaTag.ENTRANCE),  # full-width letters are NFKC-normalised
        ("Camera 01", AreaTag.OTHER),
        ("", AreaTag.OTHER),
    ],
)
def test_guess_area(name: str, area: AreaTag) -> None:
    assert guess_area(name) is area


def test_only_entrance_and_perimeter_are_public() -> None:
    assert {a for a in AreaTag if a.is_public} == {AreaTag.ENTRANCE, AreaTag.PERIMETER}


def test_area_values_are_stable_strings() -> None:
    assert AreaTag("classroom") is AreaTag.CLASSROOM
    assert AreaTag.ENTRANCE.value == "entrance"


_INDOOR_WORDS = ["教室", "班", "寝室", "午睡", "睡眠室", "厨房", "食堂", "走廊", "楼道", "操场", "kitchen"]
_PUBLIC_WORDS = ["大门", "门口", "入口", "出入口", "周界", "围墙", "围栏", "gate", "fence", "entrance"]


@given(
    prefix=st.text(max_size=6),
    indoor=st.sampled_from(_INDOOR_WORDS),
    public=st.sampled_from(_PUBLIC_WORDS),
    suffix=st.text(max_size=6),
    indoor_first=st.booleans(),
)
def test_an_indoor_word_is_never_public(prefix: str, indoor: str, public: str, suffix: str, indoor_first: bool) -> None:
    middle = indoor + public if indoor_first else public + indoor
    assert not guess_area(prefix + middle + suffix).is_public


@pytest.mark.parametrize(
    ("name", "allowed"),
    [("大门口", True), ("周界", True), ("Camera 01", True), ("午睡室·大门口", False), ("小一班教室门口", False)],
)
def test_the_name_guard_only_narrows(name: str, allowed: bool) -> None:
    """A name may keep a confirmed camera from police (it says indoor), never make one public."""
    assert name_allows_public(name) is allowed
