"""Who may see what: per-upper sharing policy and the catalog tree each upper platform is shown.

Every upper platform (a district platform, the municipal platform, the police
platform) gets one :class:`SharePolicy`. It is the single place where the
three-level sharing rules (docs/architecture.md §5) live:

* a district platform sees every channel and alarm of its own district;
* the municipal platform sees everything;
* the police see entrance and perimeter cameras, every alarm input, and
  emergency and video-analytics alarms — never an indoor camera (a hard
  privacy rule, enforced twice: by the area an *operator confirmed* and by the
  name, which may only narrow it). Names come from devices, so an area guessed
  from a name is a suggestion and never shares a camera.

The catalog an upper receives (docs/gb28181.md §6.4, §16.3) is a tree::

    business group 215  (ParentID = our system ID)
      district 216       (BusinessGroupID only: directly under the group)
        kindergarten 216 (ParentID = district node)
          channel        (ParentID = kindergarten, or the district node when unknown)

Only nodes that lead to at least one shared channel are sent (WVP's maintainer
advises against empty directories, docs/gb28181.md §6.4), so the police tree never even
names a kindergarten none of whose cameras they may see.

Pure and deterministic: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from gateway.alarms.model import Alarm
from gateway.errors import ConfigError, InvalidDeviceId
from gateway.gb28181.ids import TIANJIN_DISTRICTS, DeviceType, is_gb_id
from gateway.gb28181.manscdp import CatalogItem
from gateway.registry.model import AreaTag, Channel, Kindergarten, name_allows_public

__all__ = [
    "DEFAULT_BUSINESS_GROUP_NAME",
    "CatalogEvent",
    "PolicyLevel",
    "SharePolicy",
    "build_catalog",
    "business_group_id",
    "catalog_changes",
    "district_node_id",
]

DEFAULT_BUSINESS_GROUP_NAME: Final = "幼儿园安全监控"

_CAMERA_TYPES: Final = frozenset({DeviceType.CAMERA, DeviceType.IPC})
_POLICE_ALARM_CATEGORIES: Final = frozenset({"emergency", "analytics"})


class PolicyLevel(StrEnum):
    """Which kind of upper platform a policy serves (the ``--level`` of ``kgw platform``)."""

    DISTRICT = "district"
    MUNICIPAL = "municipal"
    POLICE = "police"


class CatalogEvent(StrEnum):
    """``Event`` of a catalog NOTIFY item (docs/gb28181.md §14.3) that this module emits."""

    ADD = "ADD"
    DEL = "DEL"
    UPDATE = "UPDATE"
    ON = "ON"
    OFF = "OFF"


def _is_digits(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and value.isascii() and value.isdigit()


def _type_code(gb_id: str) -> int | None:
    """Digits 11-13 of a 20-digit ID, or None when it is not one."""
    return int(gb_id[10:13]) if is_gb_id(gb_id) else None


@dataclass(frozen=True, slots=True)
class SharePolicy:
    """What one upper platform may see; raises :class:`ConfigError` when inconsistent.

    ``district_code`` is required for :attr:`PolicyLevel.DISTRICT` and must be
    one of Tianjin's 16 district codes (``TIANJIN_DISTRICTS``): a typo would
    otherwise give a district platform an empty catalog without any error.
    It must be None for the other levels, so a police policy can never be
    narrowed or widened by a stray setting.
    """

    level: PolicyLevel
    district_code: str | None = None

    def __post_init__(self) -> None:
        try:
            level = PolicyLevel(self.level)
        except ValueError:
            raise ConfigError(f"unknown policy level {self.level!r:.40}") from None
        object.__setattr__(self, "level", level)  # accept "police" as well as PolicyLevel.POLICE
        if level is PolicyLevel.DISTRICT:
            if self.district_code is None:
                raise ConfigError("a district policy needs a district code")
            if not _is_digits(self.district_code, 6) or self.district_code not in TIANJIN_DISTRICTS:
                raise ConfigError(f"not a Tianjin district civil code: {self.district_code!r:.40}")
        elif self.district_code is not None:
            raise ConfigError(f"a {level.value} policy covers the whole city; district_code must be None")

    @classmethod
    def district(cls, district_code: str) -> SharePolicy:
        """The policy of one district platform."""
        return cls(PolicyLevel.DISTRICT, district_code)

    @classmethod
    def municipal(cls) -> SharePolicy:
        """The policy of the municipal platform."""
        return cls(PolicyLevel.MUNICIPAL)

    @classmethod
    def police(cls) -> SharePolicy:
        """The policy of the police video platform."""
        return cls(PolicyLevel.POLICE)

    def covers_district(self, code: str) -> bool:
        """True when the district (6-digit civil code) is in this platform's scope."""
        if self.level is PolicyLevel.DISTRICT:
            return code == self.district_code
        return True

    def covers_kindergarten(self, kg: Kindergarten) -> bool:
        """True when the kindergarten is in this platform's scope (police: all, channels are filtered)."""
        return self.covers_district(kg.district_code)

    def allows_channel(self, channel: Channel) -> bool:
        """True when this platform may see the channel (catalog, live view, playback)."""
        if self.level is PolicyLevel.DISTRICT:
            return self.covers_district(channel.district_code)
        if self.level is PolicyLevel.MUNICIPAL:
            return True
        return _police_may_see(channel)

    def allows_alarm(self, alarm: Alarm, *, source: Channel | None = None) -> bool:
        """True when this platform receives the alarm.

        Police get emergency and video-analytics alarms, not device faults,
        tamper or video loss. When the caller passes the alarm's ``source``
        channel, a police alarm raised by a camera the police may not see
        (motion in a classroom) is refused too: its picture would show the
        room. Alarm inputs are never refused that way.
        """
        if self.level is PolicyLevel.DISTRICT:
            return alarm.district_code == self.district_code
        if self.level is PolicyLevel.MUNICIPAL:
            return True
        if alarm.kind.category not in _POLICE_ALARM_CATEGORIES:
            return False
        if source is not None and source.type_code in _CAMERA_TYPES:
            return _police_may_see(source)
        return True

    def exposed_kindergarten_name(self, kg: Kindergarten) -> str:
        """The name this platform is shown: kindergarten names are public; the ID when empty."""
        return kg.name.strip() or kg.id


