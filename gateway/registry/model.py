"""Values of the registry: kindergartens, devices, channels and their presence.

Everything here is a frozen, slotted dataclass or an enum so that values can be
shared between the event-loop thread and the store worker thread without copies
or locks. The module is pure: no I/O, no clock.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace
from enum import Enum
from typing import Generic, TypeVar

from gateway.errors import StoreError

__all__ = [
    "CONFIRMATION_FIELDS",
    "MAX_PAGE_LIMIT",
    "AreaConfirmation",
    "AreaTag",
    "Channel",
    "ChannelChanges",
    "ChannelConflict",
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
    "name_allows_public",
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


#: What a camera's name may suggest and still be shown to police once an operator confirmed
#: it public: a public word, or nothing telling (a generic "Camera 01"). A name that says
#: classroom, nap room, kitchen, corridor or playground keeps it private whatever was confirmed.
_NAME_MAY_BE_PUBLIC = frozenset({AreaTag.ENTRANCE, AreaTag.PERIMETER, AreaTag.OTHER})


def name_allows_public(name: str) -> bool:
    """The name guard of the police rule: it may only narrow what an operator confirmed, never widen it."""
    return guess_area(name) in _NAME_MAY_BE_PUBLIC


@dataclass(frozen=True, slots=True)
class AreaConfirmation:
    """An operator's (or installer's) word on where a camera looks: the only area police sharing trusts.

    Kept apart from the channel row so that it exists before the device registers
    (provisioning), and survives catalogs that drop and re-add the channel.
    ``name`` is the channel's name when it was confirmed: a later rename by the
    device keeps the confirmation but flags it for review.
    """

    channel_id: str
    area: AreaTag
    confirmed_by: str
    confirmed_at: float
    name: str = ""


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


#: Channel fields merged in from its :class:`AreaConfirmation` (not columns of the channel table).
CONFIRMATION_FIELDS = frozenset({"confirmed_area", "confirmed_by", "confirmed_at", "area_review"})


@dataclass(frozen=True, slots=True)
class Channel:
    """A camera or alarm input of a device, as reported by its catalog.

    ``area`` is only a suggestion from the name (:func:`guess_area`); the
    ``confirmed_*`` fields are the operator's :class:`AreaConfirmation`, merged
    in by the directory (they are not columns of the channel table), and are what
    decides whether police may see a camera.
    """

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
    confirmed_area: AreaTag | None = None
    confirmed_by: str = ""
    confirmed_at: float | None = None
    area_review: bool = False  # confirmed, but the device renamed it since: an operator should look again

    @property
    def effective_area(self) -> AreaTag:
        """The confirmed area, else the suggestion (what lists filter by; police use only the confirmed one)."""
        return self.confirmed_area if self.confirmed_area is not None else self.area

    def with_confirmation(self, confirmation: AreaConfirmation | None) -> Channel:
        """This channel carrying ``confirmation`` (or none)."""
        if confirmation is None:
            if self.confirmed_area is None and not self.confirmed_by and self.confirmed_at is None:
                return self
            return replace(self, confirmed_area=None, confirmed_by="", confirmed_at=None, area_review=False)
        return replace(
            self,
            confirmed_area=confirmation.area,
            confirmed_by=confirmation.confirmed_by,
            confirmed_at=confirmation.confirmed_at,
            area_review=bool(confirmation.name) and confirmation.name != self.name,
        )


@dataclass(frozen=True, slots=True)
class ChannelConflict:
    """A catalog that described a channel another device owns: refused, kept for operators.

    ``path`` is "catalog" (a full or partial Catalog response) or "notify" (a
    catalog NOTIFY). The channel stayed with ``owner_id``.
    """

    channel_id: str
    owner_id: str
    claimant_id: str
    at: float
    path: str = "catalog"


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
    """Which channels to list.

    ``area`` matches the effective area (confirmed, else suggested); ``public_only``
    is the police view: channels whose *confirmed* area is entrance or perimeter.
    """

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
