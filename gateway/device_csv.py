"""Bulk device provisioning from CSV (issue 10): per-device passwords for strict enrolment, sans-I/O.

Columns (header row, any order, names case-insensitive): ``device_id`` and
``password`` are required; ``kindergarten_id`` and ``name`` are optional;
other columns are ignored (installers' spreadsheets carry notes). The whole
file is checked before anything is stored: one bad row refuses the import,
and the error names every bad line (``line 7: …``), so an installer fixes the
file and imports it again — never half a city.

Passwords are stored as HA1s, never as given (see :mod:`gateway.device_credentials`),
and never echoed: errors name the line and the column, not the value.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Final

from gateway.deployment import DEFAULT_DEVICE_PASSWORD
from gateway.errors import ConfigError
from gateway.gb28181.ids import is_gb_id

__all__ = ["MAX_ROWS", "CsvImportError", "DeviceCredential", "parse_device_csv"]

MAX_ROWS: Final = 100_000  # the whole city is ~40k devices
MIN_PASSWORD: Final = 8
MAX_PASSWORD: Final = 128
MAX_NAME: Final = 100
REQUIRED: Final = ("device_id", "password")
_CTL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    """One provisioned device: its own password, and where it belongs."""

    device_id: str
    password: str
    kindergarten_id: str | None = None
    name: str | None = None


class CsvImportError(ConfigError):
    """The file is refused as a whole; ``errors`` lists each bad line."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        shown = "; ".join(errors[:20]) + (f"; … {len(errors) - 20} more" if len(errors) > 20 else "")
        super().__init__(f"device CSV refused ({len(errors)} error(s), nothing imported): {shown}")


def parse_device_csv(text: str) -> list[DeviceCredential]:
    """Every row of ``text`` as a credential, or :class:`CsvImportError` listing every bad line."""
    if text.startswith("\ufeff"):  # Excel's UTF-8 BOM
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvImportError(
            ["line 1: empty file (expected a header: device_id,password,kindergarten_id,name)"]
        ) from None
    except csv.Error as exc:
        raise CsvImportError([f"line 1: {exc}"]) from exc
    columns = {name.strip().lower(): index for index, name in enumerate(header)}
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise CsvImportError([f"line 1: missing column(s) {', '.join(missing)}"])
    errors: list[str] = []
    rows: list[DeviceCredential] = []
    seen: dict[str, int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank lines
            if len(rows) + len(errors) >= MAX_ROWS:
                errors.append(f"line {line}: more than {MAX_ROWS} devices in one file")
                break
            row = _row(record, columns, line, seen, errors)
            if row is not None:
                rows.append(row)
    except csv.Error as exc:
        errors.append(f"line {reader.line_num}: {exc}")
    if errors:
        raise CsvImportError(errors)
    if not rows:
        raise CsvImportError(["no devices in the file"])
    return rows


def _cell(record: list[str], columns: dict[str, int], name: str) -> str:
    index = columns.get(name)
    return record[index].strip() if index is not None and index < len(record) else ""


def _row(
    record: list[str], columns: dict[str, int], line: int, seen: dict[str, int], errors: list[str]
) -> DeviceCredential | None:
    before = len(errors)
    device_id = _cell(record, columns, "device_id")
    password = record[columns["password"]] if columns["password"] < len(record) else ""
    kindergarten_id = _cell(record, columns, "kindergarten_id") or None
    name = _cell(record, columns, "name") or None
    if not is_gb_id(device_id):
        errors.append(f"line {line}: device_id must be 20 digits, got {device_id[:24]!r}")
    elif device_id in seen:
        errors.append(f"line {line}: device_id {device_id} already on line {seen[device_id]}")
    else:
        seen[device_id] = line
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        errors.append(f"line {line}: password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    elif _CTL_RE.search(password) or password != password.strip():
        errors.append(f"line {line}: password has control characters or surrounding spaces")
    elif password == DEFAULT_DEVICE_PASSWORD:
        errors.append(f"line {line}: password is the default {DEFAULT_DEVICE_PASSWORD}")
    if kindergarten_id is not None and not is_gb_id(kindergarten_id):
        errors.append(f"line {line}: kindergarten_id must be 20 digits, got {kindergarten_id[:24]!r}")
    if name is not None and (len(name) > MAX_NAME or _CTL_RE.search(name)):
        errors.append(f"line {line}: name too long or with control characters")
    if len(errors) > before:
        return None
    return DeviceCredential(device_id, password, kindergarten_id, name)