def _public(area: object) -> bool:
    """True for a public area; anything that is not a known AreaTag counts as private."""
    try:
        return AreaTag(area).is_public
    except ValueError:
        return False


def _police_may_see(channel: Channel) -> bool:
    """Police rule: alarm inputs always; cameras only when an operator confirmed entrance/perimeter.

    The type must agree with the channel ID's own type digits, so a camera
    mislabelled as an alarm input in the registry still counts as a camera.
    The area suggested from the name (``channel.area``) never decides: a device
    (or whoever knows the shared password) names cameras, and renaming a nap-room
    camera "大门口" must not put it before the police. The name still guards the
    confirmation, because the name is what the police see: a confirmed entrance
    whose name says classroom ("小一班教室门口", or a later rename) stays private.
    """
    if _type_code(channel.id) != channel.type_code:
        return False
    if channel.type_code == DeviceType.ALARM_INPUT:
        return True
    if channel.type_code not in _CAMERA_TYPES:
        return False
    return _public(channel.confirmed_area) and name_allows_public(channel.name)


# --- catalog tree ----------------------------------------------------------------------


def business_group_id(system_id: str) -> str:
    """The business group (215) of our catalog: ``system_id[:10] + "215" + "0" + "000001"``.

    Same SIP domain as the system, type 215, network 0, serial 1: one group per
    gateway, stable across restarts so uppers keep their tree.
    """
    if not is_gb_id(system_id):
        raise InvalidDeviceId(f"system ID must be 20 digits: {system_id!r:.40}")
    return f"{system_id[:10]}2150000001"


def district_node_id(district_code: str) -> str:
    """The virtual organisation (216) of a district: ``code + "0000" + "216" + "0" + "000000"``.

    Grass-roots unit 00, industry 00 and serial 000000 keep it clear of the
    kindergartens' own 216 IDs (industry 11, serial ``KKKK00`` with KKKK >= 1).
    """
    if not _is_digits(district_code, 6):
        raise InvalidDeviceId(f"district civil code must be 6 digits: {district_code!r:.40}")
    return f"{district_code}00002160000000"


def _text(value: str) -> str | None:
    """Trimmed text or None: empty elements are omitted (the codec reads them back as absent)."""
    return value.strip() or None


