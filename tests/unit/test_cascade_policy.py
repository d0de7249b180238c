"""Sharing policy and catalog tree per upper platform (gateway.cascade.policy)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from gateway.alarms.model import Alarm, AlarmMethod
from gateway.cascade.policy import (
    DEFAULT_BUSINESS_GROUP_NAME,
    CatalogEvent,
    PolicyLevel,
    SharePolicy,
    build_catalog,
    business_group_id,
    catalog_changes,
    district_node_id,
)
from gateway.errors import ConfigError, InvalidDeviceId
from gateway.gb28181.ids import TIANJIN_DISTRICTS, is_gb_id
from gateway.gb28181.manscdp import CatalogItem, CatalogResponse, Root, decode_message, serialize, split_catalog
from gateway.registry.model import AreaTag, Channel, Kindergarten, guess_area
from gateway.registry.placement import kindergarten_id_by_convention
from simulators.city import SimKindergarten, build_city

SYSTEM_ID = "12010000002090000001"  # the gateway as seen by its uppers
GROUP_ID = "12010000002150000001"
HEPING, HEXI = "120101", "120103"

MUNICIPAL = SharePolicy.municipal()
POLICE = SharePolicy.police()
HEPING_POLICY = SharePolicy.district(HEPING)


def cid(type_code: int, kg: int, nn: int, district: str = HEPING) -> str:
    return f"{district}0011{type_code:03d}0{kg:04d}{nn:02d}"


def kgid(kg: int, district: str = HEPING) -> str:
    return f"{district}00112160{kg:04d}00"


def kindergarten(kg: int, district: str = HEPING, name: str | None = None) -> Kindergarten:
    label = name or f"{TIANJIN_DISTRICTS[district]}第{kg}幼儿园"
    return Kindergarten(kgid(kg, district), label, district, "天津市某路1号", 117.2, 39.1)


def channel(
    type_code: int,
    kg: int,
    nn: int,
    suffix: str,
    *,
    district: str = HEPING,
    area: AreaTag | None = None,
    confirmed: AreaTag | None | str = "as tagged",
    online: bool = True,
    known_kg: bool = True,
) -> Channel:
    """A channel; ``area`` is its tag (default: guessed from the name), and unless told otherwise
    an operator confirmed that tag (``confirmed=None``: nobody did; the police see only confirmed areas)."""
    name = f"{TIANJIN_DISTRICTS[district]}第{kg}幼儿园·{suffix}"
    tag = guess_area(name) if area is None else area
    return Channel(
        id=cid(type_code, kg, nn, district),
        device_id=cid(118, kg, 0, district),
        kindergarten_id=kgid(kg, district) if known_kg else None,
        district_code=district,
        name=name,
        area=tag,
        type_code=type_code,
        manufacturer="Hikvision",
        model="DS-2CD3T46",
        address="天津市某路1号",
        online=online,
        longitude=117.2008,
        latitude=39.0842,
        ptz_type=3 if type_code in (131, 132) else None,
        confirmed_area=tag if confirmed == "as tagged" else confirmed,  # type: ignore[arg-type]
    )


def alarm(method: int | None, alarm_type: int | None = None, district: str = HEPING, source: str = "") -> Alarm:
    return Alarm(
        id="a1",
        seq=1,
        dedupe_key="k",
        device_id=cid(134, 1, 1, district),
        source_id=source or cid(134, 1, 1, district),
        kindergarten_id=kgid(1, district),
        district_code=district,
        priority=1,
        method=method,
        alarm_type=alarm_type,
        event_type=None,
        alarm_time=None,
        description="",
        longitude=None,
        latitude=None,
        sn=1,
        received_at=0.0,
    )


# --- construction -----------------------------------------------------------------------


def test_levels_are_the_cli_words() -> None:
    assert [level.value for level in PolicyLevel] == ["district", "municipal", "police"]


def test_constructors_and_string_level() -> None:
    assert SharePolicy(PolicyLevel.DISTRICT, HEPING) == HEPING_POLICY
    assert SharePolicy(PolicyLevel.POLICE) == POLICE
    coerced = SharePolicy("police")  # type: ignore[arg-type]  # TOML gives a plain string
    assert coerced.level is PolicyLevel.POLICE


@pytest.mark.parametrize(
    ("level", "code"),
    [
        (PolicyLevel.DISTRICT, None),
        (PolicyLevel.DISTRICT, ""),
        (PolicyLevel.DISTRICT, "12010"),
        (PolicyLevel.DISTRICT, "1201010"),
        (PolicyLevel.DISTRICT, "12010a"),
        (PolicyLevel.DISTRICT, "１２０１０１"),  # full-width digits
        (PolicyLevel.DISTRICT, "120107"),  # not one of Tianjin's districts
        (PolicyLevel.DISTRICT, "120100"),  # the city, not a district
        (PolicyLevel.POLICE, HEPING),
        (PolicyLevel.MUNICIPAL, HEPING),
        (PolicyLevel.POLICE, ""),
        ("county", None),
    ],
)
def test_invalid_policies_are_config_errors(level: PolicyLevel, code: str | None) -> None:
    with pytest.raises(ConfigError):
        SharePolicy(level, code)


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        POLICE.level = PolicyLevel.MUNICIPAL  # type: ignore[misc]


# --- scope ----------------------------------------------------------------------------------


def test_covers_district_and_kindergarten() -> None:
    assert HEPING_POLICY.covers_district(HEPING)
    assert not HEPING_POLICY.covers_district(HEXI)
    assert not HEPING_POLICY.covers_district("12010100")  # exact code only
    assert HEPING_POLICY.covers_kindergarten(kindergarten(1))
    assert not HEPING_POLICY.covers_kindergarten(kindergarten(1, HEXI))
    for policy in (MUNICIPAL, POLICE):
        assert policy.covers_district(HEXI) and policy.covers_kindergarten(kindergarten(1, HEXI))


def test_kindergarten_names_are_exposed() -> None:
    assert POLICE.exposed_kindergarten_name(kindergarten(3, name="和平区第三幼儿园")) == "和平区第三幼儿园"
    assert MUNICIPAL.exposed_kindergarten_name(kindergarten(3, name="  ")) == kgid(3)


@pytest.mark.parametrize(
    ("ch", "police", "why"),
    [
        (channel(131, 1, 1, "大门口"), True, "entrance camera"),
        (channel(131, 1, 2, "周界东侧"), True, "perimeter camera"),
        (channel(132, 1, 3, "后门"), True, "IPC at the back gate"),
        (channel(131, 1, 4, "小一班教室"), False, "classroom"),
        (channel(131, 1, 5, "午睡室"), False, "dormitory"),
        (channel(131, 1, 6, "厨房"), False, "kitchen"),
        (channel(131, 1, 7, "操场"), False, "playground"),
        (channel(131, 1, 8, "一楼走廊"), False, "corridor"),
        (channel(131, 1, 9, "门卫室"), False, "other"),
        (channel(131, 1, 10, "小一班教室门口", area=AreaTag.ENTRANCE), False, "tag says entrance, name says classroom"),
        (channel(131, 1, 11, "午睡室 gate", area=AreaTag.PERIMETER), False, "indoor word plus public word"),
        (channel(131, 1, 12, "大门口", area=AreaTag.OTHER), False, "name public, tag not"),
        (channel(131, 1, 13, "大门口", area=AreaTag.CLASSROOM), False, "operator tagged it indoor"),
        (channel(134, 1, 1, "一键报警"), True, "alarm input, area other"),
        (channel(134, 1, 2, "小一班教室报警按钮", area=AreaTag.CLASSROOM), True, "alarm input in a classroom"),
        (channel(118, 1, 0, "大门口"), False, "NVR"),
        (channel(135, 1, 1, "大门口"), False, "alarm output"),
        (channel(139, 1, 1, "大门口"), False, "other peripheral"),
        (replace(channel(131, 1, 14, "小一班教室"), type_code=134), False, "camera ID relabelled as alarm input"),
        (replace(channel(131, 1, 15, "大门口"), id="gate-1"), False, "not a GB ID"),
        (
            replace(channel(131, 1, 16, "大门口"), confirmed_area="entrance-ish"),  # type: ignore[arg-type]
            False,
            "area not an AreaTag",
        ),
        # Names come from devices: a suggestion never shares a camera, a confirmation does (C3).
        (channel(131, 1, 17, "大门口", confirmed=None), False, "name says entrance, nobody confirmed it"),
        (channel(131, 1, 18, "大门口", confirmed=AreaTag.DORMITORY), False, "a nap-room camera renamed 大门口"),
        (channel(131, 1, 19, "Camera 01", confirmed=AreaTag.ENTRANCE), True, "confirmed entrance, generic name"),
        (channel(131, 1, 20, "周界", confirmed=AreaTag.PERIMETER), True, "confirmed perimeter"),
        (channel(131, 1, 21, "午睡室", confirmed=AreaTag.ENTRANCE), False, "confirmed entrance, name says nap room"),
        (channel(134, 1, 3, "一键报警", confirmed=None), True, "alarm inputs need no confirmation"),
    ],
)
def test_police_channel_rule(ch: Channel, police: bool, why: str) -> None:
    assert POLICE.allows_channel(ch) is police, why
    assert MUNICIPAL.allows_channel(ch)
    assert HEPING_POLICY.allows_channel(ch)
    assert not SharePolicy.district(HEXI).allows_channel(ch)


def test_district_channels_follow_the_channel_district() -> None:
    hexi = channel(131, 1, 4, "小一班教室", district=HEXI)
    assert SharePolicy.district(HEXI).allows_channel(hexi)
    assert not HEPING_POLICY.allows_channel(hexi)
    assert MUNICIPAL.allows_channel(hexi)


# --- alarms ------------------------------------------------------------------------------------

ALARM_CASES = [
    # (method, type, category, police)
    (AlarmMethod.TELEPHONE, None, "emergency", True),  # one-button
    (AlarmMethod.DEVICE, None, "emergency", True),  # alarm input
    (AlarmMethod.VIDEO, 6, "analytics", True),  # perimeter intrusion
    (AlarmMethod.VIDEO, 5, "analytics", True),  # tripwire
    (AlarmMethod.VIDEO, 99, "analytics", True),  # unknown analytics type
    (AlarmMethod.DEVICE, 1, "device", False),  # video loss
    (AlarmMethod.DEVICE, 2, "device", False),  # tamper
    (AlarmMethod.DEVICE, 3, "device", False),  # storage full
    (AlarmMethod.DEVICE_FAULT, 1, "fault", False),
    (AlarmMethod.SMS, None, "other", False),
    (AlarmMethod.GPS, None, "other", False),
    (AlarmMethod.OTHER, None, "other", False),
    (None, None, "other", False),
]


@pytest.mark.parametrize(("method", "alarm_type", "category", "police"), ALARM_CASES)
def test_alarm_matrix(method: int | None, alarm_type: int | None, category: str, police: bool) -> None:
    heping, hexi = alarm(method, alarm_type), alarm(method, alarm_type, HEXI)
    assert heping.kind.category == category
    assert POLICE.allows_alarm(heping) is police
    assert POLICE.allows_alarm(hexi) is police
    assert MUNICIPAL.allows_alarm(heping) and MUNICIPAL.allows_alarm(hexi)
    assert HEPING_POLICY.allows_alarm(heping) and not HEPING_POLICY.allows_alarm(hexi)
    assert SharePolicy.district(HEXI).allows_alarm(hexi) and not SharePolicy.district(HEXI).allows_alarm(heping)


def test_police_alarm_from_an_indoor_camera_is_refused_when_the_source_is_known() -> None:
    classroom = channel(131, 1, 4, "小一班教室")
    gate = channel(131, 1, 1, "大门口")
    button = channel(134, 1, 2, "小一班教室报警按钮", area=AreaTag.CLASSROOM)
    motion = alarm(AlarmMethod.VIDEO, 2, source=classroom.id)
    assert not POLICE.allows_alarm(motion, source=classroom)
    assert POLICE.allows_alarm(alarm(AlarmMethod.VIDEO, 6, source=gate.id), source=gate)
    assert POLICE.allows_alarm(alarm(AlarmMethod.DEVICE, source=button.id), source=button)
    assert MUNICIPAL.allows_alarm(motion, source=classroom)
    assert HEPING_POLICY.allows_alarm(motion, source=classroom)
    assert not POLICE.allows_alarm(alarm(AlarmMethod.DEVICE, 2, source=gate.id), source=gate)  # tamper


# --- IDs -----------------------------------------------------------------------------------------


def test_business_group_id_format() -> None:
    group = business_group_id(SYSTEM_ID)
    assert group == GROUP_ID and is_gb_id(group)
    assert group[:10] == SYSTEM_ID[:10] and group[10:13] == "215" and group[13] == "0" and group[14:] == "000001"


@pytest.mark.parametrize("code", sorted(TIANJIN_DISTRICTS))
def test_district_node_id_format(code: str) -> None:
    node = district_node_id(code)
    assert is_gb_id(node) and node == f"{code}00002160000000"
    assert node[:6] == code and node[6:10] == "0000" and node[10:13] == "216" and node[13:] == "0000000"
    assert node != kindergarten_id_by_convention(cid(131, 1, 1, code))


@pytest.mark.parametrize("bad", ["", "1201000000209000000", "120100000020900000011", "1201000000209000000x"])
def test_business_group_id_rejects_bad_system_ids(bad: str) -> None:
    with pytest.raises(InvalidDeviceId):
        business_group_id(bad)
    with pytest.raises(InvalidDeviceId):
        build_catalog(MUNICIPAL, system_id=bad, kindergartens=[], channels=[])


@pytest.mark.parametrize("bad", ["", "12010", "1201011", "12010a", "１２０１０１"])
def test_district_node_id_rejects_bad_codes(bad: str) -> None:
    with pytest.raises(InvalidDeviceId):
        district_node_id(bad)


# --- catalog tree ----------------------------------------------------------------------------------


def small_city() -> tuple[list[Kindergarten], list[Channel]]:
    kgs = [kindergarten(1), kindergarten(2), kindergarten(1, HEXI)]
    channels = [
        channel(131, 1, 1, "大门口"),
        channel(131, 1, 2, "小一班教室", online=False),
        channel(134, 1, 1, "一键报警"),
        channel(131, 2, 1, "厨房"),
        channel(131, 1, 1, "周界东侧", district=HEXI),
        channel(134, 1, 1, "一键报警", district=HEXI),
    ]
    return kgs, channels


def test_municipal_catalog_fields_and_order() -> None:
    kgs, channels = small_city()
    items = build_catalog(MUNICIPAL, system_id=SYSTEM_ID, kindergartens=kgs, channels=channels)
    ids = [item.device_id for item in items]
    assert ids == [
        GROUP_ID,
        district_node_id(HEPING),
        district_node_id(HEXI),
        kgid(1),
        kgid(2),
        kgid(1, HEXI),
        cid(131, 1, 1),
        cid(131, 1, 2),
        cid(134, 1, 1),
        cid(131, 2, 1),
        cid(131, 1, 1, HEXI),
        cid(134, 1, 1, HEXI),
    ]
    assert [item.device_id[10:13] for item in items[:6]] == ["215", "216", "216", "216", "216", "216"]
    assert all(is_gb_id(item.device_id) for item in items)

    group = items[0]
    assert group == CatalogItem(GROUP_ID, name=DEFAULT_BUSINESS_GROUP_NAME, civil_code="120100", parent_id=SYSTEM_ID)

    district = items[1]
    assert district == CatalogItem(
        district_node_id(HEPING), name="和平区", civil_code=HEPING, business_group_id=GROUP_ID
    )
    assert district.parent_id is None  # directly under the business group (docs/gb28181.md §6.4)

    kg_node = items[3]
    assert kg_node == CatalogItem(
        kgid(1),
        name="和平区第1幼儿园",
        civil_code=HEPING,
        address="天津市某路1号",
        parent_id=district_node_id(HEPING),
        business_group_id=GROUP_ID,
        longitude=117.2,
        latitude=39.1,
    )

    camera = items[6]
    assert camera == CatalogItem(
        cid(131, 1, 1),
        name="和平区第1幼儿园·大门口",
        manufacturer="Hikvision",
        model="DS-2CD3T46",
        owner="Owner",
        civil_code=HEPING,
        address="天津市某路1号",
        parental=0,
        parent_id=kgid(1),
        safety_way=0,
        register_way=1,
        secrecy=0,
        status="ON",
        longitude=117.2008,
        latitude=39.0842,
        ptz_type=3,
        business_group_id=GROUP_ID,
    )
    assert items[7].status == "OFF"
    button = items[8]
    assert button.ptz_type is None and button.parent_id == kgid(1) and button.event is None


def test_custom_business_group_name() -> None:
    items = build_catalog(POLICE, system_id=SYSTEM_ID, kindergartens=[], channels=[], business_group_name="平安校园")
    assert items == [CatalogItem(GROUP_ID, name="平安校园", civil_code="120100", parent_id=SYSTEM_ID)]


def test_police_catalog_of_the_small_city() -> None:
    kgs, channels = small_city()
    items = build_catalog(POLICE, system_id=SYSTEM_ID, kindergartens=kgs, channels=channels)
    assert [item.device_id for item in items] == [
        GROUP_ID,
        district_node_id(HEPING),
        district_node_id(HEXI),
        kgid(1),
        kgid(1, HEXI),
        cid(131, 1, 1),
        cid(134, 1, 1),
        cid(131, 1, 1, HEXI),
        cid(134, 1, 1, HEXI),
    ]


def test_district_catalog_of_the_small_city() -> None:
    kgs, channels = small_city()
    items = build_catalog(SharePolicy.district(HEXI), system_id=SYSTEM_ID, kindergartens=kgs, channels=channels)
    assert [item.device_id for item in items] == [
        GROUP_ID,
        district_node_id(HEXI),
        kgid(1, HEXI),
        cid(131, 1, 1, HEXI),
        cid(134, 1, 1, HEXI),
    ]


def test_channels_without_a_usable_kindergarten_hang_under_their_district() -> None:
    odd_kg = Kindergarten("12010100111180000900", "编号不规范幼儿园", HEPING)  # not a 216 ID
    channels = [
        channel(131, 5, 1, "大门口", known_kg=False),  # no kindergarten at all
        channel(131, 6, 1, "大门口"),  # kindergarten 6 was never provisioned
        replace(channel(131, 9, 1, "大门口"), kindergarten_id=odd_kg.id),
        replace(channel(131, 2, 1, "大门口"), kindergarten_id=kgid(1, HEXI)),  # kindergarten of another district
        replace(channel(131, 7, 1, "大门口"), district_code="12"),  # no usable district: under the group
    ]
    kgs = [odd_kg, kindergarten(1, HEXI)]
    items = build_catalog(HEPING_POLICY, system_id=SYSTEM_ID, kindergartens=kgs, channels=channels)
    by_id = {item.device_id: item for item in items}
    assert [item.device_id for item in items[:2]] == [GROUP_ID, district_node_id(HEPING)]
    assert len(items) == 2 + 4  # the channel with district "12" is not Heping's
    for channel_id in (cid(131, 5, 1), cid(131, 6, 1), cid(131, 9, 1), cid(131, 2, 1)):
        assert by_id[channel_id].parent_id == district_node_id(HEPING)
    assert odd_kg.id not in by_id and kgid(1, HEXI) not in by_id

    municipal = build_catalog(MUNICIPAL, system_id=SYSTEM_ID, kindergartens=kgs, channels=channels)
    by_id = {item.device_id: item for item in municipal}
    assert by_id[cid(131, 2, 1)].parent_id == kgid(1, HEXI)  # in scope for the city: its real kindergarten
    assert by_id[cid(131, 7, 1)].parent_id == GROUP_ID and by_id[cid(131, 7, 1)].civil_code is None
    assert district_node_id(HEXI) in by_id  # the parent of kindergarten HEXI-1 is sent too


def test_catalog_is_deterministic_and_deduplicated() -> None:
    kgs, channels = small_city()
    expected = build_catalog(MUNICIPAL, system_id=SYSTEM_ID, kindergartens=kgs, channels=channels)
    rng = random.Random(7)
    for _ in range(5):
        shuffled_kgs, shuffled = kgs[:], channels + channels
        rng.shuffle(shuffled_kgs)
        rng.shuffle(shuffled)
        assert build_catalog(MUNICIPAL, system_id=SYSTEM_ID, kindergartens=shuffled_kgs, channels=shuffled) == expected


def test_empty_fields_are_omitted() -> None:
    bare = replace(
        channel(134, 1, 1, "一键报警"),
        name=" ",
        manufacturer="",
        model="",
        address="",
        longitude=None,
        latitude=float("nan"),
    )
    item = build_catalog(MUNICIPAL, system_id=SYSTEM_ID, kindergartens=[], channels=[bare])[-1]
    assert item.name == bare.id
    assert item.manufacturer is item.model is item.address is item.longitude is item.latitude is None


@pytest.mark.parametrize("policy", [MUNICIPAL, POLICE, HEPING_POLICY], ids=lambda p: p.level.value)
@pytest.mark.parametrize("per_message", [1, 4])
def test_catalog_round_trips_through_gb2312_messages(policy: SharePolicy, per_message: int) -> None:
    kgs, channels = small_city()
    items = build_catalog(policy, system_id=SYSTEM_ID, kindergartens=kgs, channels=channels)
    received: list[CatalogItem] = []
    for chunk in split_catalog(17430, SYSTEM_ID, items, per_message):
        body = serialize(chunk, "GB2312")
        assert b'encoding="GB2312"' in body
        message, charset = decode_message(body)
        assert isinstance(message, CatalogResponse) and charset == "GB2312"
        assert message.sum_num == len(items) and message.device_id == SYSTEM_ID
        received += message.items
    assert received == items


# --- the whole simulated city ----------------------------------------------------------------------


def registry_rows(city: list[SimKindergarten]) -> tuple[list[Kindergarten], list[Channel], dict[str, str]]:
    """Kindergarten and Channel rows as the gateway stores them, plus the simulator's planned areas."""
    kgs = [Kindergarten(k.id, k.name, k.district_code, k.address, k.longitude, k.latitude) for k in city]
    channels: list[Channel] = []
    planned: dict[str, str] = {}
    for k in city:
        for device in k.devices:
            for ch in device.channels:
                planned[ch.id] = ch.area
                channels.append(
                    Channel(
                        id=ch.id,
                        device_id=device.id,
                        kindergarten_id=kindergarten_id_by_convention(device.id),
                        district_code=device.id[:6],
                        name=ch.name,
                        area=guess_area(ch.name),
                        confirmed_area=AreaTag(ch.area),  # the installer's word, from the plan
                        type_code=int(ch.id[10:13]),
                        manufacturer=device.manufacturer,
                        model=device.model,
                        address=ch.address,
                        parent_id=device.id,
                        online=True,
                        longitude=ch.longitude,
                        latitude=ch.latitude,
                    )
                )
    return kgs, channels, planned


