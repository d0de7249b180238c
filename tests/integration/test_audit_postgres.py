"""The audit trail on PostgreSQL: append-only enforced by the database, one chain however many nodes append.

``kgw audit verify --db postgresql://…`` verifies it, and names the record a superuser changed
after dropping the guard.
"""

from __future__ import annotations

import subprocess
import threading

import psycopg
import pytest

from gateway.audit.actions import AuditAction
from gateway.audit.backends import append_now, open_audit_store
from gateway.audit.chain import AuditEntry, verify
from gateway.audit.pg_store import PgAuditStore
from gateway.audit.sqlite_store import AppendOnlyViolation
from gateway.audit.store import AuditFilter
from gateway.errors import StoreError
from gateway.security.principal import Principal, Role
from tests.processes import KGW, ROOT

LI = Principal("li", Role.DISTRICT_DUTY, source="10.0.0.7")


def entry(i: int, actor: str = "li", action: str = "live_view") -> AuditEntry:
    return AuditEntry(at=1000.0 + i, actor=actor, role="district_duty", via="session", source="s", action=action)


def kgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KGW, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_open_audit_store_picks_the_backend_and_both_chain_and_filter_alike(db_url: str) -> None:
    store = open_audit_store(db_url)
    assert isinstance(store, PgAuditStore) == db_url.startswith("postgresql://")
    store.open()
    try:
        first = store.append([entry(i, actor="li" if i % 2 else "wang") for i in range(3)])
        second = store.append([entry(i, actor="li" if i % 2 else "wang") for i in range(3, 20)])
        assert [r.seq for r in first + second] == list(range(1, 21))
        assert second[0].prev_hash == first[-1].hash and store.head().seq == 20
        page = store.page(AuditFilter(actor="li", limit=3))
        assert page.total == 10 and [r.seq for r in page.items] == [20, 18, 16]
        assert [r.seq for r in store.records(AuditFilter(actor="wang", until=1004.0))] == [1, 3, 5]
        assert verify(store.records()).ok
    finally:
        store.close()


def test_the_database_refuses_to_change_or_delete_a_record(postgres_url: str) -> None:
    with PgAuditStore(postgres_url) as store:
        store.append([entry(i) for i in range(3)])
        with pytest.raises(AppendOnlyViolation), store._tx(write=True) as conn:
            conn.execute("DELETE FROM audit_log WHERE seq = 2")
    with psycopg.connect(postgres_url, autocommit=True) as raw:  # the owner itself, outside kgw
        for sql in (
            "UPDATE audit_log SET actor = 'nobody' WHERE seq = 2",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
                raw.execute(sql)
    with PgAuditStore(postgres_url) as store:
        assert verify(store.records()).count == 3
    closed = PgAuditStore(postgres_url)
    with pytest.raises(StoreError):
        closed.append([entry(1)])


def test_concurrent_appenders_on_several_nodes_form_one_chain(postgres_url: str) -> None:
    """Three gateway nodes' recorders and a CLI command append at once: one chain, nothing lost."""
    PgAuditStore(postgres_url).open()  # the table exists before the race (creating it is locked too)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def node(name: str) -> None:
        try:
            with PgAuditStore(postgres_url) as s:
                start.wait()
                for i in range(30):
                    s.append([entry(i, actor=name), entry(i, actor=name)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    def cli() -> None:
        try:
            start.wait()
            for _ in range(10):
                append_now(postgres_url, AuditAction.USER_CHANGE, actor=LI, target="zhang", detail={"op": "add"})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=node, args=(f"node-{n}",)) for n in range(3)]
    threads.append(threading.Thread(target=cli))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and not any(t.is_alive() for t in threads)
    with PgAuditStore(postgres_url) as s:
        records = list(s.records())
        result = verify(records)
    assert result.ok and result.count == 3 * 30 * 2 + 10
    actors = [r.entry.actor for r in records]
    assert len({a for a in actors if a.startswith("node-")}) == 3 and actors.count("li") == 10


def test_kgw_audit_verify_on_postgresql(postgres_url: str) -> None:
    for i in range(5):
        append_now(postgres_url, AuditAction.LIVE_VIEW, actor=LI, target=f"1201010000131000000{i}")
    ok = kgw("audit", "verify", "--db", postgres_url)
    assert ok.returncode == 0, ok.stderr
    assert "5 records, chain intact" in ok.stdout
    with psycopg.connect(postgres_url, autocommit=True) as raw:  # someone drops the guard and edits the past
        raw.execute("DROP TRIGGER audit_log_no_update ON audit_log")
        raw.execute("UPDATE audit_log SET actor = 'nobody' WHERE seq = 3")
    broken = kgw("audit", "verify", "--db", postgres_url)
    assert broken.returncode == 1
    assert "chain broken at seq 3" in broken.stderr
    exported = kgw("audit", "export", "--db", postgres_url, "--format", "jsonl")
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 5
