"""Plan of a simulated city of kindergartens (Tianjin) for the device simulators.

Pure data: no I/O, deterministic for a given seed. The simulator fleet turns the
plan returned by :func:`build_city` into SIP devices.

ID convention (all IDs are 20 digits, industry code 11 = education)::

    DDDDDD 00 11 TTT 0 KKKK NN
    district  ind type net kg   device/channel number

* kindergarten (virtual organisation, 216): ``...216 0 KKKK 00``
* NVR (118): ``...118 0 KKKK 00``; cameras (131): ``...131 0 KKKK NN`` (NN 01..99)
* IPC (132, ``ipc_mode``): ``...132 0 KKKK NN`` with one 131 channel ``...131 0 KKKK NN``
* one-key alarm box (134): ``...134 0 KKKK 01``; perimeter alarm (134): ``...134 0 KKKK 02``;
  each alarm device has a single channel with the device's own ID.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from gateway.registry.placement import kindergarten_id_by_convention
from simulators.city_data import (
    CENTRAL_DISTRICTS,
    DISTRICT_BY_CODE,
    DISTRICTS,
    SPREAD_CENTRAL,
    SPREAD_SUBURBAN,
    VENDOR_WEIGHTS,
    VENDORS,
    District,
    Vendor,
    chinese_numeral,
    district_names,
    firmware,
    nvr_model,
)

__all__ = [
    "AREAS",
    "CameraSpec",
    "DISTRICTS",
    "DISTRICT_BY_CODE",
    "District",
    "SimChannel",
    "SimDevice",
    "SimKindergarten",
    "build_city",
    "chinese_numeral",
    "city_summary",
    "installer_areas",
    "kindergarten_id_for",
    "kindergarten_number_of",
    "plan_cameras",
]

INDUSTRY_EDUCATION = "11"
TYPE_NVR = 118
TYPE_CAMERA = 131
TYPE_IPC = 132
TYPE_ALARM_INPUT = 134
TYPE_VIRTUAL_ORG = 216

AREAS: tuple[str, ...] = (
    "entrance",
    "perimeter",
    "classroom",
    "dormitory",
    "playground",
    "kitchen",
    "corridor",
    "other",
)
"""Allowed values of :attr:`CameraSpec.area` and :attr:`SimChannel.area`."""

MAX_KINDERGARTENS_PER_DISTRICT = 9999
MAX_CAMERAS_PER_KINDERGARTEN = 99


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """One planned camera position in a kindergarten."""

    name_suffix: str
    area: str

    def __post_init__(self) -> None:
        if self.area not in AREAS:
            raise ValueError(f"unknown camera area {self.area!r}")


@dataclass(frozen=True, slots=True)
class SimChannel:
    """A catalog channel: a camera (131) or an alarm input (134)."""

    id: str
    name: str
    area: str
    type_code: int
    kind: str  # "camera" | "alarm"
    longitude: float
    latitude: float
    address: str


@dataclass(frozen=True, slots=True)
class SimDevice:
    """A simulated SIP device ("nvr" | "ipc" | "alarm_box" | "perimeter_alarm")."""

    id: str
    kind: str
    name: str
    type_code: int
    manufacturer: str
    model: str
    firmware: str
    channels: tuple[SimChannel, ...]


@dataclass(frozen=True, slots=True)
class SimKindergarten:
    """A kindergarten (virtual organisation 216) and the devices installed in it."""

    number: int
    id: str
    name: str
    district_code: str
    district_name: str
    address: str
    longitude: float
    latitude: float
    devices: tuple[SimDevice, ...]


def installer_areas(kindergarten: SimKindergarten) -> list[dict[str, str]]:
    """The areas an installer confirms for a kindergarten's cameras: from the plan (where each one
    was mounted), never from its name. The gateway's provisioning API takes them as they are
    (``POST /api/kindergartens``, item ``channels``); only these decide what police may see.
    """
    return [
        {"id": channel.id, "area": channel.area, "name": channel.name}
        for device in kindergarten.devices
        for channel in device.channels
        if channel.kind == "camera"
    ]


# --------------------------------------------------------------------------- cameras

_GRADES: tuple[str, ...] = ("小", "中", "大")
_SIDES: tuple[str, ...] = ("东侧", "西侧", "南侧", "北侧")


def _classroom(grade: str, index: int) -> CameraSpec:
    return CameraSpec(f"{grade}{chinese_numeral(index)}班教室", "classroom")


def _camera_candidates(rng: random.Random) -> Iterator[CameraSpec]:
    """Endless, de-duplicated stream of camera positions in rough priority order."""
    sides = list(_SIDES)
    rng.shuffle(sides)
    classes_per_grade = rng.randint(2, 4)
    yield CameraSpec("大门口", "entrance")
    yield CameraSpec(f"周界{sides[0]}", "perimeter")
    tier1 = [_classroom(g, 1) for g in _GRADES] + [
        CameraSpec("操场", "playground"),
        CameraSpec("厨房", "kitchen"),
        CameraSpec("一楼走廊", "corridor"),
        CameraSpec("午睡室", "dormitory"),
    ]
    tier2 = [_classroom(g, i) for g in _GRADES for i in range(2, classes_per_grade + 1)] + [
        CameraSpec(f"周界{sides[1]}", "perimeter"),
        CameraSpec("后门", "entrance"),
        CameraSpec("二楼走廊", "corridor"),
        CameraSpec("二楼午睡室", "dormitory"),
        CameraSpec("门卫室", "other"),
        CameraSpec("厨房操作间", "kitchen"),
        CameraSpec("多功能厅", "other"),
        CameraSpec("楼梯口", "corridor"),
    ]
    tier3 = [_classroom(g, i) for g in _GRADES for i in range(classes_per_grade + 1, 9)] + [
        CameraSpec(f"周界{sides[2]}", "perimeter"),
        CameraSpec(f"周界{sides[3]}", "perimeter"),
        CameraSpec("医务室", "other"),
        CameraSpec("食品库房", "kitchen"),
        CameraSpec("户外活动区", "playground"),
        CameraSpec("沙水池", "playground"),
        CameraSpec("三楼走廊", "corridor"),
        CameraSpec("三楼午睡室", "dormitory"),
        CameraSpec("停车场", "other"),
        CameraSpec("图书室", "other"),
    ]
    for tier in (tier1, tier2, tier3):
        rng.shuffle(tier)
        yield from tier
    n = 1
    while True:
        yield CameraSpec(f"监控点{n:02d}", "other")
        n += 1


def plan_cameras(count: int, rng: random.Random) -> tuple[CameraSpec, ...]:
    """``count`` (2..99) camera positions: entrance and perimeter first, then the rest."""
    if not 2 <= count <= MAX_CAMERAS_PER_KINDERGARTEN:
        raise ValueError(f"camera count must be 2..{MAX_CAMERAS_PER_KINDERGARTEN}, got {count}")
    stream = _camera_candidates(rng)
    return tuple(next(stream) for _ in range(count))


# --------------------------------------------------------------------------- IDs


def _sim_id(district_code: str, type_code: int, kg_number: int, nn: int) -> str:
    return f"{district_code}00{INDUSTRY_EDUCATION}{type_code:03d}0{kg_number:04d}{nn:02d}"


def _check_id(sim_id: str) -> None:
    if len(sim_id) != 20 or not sim_id.isascii() or not sim_id.isdigit():
        raise ValueError(f"not a 20-digit GB28181 id: {sim_id!r}")


def kindergarten_number_of(device_or_channel_id: str) -> int:
    """Kindergarten number KKKK (``id[14:18]``) of a simulated device/channel ID."""
    _check_id(device_or_channel_id)
    return int(device_or_channel_id[14:18])


def kindergarten_id_for(any_sim_id: str) -> str:
    """The kindergarten's 216 virtual-organisation ID for any ID of the simulated city.

    The gateway places auto-enrolled devices by the same convention, so both
    sides use its one definition.
    """
    _check_id(any_sim_id)
    kindergarten_id = kindergarten_id_by_convention(any_sim_id)
    assert kindergarten_id is not None  # _check_id passed
    return kindergarten_id


# --------------------------------------------------------------------------- apportionment


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder apportionment; with total >= len(weights) nobody gets zero."""
    wsum = sum(weights)
    quotas = [total * w / wsum for w in weights]
    counts = [int(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), -weights[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    if total >= len(weights):
        for i in range(len(counts)):
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] = 1
    return counts


# --------------------------------------------------------------------------- city


def _jitter(rng: random.Random, center: tuple[float, float], spread: float) -> tuple[float, float]:
    lon = round(center[0] + rng.uniform(-spread, spread), 6)
    lat = round(center[1] + rng.uniform(-spread, spread) * 0.8, 6)
    return lon, lat


def _alarm_device(
    kind: str,
    dev_id: str,
    kg_name: str,
    device_label: str,
    channel_label: str,
    area: str,
    vendor: Vendor,
    models: tuple[str, ...],
    rng: random.Random,
    lon: float,
    lat: float,
    address: str,
) -> SimDevice:
    channel = SimChannel(
        id=dev_id,
        name=f"{kg_name}·{channel_label}",
        area=area,
        type_code=TYPE_ALARM_INPUT,
        kind="alarm",
        longitude=lon,
        latitude=lat,
        address=address,
    )
    return SimDevice(
        id=dev_id,
        kind=kind,
        name=f"{kg_name}·{device_label}",
        type_code=TYPE_ALARM_INPUT,
        manufacturer=vendor.name,
        model=rng.choice(models),
        firmware=firmware(vendor, rng),
        channels=(channel,),
    )


def _build_kindergarten(
    district: District,
    number: int,
    name: str,
    rng: random.Random,
    cameras: tuple[int, int],
    ipc_mode: bool,
    perimeter: bool,
) -> SimKindergarten:
    code = district.code
    spread = SPREAD_CENTRAL if code in CENTRAL_DISTRICTS else SPREAD_SUBURBAN
    lon, lat = _jitter(rng, district.center, spread)
    address = f"天津市{district.name}{rng.choice(district.streets)}{rng.randint(1, 399)}号"
    vendor = rng.choices(VENDORS, weights=VENDOR_WEIGHTS)[0]
    specs = plan_cameras(rng.randint(*cameras), rng)

    camera_channels: list[SimChannel] = []
    for nn, spec in enumerate(specs, start=1):
        camera_channels.append(
            SimChannel(
                id=_sim_id(code, TYPE_CAMERA, number, nn),
                name=f"{name}·{spec.name_suffix}",
                area=spec.area,
                type_code=TYPE_CAMERA,
                kind="camera",
                longitude=round(lon + rng.uniform(-0.0005, 0.0005), 6),
                latitude=round(lat + rng.uniform(-0.0004, 0.0004), 6),
                address=address,
            )
        )

    devices: list[SimDevice] = []
    if ipc_mode:
        for nn, channel in enumerate(camera_channels, start=1):
            devices.append(
                SimDevice(
                    id=_sim_id(code, TYPE_IPC, number, nn),
                    kind="ipc",
                    name=channel.name,
                    type_code=TYPE_IPC,
                    manufacturer=vendor.name,
                    model=rng.choice(vendor.ipc_models),
                    firmware=firmware(vendor, rng),
                    channels=(channel,),
                )
            )
    else:
        devices.append(
            SimDevice(
                id=_sim_id(code, TYPE_NVR, number, 0),
                kind="nvr",
                name=f"{name}·NVR",
                type_code=TYPE_NVR,
                manufacturer=vendor.name,
                model=nvr_model(vendor, len(camera_channels)),
                firmware=firmware(vendor, rng),
                channels=tuple(camera_channels),
            )
        )
    devices.append(
        _alarm_device(
            "alarm_box",
            _sim_id(code, TYPE_ALARM_INPUT, number, 1),
            name,
            "一键报警箱",
            "一键报警",
            "entrance",
            vendor,
            vendor.alarm_box_models,
            rng,
            lon,
            lat,
            address,
        )
    )
    if perimeter:
        devices.append(
            _alarm_device(
                "perimeter_alarm",
                _sim_id(code, TYPE_ALARM_INPUT, number, 2),
                name,
                "周界报警主机",
                "周界报警",
                "perimeter",
                vendor,
                vendor.perimeter_models,
                rng,
                lon,
                lat,
                address,
            )
        )
    return SimKindergarten(
        number=number,
        id=_sim_id(code, TYPE_VIRTUAL_ORG, number, 0),
        name=name,
        district_code=code,
        district_name=district.name,
        address=address,
        longitude=lon,
        latitude=lat,
        devices=tuple(devices),
    )


def build_city(
    kindergartens: int,
    *,
    seed: int = 2020,
    cameras_per_kindergarten: tuple[int, int] = (8, 16),
    ipc_mode: bool = False,
    perimeter_share: float = 0.3,
) -> list[SimKindergarten]:
    """Plan ``kindergartens`` kindergartens spread over Tianjin's districts by population.

    ``build_city(2314)`` is the whole city. Deterministic for a given ``seed``.
    Result is ordered by district (civil-code order), then kindergarten number.
    """
    if kindergartens < 0:
        raise ValueError("kindergartens must be >= 0")
    lo, hi = cameras_per_kindergarten
    if not 2 <= lo <= hi <= MAX_CAMERAS_PER_KINDERGARTEN:
        raise ValueError(f"cameras_per_kindergarten must satisfy 2 <= lo <= hi <= {MAX_CAMERAS_PER_KINDERGARTEN}")
    if not 0.0 <= perimeter_share <= 1.0:
        raise ValueError("perimeter_share must be within [0, 1]")

    rng = random.Random(seed)
    counts = _apportion(kindergartens, [d.weight for d in DISTRICTS])
    if max(counts, default=0) > MAX_KINDERGARTENS_PER_DISTRICT:
        raise ValueError("too many kindergartens for a 4-digit per-district number")
    with_perimeter = set(rng.sample(range(kindergartens), round(kindergartens * perimeter_share)))

    city: list[SimKindergarten] = []
    for district, count in zip(DISTRICTS, counts):
        names = district_names(district, count, rng)
        for number in range(1, count + 1):
            city.append(
                _build_kindergarten(
                    district,
                    number,
                    names[number - 1],
                    rng,
                    (lo, hi),
                    ipc_mode,
                    perimeter=len(city) in with_perimeter,
                )
            )
    return city


def city_summary(city: Iterable[SimKindergarten]) -> dict[str, object]:
    """Counts for logging: kindergartens, devices (by kind), channels (by kind), per district."""
    kgs = 0
    devices_by_kind: dict[str, int] = {}
    channels_by_kind: dict[str, int] = {}
    names: dict[str, str] = {}
    per_district: dict[str, list[int]] = {}  # code -> [kindergartens, devices, channels]
    for kg in city:
        kgs += 1
        names[kg.district_code] = kg.district_name
        row = per_district.setdefault(kg.district_code, [0, 0, 0])
        row[0] += 1
        row[1] += len(kg.devices)
        for dev in kg.devices:
            devices_by_kind[dev.kind] = devices_by_kind.get(dev.kind, 0) + 1
            row[2] += len(dev.channels)
            for ch in dev.channels:
                channels_by_kind[ch.kind] = channels_by_kind.get(ch.kind, 0) + 1
    by_district = {
        code: {"name": names[code], "kindergartens": k, "devices": d, "channels": c}
        for code, (k, d, c) in per_district.items()
    }
    return {
        "kindergartens": kgs,
        "devices": sum(devices_by_kind.values()),
        "channels": sum(channels_by_kind.values()),
        "devices_by_kind": devices_by_kind,
        "channels_by_kind": channels_by_kind,
        "by_district": by_district,
    }