@pytest.fixture(scope="module", params=[False, True], ids=["nvr", "ipc"])
def city(request: pytest.FixtureRequest) -> tuple[list[Kindergarten], list[Channel], dict[str, str]]:
    return registry_rows(build_city(200, ipc_mode=request.param))


INDOOR_WORDS = ("教室", "班", "午睡", "寝室", "厨房", "食堂", "操场", "走廊", "楼梯", "医务", "库房", "活动")


def test_police_never_see_an_indoor_camera_in_the_whole_city(
    city: tuple[list[Kindergarten], list[Channel], dict[str, str]],
) -> None:
    kgs, channels, planned = city
    items = build_catalog(POLICE, system_id=SYSTEM_ID, kindergartens=kgs, channels=channels)
    nodes = [item for item in items if item.device_id[10:13] in ("215", "216")]
    leaves = [item for item in items if item.device_id[10:13] not in ("215", "216")]
    assert items[: len(nodes)] == nodes  # every node before every channel

    types = Counter(item.device_id[10:13] for item in leaves)
    assert set(types) <= {"131", "134"}  # never an NVR (118), IPC device (132) or other type
    for item in leaves:
        assert item.name is not None
        if item.device_id[10:13] == "131":
            assert planned[item.device_id] in ("entrance", "perimeter"), item.name
            assert guess_area(item.name).is_public, item.name
            assert not any(word in item.name for word in INDOOR_WORDS), item.name

    # Exactly the public cameras and every alarm input: nothing lost either.
    expected = {ch.id for ch in channels if ch.type_code == 134 or planned[ch.id] in ("entrance", "perimeter")}
    assert {item.device_id for item in leaves} == expected
    assert types["134"] == sum(1 for ch in channels if ch.type_code == 134) > 200  # buttons + perimeter alarms

    # Nodes: only kindergartens and districts that lead to a shared channel, each parent present.
    node_ids = {item.device_id for item in nodes}
    for item in nodes[1:]:
        assert item.business_group_id == GROUP_ID
        assert item.parent_id is None or item.parent_id in node_ids
    parents = {item.parent_id for item in leaves}
    kg_nodes = {item.device_id for item in nodes[1:] if item.parent_id is not None}
    assert kg_nodes == parents
    assert len(nodes) == 1 + 16 + len(kgs)  # every simulated kindergarten has a gate camera


