"""Catalogs describe only their sender's own channels; confirmations survive catalogs; 216 nodes need a right.

Pure: a Directory, the catalog appliers of both roles, no sockets.
"""

from __future__ import annotations

from gateway.gb28181.manscdp import CatalogItem
from gateway.registry.catalogs import DeviceCatalogs
from gateway.registry.directory import Directory
from gateway.registry.model import AreaConfirmation, AreaTag, Device, Kindergarten
from gateway.registry.placement import civil_prefix, kindergartens_taught
from gbplatform.lower_catalogs import LowerPlatformCatalogs

KG = "12010100112160000100"
NVR_A = "12010100111180000100"
NVR_B = "12010100111180000200"
GATE = "12010100111310000101"
NAP = "12010100111310000104"
B_OWN = "12010100111310000201"


def directory() -> Directory:
    d = Directory()
    d.add_kindergartens([Kindergarten(KG, "和平区第1幼儿园", "120101")])
    d.put_device(Device(NVR_A, KG, "120101", online=True))
    d.put_device(Device(NVR_B, None, "120101", online=True))
    return d


def item(channel_id: str, name: str, **kw: object) -> CatalogItem:
    return CatalogItem(device_id=channel_id, name=name, **kw)  # type: ignore[arg-type]


def test_a_full_catalog_cannot_take_another_devices_channel() -> None:
    d = directory()
    DeviceCatalogs().apply_catalog(d, NVR_A, [item(GATE, "大门口")], False, 1.0)
    update = DeviceCatalogs().apply_catalog(d, NVR_B, [item(GATE, "大门口"), item(B_OWN, "x")], False, 2.0)
    assert update is not None and [c.id for c in update.stored] == [B_OWN]
    assert d.channels[GATE].device_id == NVR_A and d.device_of(GATE) == NVR_A
    assert [(c.channel_id, c.owner_id, c.claimant_id, c.path) for c in update.conflicts] == [
        (GATE, NVR_A, NVR_B, "catalog")
    ]
    assert d.conflicts_total == 1 and list(d.conflicts) == list(update.conflicts)


def test_a_partial_catalog_and_a_notify_follow_the_same_rule() -> None:
    d = directory()
    DeviceCatalogs().apply_catalog(d, NVR_A, [item(GATE, "大门口")], False, 1.0)
    assert DeviceCatalogs().apply_catalog(d, NVR_B, [item(GATE, "x")], True, 2.0) is not None
    update = LowerPlatformCatalogs().apply_notify(d, NVR_B, [item(GATE, "x", event="UPDATE")], 3.0)
    assert update is not None and update.conflicts[0].path == "notify"
    assert LowerPlatformCatalogs().apply_catalog(d, NVR_B, [item(GATE, "x")], False, 4.0) is not None
    assert d.channels[GATE].device_id == NVR_A and d.channels[GATE].name == "大门口"
    assert d.conflicts_total == 3


def test_a_channel_moves_once_its_owner_let_go_of_it() -> None:
    """Re-wiring a camera to another NVR: the old NVR's catalog stops listing it, the new one's takes it."""
    d = directory()
    DeviceCatalogs().apply_catalog(d, NVR_A, [item(GATE, "大门口")], False, 1.0)
    DeviceCatalogs().apply_catalog(d, NVR_A, [], False, 2.0)
    update = DeviceCatalogs().apply_catalog(d, NVR_B, [item(GATE, "大门口")], False, 3.0)
    assert update is not None and not update.conflicts and d.channels[GATE].device_id == NVR_B


def test_another_devices_own_id_is_that_devices() -> None:
    d = directory()
    update = DeviceCatalogs().apply_catalog(d, NVR_B, [item(NVR_A, "x")], False, 1.0)
    assert update is not None and update.conflicts and NVR_A not in d.channels


