"""Values of the registry: kindergartens, devices, channels and their presence.

Everything here is a frozen, slotted dataclass or an enum so that values can be
shared between the event-loop thread and the store worker thread without copies
or locks. The module is pure: no I/O, no clock.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from gateway.errors import StoreError

__all__ = [
    "MAX_PAGE_LIMIT",
    "AreaTag",
    "Channel",
    "ChannelChanges",
    "ChannelFilter",
    "Device",
    "DeviceFilter",
    "DistrictCount",
    "EntityKind",
    "InvalidFilter",
    "Kindergarten",
    "Page",
    "PresenceCounts",
    "StatusEvent",
    "check_page",
    "guess_area",
]

#: Largest page a list query may ask for; bounds memory and response size.
MAX_PAGE_LIMIT = 1000

T = TypeVar("T")


class InvalidFilter(StoreError, ValueError):
    """A list query with a bad offset or limit (a caller's mistake, not the store's)."""


class AreaTag(str, Enum):
    """Where a channel looks; decides whether police may ever see it (privacy rule)."""

    ENTRANCE = "entrance"
    PERIMETER = "perimeter"
    CLASSROOM = "classroom"
    DORMITORY = "dormitory"
    PLAYGROUND = "playground"
    KITCHEN = "kitchen"
    CORRIDOR = "corridor"
    OTHER = "other"

    @property
    def is_public(self) -> bool:
        """True only for entrance and perimeter: the only areas police may see."""
        return self in _PUBLIC_AREAS


_PUBLIC_AREAS = frozenset({AreaTag.ENTRANCE, AreaTag.PERIMETER})

# Keywords per area, lower-case (names are NFKC-normalised and case-folded first).
# Indoor / non-public areas come FIRST: "教室门口" (a classroom doorway) contains the
# entrance word "门口" but looks into a classroom, so it must never become public.
# When in doubt a name falls through to OTHER, which is never public either.
_AREA_KEYWORDS: tuple[tuple[AreaTag, tuple[str, ...]], ...] = (
    (AreaTag.DORMITORY, ("寝室", "午睡", "睡眠室", "卧室", "宿舍", "dormitory", "bedroom")),
    (AreaTag.CLASSROOM, ("教室", "班", "活动室", "classroom")),
    (AreaTag.KITCHEN, ("厨房", "食堂", "餐厅", "kitchen", "canteen")),
    (AreaTag.CORRIDOR, ("走廊", "楼道", "楼梯", "corridor", "hallway")),
    (AreaTag.PLAYGROUND, ("操场", "活动场", "playground")),
    (AreaTag.PERIMETER, ("周界", "围墙", "围栏", "perimeter", "fence")),
    (AreaTag.ENTRANCE, ("大门", "门口", "入口", "出入口", "正门", "侧门", "后门", "gate", "entrance")),
)


def guess_area(name: str) -> AreaTag:
    """Guess a channel's area from its (Chinese or English) name.

    Used when a catalog arrives without an operator's tag. Non-public words win
    over public ones, so a doubtful name can only err towards privacy.
    """
    # Both forms: NFKC folds full-width letters ("ＧＡＴＥ"), while the raw form
    # keeps an indoor word that normalisation could merge with a following mark.
    texts = (name.casefold(), unicodedata.normalize("NFKC", name).casefold())
    for area, words in _AREA_KEYWORDS:
        if any(word in text for text in texts for word in words):
            return area
    return AreaTag.OTHER


class EntityKind(str, Enum):
    """What a status event is about."""

    DEVICE = "device"
    CHANNEL = "channel"


@dataclass(frozen=True, slots=True)
class Kindergarten:
    """A site: the unit districts count coverage by."""

    id: str
    name: str
    district_code: str
    address: str = ""
    longitude: float | None = None
    latitude: float | None = None


@dataclass(frozen=True, slots=True)
class Device:
    """A SIP device (NVR, IPC, alarm box) as last registered; presence fields included."""

    id: str
    kindergarten_id: str | None
    district_code: str
    name: str = ""
    device_type: int = 0
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    transport: str = "UDP"
    host: str = ""
    port: int = 0
    online: bool = False
    registered_at: float | None = None
    expires: int = 0
    last_seen: float | None = None
    channel_count: int = 0
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Channel:
    """A camera or alarm input of a device, as reported by its catalog."""

    id: str
    device_id: str
    kindergarten_id: str | None
    district_code: str
    name: str = ""
    area: AreaTag = AreaTag.OTHER
    type_code: int = 0
    manufacturer: str = ""
    model: str = ""
    address: str = ""
    parent_id: str = ""
    online: bool = False
    longitude: float | None = None
    latitude: float | None = None
    ptz_type: int | None = None
    updated_at: float | None = None


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """An online/offline transition, kept as history for operators."""

    entity_id: str
    kind: EntityKind
    online: bool
    at: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list query; ``total`` counts every match, not just this page."""

    items: tuple[T, ...]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class DistrictCount:
    """Coverage and online figures of one district (municipal statistics)."""

    district_code: str
    kindergartens: int
    devices: int
    devices_online: int
    channels: int
    channels_online: int


@dataclass(frozen=True, slots=True)
class ChannelChanges:
    """What a full catalog changed for one device; drives catalog notifications upstream.

    ``changed`` lists channels whose descriptive fields differ; a change of only
    ``online`` or ``updated_at`` is presence, not a catalog change.
    """

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when the catalog matched what was stored."""
        return not (self.added or self.changed or self.removed)


@dataclass(frozen=True, slots=True)
class PresenceCounts:
    """Rows a presence flush touched; ids unknown to the store are not counted."""

    devices: int
    channels: int


def check_page(offset: int, limit: int, max_limit: int = MAX_PAGE_LIMIT) -> None:
    """Raise :class:`InvalidFilter` unless ``offset >= 0`` and ``1 <= limit <= max_limit``."""
    if offset < 0:
        raise InvalidFilter(f"offset must be >= 0, got {offset}")
    if not 1 <= limit <= max_limit:
        raise InvalidFilter(f"limit must be in 1..{max_limit}, got {limit}")


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """Which devices to list; ``None`` means "any". Raises InvalidFilter on a bad page."""

    district_code: str | None = None
    kindergarten_id: str | None = None
    online: bool | None = None
    device_type: int | None = None
    offset: int = 0
    limit: int = 100

    def __post_init__(self) -> None:
        check_page(self.offset, self.limit)


@dataclass(frozen=True, slots=True)
class ChannelFilter:
    """Which channels to list; ``public_only`` is the police view (entrance/perimeter)."""

    district_code: str | None = None
    kindergarten_id: str | None = None
    device_id: str | None = None
    online: bool | None = None
    area: AreaTag | None = None
    public_only: bool = False
    type_code: int | None = None
    offset: int = 0
    limit: int = 100

    def __post_init__(self) -> None:
        check_page(self.offset, self.limit)

    @property
    def areas(self) -> frozenset[AreaTag] | None:
        """The areas that may match (possibly none), or None for "any area"."""
        if self.area is None and not self.public_only:
            return None
        areas = frozenset(AreaTag) if self.area is None else frozenset({self.area})
        return areas & _PUBLIC_AREAS if self.public_only else areas
