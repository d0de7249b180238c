"""The per-district metrics: bounded labels, kindergarten states, served districts, failure classes."""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client.core import Metric

from gateway.gb28181.registrar import RefusalReason
from gateway.httpapi.metrics import (
    FAILURE_CLASSES,
    DirectoryMetrics,
    NodeMetrics,
    RegistrationFailures,
    failure_class,
    kindergarten_state,
)
from gateway.registry.directory import Directory
from gateway.registry.model import Device, Kindergarten


def _device(n: int, district: str, kindergarten: str | None, online: bool) -> Device:
    return Device(id=f"{district}0000132{n:07d}", kindergarten_id=kindergarten, district_code=district, online=online)


def _families(metrics: DirectoryMetrics | NodeMetrics | RegistrationFailures) -> dict[str, Metric]:
    return {f.name: f for f in metrics.collect()}


def _directory() -> Directory:
    directory = Directory()
    directory.add_kindergartens(
        [
            Kindergarten("1201010000216" + "0000001", "全在线", "120101"),
            Kindergarten("1201010000216" + "0000002", "部分", "120101"),
            Kindergarten("1201030000216" + "0000003", "全离线", "120103"),
            Kindergarten("1201030000216" + "0000004", "无设备", "120103"),
        ]
    )
    kg1, kg2, kg3, _ = sorted(directory.kindergartens)
    rows = [
        _device(1, "120101", kg1, True),
        _device(2, "120101", kg1, True),
        _device(3, "120101", kg2, True),
        _device(4, "120101", kg2, False),
        _device(5, "120103", kg3, False),
        _device(6, "120103", None, True),  # not placed in a kindergarten: counts for the district only
    ]
    # A city's worth of devices claiming civil codes outside the city: one "other" series, not thousands.
    rows += [_device(100 + i, f"{440000 + i:06d}", None, True) for i in range(500)]
    for row in rows:
        directory.put_device(row)
    return directory


def test_kindergarten_state() -> None:
    assert kindergarten_state(0, 0) == "no_devices"
    assert kindergarten_state(3, 0) == "offline"
    assert kindergarten_state(3, 1) == "partial"
    assert kindergarten_state(3, 3) == "online"


def test_district_series_are_bounded_and_kindergartens_have_states() -> None:
    families = _families(DirectoryMetrics(_directory()))
    online = {s.labels["district"]: s.value for s in families["kgw_district_devices_online"].samples}
    known = {s.labels["district"]: s.value for s in families["kgw_district_devices_known"].samples}
    assert online == {"120101": 3, "120103": 1, "other": 500}
    assert known == {"120101": 4, "120103": 2, "other": 500}
    states = {
        (s.labels["district"], s.labels["state"]): s.value for s in families["kgw_district_kindergartens"].samples
    }
    assert states == {
        ("120101", "online"): 1,
        ("120101", "partial"): 1,
        ("120101", "offline"): 0,
        ("120101", "no_devices"): 0,
        ("120103", "online"): 0,
        ("120103", "partial"): 0,
        ("120103", "offline"): 1,
        ("120103", "no_devices"): 1,
    }
    assert families["kgw_devices_known"].samples[0].value == 506  # the totals stay whole


def test_a_node_reports_only_the_districts_it_serves() -> None:
    families = _families(DirectoryMetrics(_directory(), districts=("120103",)))
    assert {s.labels["district"] for s in families["kgw_district_devices_known"].samples} == {"120103"}
    assert {s.labels["district"] for s in families["kgw_district_kindergartens"].samples} == {"120103"}


def test_node_info_names_the_process_and_its_districts() -> None:
    families = _families(NodeMetrics("gateway-a", "12010000002090000001", "gateway", ("120102", "120101")))
    [info] = families["kgw_node_info"].samples
    assert info.labels == {"node": "gateway-a", "gateway_id": "12010000002090000001", "role": "gateway"}
    served = [s.labels["district"] for s in families["kgw_node_district"].samples]
    assert served == ["120101", "120102"]
    assert [s.labels["district"] for s in _families(NodeMetrics("g", "1", "gateway"))["kgw_node_district"].samples] == [
        "all"
    ]


def test_every_refusal_reason_has_a_class_and_handshakes_are_no_failures() -> None:
    assert failure_class("ok") is None and failure_class("refresh") is None
    assert failure_class(RefusalReason.CHALLENGED.value) is None  # the 401 of digest's first round
    assert failure_class(RefusalReason.STALE_NONCE.value) is None
    for reason in RefusalReason:
        if reason not in (RefusalReason.CHALLENGED, RefusalReason.STALE_NONCE):
            assert failure_class(reason.value) in FAILURE_CLASSES and failure_class(reason.value) != "other", reason
    assert failure_class(RefusalReason.BAD_PASSWORD.value) == "auth"
    assert failure_class(RefusalReason.NOT_PROVISIONED.value) == "forbidden"
    assert failure_class(RefusalReason.MISSING_EXPIRES.value) == "malformed"
    assert failure_class(RefusalReason.THROTTLED.value) == "busy"
    # Reasons added by the cluster's redirect and district checks land in their classes by name.
    assert failure_class("redirected") == "redirect"
    assert failure_class("district_not_served") == "forbidden"
    assert failure_class("something_new") == "other"


def test_registration_failures_sum_the_registration_counter() -> None:
    registrations = Counter("kgw_registrations", "REGISTER outcomes by result", ["result"], registry=None)
    for result, times in (("ok", 5), ("challenged", 9), ("bad_password", 2), ("replayed", 1), ("redirected", 4)):
        registrations.labels(result=result).inc(times)
    [family] = RegistrationFailures(registrations).collect()
    values = {s.labels["reason"]: s.value for s in family.samples}
    assert values == {"auth": 3, "forbidden": 0, "redirect": 4, "malformed": 0, "busy": 0, "other": 0}
    assert {s.name for s in family.samples} == {"kgw_registration_failures_total"}
