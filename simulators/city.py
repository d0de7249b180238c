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
class District:
    """A Tianjin district: civil code, name, population weight, centre (lon, lat), streets."""

    code: str
    name: str
    weight: float
    center: tuple[float, float]
    streets: tuple[str, ...]


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


# --------------------------------------------------------------------------- districts

# Weights: resident population in units of 10,000 (7th census, 2020, rounded).
DISTRICTS: tuple[District, ...] = (
    District(
        "120101",
        "和平区",
        35.5,
        (117.2147, 39.1170),
        ("南京路", "成都道", "南营门街", "小白楼街", "劝业场街", "五大道街", "新兴街", "贵州路"),
    ),
    District(
        "120102",
        "河东区",
        85.9,
        (117.2517, 39.1283),
        ("大直沽街", "中山门街", "津塘路", "十一经路", "卫国道", "华昌道", "常州道", "上杭路街"),
    ),
    District(
        "120103",
        "河西区",
        98.3,
        (117.2230, 39.0850),
        ("友谊路", "大沽南路", "围堤道", "黑牛城道", "梅江街", "尖山街", "越秀路", "马场道"),
    ),
    District(
        "120104",
        "南开区",
        89.0,
        (117.1503, 39.1380),
        ("鞍山西道", "黄河道", "白堤路", "复康路", "长江道", "华苑街", "王顶堤街", "水上公园西路"),
    ),
    District(
        "120105",
        "河北区",
        64.8,
        (117.1970, 39.1480),
        ("中山路", "金钟河大街", "狮子林大街", "王串场街", "月牙河街", "铁东路", "江都路", "宁园街"),
    ),
    District(
        "120106",
        "红桥区",
        48.3,
        (117.1513, 39.1672),
        ("西青道", "芥园道", "丁字沽街", "咸阳北路", "红旗路", "光荣道", "邵公庄街", "北大街"),
    ),
    District(
        "120110",
        "东丽区",
        85.7,
        (117.3140, 39.0863),
        ("金桥街", "津塘公路", "先锋路", "东丽湖街", "华明街", "张贵庄街", "丰年村街", "无瑕街"),
    ),
    District(
        "120111",
        "西青区",
        119.5,
        (117.0085, 39.1413),
        ("柳口路", "杨柳青镇", "中北镇", "李七庄街", "张家窝镇", "精武镇", "大寺镇", "赛达大道"),
    ),
    District(
        "120112",
        "津南区",
        92.8,
        (117.3830, 38.9890),
        ("咸水沽镇", "津沽路", "双港镇", "八里台镇", "小站镇", "辛庄镇", "雅乐道", "葛沽镇"),
    ),
    District(
        "120113",
        "北辰区",
        90.9,
        (117.1350, 39.2250),
        ("北辰道", "京津路", "果园新村街", "集贤里街", "天穆镇", "双街镇", "瑞景街", "宜兴埠镇"),
    ),
    District(
        "120114",
        "武清区",
        115.1,
        (117.0440, 39.3840),
        ("杨村街", "泉州路", "雍阳西道", "下朱庄街", "东蒲洼街", "黄庄街", "徐官屯街", "京津公路"),
    ),
    District(
        "120115",
        "宝坻区",
        72.3,
        (117.3090, 39.7170),
        ("南城路", "宝平街", "钰华街", "海滨街", "建设路", "广川路", "周良街", "口东街"),
    ),
    District(
        "120116",
        "滨海新区",
        206.7,
        (117.6540, 39.0320),
        ("杭州道街", "新港街", "胡家园街", "泰达街", "大港街", "汉沽街", "新北街", "福州道"),
    ),
    District(
        "120117",
        "宁河区",
        39.5,
        (117.8260, 39.3300),
        ("芦台镇", "光明路", "桥北街", "板桥镇", "东棘坨镇", "丰台镇", "七里海镇", "宁河北路"),
    ),
    District(
        "120118",
        "静海区",
        78.7,
        (116.9740, 38.9470),
        ("静海镇", "胜利大街", "华康街", "团泊镇", "大邱庄镇", "朝阳街", "静海北路", "唐官屯镇"),
    ),
    District(
        "120119",
        "蓟州区",
        79.6,
        (117.4080, 40.0460),
        ("渔阳镇", "人民西大街", "文昌街", "府君山路", "兴华大街", "下营镇", "邦均镇", "洇溜镇"),
    ),
)
"""Tianjin's 16 districts in civil-code order."""

