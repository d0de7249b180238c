"""Bulk device provisioning from CSV: validation with line numbers, all or nothing (issue 10)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.device_credentials import hash_credentials, load_credentials, save_credentials, with_credentials
from gateway.device_csv import CsvImportError, DeviceCredential, parse_device_csv
from gateway.gb28181.sip.auth import Algorithm, AuthResult, DigestServer, build_authorization, compute_ha1

REALM = "1201000000"

GOOD = (
    "\ufeffDevice_ID,password,kindergarten_id,name,备注\n"
    "12010100001320000001,its-own-pw-1,12010100112160000100,大门口NVR,x\n"
    "\n"
    "12010100001340000002,its-own-pw-2,,一键报警,\n"
)


def test_good_file_parses_every_row() -> None:
    rows = parse_device_csv(GOOD)
    assert rows == [
        DeviceCredential("12010100001320000001", "its-own-pw-1", "12010100112160000100", "大门口NVR"),
        DeviceCredential("12010100001340000002", "its-own-pw-2", None, "一键报警"),
    ]


def test_every_bad_line_is_named_and_nothing_is_returned() -> None:
    text = (
        "device_id,password,kindergarten_id\n"
        "12010100001320000001,its-own-pw-1,\n"
        "1201010000132000000X,its-own-pw-2,\n"
        "12010100001320000001,its-own-pw-3,\n"
        "12010100001320000003,short,\n"
        "12010100001320000004,12345678,\n"
        "12010100001320000005,fine-password,123\n"
    )
    with pytest.raises(CsvImportError) as info:
        parse_device_csv(text)
    errors = info.value.errors
    assert [e.split(":")[0] for e in errors] == ["line 3", "line 4", "line 5", "line 6", "line 7"]
    assert "already on line 2" in errors[1] and "default" in errors[3]
    assert "its-own-pw" not in str(info.value) and "short" not in str(info.value), "passwords are never echoed"


@pytest.mark.parametrize("text", ["", "id,secret\n1,2\n", "device_id,password\n"])
def test_files_without_the_columns_or_rows_are_refused(text: str) -> None:
    with pytest.raises(CsvImportError):
        parse_device_csv(text)


def test_stored_credentials_reach_the_configuration(tmp_path: Path) -> None:
    db = str(tmp_path / "kgw.db")
    assert save_credentials(db, hash_credentials(parse_device_csv(GOOD), REALM), REALM) == 2
    assert (tmp_path / "kgw.db").stat().st_mode & 0o077 == 0, "the file holds credentials: owner only"
    config = with_credentials(load_config(None, db=db), load_credentials(db, REALM))
    devices = {d.id: d for d in config.devices}
    assert set(devices) == {"12010100001320000001", "12010100001340000002"}
    nvr = devices["12010100001320000001"]
    assert nvr.password is None, "the password is not kept"
    assert nvr.ha1_md5 == compute_ha1(Algorithm.MD5, nvr.id, REALM, "its-own-pw-1")
    assert nvr.ha1_sha256 == compute_ha1(Algorithm.SHA256, nvr.id, REALM, "its-own-pw-1")


def _file_bytes(db: Path) -> bytes:
    """The database file and its WAL/journal, as a thief would copy them."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_an_old_plaintext_table_is_converted_to_ha1_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "kgw.db"
    old = sqlite3.connect(db)
    old.execute("PRAGMA journal_mode=WAL")  # as the registry store leaves the file
    old.execute(
        "CREATE TABLE device_credentials (device_id TEXT PRIMARY KEY, password TEXT NOT NULL, "
        "kindergarten_id TEXT, name TEXT, updated_at REAL NOT NULL)"
    )
    old.execute("INSERT INTO device_credentials VALUES ('12010100001320000001', 'old-plain-pw-1', NULL, 'NVR', 0)")
    old.commit()
    old.close()
    assert b"old-plain-pw-1" in _file_bytes(db)

    with caplog.at_level(logging.WARNING, "kgw.provisioning"):
        rows = load_credentials(str(db), REALM)
    assert [(r.device_id, r.realm, r.name) for r in rows] == [("12010100001320000001", REALM, "NVR")]
    assert rows[0].ha1_md5 == compute_ha1(Algorithm.MD5, rows[0].device_id, REALM, "old-plain-pw-1")
    assert "converted 1 plaintext" in caplog.text and "old-plain-pw-1" not in caplog.text
    assert b"old-plain-pw-1" not in _file_bytes(db), "the plaintext is gone from the file"
    server = DigestServer(REALM, bytes(32))
    answer = build_authorization(server.challenge(0.0), "REGISTER", "sip:x", rows[0].device_id, "old-plain-pw-1", "c")
    assert server.verify(answer, "REGISTER", rows[0].credential, 0.0) is AuthResult.OK
    assert load_credentials(str(db), REALM) == rows, "converted once; opening again changes nothing"


def test_saved_file_holds_no_password(tmp_path: Path) -> None:
    db = tmp_path / "kgw.db"
    save_credentials(str(db), hash_credentials(parse_device_csv(GOOD), REALM), REALM)
    data = _file_bytes(db)
    assert b"its-own-pw-1" not in data and b"its-own-pw-2" not in data


def test_credentials_of_another_realm_are_kept_but_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = str(tmp_path / "kgw.db")
    save_credentials(db, hash_credentials(parse_device_csv(GOOD), REALM), REALM)
    with caplog.at_level(logging.WARNING, "kgw.provisioning"):
        rows = load_credentials(db, "3402000000")
    assert len(rows) == 2, "still provisioned (strict mode refuses strangers), and failing digest"
    assert "2 device credential(s)" in caplog.text and "import their CSV again" in caplog.text
    server = DigestServer("3402000000", bytes(32))
    answer = build_authorization(server.challenge(0.0), "REGISTER", "sip:x", rows[0].device_id, "its-own-pw-1", "c")
    assert server.verify(answer, "REGISTER", rows[0].credential, 0.0) is AuthResult.BAD_PASSWORD
