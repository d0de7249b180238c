"""Placing channels: by the city convention for devices, by the tree for a lower platform's catalog."""

from __future__ import annotations

from gateway.gb28181.manscdp import CatalogItem
from gateway.registry.model import AreaTag, Device
from gateway.registry.placement import channel_from_item, kindergarten_id_by_convention, kindergartens_in_catalog

PLATFORM = Device(id="12010100002000000001", kindergarten_id=None, district_code="120101")
KG = "12010100112160000300"
DISTRICT_NODE = "12010100002160000000"


def test_convention_places_by_the_kindergarten_number() -> None:
    assert kindergarten_id_by_convention("12010100111310000305") == KG
    assert kindergarten_id_by_convention("not-an-id") is None


def test_a_platform_tree_names_its_kindergartens_and_channels_hang_under_them() -> None:
    items = [
        CatalogItem("12010000002150000001", name="幼儿园安全监控"),
        CatalogItem(DISTRICT_NODE, name="和平区", civil_code="120101", business_group_id="12010000002150000001"),
        CatalogItem(
            KG,
            name="和平区第三幼儿园",
            civil_code="120101",
            parent_id=DISTRICT_NODE,
            address="和平路3号",
            longitude=117.2,
            latitude=39.1,
        ),
        CatalogItem(
            "12010100111310000301", name="和平区第三幼儿园·大门口", civil_code="120101", parent_id=KG, status="ON"
        ),
    ]
    learned = kindergartens_in_catalog(items)
    assert list(learned) == [KG]  # the district node has no channel under it
    kg = learned[KG]
    assert (kg.name, kg.district_code, kg.address, kg.longitude) == ("和平区第三幼儿园", "120101", "和平路3号", 117.2)
    channels = [
        c
        for item in items
        if (
            c := channel_from_item(
                item, PLATFORM, 1.0, kindergarten_id=item.parent_id if item.parent_id in learned else None
            )
        )
    ]
    assert [(c.id, c.kindergarten_id, c.device_id, c.area) for c in channels] == [
        ("12010100111310000301", KG, PLATFORM.id, AreaTag.ENTRANCE)
    ]


def test_an_nvr_catalog_has_no_kindergarten_nodes() -> None:
    items = [CatalogItem("12010100111310000301", name="大门口", parent_id="12010100111180000300")]
    assert kindergartens_in_catalog(items) == {}