def test_a_catalog_never_changes_a_confirmation_and_a_rename_flags_it() -> None:
    d = directory()
    d.confirm_area(AreaConfirmation(GATE, AreaTag.ENTRANCE, "installer", 1.0, "大门口"), 0.0)
    d.confirm_area(AreaConfirmation(NAP, AreaTag.DORMITORY, "installer", 1.0, "午睡室"), 0.0)
    update = DeviceCatalogs().apply_catalog(d, NVR_A, [item(GATE, "大门口"), item(NAP, "午睡室")], False, 2.0)
    assert update is not None and update.after[GATE].confirmed_area is AreaTag.ENTRANCE
    assert not d.channels[GATE].area_review
    DeviceCatalogs().apply_catalog(d, NVR_A, [item(GATE, "小一班教室"), item(NAP, "大门口")], False, 3.0)
    gate, nap = d.channels[GATE], d.channels[NAP]
    assert (gate.confirmed_area, gate.area_review, gate.area) == (AreaTag.ENTRANCE, True, AreaTag.CLASSROOM)
    assert (nap.confirmed_area, nap.area_review, nap.area) == (AreaTag.DORMITORY, True, AreaTag.ENTRANCE)
    # Dropped and re-added by a catalog: still confirmed.
    DeviceCatalogs().apply_catalog(d, NVR_A, [], False, 4.0)
    DeviceCatalogs().apply_catalog(d, NVR_A, [item(GATE, "大门口")], False, 5.0)
    assert d.channels[GATE].confirmed_area is AreaTag.ENTRANCE and not d.channels[GATE].area_review


def test_alarm_links_use_the_confirmed_entrance_only() -> None:
    d = directory()
    DeviceCatalogs().apply_catalog(d, NVR_A, [item(GATE, "侧门"), item(NAP, "午睡室·大门口")], False, 1.0)
    assert d.entrance_camera(KG) is None  # names decide nothing
    change = d.confirm_area(AreaConfirmation(GATE, AreaTag.ENTRANCE, "op", 2.0), 2.0)
    assert change is not None and change.after[GATE].confirmed_area is AreaTag.ENTRANCE
    assert d.entrance_camera(KG) == GATE
    assert d.clear_area(GATE, 3.0) is not None and d.entrance_camera(KG) is None


def test_restore_brings_confirmations_back() -> None:
    d = directory()
    DeviceCatalogs().apply_catalog(d, NVR_A, [item(GATE, "大门口")], False, 1.0)
    restored = Directory()
    restored.restore(
        [e.row for e in d.devices.values()],
        list(d.channels.values()),
        d.kindergartens.values(),
        [AreaConfirmation(GATE, AreaTag.ENTRANCE, "op", 2.0, "大门口")],
    )
    assert restored.channels[GATE].confirmed_area is AreaTag.ENTRANCE and restored.entrance_camera(KG) == GATE


def test_only_central_devices_teach_kindergartens_of_their_own_area() -> None:
    node = item("12010100112160099900", "某幼儿园", civil_code="120101")
    other_district = item("12010300112160000100", "河西某园", civil_code="120103")
    tree = [
        node,
        item(GATE, "x", parent_id=node.device_id),
        other_district,
        item(NAP, "y", parent_id="12010300112160000100"),
    ]
    assert kindergartens_taught(NVR_A, tree) == ([], 2)  # an NVR teaches none
    taught, refused = kindergartens_taught("12010100002000000001", tree)  # Heping's district platform
    assert [k.id for k in taught] == [node.device_id] and refused == 1
    taught, refused = kindergartens_taught("12010000002090000001", tree)  # the city's access gateway
    assert len(taught) == 2 and refused == 0
    assert civil_prefix("12010000002090000001") == "1201" and civil_prefix("12010100002000000001") == "120101"


def test_a_platform_counts_what_it_refused_to_learn() -> None:
    d = directory()
    node = item("12010100112160099900", "某幼儿园", civil_code="120101")
    update = LowerPlatformCatalogs().apply_catalog(
        d, NVR_A, [node, item(GATE, "大门口", parent_id=node.device_id)], False, 1.0
    )
    assert update is not None and not update.kindergartens
    assert node.device_id not in d.kindergartens and d.unknown_kindergartens_total == 1
    assert d.channels[GATE].kindergarten_id == KG  # placed by its device's kindergarten
