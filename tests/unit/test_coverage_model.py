"""The coverage status rules (gateway/coverage/model.py): every reason, the three statuses, facts from a directory."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.coverage.model import (
    DAY,
    CoverageRules,
    CoverageStatus,
    KindergartenFacts,
    Reason,
    UplinkSample,
    collect_facts,
    evaluate,
    select,
    summarise,
)
from gateway.registry.directory import Directory
from gateway.registry.model import AreaConfirmation, AreaTag, Channel, Device, Kindergarten, guess_area

NOW = 1_800_000_000.0
RULES = CoverageRules()

GOOD = KindergartenFacts(
    id="12010100112160000100",
    name="和平区第一幼儿园",
    district_code="120101",
    devices=3,
    devices_online=3,
    channels=4,
    channels_online=4,
    cameras=3,
    cameras_online=3,
    entrance=1,
    entrance_online=1,
    entrance_confirmed=True,
    perimeter=1,
    perimeter_online=1,
    alarms=1,
    alarms_online=1,
    last_drill=NOW - 10 * DAY,
    recording=True,
    uplink=UplinkSample(100_000, 10),
    flaps=0,
)


def test_all_rules_hold_is_complete() -> None:
    result = evaluate(GOOD, RULES, NOW)
    assert result.status is CoverageStatus.COMPLETE and result.findings == ()
    assert result.status.label == "达标"


@pytest.mark.parametrize(
    ("change", "reason", "text"),
    [
        ({"entrance": 0, "entrance_online": 0, "entrance_confirmed": False}, Reason.NO_ENTRANCE, "无大门口摄像机"),
        (
            {"entrance_online": 0, "cameras_online": 2, "channels_online": 3},
            Reason.ENTRANCE_OFFLINE,
            "大门口摄像机离线",
        ),
        ({"entrance_confirmed": False}, Reason.ENTRANCE_UNCONFIRMED, "大门口区域未确认"),
        ({"perimeter": 0, "perimeter_online": 0}, Reason.NO_PERIMETER, "无周界摄像机"),
        ({"perimeter": 2, "perimeter_online": 1, "channels": 5}, Reason.PERIMETER_OFFLINE, "周界摄像机离线（1/2）"),
        ({"alarms": 0, "alarms_online": 0}, Reason.NO_ALARM, "无一键报警"),
        ({"alarms_online": 0, "channels_online": 3}, Reason.ALARM_OFFLINE, "一键报警离线"),
        ({"last_drill": None}, Reason.NEVER_DRILLED, "从未演练"),
        ({"last_drill": NOW - 181 * DAY}, Reason.DRILL_OLD, "演练已超过180天"),
        ({"recording": False}, Reason.NO_RECORDING, "录像不可用"),
        ({"uplink": UplinkSample(9_500, 500)}, Reason.UPLINK_LOSS, "上行丢包 5.0%"),
        ({"flaps": 4}, Reason.FLAPPING, "24小时内掉线4次"),
        ({"devices_online": 2}, Reason.DEVICES_OFFLINE, "1台设备离线"),
        ({"channels_online": 2}, Reason.CHANNELS_OFFLINE, "2路通道离线"),
    ],
)
def test_each_failed_rule_makes_partial_with_its_words(change: dict[str, object], reason: Reason, text: str) -> None:
    result = evaluate(replace(GOOD, **change), RULES, NOW)  # type: ignore[arg-type]
    assert result.status is CoverageStatus.PARTIAL and result.status.label == "部分接入"
    assert reason in result.reasons
    assert text in [f.text for f in result.findings if f.reason is reason]


def test_no_devices_and_all_offline_are_not_connected() -> None:
    none = evaluate(replace(GOOD, devices=0, devices_online=0), RULES, NOW)
    assert none.status is CoverageStatus.MISSING and none.status.label == "未接入"
    assert [f.text for f in none.findings] == ["无设备登记"]
    off = evaluate(replace(GOOD, devices_online=0, channels_online=0), RULES, NOW)
    assert off.status is CoverageStatus.MISSING and [f.reason for f in off.findings] == [Reason.ALL_OFFLINE]
    assert off.findings[0].text == "设备全部离线（3台）"


def test_unknown_never_demotes_and_thresholds_are_settings() -> None:
    unknown = replace(GOOD, recording=None, uplink=None)
    assert evaluate(unknown, RULES, NOW).status is CoverageStatus.COMPLETE
    few_packets = replace(GOOD, uplink=UplinkSample(100, 100))  # 50 % of too few packets to mean anything
    assert evaluate(few_packets, RULES, NOW).status is CoverageStatus.COMPLETE
    # The edges: 180 days is still fine, 3 flaps is flapping, 2 % loss is loss.
    assert evaluate(replace(GOOD, last_drill=NOW - 180 * DAY), RULES, NOW).status is CoverageStatus.COMPLETE
    assert Reason.FLAPPING in evaluate(replace(GOOD, flaps=3), RULES, NOW).reasons
    assert Reason.FLAPPING not in evaluate(replace(GOOD, flaps=2), RULES, NOW).reasons
    assert Reason.UPLINK_LOSS in evaluate(replace(GOOD, uplink=UplinkSample(98_000, 2_000)), RULES, NOW).reasons
    strict = CoverageRules(drill_max_age_days=30, flaps_per_day=1, loss_percent=0.5, require_perimeter=False)
    old = evaluate(replace(GOOD, last_drill=NOW - 31 * DAY, perimeter=0, perimeter_online=0), strict, NOW)
    assert [f.text for f in old.findings] == ["演练已超过30天"]
    with pytest.raises(ValueError):
        CoverageRules(drill_max_age_days=0)
    with pytest.raises(ValueError):
        CoverageRules(loss_percent=0)


def test_several_reasons_are_all_listed() -> None:
    bad = replace(GOOD, entrance=0, entrance_online=0, entrance_confirmed=False, alarms=0, alarms_online=0)
    result = evaluate(replace(bad, last_drill=None), RULES, NOW)
    assert [f.reason for f in result.findings] == [Reason.NO_ENTRANCE, Reason.NO_ALARM, Reason.NEVER_DRILLED]
    assert result.reason_text == "无大门口摄像机；无一键报警；从未演练"


# --- facts from a directory -------------------------------------------------------------------

KG = "12010100112160001200"
NVR = "12010100111180001200"
BOX = "12010100111340001201"
PERIMETER_BOX = "12010100111340001202"


def _cam(n: int, name: str) -> Channel:
    return Channel(
        f"1201010011131000120{n}", NVR, KG, "120101", name=name, type_code=131, area=_guess(name), online=True
    )


def _guess(name: str) -> AreaTag:
    return guess_area(name)  # as a catalog suggests it


def _directory() -> Directory:
    directory = Directory()
    directory.add_kindergartens([Kindergarten(KG, "和平区第十二幼儿园", "120101")])
    for device_id, kind in ((NVR, 118), (BOX, 134), (PERIMETER_BOX, 134)):
        directory.put_device(Device(device_id, KG, "120101", device_type=kind, online=True))
    directory.replace_channels(NVR, [_cam(1, "大门口"), _cam(2, "周界东侧"), _cam(3, "小一班教室")])
    directory.replace_channels(
        BOX, [Channel(BOX, BOX, KG, "120101", name="一键报警", type_code=134, area=_guess("一键报警"), online=True)]
    )
    directory.replace_channels(
        PERIMETER_BOX,
        [
            Channel(
                PERIMETER_BOX,
                PERIMETER_BOX,
                KG,
                "120101",
                name="周界报警",
                type_code=134,
                area=_guess("周界报警"),
                online=True,
            )
        ],
    )
    return directory


def test_facts_from_the_directory() -> None:
    directory = _directory()
    (facts,) = collect_facts(directory, last_drills={KG: NOW - DAY}, recordings={"12010100111310001201": True})
    assert (facts.devices, facts.devices_online, facts.channels, facts.channels_online) == (3, 3, 5, 5)
    assert (facts.cameras, facts.entrance, facts.entrance_online, facts.entrance_confirmed) == (3, 1, 1, False)
    assert (facts.perimeter, facts.alarms, facts.alarms_online) == (1, 1, 1)  # the perimeter box is no button
    assert facts.recording is True and facts.last_drill == NOW - DAY
    result = evaluate(facts, RULES, NOW)
    assert [f.reason for f in result.findings] == [Reason.ENTRANCE_UNCONFIRMED]

    # An operator confirms the entrance: complete. Then the alarm box goes offline, and the NVR reports the gate off.
    directory.confirm_area(AreaConfirmation("12010100111310001201", AreaTag.ENTRANCE, "ops", NOW), 0.0)
    (facts,) = collect_facts(directory, last_drills={KG: NOW - DAY})
    assert evaluate(facts, RULES, NOW).status is CoverageStatus.COMPLETE
    directory.devices[BOX].row = replace(directory.devices[BOX].row, online=False)
    directory.upsert_channels(NVR, [replace(_cam(1, "大门口"), online=False)])
    (facts,) = collect_facts(directory, last_drills={KG: NOW - DAY}, flaps={BOX: 5})
    result = evaluate(facts, RULES, NOW)
    assert facts.flaps == 5
    assert [f.text for f in result.findings] == [
        "大门口摄像机离线",
        "一键报警离线",
        "24小时内掉线5次",
        "1台设备离线",
        "2路通道离线",
    ]

    # A confirmation can also take a camera away from the entrance (a name that said 大门口, an operator who knows better).
    directory.confirm_area(AreaConfirmation("12010100111310001201", AreaTag.CLASSROOM, "ops", NOW), 0.0)
    (facts,) = collect_facts(directory)
    assert facts.entrance == 0 and Reason.NO_ENTRANCE in evaluate(facts, RULES, NOW).reasons


def test_a_kindergarten_without_anything_is_not_connected() -> None:
    directory = Directory()
    directory.add_kindergartens([Kindergarten(KG, "空园", "120101")])
    (facts,) = collect_facts(directory)
    assert evaluate(facts, RULES, NOW).status is CoverageStatus.MISSING


def test_select_sorts_filters_and_summarise_counts() -> None:
    rows = [
        evaluate(replace(GOOD, id="a", name="甲", district_code="120101"), RULES, NOW),
        evaluate(replace(GOOD, id="b", name="乙", district_code="120101", last_drill=None), RULES, NOW),
        evaluate(replace(GOOD, id="c", name="丙", district_code="120102", devices_online=0), RULES, NOW),
        evaluate(replace(GOOD, id="d", name="丁", district_code="120102", devices=0), RULES, NOW),
    ]
    assert [r.facts.id for r in select(rows)] == ["c", "d", "b", "a"]  # worst first
    assert [r.facts.id for r in select(rows, sort="id", descending=True)] == ["d", "c", "b", "a"]
    assert [r.facts.id for r in select(rows, district="120101")] == ["b", "a"]
    assert [r.facts.id for r in select(rows, status=CoverageStatus.MISSING, sort="id")] == ["c", "d"]
    assert [r.facts.id for r in select(rows, reason=Reason.NEVER_DRILLED)] == ["b"]
    assert [r.facts.id for r in select(rows, text="丙")] == ["c"]
    with pytest.raises(ValueError):
        select(rows, sort="password")
    districts, city = summarise(rows)
    assert [(d.district_code, d.total, d.complete, d.partial, d.missing) for d in districts] == [
        ("120101", 2, 1, 1, 0),
        ("120102", 2, 0, 0, 2),
    ]
    assert (city.total, city.complete, city.partial, city.missing, city.rate) == (4, 1, 1, 2, 0.25)