@pytest.mark.parametrize("district", [HEPING, "120116"])
def test_district_catalog_is_exactly_that_district(
    city: tuple[list[Kindergarten], list[Channel], dict[str, str]], district: str
) -> None:
    kgs, channels, _ = city
    items = build_catalog(SharePolicy.district(district), system_id=SYSTEM_ID, kindergartens=kgs, channels=channels)
    leaves = [item for item in items if item.device_id[10:13] not in ("215", "216")]
    assert {item.device_id for item in leaves} == {ch.id for ch in channels if ch.district_code == district}
    assert leaves and all(item.civil_code == district for item in items[1:])
    kg_ids = {item.device_id for item in items[2:] if item.device_id[10:13] == "216"}
    assert kg_ids == {kg.id for kg in kgs if kg.district_code == district}
    assert [item.device_id for item in items[:2]] == [GROUP_ID, district_node_id(district)]


def test_municipal_catalog_is_everything(city: tuple[list[Kindergarten], list[Channel], dict[str, str]]) -> None:
    kgs, channels, _ = city
    items = build_catalog(MUNICIPAL, system_id=SYSTEM_ID, kindergartens=kgs, channels=channels)
    leaves = [item for item in items if item.device_id[10:13] not in ("215", "216")]
    by_kindergarten = sorted(channels, key=lambda ch: (ch.kindergarten_id or "", ch.id))
    assert [item.device_id for item in leaves] == [ch.id for ch in by_kindergarten]
    assert len(items) == 1 + 16 + len(kgs) + len(channels)
    assert all(item.parent_id == kindergarten_id_by_convention(item.device_id) for item in leaves)


