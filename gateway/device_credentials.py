"""Per-device SIP credentials in the node's database (``device_credentials`` table), for the registrar.

What is stored is not the password but HA1 = H(device_id:realm:password),
once with MD5 and once with SHA-256 (the two digest algorithms the registrar
accepts, RFC 2617 / RFC 7616; the ``-sess`` variants derive from the same
HA1), computed at import with the gateway's realm (the first 10 digits of its
ID, or ``realm`` of the config) and stored with that realm. A stolen
database file therefore does not reveal the devices' passwords (which
installers may reuse elsewhere), but it still lets its holder answer this
realm's challenges as those devices: keep the file readable by the service
user only (the systemd unit / the container volume). The API never returns a
credential and logs never contain one.

HA1 binds a row to one realm: if the gateway's realm changes (another ID or
``realm``), the stored rows cannot verify any more; the gateway then logs a
warning with their number, and the devices' CSV must be imported again.

Tables written by earlier versions held the password itself (column
``password``). Opening the file converts such rows to HA1 with the realm of
the gateway that opens it and clears the password (``secure_delete`` and a
WAL checkpoint, so the old bytes do not linger in the file). The legacy
column stays (SQLite cannot drop its NOT NULL) and is always empty.

Writes are all-or-nothing (one transaction per import).

On PostgreSQL (``--db postgresql://…``) the table is shared by every gateway node
of the deployment: a device imported once authenticates at whichever node it
registers with. Same table and queries (the legacy ``password`` column exists
there too, always empty, so the SQL is shared); never plaintext to convert.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg

from gateway.config import GatewayConfig, ProvisionedDevice
from gateway.device_csv import DeviceCredential
from gateway.errors import ConfigError, StoreError
from gateway.gb28181.sip.auth import Algorithm, Credential, compute_ha1
from gateway.pg_connect import is_postgres_url
from gateway.pg_tx import PgConnection

__all__ = [
    "StoredCredential",
    "hash_credentials",
    "load_credentials",
    "provisioned_device",
    "credentials_db",
    "save_credentials",
    "with_credentials",
]

log = logging.getLogger("kgw.provisioning")

SCHEMA = """
CREATE TABLE IF NOT EXISTS device_credentials (
    device_id TEXT PRIMARY KEY,
    password TEXT NOT NULL DEFAULT '',
    kindergarten_id TEXT,
    name TEXT,
    updated_at REAL NOT NULL,
    ha1_md5 TEXT,
    ha1_sha256 TEXT,
    realm TEXT
)
"""
# Columns added since the first version of the table (ALTER TABLE when missing).
_ADDED_COLUMNS = (("ha1_md5", "TEXT"), ("ha1_sha256", "TEXT"), ("realm", "TEXT"))


@dataclass(frozen=True, slots=True)
class StoredCredential:
    """One provisioned device as stored: HA1s for ``realm``, and where it belongs."""

    device_id: str
    ha1_md5: str
    ha1_sha256: str
    realm: str
    kindergarten_id: str | None = None
    name: str | None = None

    @property
    def credential(self) -> Credential:
        """What the digest server verifies against."""
        return Credential(ha1_md5=self.ha1_md5, ha1_sha256=self.ha1_sha256)


def hash_credentials(rows: Sequence[DeviceCredential], realm: str) -> list[StoredCredential]:
    """The rows of a CSV import with their passwords replaced by HA1s for ``realm``."""
    return [
        StoredCredential(
            row.device_id,
            compute_ha1(Algorithm.MD5, row.device_id, realm, row.password),
            compute_ha1(Algorithm.SHA256, row.device_id, realm, row.password),
            realm,
            row.kindergarten_id,
            row.name,
        )
        for row in rows
    ]


def credentials_db(db: str) -> str | None:
    """Where a ``--db`` value keeps credentials: its SQLite file, or the ``postgresql://`` URL itself;
    None for ``:memory:``; ConfigError for another scheme."""
    if db == ":memory:":
        return None
    if is_postgres_url(db):
        return db
    if db.startswith("sqlite:///"):
        return db.removeprefix("sqlite:///") or None
    if db.startswith(("postgresql:", "postgres:", "sqlite:")):
        raise ConfigError(f"device credentials need a SQLite file or a postgresql:// URL, not {db.split(':', 1)[0]}")
    return db


_UPSERT = (
    "INSERT INTO device_credentials "
    "(device_id, password, kindergarten_id, name, updated_at, ha1_md5, ha1_sha256, realm) "
    "VALUES (?, '', ?, ?, ?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET password='', "
    "kindergarten_id=excluded.kindergarten_id, name=excluded.name, updated_at=excluded.updated_at, "
    "ha1_md5=excluded.ha1_md5, ha1_sha256=excluded.ha1_sha256, realm=excluded.realm"
)
_SELECT = (
    "SELECT device_id, ha1_md5, ha1_sha256, realm, kindergarten_id, name FROM device_credentials "
    "WHERE ha1_md5 IS NOT NULL AND ha1_sha256 IS NOT NULL AND realm IS NOT NULL"
)
_PG_SCHEMA = SCHEMA.replace("updated_at REAL", "updated_at DOUBLE PRECISION").encode()
_PG_LOCK_KEY = 2818_1_2015  # pg_advisory_xact_lock while creating the table (nodes start at once)


@contextmanager
def _pg_transaction(url: str) -> Iterator[PgConnection]:
    """One durable transaction on PostgreSQL, the table made first; StoreError when unreachable."""
    try:
        with psycopg.connect(url, connect_timeout=10, application_name="kgw-device-credentials") as conn:
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = on")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
                conn.execute(_PG_SCHEMA)
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = on")
                yield PgConnection(conn)
    except psycopg.Error as exc:
        raise StoreError(f"device credentials on PostgreSQL: {(str(exc).strip().splitlines() or ['?'])[0]}") from exc


def _connect(path: str, realm: str) -> sqlite3.Connection:
    """Open the file, create or upgrade the table, and convert plaintext rows to HA1 for ``realm``."""
    new = not os.path.exists(path)
    if new:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30.0)
    if new:
        os.chmod(path, 0o600)  # it holds device credentials
    connection.execute("PRAGMA secure_delete = ON")  # overwritten values are zeroed, not left in free space
    connection.execute(SCHEMA)
    have = {row[1] for row in connection.execute("PRAGMA table_info(device_credentials)")}
    for column, kind in _ADDED_COLUMNS:
        if column not in have:
            connection.execute(f"ALTER TABLE device_credentials ADD COLUMN {column} {kind}")
    connection.commit()
    _migrate_plaintext(connection, path, realm)
    return connection


def _migrate_plaintext(connection: sqlite3.Connection, path: str, realm: str) -> None:
    """Rows of the old table (the password itself): HA1 for ``realm`` instead, the password cleared."""
    plain = connection.execute(
        "SELECT device_id, password FROM device_credentials WHERE password IS NOT NULL AND password != ''"
    ).fetchall()
    if not plain:
        return
    with connection:
        for device_id, password in plain:
            hashed = Credential.hashed(device_id, realm, password)
            connection.execute(
                "UPDATE device_credentials SET ha1_md5=?, ha1_sha256=?, realm=?, password='' WHERE device_id=?",
                (hashed.ha1_md5, hashed.ha1_sha256, realm, device_id),
            )
    # In WAL mode the old pages sit in the log until a checkpoint copies the new ones over them.
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.warning(
        "converted %d plaintext device password(s) in %s to HA1 for realm %s; the passwords are no longer stored",
        len(plain),
        path,
        realm,
    )


def save_credentials(path: str, rows: Sequence[StoredCredential], realm: str) -> int:
    """Insert or replace every row in one transaction; the number stored.

    ``path`` is what :func:`credentials_db` gives (a SQLite file or a PostgreSQL URL).
    ``realm`` is the gateway's: old plaintext rows of a SQLite file are converted with it.
    """
    now = time.time()
    values = [(r.device_id, r.kindergarten_id, r.name, now, r.ha1_md5, r.ha1_sha256, r.realm) for r in rows]
    if is_postgres_url(path):
        with _pg_transaction(path) as pg:
            pg.executemany(_UPSERT, values)
        return len(rows)
    connection = _connect(path, realm)
    try:
        with connection:
            connection.executemany(_UPSERT, values)
        return len(rows)
    finally:
        connection.close()


def load_credentials(path: str | None, realm: str) -> list[StoredCredential]:
    """Every stored credential (none for ``:memory:`` or a file not yet made).

    Rows stored for another realm are returned too (the device stays
    provisioned, and fails digest until it is imported again); a warning
    names how many.
    """
    if path is not None and is_postgres_url(path):
        with _pg_transaction(path) as pg:
            rows = [StoredCredential(*row) for row in pg.execute(_SELECT).fetchall()]
    elif path is None or not os.path.exists(path):
        return []
    else:
        connection = _connect(path, realm)
        try:
            rows = [StoredCredential(*row) for row in connection.execute(_SELECT).fetchall()]
        finally:
            connection.close()
    elsewhere = sum(1 for row in rows if row.realm != realm)
    if elsewhere:
        log.warning(
            "%d device credential(s) in %s were stored for another SIP realm than this gateway's (%s): "
            "those devices cannot authenticate; import their CSV again (kgw devices import or POST /api/devices/import)",
            elsewhere,
            path,
            realm,
        )
    return rows


def provisioned_device(row: StoredCredential) -> ProvisionedDevice:
    """A stored credential as the registrar's provisioning entry."""
    return ProvisionedDevice(
        id=row.device_id, kindergarten_id=row.kindergarten_id, ha1_md5=row.ha1_md5, ha1_sha256=row.ha1_sha256
    )


def with_credentials(config: GatewayConfig, rows: Sequence[StoredCredential]) -> GatewayConfig:
    """``config`` with the stored credentials added (a ``[[devices]]`` entry of the config file wins)."""
    configured = {device.id for device in config.devices}
    extra = tuple(provisioned_device(row) for row in rows if row.device_id not in configured)
    return replace(config, devices=(*config.devices, *extra))
