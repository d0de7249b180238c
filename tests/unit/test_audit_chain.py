"""The audit hash chain (pure): verification names the first record that was edited, deleted, reordered or inserted."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from gateway.audit.chain import (
    GENESIS,
    AuditEntry,
    AuditRecord,
    BadDetail,
    ChainHead,
    canonical_bytes,
    canonical_detail,
    chain,
    link,
    verify,
)


def entries(n: int) -> list[AuditEntry]:
    return [
        AuditEntry(
            at=1_700_000_000.0 + i * 1.25,
            actor=f"user{i % 3}",
            role="district_duty",
            via="session",
            source="127.0.0.1",
            action="live_view",
            target=f"1201010000131000000{i % 10}",
            detail=canonical_detail({"op": "open", "n": i, "名": "午睡室"}),
            duration=None if i % 2 else i * 0.5,
        )
        for i in range(n)
    ]


def trail(n: int = 10) -> list[AuditRecord]:
    records, _ = chain(ChainHead(), entries(n))
    return records


def test_chain_is_sequenced_from_genesis_and_verifies() -> None:
    records = trail(10)
    assert [r.seq for r in records] == list(range(1, 11))
    assert records[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(records, records[1:], strict=False))
    first = records[0]
    expected = hashlib.sha256(bytes.fromhex(GENESIS) + canonical_bytes(1, first.entry)).hexdigest()
    assert first.hash == expected
    result = verify(records)
    assert result.ok and result.count == 10 and result.head == ChainHead(10, records[-1].hash)


def test_canonical_bytes_are_sorted_compact_utf8() -> None:
    entry = entries(1)[0]
    text = canonical_bytes(1, entry).decode()
    assert text.startswith('{"action":"live_view","actor":"user0","at":1700000000.0,')
    assert " " not in text.replace("午睡室", "") and "午睡室" in text


def test_chain_continues_from_a_head() -> None:
    first, head = chain(ChainHead(), entries(3))
    more, _ = chain(head, entries(2))
    assert more[0].seq == 4 and more[0].prev_hash == first[-1].hash
    assert verify([*first, *more]).ok


def test_edited_time_is_named() -> None:
    records = trail()
    records[4] = dataclasses.replace(
        records[4], entry=dataclasses.replace(records[4].entry, at=records[4].entry.at + 1)
    )
    result = verify(records)
    assert result.bad_seq == 5 and "edited" in result.reason and result.count == 4


@pytest.mark.parametrize("field", ["actor", "role", "source", "target", "outcome", "detail"])
def test_any_edited_field_is_named(field: str) -> None:
    records = trail()
    records[2] = dataclasses.replace(records[2], entry=dataclasses.replace(records[2].entry, **{field: "x"}))
    assert verify(records).bad_seq == 3


def test_edited_duration_is_named() -> None:
    records = trail()
    records[0] = dataclasses.replace(records[0], entry=dataclasses.replace(records[0].entry, duration=0.001))
    assert verify(records).bad_seq == 1


def test_rehashed_edit_breaks_the_next_link() -> None:
    """An attacker who recomputes the edited record's own hash still breaks its successor's prev_hash."""
    records = trail()
    forged = link(ChainHead(5, records[4].hash), dataclasses.replace(records[5].entry, actor="nobody"))
    records[5] = forged
    result = verify(records)
    assert result.bad_seq == 7 and "prev_hash" in result.reason


def test_deleted_record_is_named() -> None:
    records = trail()
    del records[6]
    result = verify(records)
    assert result.bad_seq == 7 and "missing" in result.reason


def test_deleted_first_record_is_named() -> None:
    assert verify(trail()[1:]).bad_seq == 1


def test_reordered_records_are_named() -> None:
    records = trail()
    records[3], records[4] = records[4], records[3]
    assert verify(records).bad_seq == 4


def test_swapped_seq_numbers_are_named() -> None:
    """Two rows whose seq were swapped (read back in seq order): the content no longer hashes."""
    records = trail()
    a, b = records[3], records[4]
    records[3] = dataclasses.replace(b, seq=4)
    records[4] = dataclasses.replace(a, seq=5)
    assert verify(records).bad_seq == 4


def test_inserted_record_is_named() -> None:
    records = trail()
    forged = link(ChainHead(3, records[2].hash), entries(1)[0])
    records.insert(3, forged)
    result = verify(records)
    assert result.bad_seq == 5, result  # the forgery takes seq 4; the real seq 4 then comes out of place


def test_duplicated_record_is_named() -> None:
    records = trail()
    records.insert(3, records[2])
    result = verify(records)
    assert result.bad_seq == 4 and "out of order" in result.reason


def test_empty_trail_is_intact() -> None:
    result = verify([])
    assert result.ok and result.count == 0 and result.head == ChainHead()


def test_bad_values_are_refused() -> None:
    with pytest.raises(BadDetail):
        canonical_detail({"x": float("nan")})
    with pytest.raises(ValueError):
        AuditEntry(at=float("inf"), actor="", role="", via="", source="", action="x")
    with pytest.raises(ValueError):
        AuditEntry(at=1.0, actor="", role="", via="", source="", action="x", duration=float("nan"))