DISTRICT_BY_CODE: dict[str, District] = {d.code: d for d in DISTRICTS}
"""Districts keyed by 6-digit civil code."""

# Half-width (degrees) of the square in which kindergartens are scattered:
# compact central districts get a small spread, suburban ones a larger one.
_CENTRAL = frozenset({"120101", "120102", "120103", "120104", "120105", "120106"})
_SPREAD_CENTRAL = 0.018
_SPREAD_SUBURBAN = 0.07

# --------------------------------------------------------------------------- names

_NAME_WORDS: tuple[str, ...] = (
    "实验",
    "阳光",
    "育才",
    "春蕾",
    "星星",
    "小太阳",
    "彩虹",
    "蓝天",
    "童心",
    "启明星",
    "爱心",
    "春苗",
    "小天使",
    "金色童年",
    "向日葵",
    "七色花",
    "红黄蓝",
    "蒲公英",
    "小百灵",
    "小红帽",
    "新蕾",
    "晨曦",
    "朝阳",
    "明珠",
    "育英",
    "博雅",
    "启航",
    "小博士",
    "快乐宝贝",
    "贝贝",
    "童趣",
    "绿茵",
    "海燕",
    "小海豚",
    "丽景",
    "紫金",
    "雏鹰",
    "未来星",
    "小树苗",
    "花蕾",
    "萌芽",
    "童梦",
    "乐乐",
    "小精灵",
    "艺林",
    "和美",
    "明德",
    "树人",
    "弘毅",
    "和谐",
    "康乐",
    "翠园",
    "绿荫",
    "金太阳",
    "银河",
    "天使",
    "童乐",
    "嘉禾",
    "馨园",
    "东方",
    "晨光",
    "春晖",
    "育苗",
    "小白鸽",
    "和平鸽",
    "蓓蕾",
    "苗苗",
    "机关",
    "开心果",
    "梦幻岛",
)
_NAME_VARIANTS: tuple[str, ...] = ("双语", "艺术")
_NAME_VARIANT_WORDS = 30  # the first N words also get the variants above
_STREET_PATTERNS: tuple[str, ...] = ("{s}幼儿园", "{s}中心幼儿园", "{s}第二幼儿园")
_BRANCH_WORDS = 15  # the first N words also have a branch per street: "实验幼儿园梅江分园"
_STREET_SUFFIXES: tuple[str, ...] = ("大街", "大道", "公路", "街", "路", "道", "镇")
_NUMBERED_SHARE = 0.45

_DIGITS = "零一二三四五六七八九"


def chinese_numeral(n: int) -> str:
    """Chinese numeral for 1..9999, e.g. 12 -> "十二", 105 -> "一百零五"."""
    if not 1 <= n <= 9999:
        raise ValueError(f"chinese_numeral supports 1..9999, got {n}")
    if 10 <= n < 20:
        return "十" + (_DIGITS[n - 10] if n > 10 else "")
    out: list[str] = []
    zero_pending = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        digit = n // value % 10
        if digit == 0:
            if out:
                zero_pending = True
            continue
        if zero_pending:
            out.append("零")
            zero_pending = False
        out.append(_DIGITS[digit] + unit)
    return "".join(out)


def _named_pool(district: District) -> list[str]:
    """All non-numbered name stems ("阳光幼儿园", "金桥街中心幼儿园", ...) for a district."""
    pool = [f"{w}幼儿园" for w in _NAME_WORDS]
    pool += [f"{w}{v}幼儿园" for w in _NAME_WORDS[:_NAME_VARIANT_WORDS] for v in _NAME_VARIANTS]
    pool += [p.format(s=s) for s in district.streets for p in _STREET_PATTERNS]
    pool += [f"{w}幼儿园{_street_stem(s)}分园" for w in _NAME_WORDS[:_BRANCH_WORDS] for s in district.streets]
    return pool


def _street_stem(street: str) -> str:
    """ "梅江街" -> "梅江", "金钟河大街" -> "金钟河"."""
    for suffix in _STREET_SUFFIXES:
        if street.endswith(suffix) and len(street) > len(suffix) + 1:
            return street[: -len(suffix)]
    return street


def _district_names(district: District, count: int, rng: random.Random) -> list[str]:
    """``count`` unique kindergarten names for a district, indexed by number - 1.

    Numbers 1..k are the numbered ones (第一幼儿园 … in order), the rest are named.
    """
    named = _named_pool(district)
    rng.shuffle(named)
    numbered = min(99, round(count * _NUMBERED_SHARE))
    numbered = max(numbered, count - len(named))  # overflow: continue past 第九十九
    names = [f"{district.name}第{chinese_numeral(i)}幼儿园" for i in range(1, numbered + 1)]
    names += [f"{district.name}{stem}" for stem in named[: count - numbered]]
    return names


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