# --- catalog changes ---------------------------------------------------------------------------------


def changes(policy: SharePolicy, before: list[Channel], after: list[Channel]) -> list[CatalogItem]:
    kgs, _ = small_city()
    return catalog_changes(
        policy, {ch.id: ch for ch in before}, {ch.id: ch for ch in after}, system_id=SYSTEM_ID, kindergartens=kgs
    )


def events(items: list[CatalogItem]) -> list[tuple[str, str | None]]:
    return [(item.device_id, item.event) for item in items]


def test_no_change_no_items() -> None:
    _, channels = small_city()
    for policy in (MUNICIPAL, POLICE, HEPING_POLICY):
        assert changes(policy, channels, channels) == []
        assert changes(policy, [], []) == []


def test_add_is_a_full_item_and_del_is_id_and_event() -> None:
    _, channels = small_city()
    gate = channels[0]
    added = changes(MUNICIPAL, channels[1:], channels)
    full = build_catalog(MUNICIPAL, system_id=SYSTEM_ID, kindergartens=small_city()[0], channels=channels)
    assert added == [replace(next(i for i in full if i.device_id == gate.id), event="ADD")]
    assert changes(MUNICIPAL, channels, channels[1:]) == [CatalogItem(gate.id, event="DEL")]


def test_on_and_off_carry_only_id_and_event() -> None:
    gate = channel(131, 1, 1, "大门口")
    off = replace(gate, online=False)
    assert changes(POLICE, [gate], [off]) == [CatalogItem(gate.id, event=CatalogEvent.OFF)]
    assert changes(POLICE, [off], [gate]) == [CatalogItem(gate.id, event=CatalogEvent.ON)]


