"""Placing devices and channels in the city: kindergarten, district, area tag.

A device's district is its civil code (the first six digits of its ID). Its
kindergarten comes from provisioning, or from the city's numbering
convention (docs/architecture.md §4): digits 15-18 of every
device and channel ID of a kindergarten are its number ``KKKK``, and the
kindergarten itself is the virtual-organisation code
``<first 10 digits>2160KKKK00``. The convention only places a device when a
kindergarten with that code was provisioned, so a foreign numbering scheme
never invents kindergartens.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from gateway.gb28181.ids import is_civil_code, is_gb_id
from gateway.gb28181.manscdp import CatalogItem
from gateway.registry.model import Channel, Device, Kindergarten, guess_area

VIRTUAL_ORGANISATION = 216


def kindergarten_id_by_convention(any_id: str) -> str | None:
    """``<first 10 digits>2160<KKKK>00`` for a 20-digit ID, else None."""
    if not is_gb_id(any_id):
        return None
    return f"{any_id[:10]}2160{any_id[14:18]}00"


def place_device(device_id: str, provisioned: str | None, known: Container[str]) -> str | None:
    """A device's kindergarten: as provisioned, else by the numbering convention if that one is known."""
    if provisioned:
        return provisioned
    candidate = kindergarten_id_by_convention(device_id)
    return candidate if candidate in known else None


def kindergartens_in_catalog(items: Sequence[CatalogItem]) -> dict[str, Kindergarten]:
    """Kindergartens a lower *platform's* catalog describes: the 216 nodes channels hang under.

    A platform (unlike an NVR) sends its tree: virtual-organisation nodes and, under
    them, channels whose ParentID names their kindergarten. A 216 node that no
    channel hangs under and no other 216 contains (a district, a group) is not a
    kindergarten.
    """
    parents = {item.parent_id for item in items if item.parent_id and _type_code(item.device_id) not in (215, 216)}
    found: dict[str, Kindergarten] = {}
    for item in items:
        if _type_code(item.device_id) != VIRTUAL_ORGANISATION:
            continue
        # A NOTIFY may carry a node without its channels (they come in the next chunk):
        # a 216 nested under another 216 (kindergarten under district) counts too.
        nested = bool(item.parent_id) and _type_code(item.parent_id or "") == VIRTUAL_ORGANISATION
        if item.device_id not in parents and not nested:
            continue
        district = item.civil_code[:6] if item.civil_code and is_civil_code(item.civil_code[:6]) else item.device_id[:6]
        found[item.device_id] = Kindergarten(
            id=item.device_id,
            name=(item.name or item.device_id).strip()[:200],
            district_code=district,
            address=(item.address or "")[:200],
            longitude=item.longitude,
            latitude=item.latitude,
        )
    return found


#: Central devices (GB/T 28181 type codes 200-214: SIP servers, platforms, access
#: gateways) send trees; front-end devices (1xx: NVRs, cameras, alarm boxes) never do.
_CENTRAL_TYPES = range(200, 215)


def civil_prefix(any_id: str) -> str:
    """The administrative area an ID belongs to: its civil code without trailing "00" levels.

    ``12010000002090000001`` (a city gateway) -> ``1201``; ``12010100002000000001``
    (a district platform) -> ``120101``.
    """
    code = any_id[:8]
    while len(code) > 2 and code.endswith("00"):
        code = code[:-2]
    return code


def kindergartens_taught(sender_id: str, items: Sequence[CatalogItem]) -> tuple[list[Kindergarten], int]:
    """The kindergartens ``sender_id``'s catalog may teach, and how many 216 nodes it may not (L5).

    Only configured kindergartens exist: a front-end device (an NVR with the shared
    password) naming a 216 node creates nothing, and a lower platform or gateway
    teaches only kindergartens inside its own administrative area (a district
    platform cannot create one in another district). Refused nodes' channels stay
    in their device's kindergarten, or unplaced.
    """
    found = kindergartens_in_catalog(items)
    if not found:
        return [], 0
    if _type_code(sender_id) not in _CENTRAL_TYPES:
        return [], len(found)
    prefix = civil_prefix(sender_id)
    taught = [kg for kg in found.values() if kg.id.startswith(prefix) and kg.district_code.startswith(prefix)]
    return taught, len(found) - len(taught)


def _type_code(any_id: str) -> int | None:
    return int(any_id[10:13]) if is_gb_id(any_id) else None


def channel_from_item(
    item: CatalogItem, device: Device, now: float, *, kindergarten_id: str | None = None
) -> Channel | None:
    """A registry channel from a catalog item; None for tree nodes (regions, groups).

    ``kindergarten_id`` overrides the device's (a lower platform's channel hangs
    under its kindergarten's 216 node, see :func:`kindergartens_in_catalog`).

    Region items (2-8 digit civil codes) and business-group / virtual
    organisation nodes (215/216) describe the tree, not a camera or alarm input.
    """
    if not is_gb_id(item.device_id):
        return None
    type_code = int(item.device_id[10:13])
    if type_code in (215, 216) or is_civil_code(item.device_id):
        return None
    name = (item.name or "").strip()[:200]
    district = item.civil_code[:6] if item.civil_code and is_civil_code(item.civil_code[:6]) else device.district_code
    return Channel(
        id=item.device_id,
        device_id=device.id,
        kindergarten_id=kindergarten_id or device.kindergarten_id,
        district_code=district,
        name=name,
        area=guess_area(name),
        type_code=type_code,
        manufacturer=(item.manufacturer or "")[:80],
        model=(item.model or "")[:80],
        address=(item.address or "")[:200],
        parent_id=(item.parent_id or "")[:40],
        online=item.online is not False,
        longitude=item.longitude,
        latitude=item.latitude,
        ptz_type=item.ptz_type,
        updated_at=now,
    )
