"""``kgw audit verify`` and ``kgw audit export`` as processes on a real database file, before and after tampering."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
from pathlib import Path

from gateway.audit.actions import AuditAction
from gateway.audit.backends import append_now
from gateway.security.principal import Principal, Role
from tests.processes import KGW, ROOT

LI = Principal("li", Role.DISTRICT_DUTY, source="10.0.0.7")
WANG = Principal("wang", Role.POLICE, source="10.9.0.1", via="token")


def kgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KGW, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def make_trail(db: Path, n: int = 6) -> None:
    for i in range(n):
        append_now(
            str(db),
            AuditAction.SNAPSHOT if i % 2 else AuditAction.LIVE_VIEW,
            actor=WANG if i == 3 else LI,
            target=f"1201010000131000000{i}",
            detail={"op": "open", "=cmd": "=1+1"},
        )


def tamper(db: Path, *sqls: str) -> None:
    """What someone with write access to the file does: drop the guard, change the past."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute("DROP TRIGGER audit_log_no_delete")
        for sql in sqls:
            conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def test_verify_intact_then_edited_time(tmp_path: Path) -> None:
    db = tmp_path / "kgw.db"
    make_trail(db)
    ok = kgw("audit", "verify", "--db", str(db))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("6 records, chain intact")
    tamper(db, "UPDATE audit_log SET at = at - 3600 WHERE seq = 4")
    bad = kgw("audit", "verify", "--db", str(db))
    assert bad.returncode == 1 and "seq 4" in bad.stderr and "edited" in bad.stderr, bad.stderr


def test_verify_names_a_deleted_record(tmp_path: Path) -> None:
    db = tmp_path / "kgw.db"
    make_trail(db)
    tamper(db, "DELETE FROM audit_log WHERE seq = 2")
    bad = kgw("audit", "verify", "--db", str(db))
    assert bad.returncode == 1 and "seq 2 missing" in bad.stderr, bad.stderr


def test_verify_names_reordered_records(tmp_path: Path) -> None:
    db = tmp_path / "kgw.db"
    make_trail(db)
    tamper(
        db,
        "UPDATE audit_log SET seq = -3 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = 5",
        "UPDATE audit_log SET seq = 5 WHERE seq = -3",
    )
    bad = kgw("audit", "verify", "--db", str(db))
    assert bad.returncode == 1 and "seq 3" in bad.stderr, bad.stderr


def test_verify_refuses_a_missing_file(tmp_path: Path) -> None:
    result = kgw("audit", "verify", "--db", str(tmp_path / "typo.db"))
    assert result.returncode == 2 and "no database" in result.stderr
    assert not (tmp_path / "typo.db").exists()


def test_export_csv_and_jsonl(tmp_path: Path) -> None:
    db = tmp_path / "kgw.db"
    make_trail(db)
    result = kgw("audit", "export", "--db", str(db))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[3]["actor"] == "wang" and rows[3]["role"] == "police" and '"police":true' in rows[3]["detail"]
    assert rows[0]["source"] == "10.0.0.7" and rows[0]["action"] == "live_view"

    jsonl = kgw("audit", "export", "--db", str(db), "--format", "jsonl", "--since", "0", "--until", "9999999999")
    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert len(lines) == 6 and lines[1]["prev_hash"] == lines[0]["hash"] and lines[0]["via"] == "session"
    none = kgw("audit", "export", "--db", str(db), "--format", "jsonl", "--until", "1000")
    assert none.returncode == 0 and none.stdout == "" and "0 records" in none.stderr
    out = tmp_path / "audit.csv"
    kgw("audit", "export", "--db", str(db), "-o", str(out))
    assert out.read_text(encoding="utf-8").count("\n") == 7