@pytest.mark.parametrize(
    "field_change",
    [
        {"name": "和平区第1幼儿园·正门"},
        {"address": "天津市南京路2号"},
        {"longitude": 117.3},
        {"latitude": 39.2},
        {"model": "DS-2CD2346"},
        {"ptz_type": 1},
    ],
)
def test_descriptive_change_is_an_update(field_change: dict[str, object]) -> None:
    gate = channel(131, 1, 1, "大门口")
    moved = replace(gate, **field_change)  # type: ignore[arg-type]
    items = changes(MUNICIPAL, [gate], [moved])
    assert events(items) == [(gate.id, "UPDATE")]
    assert items[0].name == moved.name and items[0].status == "ON" and items[0].parent_id == kgid(1)


def test_update_and_presence_together() -> None:
    gate = channel(131, 1, 1, "大门口")
    after = replace(gate, address="天津市南京路2号", online=False)
    items = changes(HEPING_POLICY, [gate], [after])
    assert events(items) == [(gate.id, "UPDATE"), (gate.id, "OFF")]
    assert items[0].status == "OFF"


def test_area_change_is_an_update_for_those_who_still_see_it() -> None:
    room = channel(131, 1, 2, "小一班教室")
    retagged = replace(room, area=AreaTag.KITCHEN)
    assert events(changes(MUNICIPAL, [room], [retagged])) == [(room.id, "UPDATE")]
    assert changes(POLICE, [room], [retagged]) == []  # never saw it, still does not


