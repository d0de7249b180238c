"""GB/T 28181 identifiers: the 20-digit code, civil codes and derived values.

A GB/T 28181 identifier ("国标编码") names every device, channel, platform and
catalog group. It is exactly 20 decimal digits (GB/T 28181-2016 Annex D; see
docs/gb28181.md §1.1)::

    digits 1-8    centre code: province 2, city 2, district 2, grass-roots unit 2
    digits 9-10   industry code
    digits 11-13  type code (what the object *is*)
    digit  14     network flag
    digits 15-20  serial number

Only ASCII digits count: ``str.isdigit`` also accepts Arabic-Indic and other
Unicode digits, which would later break SIP URIs, SQL keys and SSRC arithmetic,
so every check here spells out ``[0-9]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType

from gateway.errors import InvalidDeviceId

__all__ = [
    "DeviceType",
    "GbId",
    "TIANJIN_DISTRICTS",
    "district_name",
    "is_civil_code",
    "is_gb_id",
    "make_id",
    "ssrc_prefix",
]

GB_ID_LENGTH = 20
DOMAIN_LENGTH = 10

_GB_ID_RE = re.compile(r"[0-9]{20}")
_CIVIL_CODE_RE = re.compile(r"(?:[0-9]{2}){1,4}")  # 2, 4, 6 or 8 digits
_DIGITS_RE = re.compile(r"[0-9]+")


class DeviceType(IntEnum):
    """Type code, digits 11-13 of an ID (docs/gb28181.md §1.2, WVP's DeviceTypeEnum).

    Codes 120-125, 140-143 and 500-505 only appear in the newer (2022-style)
    table; older devices never send them, but catalogs from newer platforms may.
    """

    # front-end main devices (前端主设备)
    DVR = 111
    VIDEO_SERVER = 112
    ENCODER = 113
    DECODER = 114
    VIDEO_MATRIX = 115
    AUDIO_MATRIX = 116
    ALARM_CONTROLLER = 117
    NVR = 118
    ONLINE_ACQUISITION_SYSTEM = 120
    VIDEO_CHECKPOINT = 121
    MULTI_LENS_DEVICE = 122
    PARKING_GATE_CONTROL = 123
    PERSONNEL_GATE_CONTROL = 124
    SECURITY_INSPECTION = 125
    HVR = 130
    # front-end peripherals (前端外围设备): playable or alarm leaves
    CAMERA = 131
    IPC = 132
    DISPLAY = 133
    ALARM_INPUT = 134
    ALARM_OUTPUT = 135
    VOICE_INPUT = 136
    VOICE_OUTPUT = 137
    MOBILE_TRANSMISSION = 138
    OTHER_PERIPHERAL = 139
    RELAY_ALARM_OUTPUT = 140
    BARRIER_GATE = 141
    SMART_DOOR = 142
    CREDENTIAL_RECOGNITION = 143
    # platform devices (平台设备)
    SIP_SERVER = 200
    WEB_SERVER = 201
    MEDIA_DISTRIBUTION_SERVER = 202
    PROXY_SERVER = 203
    SECURITY_SERVER = 204
    ALARM_SERVER = 205
    DATABASE_SERVER = 206
    GIS_SERVER = 207
    MANAGEMENT_SERVER = 208
    ACCESS_GATEWAY = 209
    MEDIA_STORAGE_SERVER = 210
    SIGNALLING_SECURITY_GATEWAY = 211
    BUSINESS_GROUP = 215
    VIRTUAL_ORGANISATION = 216
    # users
    CENTRE_USER = 300
    TERMINAL_USER = 400
    # external systems (newer table)
    COMPREHENSIVE_APPLICATION_PLATFORM = 500
    OPERATION_MAINTENANCE_PLATFORM = 501
    IMAGE_ANALYSIS_SYSTEM = 502
    IMAGE_INFORMATION_DATABASE = 503
    IMAGE_ANALYSIS_EQUIPMENT = 505


def _ascii_digits(value: object, length: int) -> bool:
    """True when ``value`` is a str of exactly ``length`` ASCII digits."""
    return isinstance(value, str) and len(value) == length and _DIGITS_RE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True, order=True)
class GbId:
    """A validated 20-digit GB/T 28181 identifier.

    Construct with :meth:`parse` (or ``GbId("…")``, which validates the same
    way), so that an invalid ID can never exist as a ``GbId``.
    """

    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.value, str) or _GB_ID_RE.fullmatch(self.value) is None:
            raise InvalidDeviceId(f"not a 20-digit GB/T 28181 ID: {self.value!r:.40}")

    @classmethod
    def parse(cls, s: str) -> GbId:
        """Parse ``s``; raise :class:`InvalidDeviceId` unless it is exactly 20 ASCII digits.

        No stripping: whitespace around an ID in a From header is a peer bug we
        want to see, not to paper over.
        """
        return cls(s)

    @property
    def center(self) -> str:
        """Centre code (中心编码), digits 1-8."""
        return self.value[0:8]

    @property
    def civil_code(self) -> str:
        """Administrative division (province + city + district), digits 1-6."""
        return self.value[0:6]

    @property
    def grassroots(self) -> str:
        """Grass-roots access unit (基层接入单位), digits 7-8."""
        return self.value[6:8]

    @property
    def industry(self) -> str:
        """Industry code, digits 9-10; carries no protocol meaning (docs/gb28181.md §1.3)."""
        return self.value[8:10]

    @property
    def type_code(self) -> int:
        """Type code, digits 11-13, as an int (unknown codes stay representable)."""
        return int(self.value[10:13])

    @property
    def network(self) -> int:
        """Network flag, digit 14 (tables disagree on its meaning, docs/gb28181.md §1.4)."""
        return int(self.value[13])

    @property
    def serial(self) -> str:
        """Serial number, digits 15-20, kept as text to preserve leading zeros."""
        return self.value[14:20]

    @property
    def domain(self) -> str:
        """The SIP domain derived from this ID: its first 10 digits (docs/gb28181.md §1.1).

        Only meaningful for our own IDs: a peer may use another domain spelling.
        """
        return self.value[0:DOMAIN_LENGTH]

    @property
    def device_type(self) -> DeviceType | None:
        """The known :class:`DeviceType`, or None for codes outside the tables."""
        try:
            return DeviceType(self.type_code)
        except ValueError:
            return None

    @property
    def is_peripheral(self) -> bool:
        """Front-end peripheral (131 <= type < 199): a playable or alarm leaf (WVP isFrontEnd)."""
        return 131 <= self.type_code < 199

    @property
    def is_platform(self) -> bool:
        """Platform-class object (type 200-299), including catalog groups 215/216."""
        return 200 <= self.type_code <= 299

    def __str__(self) -> str:
        return self.value


def is_gb_id(s: object) -> bool:
    """True when ``s`` is a str of exactly 20 ASCII digits."""
    return isinstance(s, str) and _GB_ID_RE.fullmatch(s) is not None


def is_civil_code(s: object) -> bool:
    """True for a region node ID: 2, 4, 6 or 8 ASCII digits (docs/gb28181.md §1.1, libgb CivilCode)."""
    return isinstance(s, str) and _CIVIL_CODE_RE.fullmatch(s) is not None


def make_id(
    civil_code6: str,
    industry: str,
    type_code: int,
    network: int,
    serial: int,
    *,
    grassroots: str = "00",
) -> str:
    """Assemble a 20-digit ID from its parts; raise :class:`InvalidDeviceId` on bad parts.

    ``make_id("120101", "11", 132, 0, 1)`` is ``"12010100111320000001"`` (the
    simulated-city layout of docs/architecture.md §4: centre = civil code + grass-roots "00").
    """
    if not _ascii_digits(civil_code6, 6):
        raise InvalidDeviceId(f"civil code must be 6 digits: {civil_code6!r:.20}")
    if not _ascii_digits(grassroots, 2):
        raise InvalidDeviceId(f"grass-roots unit must be 2 digits: {grassroots!r:.20}")
    if not _ascii_digits(industry, 2):
        raise InvalidDeviceId(f"industry code must be 2 digits: {industry!r:.20}")
    _check_int("type code", type_code, 999)
    _check_int("network flag", network, 9)
    _check_int("serial", serial, 999_999)
    return f"{civil_code6}{grassroots}{industry}{type_code:03d}{network:d}{serial:06d}"


def _check_int(what: str, value: object, maximum: int) -> None:
    """Reject non-ints (bool included: ``True`` is not a type code) and out-of-range values."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidDeviceId(f"{what} must be an int in 0..{maximum}: {value!r:.20}")


# GB/T 2260 codes of Tianjin's 16 districts (docs/gb28181.md §1.5, WVP civilCode.csv).
TIANJIN_DISTRICTS: Mapping[str, str] = MappingProxyType(
    {
        "120101": "和平区",
        "120102": "河东区",
        "120103": "河西区",
        "120104": "南开区",
        "120105": "河北区",
        "120106": "红桥区",
        "120110": "东丽区",
        "120111": "西青区",
        "120112": "津南区",
        "120113": "北辰区",
        "120114": "武清区",
        "120115": "宝坻区",
        "120116": "滨海新区",
        "120117": "宁河区",
        "120118": "静海区",
        "120119": "蓟州区",
    }
)


def district_name(civil_code: str) -> str | None:
    """Chinese name of the Tianjin district a code belongs to, or None.

    Accepts a 6-digit civil code or anything that starts with one (an 8-digit
    centre code, a 10-digit domain, a 20-digit ID), all ASCII digits.
    """
    if not isinstance(civil_code, str) or len(civil_code) < 6:
        return None
    if _DIGITS_RE.fullmatch(civil_code) is None:
        return None
    return TIANJIN_DISTRICTS.get(civil_code[:6])


def ssrc_prefix(domain: str) -> str:
    """The 5-digit SSRC prefix: digits 4-8 of the 10-digit domain (docs/gb28181.md §1.6, §15.4).

    Accepts the plain domain or a spelling that starts with it
    (``3402000000.spvmn.cn``); raises :class:`InvalidDeviceId` otherwise.
    """
    if not isinstance(domain, str) or not _ascii_digits(domain[:DOMAIN_LENGTH], DOMAIN_LENGTH):
        raise InvalidDeviceId(f"not a 10-digit SIP domain: {domain!r:.40}")
    return domain[3:8]
