"""The audit store in SQLite (append-only by triggers, one chain across connections) and the batched recorder."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gateway.audit.actions import AuditAction
from gateway.audit.backends import append_now
from gateway.audit.chain import AuditEntry, verify
from gateway.audit.sqlite_store import AppendOnlyViolation, SqliteAuditStore, _mapped
from gateway.audit.store import AuditFilter
from gateway.audit.trail import AuditTrail, make_entry
from gateway.errors import StoreError
from gateway.security.principal import Principal, Role

LI = Principal("li", Role.DISTRICT_DUTY, district_code="120101", source="10.0.0.7", via="session")
WANG = Principal("wang", Role.POLICE, source="10.9.0.1", via="token")


def entry(i: int, actor: str = "li", action: str = "live_view") -> AuditEntry:
    return AuditEntry(at=1000.0 + i, actor=actor, role="district_duty", via="session", source="s", action=action)


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteAuditStore(str(tmp_path / "kgw.db"))
    s.open()
    yield s
    s.close()


def test_append_chains_and_reads_back(store: SqliteAuditStore) -> None:
    first = store.append([entry(i) for i in range(3)])
    second = store.append([entry(i) for i in range(3, 5)])
    assert [r.seq for r in first + second] == [1, 2, 3, 4, 5]
    assert second[0].prev_hash == first[-1].hash
    assert store.head().seq == 5
    result = verify(store.records())
    assert result.ok and result.count == 5


def test_triggers_refuse_update_and_delete(store: SqliteAuditStore, tmp_path: Path) -> None:
    store.append([entry(i) for i in range(3)])
    conn = sqlite3.connect(tmp_path / "kgw.db")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE audit_log SET actor = 'nobody' WHERE seq = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit_log WHERE seq = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit_log")
    finally:
        conn.close()
    assert verify(store.records()).count == 3


def test_store_errors_are_mapped(store: SqliteAuditStore) -> None:
    store.append([entry(1)])
    with pytest.raises(AppendOnlyViolation), _mapped():
        store._require().execute("DELETE FROM audit_log")
    closed = SqliteAuditStore(":memory:")
    with pytest.raises(StoreError):
        closed.append([entry(1)])


def test_two_writers_on_one_file_form_one_chain(tmp_path: Path) -> None:
    """The gateway's recorder and a CLI command writing at once: the head is read under the write lock."""
    path = str(tmp_path / "kgw.db")
    SqliteAuditStore(path).open()

    def writer(name: str) -> None:
        s = SqliteAuditStore(path)
        s.open()
        for i in range(40):
            s.append([entry(i, actor=name), entry(i, actor=name)])
        s.close()

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with SqliteAuditStore(path) as s:
        result = verify(s.records())
    assert result.ok and result.count == 240


def test_page_filters_newest_first(store: SqliteAuditStore) -> None:
    store.append(
        [entry(i, actor="li" if i % 2 else "wang", action="snapshot" if i % 3 else "live_view") for i in range(20)]
    )
    page = store.page(AuditFilter(actor="li", limit=3))
    assert page.total == 10 and [r.seq for r in page.items] == [20, 18, 16]
    page = store.page(AuditFilter(action="live_view", since=1003.0, until=1012.0))
    assert [r.entry.at for r in page.items] == [1012.0, 1009.0, 1006.0, 1003.0]
    assert [r.seq for r in store.records(AuditFilter(actor="wang", until=1004.0))] == [1, 3, 5]


def test_records_are_read_in_chunks(store: SqliteAuditStore) -> None:
    store.append([entry(i) for i in range(4500)])
    assert verify(store.records()).count == 4500


def test_make_entry_marks_police_and_keeps_bad_detail() -> None:
    e = make_entry(AuditAction.SNAPSHOT, at=1.0, actor=WANG, target="c1")
    assert e.actor == "wang" and e.role == "police" and e.via == "token" and e.source == "10.9.0.1"
    assert '"police":true' in e.detail
    odd = make_entry(AuditAction.SNAPSHOT, at=1.0, actor=None, detail={"x": float("nan")})
    assert odd.actor == "" and "unserialisable" in odd.detail


async def test_trail_batches_off_the_loop_and_flushes_on_stop(tmp_path: Path) -> None:
    path = str(tmp_path / "kgw.db")
    trail = AuditTrail(SqliteAuditStore(path), interval=3600)  # only the stop flushes
    await trail.start()
    start = time.perf_counter()
    for i in range(1000):
        trail.record(AuditAction.LIVE_VIEW, actor=LI, target=f"c{i}", detail={"op": "open"})
    per_record = (time.perf_counter() - start) / 1000
    assert per_record < 0.001, f"record() must only queue ({per_record * 1e6:.1f} µs)"
    assert trail.pending == 1000 or trail.pending == 500  # a full batch may have woken the writer
    await trail.stop()
    with SqliteAuditStore(path) as s:
        result = verify(s.records())
        records = list(s.records())
    assert result.ok and result.count == 1000
    assert records[0].entry.actor == "li" and records[0].entry.source == "10.0.0.7"


async def test_trail_flushes_by_interval_and_pages(tmp_path: Path) -> None:
    trail = AuditTrail(SqliteAuditStore(str(tmp_path / "kgw.db")), interval=0.05)
    await trail.start()
    try:
        trail.record(AuditAction.SNAPSHOT, actor=LI, target="c1")
        deadline = time.monotonic() + 30
        while trail.appended == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert trail.appended == 1
        trail.record(AuditAction.WEBRTC_SESSION, actor=WANG, target="c2", duration=12.5)
        page = await trail.page(AuditFilter())  # flushes first
        assert [r.entry.action for r in page.items] == ["webrtc_session", "snapshot"]
        assert page.items[0].entry.duration == 12.5
        chunks = [chunk async for chunk in trail.export(AuditFilter())]
        assert [r.seq for chunk in chunks for r in chunk] == [1, 2]
    finally:
        await trail.stop()


async def test_failed_write_keeps_the_batch(tmp_path: Path) -> None:
    class Flaky(SqliteAuditStore):
        fail = True

        def append(self, entries):  # type: ignore[no-untyped-def]
            if self.fail:
                self.fail = False
                raise StoreError("disk full")
            return super().append(entries)

    trail = AuditTrail(Flaky(str(tmp_path / "kgw.db")), interval=3600)
    await trail.start()
    trail.record(AuditAction.ALARM_ACK, actor=LI, target="a1")
    with pytest.raises(StoreError):
        await trail.flush()
    assert trail.pending == 1 and trail.failures == 1
    await trail.stop()
    with SqliteAuditStore(str(tmp_path / "kgw.db")) as s:
        assert [r.entry.action for r in s.records()] == ["alarm_ack"]


def test_append_now_for_cli_commands(tmp_path: Path) -> None:
    path = str(tmp_path / "kgw.db")
    first = append_now(path, AuditAction.USER_CHANGE, target="zhang", detail={"op": "add", "role": "city_admin"})
    assert first.seq == 1 and first.entry.actor.startswith("os:") and first.entry.via == "cli"
    assert first.entry.source == "local"
    second = append_now(path, AuditAction.TOKEN_CHANGE, actor=LI, target="t1", detail={"op": "revoke"})
    assert second.seq == 2 and second.prev_hash == first.hash and second.entry.actor == "li"