def test_a_camera_that_stops_being_public_is_deleted_for_police_with_its_nodes() -> None:
    gate = channel(131, 1, 1, "大门口")
    renamed = replace(gate, name="和平区第1幼儿园·小一班教室门口")  # still tagged entrance
    assert events(changes(POLICE, [gate], [renamed])) == [
        (gate.id, "DEL"),
        (kgid(1), "DEL"),
        (district_node_id(HEPING), "DEL"),
    ]
    assert events(changes(MUNICIPAL, [gate], [renamed])) == [(gate.id, "UPDATE")]


def test_a_camera_that_becomes_public_is_added_for_police_after_its_nodes() -> None:
    room = channel(131, 2, 1, "多功能厅")
    gate = replace(room, name="和平区第2幼儿园·侧门", area=AreaTag.ENTRANCE, confirmed_area=AreaTag.ENTRANCE)
    button = channel(134, 1, 1, "一键报警")
    items = changes(POLICE, [button, room], [button, gate])
    assert events(items) == [(kgid(2), "ADD"), (gate.id, "ADD")]  # Heping's node exists already
    assert items[0].parent_id == district_node_id(HEPING) and items[0].name == "和平区第2幼儿园"
    assert items[1].parent_id == kgid(2) and items[1].name == gate.name and items[1].status == "ON"