def _coordinate(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _status(online: bool) -> str:
    return CatalogEvent.ON.value if online else CatalogEvent.OFF.value


@dataclass(frozen=True, slots=True)
class _Tree:
    """Where channels hang in one upper's tree, and the items that describe them."""

    policy: SharePolicy
    system_id: str
    group_id: str
    kindergartens: Mapping[str, Kindergarten]

    @classmethod
    def make(cls, policy: SharePolicy, system_id: str, kindergartens: Iterable[Kindergarten]) -> _Tree:
        return cls(policy, system_id, business_group_id(system_id), {kg.id: kg for kg in kindergartens})

    def kindergarten_of(self, channel: Channel) -> Kindergarten | None:
        """The channel's kindergarten when it can be a node of this tree (known, 216, in scope)."""
        kg = self.kindergartens.get(channel.kindergarten_id) if channel.kindergarten_id else None
        if kg is None or _type_code(kg.id) != DeviceType.VIRTUAL_ORGANISATION:
            return None
        if not _is_digits(kg.district_code, 6) or not self.policy.covers_kindergarten(kg):
            return None
        return kg

    def parent_of(self, channel: Channel) -> str:
        """Kindergarten node, else district node, else (no usable district) the business group."""
        kg = self.kindergarten_of(channel)
        if kg is not None:
            return kg.id
        if _is_digits(channel.district_code, 6):
            return district_node_id(channel.district_code)
        return self.group_id

    def channel_key(self, channel: Channel) -> tuple[str, str]:
        return (self.parent_of(channel), channel.id)

    def channel_item(self, channel: Channel, event: CatalogEvent | None = None) -> CatalogItem:
        """The full item of a shared channel (docs/gb28181.md §6.2 example fields)."""
        camera = channel.type_code in _CAMERA_TYPES
        return CatalogItem(
            device_id=channel.id,
            name=_text(channel.name) or channel.id,
            manufacturer=_text(channel.manufacturer),
            model=_text(channel.model),
            owner="Owner",
            civil_code=channel.district_code if _is_digits(channel.district_code, 6) else None,
            address=_text(channel.address),
            parental=0,
            parent_id=self.parent_of(channel),
            business_group_id=self.group_id,
            safety_way=0,
            register_way=1,
            secrecy=0,
            status=_status(channel.online),
            longitude=_coordinate(channel.longitude),
            latitude=_coordinate(channel.latitude),
            ptz_type=channel.ptz_type if camera else None,
            event=None if event is None else event.value,
        )

    def group_item(self, name: str) -> CatalogItem:
        return CatalogItem(
            device_id=self.group_id,
            name=_text(name) or DEFAULT_BUSINESS_GROUP_NAME,
            civil_code=self.system_id[:6],
            parent_id=self.system_id,
        )

    def node_items(self, channels: Iterable[Channel]) -> list[CatalogItem]:
        """District nodes (by code), then kindergarten nodes (by ID), that these channels need."""
        kgs: dict[str, Kindergarten] = {}
        districts: set[str] = set()
        for channel in channels:
            kg = self.kindergarten_of(channel)
            if kg is not None:
                kgs[kg.id] = kg
                districts.add(kg.district_code)
            elif _is_digits(channel.district_code, 6):
                districts.add(channel.district_code)
        items = [
            CatalogItem(
                device_id=district_node_id(code),
                name=TIANJIN_DISTRICTS.get(code, code),
                civil_code=code,
                business_group_id=self.group_id,
            )
            for code in sorted(districts)
        ]
        items += [
            CatalogItem(
                device_id=kg.id,
                name=self.policy.exposed_kindergarten_name(kg),
                civil_code=kg.district_code,
                # Not among the 216 fields listed in docs/gb28181.md §6.4, but harmless to platforms that ignore
                # them: the upper levels need the site's address and position for alarms.
                address=_text(kg.address),
                parent_id=district_node_id(kg.district_code),
                business_group_id=self.group_id,
                longitude=kg.longitude,
                latitude=kg.latitude,
            )
            for kg in (kgs[kg_id] for kg_id in sorted(kgs))
        ]
        return items


def _shared(policy: SharePolicy, channels: Iterable[Channel]) -> dict[str, Channel]:
    """Channels the policy allows, by ID (a repeated ID keeps its last row)."""
    return {channel.id: channel for channel in channels if policy.allows_channel(channel)}


def build_catalog(
    policy: SharePolicy,
    *,
    system_id: str,
    kindergartens: Iterable[Kindergarten],
    channels: Iterable[Channel],
    business_group_name: str = DEFAULT_BUSINESS_GROUP_NAME,
) -> list[CatalogItem]:
    """The whole catalog one upper platform is shown, in sending order (docs/gb28181.md §16.3).

    Business group, district nodes by code, kindergarten nodes by ID, then the
    shared channels by (parent node, ID). Nodes without a shared channel are
    left out. ``system_id`` is the 20-digit ID we register with at that upper;
    raises :class:`InvalidDeviceId` when it is not one.
    """
    tree = _Tree.make(policy, system_id, kindergartens)
    shared = sorted(_shared(policy, channels).values(), key=tree.channel_key)
    return [
        tree.group_item(business_group_name),
        *tree.node_items(shared),
        *(tree.channel_item(channel) for channel in shared),
    ]


def _visible_without_status(tree: _Tree, channel: Channel) -> tuple[CatalogItem, AreaTag, AreaTag | None]:
    """What an UPDATE compares: the full item minus presence, plus the suggested and confirmed areas."""
    return replace(tree.channel_item(channel), status=None), channel.area, channel.confirmed_area


def _channel_events(tree: _Tree, was: Channel | None, now: Channel) -> list[CatalogItem]:
    """ADD, or UPDATE and/or ON/OFF, for a channel the upper may see after the change."""
    if was is None:
        return [tree.channel_item(now, CatalogEvent.ADD)]
    items = []
    if _visible_without_status(tree, was) != _visible_without_status(tree, now):
        items.append(tree.channel_item(now, CatalogEvent.UPDATE))
    if was.online != now.online:
        event = CatalogEvent.ON if now.online else CatalogEvent.OFF
        items.append(CatalogItem(now.id, event=event.value))
    return items


def catalog_changes(
    policy: SharePolicy,
    before: Mapping[str, Channel],
    after: Mapping[str, Channel],
    *,
    system_id: str,
    kindergartens: Iterable[Kindergarten],
    unchanged: Iterable[Channel] = (),
) -> list[CatalogItem]:
    """Catalog NOTIFY items (docs/gb28181.md §14.3) that take one upper from ``before`` to ``after``.

    Both mappings are channel ID -> channel (the policy filters): every channel, or
    only the changed ones plus, in ``unchanged``, channels that stay where they are
    and keep tree nodes alive (one shared channel per kindergarten and district the
    change touches is enough: a node is deleted only when none is left under it).
    Per channel, as that upper sees it: newly allowed -> ADD (full item); no
    longer allowed -> DEL; otherwise UPDATE (full item) when what it is shown
    or its area changed, then ON/OFF when only presence changed or in addition
    to an UPDATE (receivers that ignore Status in UPDATE still learn it).
    Tree nodes follow their channels: a district or kindergarten node gets an
    ADD before the first channel under it and a DEL after its last one left.
    Order: node ADDs, channel events by (parent node, ID), node DELs.
    """
    tree = _Tree.make(policy, system_id, kindergartens)
    old = _shared(policy, before.values())
    new = _shared(policy, after.values())
    staying = [c for c in _shared(policy, unchanged).values() if c.id not in old and c.id not in new]

    old_nodes = {item.device_id: item for item in tree.node_items([*old.values(), *staying])}
    new_nodes = {item.device_id: item for item in tree.node_items([*new.values(), *staying])}
    added = [replace(item, event=CatalogEvent.ADD.value) for key, item in new_nodes.items() if key not in old_nodes]
    # Children before parents when deleting: kindergartens, then districts.
    removed = [CatalogItem(key, event=CatalogEvent.DEL.value) for key in reversed(old_nodes) if key not in new_nodes]

    events: list[tuple[tuple[str, str], CatalogItem]] = []
    for channel_id in old.keys() | new.keys():
        was, now = old.get(channel_id), new.get(channel_id)
        if now is not None:
            events += ((tree.channel_key(now), item) for item in _channel_events(tree, was, now))
        elif was is not None:
            events.append((tree.channel_key(was), CatalogItem(channel_id, event=CatalogEvent.DEL.value)))
    # A stable sort keeps an UPDATE before the ON/OFF of the same channel.
    events.sort(key=lambda pair: pair[0])
    return [*added, *(item for _, item in events), *removed]
