"""Catalog reassembly across MESSAGEs: completion, gap and first-chunk time-outs, caps."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.gb28181.catalog import (
    DEFAULT_FIRST_CHUNK_TIMEOUT,
    DEFAULT_GAP_TIMEOUT,
    CatalogAssembler,
    CatalogCompleted,
    TooManyAssemblies,
)
from gateway.gb28181.manscdp import CatalogItem, CatalogResponse, parse_manscdp, serialize, split_catalog

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "manscdp"
NVR = "34020000001110000001"


def _items(n: int, start: int = 0) -> list[CatalogItem]:
    return [CatalogItem(f"3402000000132{i:07d}", name=f"幼儿园通道{i}") for i in range(start, start + n)]


def _chunk(sn: int, sum_num: int, items: list[CatalogItem], device_id: str = NVR) -> CatalogResponse:
    return CatalogResponse(sn, device_id, sum_num, tuple(items))


def test_single_chunk_completes_at_once() -> None:
    assembler = CatalogAssembler()
    done = assembler.add(_chunk(1, 2, _items(2)), now=10.0)
    assert done == CatalogCompleted(NVR, 1, tuple(_items(2)), 2, partial=False, timed_out=False)
    assert len(assembler) == 0
    assert assembler.get_timer() is None


def test_three_chunk_catalog_of_2000_items_through_the_wire() -> None:
    assembler = CatalogAssembler()
    assembler.expect(NVR, 17430, now=0.0)
    items = _items(2000)
    chunks = split_catalog(17430, NVR, items, 667)
    assert len(chunks) == 3
    results = []
    for t, chunk in enumerate(chunks, start=1):
        parsed = parse_manscdp(serialize(chunk, "GB2312"))
        assert isinstance(parsed, CatalogResponse)
        results.append(assembler.add(parsed, now=float(t)))
    assert results[:2] == [None, None]
    done = results[2]
    assert isinstance(done, CatalogCompleted)
    assert done.items == tuple(items)
    assert (done.sum_num, done.partial, done.timed_out) == (2000, False, False)
    assert assembler.get_timer() is None


def test_chunks_out_of_order_and_duplicated_items() -> None:
    assembler = CatalogAssembler()
    items = _items(5)
    assert assembler.add(_chunk(3, 5, items[3:5]), now=0.0) is None
    assert assembler.add(_chunk(3, 5, items[0:2]), now=0.1) is None
    assert assembler.add(_chunk(3, 5, items[0:2]), now=0.2) is None  # same items again: still 4 distinct
    done = assembler.add(_chunk(3, 5, items[2:3]), now=0.3)
    assert done is not None
    assert {i.device_id for i in done.items} == {i.device_id for i in items}
    assert len(done.items) == 5
    assert done.partial is False


def test_sum_num_zero_completes_immediately() -> None:
    assembler = CatalogAssembler()
    assembler.expect(NVR, 5, now=0.0)
    done = assembler.add(_chunk(5, 0, []), now=1.0)
    assert done == CatalogCompleted(NVR, 5, (), 0, partial=False, timed_out=False)
    assert assembler.get_timer() is None


def test_unexpected_sum_num_zero_completes_immediately() -> None:
    done = CatalogAssembler().add(_chunk(6, 0, []), now=1.0)
    assert done is not None
    assert (done.items, done.partial) == ((), False)


def test_gap_timeout_commits_partial() -> None:
    assembler = CatalogAssembler()
    assembler.expect(NVR, 9, now=0.0)
    assert assembler.get_timer() == DEFAULT_FIRST_CHUNK_TIMEOUT
    assert assembler.add(_chunk(9, 6, _items(2)), now=1.0) is None
    assert assembler.get_timer() == 1.0 + DEFAULT_GAP_TIMEOUT
    assert assembler.add(_chunk(9, 6, _items(2, 2)), now=3.0) is None
    assert assembler.get_timer() == 3.0 + DEFAULT_GAP_TIMEOUT
    assert assembler.handle_timer(now=7.9) == []
    done = assembler.handle_timer(now=8.0)
    assert done == [CatalogCompleted(NVR, 9, tuple(_items(4)), 6, partial=True, timed_out=False)]
    assert assembler.get_timer() is None
    assert len(assembler) == 0


def test_chunk_after_gap_commit_reopens_the_partial_catalog() -> None:
    assembler = CatalogAssembler(gap_timeout=5.0)
    items = _items(3)
    assembler.add(_chunk(9, 3, items[:2]), now=0.0)
    first = assembler.handle_timer(now=5.0)
    assert [(len(d.items), d.partial) for d in first] == [(2, True)]
    done = assembler.add(_chunk(9, 3, items[2:]), now=6.0)
    assert done == CatalogCompleted(NVR, 9, tuple(items), 3, partial=False)


def test_no_chunk_before_first_deadline_times_out() -> None:
    assembler = CatalogAssembler(first_chunk_timeout=120.0)
    assembler.expect(NVR, 11, now=5.0)
    assert assembler.handle_timer(now=124.9) == []
    done = assembler.handle_timer(now=125.0)
    assert done == [CatalogCompleted(NVR, 11, (), 0, partial=True, timed_out=True)]
    assert assembler.get_timer() is None


def test_first_chunk_switches_to_gap_deadline() -> None:
    assembler = CatalogAssembler(first_chunk_timeout=120.0, gap_timeout=5.0)
    assembler.expect(NVR, 12, now=0.0)
    assembler.add(_chunk(12, 3, _items(1)), now=100.0)
    assert assembler.get_timer() == 105.0
    assert assembler.handle_timer(now=120.0)[0].timed_out is False


def test_unsolicited_catalog_after_register_is_accepted() -> None:
    # sbgb pushes its catalog with SN 1 right after registering, without any query.
    msg = parse_manscdp((FIXTURES / "sbgb_catalog_unsolicited_sn1_no_num.xml").read_bytes())
    assert isinstance(msg, CatalogResponse)
    done = CatalogAssembler().add(msg, now=0.0)
    assert done is not None
    assert (done.device_id, done.sn, done.partial) == ("34020000001320000002", 1, False)
    assert [i.device_id for i in done.items] == ["34020000001310000003"]


def test_devices_with_the_same_sn_are_separate() -> None:
    assembler = CatalogAssembler()
    other = "34020000001110000002"
    assert assembler.add(_chunk(1, 2, _items(1)), now=0.0) is None
    assert assembler.add(_chunk(1, 2, _items(1, 1), device_id=other), now=0.0) is None
    assert len(assembler) == 2
    done = assembler.add(_chunk(1, 2, _items(1, 5)), now=0.1)
    assert done is not None
    assert done.device_id == NVR
    assert len(assembler) == 1


def test_late_duplicate_of_the_last_chunk_is_ignored() -> None:
    # Without this, the duplicate would start a new assembly and 5 s later commit a
    # partial catalog over the complete one.
    assembler = CatalogAssembler()
    items = _items(3)
    assembler.add(_chunk(2, 3, items[:2]), now=0.0)
    assert assembler.add(_chunk(2, 3, items[2:]), now=0.1) is not None
    assert assembler.add(_chunk(2, 3, items[2:]), now=1.0) is None
    assert len(assembler) == 0
    assert assembler.dropped_chunks == 1
    assert assembler.handle_timer(now=100.0) == []


def test_same_sn_with_new_content_starts_a_new_assembly() -> None:
    assembler = CatalogAssembler()
    assert assembler.add(_chunk(1, 1, _items(1)), now=0.0) is not None
    changed = [CatalogItem(_items(1)[0].device_id, name="renamed")]
    done = assembler.add(_chunk(1, 1, changed), now=1.0)
    assert done is not None
    assert done.items[0].name == "renamed"


def test_duplicate_memory_expires_and_expect_resets_it() -> None:
    assembler = CatalogAssembler(linger=30.0)
    assert assembler.add(_chunk(1, 1, _items(1)), now=0.0) is not None
    assert assembler.add(_chunk(1, 1, _items(1)), now=31.0) is not None
    assembler.expect(NVR, 1, now=32.0)
    assert assembler.add(_chunk(1, 1, _items(1)), now=33.0) is not None


def test_items_per_assembly_are_capped() -> None:
    assembler = CatalogAssembler(max_items=5)
    assert assembler.add(_chunk(4, 10, _items(3)), now=0.0) is None
    done = assembler.add(_chunk(4, 10, _items(4, 3)), now=0.1)
    assert done is not None
    assert len(done.items) == 5
    assert (done.sum_num, done.partial) == (10, True)
    assert assembler.dropped_items == 2


def test_concurrent_assemblies_are_capped() -> None:
    assembler = CatalogAssembler(max_assemblies=2)
    assembler.expect(NVR, 1, now=0.0)
    assembler.expect(NVR, 2, now=0.0)
    with pytest.raises(TooManyAssemblies):
        assembler.expect(NVR, 3, now=0.0)
    assert assembler.add(_chunk(4, 2, _items(1)), now=0.0) is None
    assert assembler.dropped_chunks == 1
    assert len(assembler) == 2
    # A chunk that completes an expected query still gets through.
    assert assembler.add(_chunk(1, 1, _items(1)), now=0.0) is not None


def test_expect_after_the_first_chunk_keeps_the_gap_deadline() -> None:
    assembler = CatalogAssembler()
    assembler.add(_chunk(8, 2, _items(1)), now=0.0)
    assembler.expect(NVR, 8, now=0.5)
    assert assembler.get_timer() == DEFAULT_GAP_TIMEOUT


def test_sum_num_correction_uses_the_latest_value() -> None:
    assembler = CatalogAssembler()
    assert assembler.add(_chunk(5, 4, _items(2)), now=0.0) is None
    done = assembler.add(_chunk(5, 3, _items(1, 2)), now=0.1)
    assert done is not None
    assert (len(done.items), done.sum_num, done.partial) == (3, 3, False)


def test_many_chunks_keep_the_timer_heap_small() -> None:
    assembler = CatalogAssembler()
    for i in range(500):
        assembler.add(_chunk(1, 10_000, _items(1, i)), now=float(i))
    assert assembler.get_timer() == 499.0 + DEFAULT_GAP_TIMEOUT
    assert len(assembler._heap) <= 4 * len(assembler) + 64 + 1  # stale deadlines are compacted away
    done = assembler.handle_timer(now=1e9)
    assert len(done) == 1
    assert len(done[0].items) == 500