def test_changes_only_for_the_policy_scope() -> None:
    hexi = channel(131, 1, 1, "周界东侧", district=HEXI)
    assert changes(HEPING_POLICY, [hexi], [replace(hexi, online=False)]) == []
    assert changes(HEPING_POLICY, [], [hexi]) == []
    assert events(changes(SharePolicy.district(HEXI), [], [hexi])) == [
        (district_node_id(HEXI), "ADD"),
        (kgid(1, HEXI), "ADD"),
        (hexi.id, "ADD"),
    ]


def test_police_never_get_a_notify_about_an_indoor_camera() -> None:
    room = channel(131, 1, 2, "小一班教室")
    for before, after in ([[], [room]], [[room], []], [[room], [replace(room, online=False)]]):
        assert changes(POLICE, before, after) == []


def test_change_order_is_deterministic() -> None:
    _, channels = small_city()
    before = channels
    after = [replace(ch, online=not ch.online) for ch in channels]
    items = changes(MUNICIPAL, before, after)
    assert [item.device_id for item in items] == [
        cid(131, 1, 1),
        cid(131, 1, 2),
        cid(134, 1, 1),
        cid(131, 2, 1),
        cid(131, 1, 1, HEXI),
        cid(134, 1, 1, HEXI),
    ]
    assert [item.event for item in items] == ["OFF", "ON", "OFF", "OFF", "OFF", "OFF"]
    assert changes(MUNICIPAL, before[::-1], after[::-1]) == items


