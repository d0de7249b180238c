"""Tests for the simulated Tianjin kindergarten city plan."""

from __future__ import annotations

import random
import re
import time
from collections import Counter

import pytest

from simulators.city import (
    AREAS,
    DISTRICTS,
    SimKindergarten,
    build_city,
    chinese_numeral,
    city_summary,
    kindergarten_id_for,
    kindergarten_number_of,
    plan_cameras,
)

WHOLE_CITY = 2314
_ID_RE = re.compile(r"^\d{20}$")


@pytest.fixture(scope="module")
def city() -> list[SimKindergarten]:
    """The whole city, built once (and timed: CPU time of this thread, which load does not inflate)."""
    start = time.thread_time()
    result = build_city(WHOLE_CITY)
    elapsed = time.thread_time() - start
    print(f"build_city({WHOLE_CITY}) took {elapsed:.3f} s of CPU")
    assert elapsed < 10.0  # about 0.3 s
    return result


def _all_ids(kg: SimKindergarten) -> list[str]:
    ids = [kg.id]
    for dev in kg.devices:
        ids.append(dev.id)
        ids.extend(ch.id for ch in dev.channels if ch.id != dev.id)
    return ids


def test_districts_table() -> None:
    assert len(DISTRICTS) == 16
    codes = [d.code for d in DISTRICTS]
    assert codes == sorted(codes) and len(set(codes)) == 16
    assert all(c.startswith("1201") for c in codes)
    by_name = {d.name: d for d in DISTRICTS}
    assert max(DISTRICTS, key=lambda d: d.weight).name == "滨海新区"
    assert min(DISTRICTS, key=lambda d: d.weight).name == "和平区"
    assert by_name["和平区"].code == "120101" and by_name["蓟州区"].code == "120119"
    for d in DISTRICTS:
        lon, lat = d.center
        assert 116.7 < lon < 118.1 and 38.5 < lat < 40.3
        assert len(d.streets) >= 6 and len(set(d.streets)) == len(d.streets)


def test_deterministic() -> None:
    assert build_city(120, seed=7) == build_city(120, seed=7)
    assert build_city(120, seed=7, ipc_mode=True) == build_city(120, seed=7, ipc_mode=True)
    assert build_city(120, seed=7) != build_city(120, seed=8)


def test_whole_city_districts(city: list[SimKindergarten]) -> None:
    assert len(city) == WHOLE_CITY
    counts = Counter(kg.district_code for kg in city)
    assert set(counts) == {d.code for d in DISTRICTS}
    assert counts.most_common(1)[0][0] == "120116"  # 滨海新区
    assert min(counts, key=lambda c: counts[c]) == "120101"  # 和平区
    for d in DISTRICTS:
        numbers = sorted(kg.number for kg in city if kg.district_code == d.code)
        assert numbers == list(range(1, counts[d.code] + 1))


def test_whole_city_names_and_ids_unique(city: list[SimKindergarten]) -> None:
    names = [kg.name for kg in city]
    assert len(set(names)) == len(names)
    ids = [i for kg in city for i in _all_ids(kg)]
    assert len(set(ids)) == len(ids)
    channel_names = [ch.name for kg in city for dev in kg.devices for ch in dev.channels]
    assert len(set(channel_names)) == len(channel_names)
    for kg in city:
        assert kg.name.startswith(kg.district_name) and kg.name.endswith(("幼儿园", "分园"))
        assert kg.address.startswith(f"天津市{kg.district_name}") and kg.address.endswith("号")
        for i in _all_ids(kg):
            assert _ID_RE.match(i), i
            assert i[:6] == kg.district_code
            assert i[8:10] == "11"
            assert kindergarten_number_of(i) == kg.number
            assert kindergarten_id_for(i) == kg.id


def test_whole_city_name_mix(city: list[SimKindergarten]) -> None:
    names = [kg.name for kg in city]
    assert "和平区第三幼儿园" in names
    assert any("实验幼儿园" in n for n in names)
    assert any("中心幼儿园" in n for n in names)
    numbered = sum(1 for n in names if re.search(r"区第[一二三四五六七八九十百千零]+幼儿园$", n))
    assert 0.2 < numbered / len(names) < 0.8


def test_kindergarten_id_layout(city: list[SimKindergarten]) -> None:
    for kg in city:
        assert kg.id == f"{kg.district_code}0011216{0}{kg.number:04d}00"


def test_every_kindergarten_is_covered(city: list[SimKindergarten]) -> None:
    for kg in city:
        cams = [ch for dev in kg.devices for ch in dev.channels if ch.kind == "camera"]
        assert 8 <= len(cams) <= 16
        areas = Counter(ch.area for ch in cams)
        assert areas["entrance"] >= 1 and areas["perimeter"] >= 1
        assert set(areas) <= set(AREAS)
        kinds = Counter(dev.kind for dev in kg.devices)
        assert kinds["alarm_box"] == 1 and kinds["nvr"] == 1 and kinds["ipc"] == 0
        assert kinds["perimeter_alarm"] <= 1
        assert any(ch.name == f"{kg.name}·大门口" for ch in cams)
        for dev in kg.devices:
            assert dev.manufacturer and dev.model and dev.firmware
            for ch in dev.channels:
                assert ch.name.startswith(f"{kg.name}·")
                assert abs(ch.longitude - kg.longitude) < 0.01 and abs(ch.latitude - kg.latitude) < 0.01


