"""The permission table and its predicates (gateway/security/scope.py), and the README's copy of the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.alarms.model import Alarm, AlarmMethod
from gateway.registry.model import Device, Kindergarten
from gateway.security.principal import Principal, Role
from gateway.security.scope import (
    PERMISSIONS,
    Capability,
    Narrowing,
    Reach,
    allows,
    may_see_alarm,
    may_see_channel,
    may_see_device,
    may_see_district,
    may_see_kindergarten,
    narrowing,
    permission_table_markdown,
    reach,
)
from tests.unit.service_city import (
    ALARM_BUTTON,
    CLASSROOM,
    ENTRANCE,
    HEPING,
    HEXI,
    HEXI_GATE,
    NAP_ROOM,
    NVR_1,
    NVR_2,
    PERIMETER,
    city_directory,
    kindergarten_id,
)

README = Path(__file__).resolve().parents[2] / "README.md"
KG1, KG2 = kindergarten_id(1), kindergarten_id(2, HEXI)

ADMIN = Principal("admin", Role.CITY_ADMIN, district_code=HEXI)  # a district never narrows the city admin
DUTY = Principal("duty", Role.DISTRICT_DUTY, district_code=HEPING)
DUTY_UNSET = Principal("duty0", Role.DISTRICT_DUTY)
POLICE = Principal("police", Role.POLICE)
POLICE_HEXI = Principal("police-hx", Role.POLICE, district_code=HEXI)
KG = Principal("kg", Role.KINDERGARTEN, kindergarten_id=KG1)
KG_UNSET = Principal("kg0", Role.KINDERGARTEN, district_code=HEPING)
OPS = Principal("ops", Role.MAINTENANCE)
OPS_HEXI = Principal("ops-hx", Role.MAINTENANCE, district_code=HEXI)


def alarm(
    source: str, district: str, kg: str, method: int = AlarmMethod.DEVICE, alarm_type: int | None = None
) -> Alarm:
    return Alarm(
        id="a",
        seq=1,
        dedupe_key="k",
        device_id=source,
        source_id=source,
        kindergarten_id=kg,
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


def test_every_capability_has_every_role() -> None:
    assert set(PERMISSIONS) == set(Capability)
    for capability, row in PERMISSIONS.items():
        assert set(row) == set(Role), capability


def test_city_admin_reaches_everything_unnarrowed() -> None:
    assert all(reach(ADMIN, c) is Reach.ALL for c in Capability)
    assert narrowing(ADMIN, Capability.ALARM_READ) == Narrowing()
    directory = city_directory()
    assert all(may_see_channel(ADMIN, c, Capability.LIVE_VIEW) for c in directory.channels.values())


def test_district_duty_sees_only_its_district() -> None:
    directory = city_directory()
    heping = {c.id for c in directory.channels.values() if may_see_channel(DUTY, c, Capability.LIVE_VIEW)}
    assert heping == {c.id for c in directory.channels.values() if c.district_code == HEPING}
    assert NAP_ROOM in heping and HEXI_GATE not in heping
    assert may_see_device(DUTY, directory.devices[NVR_1].row) and not may_see_device(DUTY, directory.devices[NVR_2].row)
    assert may_see_kindergarten(DUTY, directory.kindergartens[KG1])
    assert not may_see_kindergarten(DUTY, directory.kindergartens[KG2])
    assert may_see_district(DUTY, HEPING) and not may_see_district(DUTY, HEXI)
    assert may_see_alarm(DUTY, alarm(ALARM_BUTTON, HEPING, KG1), capability=Capability.ALARM_ACK)
    assert not may_see_alarm(DUTY, alarm(HEXI_GATE, HEXI, KG2), capability=Capability.ALARM_ACK)
    assert not allows(DUTY, Capability.PROVISION)
    assert narrowing(DUTY, Capability.CHANNEL_READ) == Narrowing(district_code=HEPING)


def test_an_account_missing_its_district_or_kindergarten_sees_nothing() -> None:
    directory = city_directory()
    assert not any(may_see_channel(DUTY_UNSET, c) for c in directory.channels.values())
    assert narrowing(DUTY_UNSET, Capability.CHANNEL_READ) is None
    assert not may_see_alarm(KG_UNSET, alarm(ALARM_BUTTON, HEPING, KG1))
    assert narrowing(KG_UNSET, Capability.ALARM_READ) is None
    assert not may_see_alarm(KG_UNSET, alarm(ALARM_BUTTON, HEPING, None))  # type: ignore[arg-type]


def test_police_see_what_the_police_policy_shares() -> None:
    directory = city_directory()
    seen = {c.id for c in directory.channels.values() if may_see_channel(POLICE, c, Capability.LIVE_VIEW)}
    assert ENTRANCE in seen and PERIMETER in seen and ALARM_BUTTON in seen
    assert CLASSROOM not in seen and NAP_ROOM not in seen
    assert not allows(POLICE, Capability.DEVICE_READ)
    assert not may_see_device(POLICE, directory.devices[NVR_1].row, Capability.LIVE_VIEW)
    assert not allows(POLICE, Capability.ALARM_ACK) and not allows(POLICE, Capability.PROVISION)
    button = alarm(ALARM_BUTTON, HEPING, KG1, AlarmMethod.DEVICE)
    assert may_see_alarm(POLICE, button, directory.channels[ALARM_BUTTON])
    tamper = alarm(ALARM_BUTTON, HEPING, KG1, AlarmMethod.DEVICE, alarm_type=2)
    assert not may_see_alarm(POLICE, tamper, directory.channels[ALARM_BUTTON])
    classroom_motion = alarm(CLASSROOM, HEPING, KG1, AlarmMethod.VIDEO, alarm_type=2)
    assert not may_see_alarm(POLICE, classroom_motion, directory.channels[CLASSROOM])
    assert narrowing(POLICE, Capability.CHANNEL_READ) == Narrowing(post_filter=True)


def test_a_district_narrows_police_and_maintenance() -> None:
    directory = city_directory()
    assert not may_see_channel(POLICE_HEXI, directory.channels[ENTRANCE], Capability.LIVE_VIEW)
    assert may_see_channel(POLICE_HEXI, directory.channels[HEXI_GATE], Capability.LIVE_VIEW)
    assert not may_see_device(OPS_HEXI, directory.devices[NVR_1].row)
    assert may_see_device(OPS_HEXI, directory.devices[NVR_2].row)
    assert narrowing(OPS_HEXI, Capability.DEVICE_READ) == Narrowing(district_code=HEXI)
    assert not may_see_kindergarten(OPS_HEXI, Kindergarten(KG1, "x", HEPING), Capability.PROVISION)


def test_kindergarten_sees_its_own_alarms_and_no_video() -> None:
    directory = city_directory()
    assert may_see_alarm(KG, alarm(ALARM_BUTTON, HEPING, KG1))
    assert not may_see_alarm(KG, alarm(HEXI_GATE, HEXI, KG2))
    assert not may_see_alarm(KG, alarm(ALARM_BUTTON, HEPING, KG1), capability=Capability.ALARM_ACK)
    assert not any(may_see_channel(KG, c, Capability.LIVE_VIEW) for c in directory.channels.values())
    assert not allows(KG, Capability.CHANNEL_READ) and not allows(KG, Capability.ALARM_SNAPSHOT)
    assert may_see_kindergarten(KG, directory.kindergartens[KG1])
    assert not may_see_kindergarten(KG, directory.kindergartens[KG2])
    assert not may_see_district(KG, HEPING, Capability.KINDERGARTEN_READ)


def test_maintenance_lists_everything_but_watches_only_public_cameras() -> None:
    directory = city_directory()
    assert all(may_see_channel(OPS, c) for c in directory.channels.values())
    assert all(may_see_device(OPS, e.row) for e in directory.devices.values())
    assert may_see_channel(OPS, directory.channels[ENTRANCE], Capability.LIVE_VIEW)
    for indoor in (CLASSROOM, NAP_ROOM):
        assert not may_see_channel(OPS, directory.channels[indoor], Capability.LIVE_VIEW)
        assert not may_see_channel(OPS, directory.channels[indoor], Capability.ALARM_SNAPSHOT)
    assert allows(OPS, Capability.PROVISION) and allows(OPS, Capability.DELIVERY_RETRY)
    assert may_see_alarm(OPS, alarm(HEXI_GATE, HEXI, KG2))
    assert not allows(OPS, Capability.ALARM_ACK) and not allows(OPS, Capability.ALARM_RESOLVE)


@pytest.mark.parametrize(
    ("scope", "asked", "expected"),
    [
        (Narrowing(), (None, None), (None, None)),
        (Narrowing(), (HEXI, KG2), (HEXI, KG2)),
        (Narrowing(district_code=HEPING), (None, None), (HEPING, None)),
        (Narrowing(district_code=HEPING), (HEPING, KG1), (HEPING, KG1)),
        (Narrowing(district_code=HEPING), (HEXI, None), None),
        (Narrowing(kindergarten_id=KG1), (None, KG2), None),
        (Narrowing(kindergarten_id=KG1), (HEPING, None), (HEPING, KG1)),
    ],
)
def test_query_filters_stay_within_the_scope(
    scope: Narrowing, asked: tuple[str | None, str | None], expected: tuple[str | None, str | None] | None
) -> None:
    assert scope.applied(*asked) == expected


def test_devices_without_a_kindergarten_follow_their_district() -> None:
    orphan = Device("12010100001180000009", None, HEPING)
    assert may_see_device(DUTY, orphan) and not may_see_device(KG, orphan, Capability.ALARM_READ)


def test_readme_permission_table_is_the_code_table() -> None:
    text = README.read_text(encoding="utf-8")
    assert "## Users, roles and scope" in text
    assert permission_table_markdown() in text, (
        "README's permission table differs from gateway/security/scope.py: paste permission_table_markdown()"
    )
