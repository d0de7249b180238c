"""Per-device passwords in the node's SQLite file (``device_credentials`` table), for the registrar.

Why the password itself and not a hash: the registrar verifies SIP digest,
which needs the password or HA1 = MD5(user:realm:password) per algorithm,
and this gateway accepts MD5 and SHA-256 digests (RFC 7616) against a realm
that follows the gateway ID. Storing HA1 would tie every record to one realm
and two algorithms and needs a verify-with-HA1 entry point in the digest core
(gateway/gb28181/sip/auth.py); until that exists the password is stored as
given, like other GB/T 28181 platforms (WVP) do. The SQLite file therefore is
a secret: keep it readable by the service user only (the systemd unit / the
container volume); the API never returns a stored password and logs never
contain one. Moving to HA1 later changes only this module and the lookup.

Writes are all-or-nothing (one transaction per import).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from gateway.config import GatewayConfig, ProvisionedDevice
from gateway.device_csv import DeviceCredential
from gateway.errors import ConfigError

__all__ = ["load_credentials", "provisioned_device", "save_credentials", "sqlite_path", "with_credentials"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS device_credentials (
    device_id TEXT PRIMARY KEY,
    password TEXT NOT NULL,
    kindergarten_id TEXT,
    name TEXT,
    updated_at REAL NOT NULL
)
"""


def sqlite_path(db: str) -> str | None:
    """The file of a ``--db`` value; None for ``:memory:``; ConfigError for another backend."""
    if db == ":memory:":
        return None
    if db.startswith("sqlite:///"):
        return db.removeprefix("sqlite:///") or None
    if db.startswith(("postgresql:", "postgres:", "sqlite:")):
        raise ConfigError(f"device credentials need a SQLite file, not {db.split(':', 1)[0]}")
    return db


def _connect(path: str) -> sqlite3.Connection:
    new = not os.path.exists(path)
    if new:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30.0)
    if new:
        os.chmod(path, 0o600)  # it holds device passwords
    connection.execute(SCHEMA)
    return connection


def save_credentials(path: str, rows: Sequence[DeviceCredential]) -> int:
    """Insert or replace every row in one transaction; the number stored."""
    connection = _connect(path)
    try:
        with connection:
            now = time.time()
            connection.executemany(
                "INSERT INTO device_credentials (device_id, password, kindergarten_id, name, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET password=excluded.password, "
                "kindergarten_id=excluded.kindergarten_id, name=excluded.name, updated_at=excluded.updated_at",
                [(r.device_id, r.password, r.kindergarten_id, r.name, now) for r in rows],
            )
        return len(rows)
    finally:
        connection.close()


def load_credentials(path: str | None) -> list[DeviceCredential]:
    """Every stored credential (none for ``:memory:`` or a file not yet made)."""
    if path is None or not os.path.exists(path):
        return []
    connection = _connect(path)
    try:
        cursor = connection.execute("SELECT device_id, password, kindergarten_id, name FROM device_credentials")
        return [DeviceCredential(*row) for row in cursor.fetchall()]
    finally:
        connection.close()


def provisioned_device(row: DeviceCredential) -> ProvisionedDevice:
    """A stored credential as the registrar's provisioning entry."""
    return ProvisionedDevice(id=row.device_id, password=row.password, kindergarten_id=row.kindergarten_id)


def with_credentials(config: GatewayConfig, rows: Sequence[DeviceCredential]) -> GatewayConfig:
    """``config`` with the stored credentials added (a ``[[devices]]`` entry of the config file wins)."""
    configured = {device.id for device in config.devices}
    extra = tuple(provisioned_device(row) for row in rows if row.device_id not in configured)
    return replace(config, devices=(*config.devices, *extra))
