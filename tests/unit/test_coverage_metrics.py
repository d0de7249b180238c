"""``kgw_kindergartens{district,status}``: every status per district, bounded district labels."""

from __future__ import annotations

from gateway.coverage.service import CoverageService
from gateway.registry.directory import Directory
from gateway.registry.model import Device, Kindergarten
from gateway.registry.store_thread import StoreThread


def _samples(service: CoverageService) -> dict[tuple[str, str], float]:
    (family,) = list(service.collect())
    assert family.name == "kgw_kindergartens"
    return {(s.labels["district"], s.labels["status"]): s.value for s in family.samples}


def test_statuses_per_district_and_foreign_codes_share_one_label() -> None:
    directory = Directory()
    directory.add_kindergartens([Kindergarten("12010100112160000100", "甲", "120101")])
    directory.add_kindergartens(
        Kindergarten(f"{440000 + i:06d}00112160000100", f"外{i}", f"{440000 + i:06d}") for i in range(300)
    )
    directory.put_device(Device("12010100111340000101", "12010100112160000100", "120101", online=True))
    service = CoverageService(directory, StoreThread(":memory:"), clock=lambda: 1_800_000_000.0)
    samples = _samples(service)
    assert samples[("120101", "partial")] == 1 and samples[("120101", "complete")] == 0
    assert samples[("other", "missing")] == 300
    assert {d for d, _ in samples} == {"120101", "other"}  # 300 foreign codes: one series per status
    # A node serving some districts counts only theirs.
    served = CoverageService(directory, StoreThread(":memory:"), districts=frozenset({"440001"}), clock=lambda: 0.0)
    assert _samples(served) == {("440001", "complete"): 0, ("440001", "partial"): 0, ("440001", "missing"): 1}