def test_changes_round_trip_as_a_notify() -> None:
    _, channels = small_city()
    after = [*channels[1:], replace(channels[0], name="和平区第1幼儿园·正门", online=False)]
    after.append(channel(131, 3, 1, "大门口"))
    items = changes(MUNICIPAL, channels, after)
    assert {item.event for item in items} == {"ADD", "UPDATE", "OFF"}
    received: list[CatalogItem] = []
    for chunk in split_catalog(981, SYSTEM_ID, items, 2, Root.NOTIFY):
        message, _ = decode_message(serialize(chunk))
        assert isinstance(message, CatalogResponse) and message.root is Root.NOTIFY
        received += message.items
    assert received == items


def test_without_confirmations_police_see_alarm_inputs_only(
    city: tuple[list[Kindergarten], list[Channel], dict[str, str]],
) -> None:
    """Names alone (however public they sound) share no camera: only an operator's confirmation does."""
    kgs, channels, _ = city
    unconfirmed = [replace(c, confirmed_area=None) for c in channels]
    items = build_catalog(POLICE, system_id=SYSTEM_ID, kindergartens=kgs, channels=unconfirmed)
    leaves = {item.device_id[10:13] for item in items if item.device_id[10:13] not in ("215", "216")}
    assert leaves == {"134"}


def test_confirming_a_camera_adds_it_for_police_and_withdrawing_deletes_it() -> None:
    gate = channel(131, 1, 1, "大门口", confirmed=None)
    button = channel(134, 1, 1, "一键报警")
    confirmed = replace(gate, confirmed_area=AreaTag.ENTRANCE)
    assert events(changes(POLICE, [button, gate], [button, confirmed])) == [(gate.id, "ADD")]
    assert events(changes(POLICE, [button, confirmed], [button, gate])) == [(gate.id, "DEL")]
    assert events(changes(MUNICIPAL, [gate], [confirmed])) == [(gate.id, "UPDATE")]
