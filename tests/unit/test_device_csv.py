"""Bulk device provisioning from CSV: validation with line numbers, all or nothing (issue 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.device_credentials import load_credentials, save_credentials, with_credentials
from gateway.device_csv import CsvImportError, DeviceCredential, parse_device_csv

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
    assert save_credentials(db, parse_device_csv(GOOD)) == 2
    assert (tmp_path / "kgw.db").stat().st_mode & 0o077 == 0, "the file holds passwords: owner only"
    config = with_credentials(load_config(None, db=db), load_credentials(db))
    assert {d.id: d.password for d in config.devices} == {
        "12010100001320000001": "its-own-pw-1",
        "12010100001340000002": "its-own-pw-2",
    }
