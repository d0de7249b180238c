"""Per-device passwords imported from CSV (CLI and API) are what a strict gateway accepts (issue 10)."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from gateway.config import load_config
from gateway.security.accounts import ApiToken, secret_digest
from gateway.security.principal import Role
from gbplatform.app import build_gateway
from tests.processes import KGW, ROOT
from tests.security.sip_register import register_as

GATEWAY_ID = "12010000002090000001"
NVR, BOX, STRANGER = "12010100001320000001", "12010100001340000002", "12010100001320000009"
CSV = f"device_id,password,kindergarten_id,name\n{NVR},nvr-own-pw-1,,NVR\n{BOX},box-own-pw-2,,报警\n"


def _token(role: Role) -> tuple[str, ApiToken]:
    """A real API token of the node with ``role`` (the auth middleware makes the principal)."""
    secret = f"kgw_import_test_{role.value}_" + secrets.token_urlsafe(16)
    return secret, ApiToken(f"test-{role.value}", secret_digest(secret), role)


def _post_csv(url: str, body: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps({"csv": body}).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:  # a plain opener: exactly the credentials given (the tests' default token is not added)
        with urllib.request.build_opener().open(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def test_cli_import_then_strict_gateway_takes_only_own_passwords(tmp_path: Path, db_url: str) -> None:
    """Both backends: on PostgreSQL every gateway node of the deployment reads the same credentials."""
    db, csv_file = db_url, tmp_path / "devices.csv"
    csv_file.write_text(CSV, encoding="utf-8")
    result = await asyncio.to_thread(
        subprocess.run,
        [*KGW, "devices", "import", str(csv_file), "--db", db],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "imported 2" in result.stdout, result.stderr
    if db.startswith("postgresql://"):
        assert db not in result.stdout  # the URL (it may hold a password) is not printed
        with psycopg.connect(db) as conn:
            rows = conn.execute("SELECT * FROM device_credentials").fetchall()
        assert len(rows) == 2
        stored = repr(rows).encode()
    else:
        stored = b"".join(p.read_bytes() for p in tmp_path.glob("kgw.db*"))
    assert b"nvr-own-pw-1" not in stored and b"box-own-pw-2" not in stored, "HA1s are stored, not passwords"
    bad = tmp_path / "bad.csv"
    bad.write_text(f"device_id,password\n{STRANGER},x\n", encoding="utf-8")
    refused = await asyncio.to_thread(
        subprocess.run, [*KGW, "devices", "import", str(bad), "--db", db], cwd=ROOT, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "line 2: password" in refused.stderr

    gateway = build_gateway(
        load_config(None, sip_port=0, http_port=0, db=db, enrolment="strict", password="fallback-pw-9")
    )
    await gateway.start()
    try:
        assert await register_as(gateway.sip_port, GATEWAY_ID, NVR, "nvr-own-pw-1") == 200
        assert await register_as(gateway.sip_port, GATEWAY_ID, BOX, "fallback-pw-9") == 403  # its own, not shared
        assert await register_as(gateway.sip_port, GATEWAY_ID, STRANGER, "fallback-pw-9") == 403  # not provisioned
    finally:
        await gateway.stop()


async def test_api_import_is_admin_only_and_applies_at_once(tmp_path: Path) -> None:
    for role, expected in ((Role.MAINTENANCE, 403), (Role.CITY_ADMIN, 200)):
        secret, grant = _token(role)
        config = load_config(
            None, sip_port=0, http_port=0, db=str(tmp_path / f"{role}.db"), enrolment="strict", api_tokens=(grant,)
        )
        gateway = build_gateway(config)
        await gateway.start()
        try:
            url = f"http://127.0.0.1:{gateway.http_port}/api/devices/import"
            status, body = await asyncio.to_thread(_post_csv, url, CSV, secret)
            assert status == expected, body
            if expected == 200:
                assert body == {"imported": 2}
                assert await register_as(gateway.sip_port, GATEWAY_ID, NVR, "nvr-own-pw-1") == 200
                status, body = await asyncio.to_thread(_post_csv, url, f"device_id,password\n{BOX},bad\n", secret)
                assert status == 400 and body["errors"][0].startswith("line 2:")
        finally:
            await gateway.stop()


async def test_api_import_needs_a_login(gateway_factory: Any) -> None:
    gateway = await gateway_factory()
    status, _ = await asyncio.to_thread(_post_csv, f"http://127.0.0.1:{gateway.http_port}/api/devices/import", CSV)
    assert status == 401
