"""What the simulated city is made of: Tianjin's districts, kindergarten names, device vendors.

Pure data and small pure helpers (no I/O), used by :mod:`simulators.city` to
build a deterministic city. Names are realistic Chinese kindergarten names per
district (e.g. 和平区第三幼儿园); vendors mimic the mix of NVRs and cameras
found in the field.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "CENTRAL_DISTRICTS",
    "DISTRICTS",
    "DISTRICT_BY_CODE",
    "SPREAD_CENTRAL",
    "SPREAD_SUBURBAN",
    "VENDORS",
    "VENDOR_WEIGHTS",
    "District",
    "Vendor",
    "chinese_numeral",
    "district_names",
    "firmware",
    "nvr_model",
]


@dataclass(frozen=True, slots=True)
class District:
    """A Tianjin district: civil code, name, population weight, centre (lon, lat), streets."""

    code: str
    name: str
    weight: float
    center: tuple[float, float]
    streets: tuple[str, ...]


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
CENTRAL_DISTRICTS = frozenset({"120101", "120102", "120103", "120104", "120105", "120106"})
SPREAD_CENTRAL = 0.018
SPREAD_SUBURBAN = 0.07

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


def district_names(district: District, count: int, rng: random.Random) -> list[str]:
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


# --------------------------------------------------------------------------- vendors


@dataclass(frozen=True, slots=True)
class Vendor:
    name: str
    nvr_models: tuple[tuple[int, str], ...]  # (max channels, model), ascending
    ipc_models: tuple[str, ...]
    alarm_box_models: tuple[str, ...]
    perimeter_models: tuple[str, ...]
    firmware_fmt: str


VENDORS: tuple[Vendor, ...] = (
    Vendor(
        "Hikvision",
        ((8, "DS-7808N-K2"), (16, "DS-7816N-K2"), (32, "DS-7932N-R4"), (64, "DS-9664N-I8"), (128, "DS-96128N-I16")),
        ("DS-2CD3T46WDV3-I3", "DS-2CD2346FWD-IS", "DS-2CD3326WDV3-I", "DS-2DE2A404IW-DE3"),
        ("DS-PEA1-21", "DS-PEA22-A"),
        ("DS-PDBG8-EG2", "DS-PD2-T10AME"),
        "V{a}.{b}.{c} build {d}",
    ),
    Vendor(
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
    Vendor(
        "Uniview",
        ((8, "NVR301-08E2"), (16, "NVR302-16E-B"), (32, "NVR304-32S"), (64, "NVR308-64E-B"), (128, "NVR516-128")),
        ("IPC2124LR3-PF40", "IPC322LB-SF28-A", "IPC3614SR3-ADF28KM", "IPC6322SR-X22P"),
        ("AB-E1001", "AB-E1002"),
        ("ABD-PD200", "ABD-PD300"),
        "V{a}.{b}.{c}.{d}",
    ),
    Vendor(
        "Tiandy",
        ((8, "TC-R3108"), (16, "TC-R3116"), (32, "TC-R3232"), (64, "TC-R3464"), (128, "TC-R38128")),
        ("TC-C34WS", "TC-C32GN", "TC-C35JS", "TC-H326S"),
        ("TC-AB1001", "TC-AB1002"),
        ("TC-PD2001", "TC-PD2002"),
        "TD-V{a}.{b}.{c} {d}",
    ),
)
VENDOR_WEIGHTS: tuple[float, ...] = (0.40, 0.30, 0.15, 0.15)


def firmware(vendor: Vendor, rng: random.Random) -> str:
    build = f"{rng.randint(19, 24)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    if vendor.name == "Dahua":
        build = f"20{build[:2]}-{build[2:4]}-{build[4:]}"
    return vendor.firmware_fmt.format(a=rng.randint(3, 5), b=rng.randint(0, 12), c=rng.randint(0, 99), d=build)


def nvr_model(vendor: Vendor, channels: int) -> str:
    for capacity, model in vendor.nvr_models:
        if capacity >= channels:
            return model
    return vendor.nvr_models[-1][1]