def test_default_device_structure(city: list[SimKindergarten]) -> None:
    perimeter = 0
    for kg in city:
        prefix = f"{kg.district_code}0011"
        kkkk = f"{kg.number:04d}"
        devs = {dev.kind: dev for dev in kg.devices}
        nvr = devs["nvr"]
        assert nvr.id == f"{prefix}1180{kkkk}00" and nvr.type_code == 118
        assert [ch.id for ch in nvr.channels] == [
            f"{prefix}1310{kkkk}{nn:02d}" for nn in range(1, len(nvr.channels) + 1)
        ]
        assert all(ch.type_code == 131 and ch.kind == "camera" for ch in nvr.channels)
        box = devs["alarm_box"]
        assert box.id == f"{prefix}1340{kkkk}01" and box.type_code == 134
        assert len(box.channels) == 1 and box.channels[0].id == box.id
        assert box.channels[0].name == f"{kg.name}·一键报警"
        assert box.channels[0].kind == "alarm" and box.channels[0].type_code == 134
        if "perimeter_alarm" in devs:
            perimeter += 1
            per = devs["perimeter_alarm"]
            assert per.id == f"{prefix}1340{kkkk}02" and per.type_code == 134
            assert len(per.channels) == 1 and per.channels[0].id == per.id
            assert per.channels[0].name == f"{kg.name}·周界报警"
    assert perimeter == round(WHOLE_CITY * 0.3)


def test_ipc_mode_structure() -> None:
    city = build_city(200, seed=3, ipc_mode=True, cameras_per_kindergarten=(4, 6))
    for kg in city:
        prefix = f"{kg.district_code}0011"
        kkkk = f"{kg.number:04d}"
        ipcs = [dev for dev in kg.devices if dev.kind == "ipc"]
        assert 4 <= len(ipcs) <= 6
        assert not any(dev.kind == "nvr" for dev in kg.devices)
        for nn, dev in enumerate(ipcs, start=1):
            assert dev.type_code == 132 and dev.id == f"{prefix}1320{kkkk}{nn:02d}"
            assert len(dev.channels) == 1
            ch = dev.channels[0]
            assert ch.id == f"{prefix}1310{kkkk}{nn:02d}" and ch.type_code == 131
            assert dev.name == ch.name
        assert sum(dev.kind == "alarm_box" for dev in kg.devices) == 1


def test_small_cities_and_apportionment() -> None:
    assert build_city(0) == []
    three = build_city(3)
    assert len(three) == 3
    assert "120116" in {kg.district_code for kg in three}
    sixteen = build_city(16)
    assert sorted(kg.district_code for kg in sixteen) == sorted(d.code for d in DISTRICTS)
    for n in (17, 50, 333):
        city = build_city(n)
        assert len(city) == n and len({kg.district_code for kg in city}) == 16


def test_perimeter_share_bounds() -> None:
    assert not any(dev.kind == "perimeter_alarm" for kg in build_city(50, perimeter_share=0.0) for dev in kg.devices)
    assert all(any(dev.kind == "perimeter_alarm" for dev in kg.devices) for kg in build_city(50, perimeter_share=1.0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cameras_per_kindergarten": (1, 4)},
        {"cameras_per_kindergarten": (8, 100)},
        {"cameras_per_kindergarten": (10, 8)},
        {"perimeter_share": 1.5},
    ],
)
def test_invalid_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_city(10, **kwargs)  # type: ignore[arg-type]


def test_max_cameras_unique_suffixes() -> None:
    specs = plan_cameras(99, random.Random(1))
    assert len(specs) == 99 and len({s.name_suffix for s in specs}) == 99
    assert specs[0].area == "entrance" and specs[1].area == "perimeter"
    city = build_city(20, cameras_per_kindergarten=(99, 99))
    assert all(len(kg.devices[0].channels) == 99 for kg in city)
    assert city[0].devices[0].channels[-1].id.endswith("99")


def test_id_helpers() -> None:
    assert kindergarten_number_of("12010100111310003107") == 31
    assert kindergarten_id_for("12010100111310003107") == "12010100112160003100"
    assert kindergarten_id_for("12011600111340123402") == "12011600112160123400"
    for bad in ("1201010011131000310", "1201010011131000310x", "１２010100111310003107"):
        with pytest.raises(ValueError):
            kindergarten_number_of(bad)
        with pytest.raises(ValueError):
            kindergarten_id_for(bad)


def test_chinese_numeral() -> None:
    assert [chinese_numeral(n) for n in (1, 3, 10, 12, 20, 21, 99, 100, 105, 110, 1001)] == [
        "一",
        "三",
        "十",
        "十二",
        "二十",
        "二十一",
        "九十九",
        "一百",
        "一百零五",
        "一百一十",
        "一千零一",
    ]


def test_city_summary(city: list[SimKindergarten]) -> None:
    summary = city_summary(city)
    assert summary["kindergartens"] == WHOLE_CITY
    assert summary["devices"] == sum(len(kg.devices) for kg in city)
    assert summary["channels"] == sum(len(d.channels) for kg in city for d in kg.devices)
    by_district = summary["by_district"]
    assert isinstance(by_district, dict) and len(by_district) == 16
    assert sum(v["kindergartens"] for v in by_district.values()) == WHOLE_CITY
    assert by_district["120101"]["name"] == "和平区"