# --------------------------------------------------------------------------- vendors


@dataclass(frozen=True, slots=True)
class _Vendor:
    name: str
    nvr_models: tuple[tuple[int, str], ...]  # (max channels, model), ascending
    ipc_models: tuple[str, ...]
    alarm_box_models: tuple[str, ...]
    perimeter_models: tuple[str, ...]
    firmware_fmt: str


_VENDORS: tuple[_Vendor, ...] = (
    _Vendor(
        "Hikvision",
        ((8, "DS-7808N-K2"), (16, "DS-7816N-K2"), (32, "DS-7932N-R4"), (64, "DS-9664N-I8"), (128, "DS-96128N-I16")),
        ("DS-2CD3T46WDV3-I3", "DS-2CD2346FWD-IS", "DS-2CD3326WDV3-I", "DS-2DE2A404IW-DE3"),
        ("DS-PEA1-21", "DS-PEA22-A"),
        ("DS-PDBG8-EG2", "DS-PD2-T10AME"),
        "V{a}.{b}.{c} build {d}",
    ),
    _Vendor(
        "Dahua",
        (
            (8, "DH-NVR4208-HDS2"),
            (16, "DH-NVR4216"),
            (32, "DH-NVR4232-4KS2"),
            (64, "DH-NVR5464-4KS2"),
            (128, "DH-NVR608-128-4KS2"),
        ),
        ("DH-IPC-HFW2433M-I1", "DH-IPC-HDBW2431R-ZS", "DH-IPC-HFW4443M-I2", "DH-SD49225XA-HNR"),
        ("DH-ARD7001", "DH-ALM-EB10"),
        ("DH-ARA43-W2", "DH-ARD2231-W2"),
        "V{a}.{b:03d}.0000000.{c}.R, Build Date {d}",
    ),
    _Vendor(
        "Uniview",
        ((8, "NVR301-08E2"), (16, "NVR302-16E-B"), (32, "NVR304-32S"), (64, "NVR308-64E-B"), (128, "NVR516-128")),
        ("IPC2124LR3-PF40", "IPC322LB-SF28-A", "IPC3614SR3-ADF28KM", "IPC6322SR-X22P"),
        ("AB-E1001", "AB-E1002"),
        ("ABD-PD200", "ABD-PD300"),
        "V{a}.{b}.{c}.{d}",
    ),
    _Vendor(
        "Tiandy",
        ((8, "TC-R3108"), (16, "TC-R3116"), (32, "TC-R3232"), (64, "TC-R3464"), (128, "TC-R38128")),
        ("TC-C34WS", "TC-C32GN", "TC-C35JS", "TC-H326S"),
        ("TC-AB1001", "TC-AB1002"),
        ("TC-PD2001", "TC-PD2002"),
        "TD-V{a}.{b}.{c} {d}",
    ),
)
_VENDOR_WEIGHTS: tuple[float, ...] = (0.40, 0.30, 0.15, 0.15)


def _firmware(vendor: _Vendor, rng: random.Random) -> str:
    build = f"{rng.randint(19, 24)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    if vendor.name == "Dahua":
        build = f"20{build[:2]}-{build[2:4]}-{build[4:]}"
    return vendor.firmware_fmt.format(a=rng.randint(3, 5), b=rng.randint(0, 12), c=rng.randint(0, 99), d=build)


def _nvr_model(vendor: _Vendor, channels: int) -> str:
    for capacity, model in vendor.nvr_models:
        if capacity >= channels:
            return model
    return vendor.nvr_models[-1][1]


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
    vendor: _Vendor,
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
        firmware=_firmware(vendor, rng),
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
    spread = _SPREAD_CENTRAL if code in _CENTRAL else _SPREAD_SUBURBAN
    lon, lat = _jitter(rng, district.center, spread)
    address = f"天津市{district.name}{rng.choice(district.streets)}{rng.randint(1, 399)}号"
    vendor = rng.choices(_VENDORS, weights=_VENDOR_WEIGHTS)[0]
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
                    firmware=_firmware(vendor, rng),
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
                model=_nvr_model(vendor, len(camera_channels)),
                firmware=_firmware(vendor, rng),
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
        names = _district_names(district, count, rng)
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
