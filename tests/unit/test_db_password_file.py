"""``--db postgresql://USER@HOST/DB --db-password-file FILE``: the database password stays out of ``ps``."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from gateway.cli import build_parser, gateway_config_from_args
from gateway.errors import ConfigError

URL = "postgresql://kgw@postgres:5432/kgw"


def _config(*flags: str) -> str:
    return gateway_config_from_args(build_parser().parse_args(["gateway", *flags])).db


def test_the_password_file_goes_into_the_url_quoted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KGW_DB_PASSWORD", raising=False)
    secret = tmp_path / "pg"
    secret.write_text("p@ss/wörd:1\n", encoding="utf-8")
    url = _config(f"--db={URL}", f"--db-password-file={secret}")
    assert url != URL and "p@ss" not in url
    parsed = conninfo_to_dict(url)  # what psycopg will connect with
    assert parsed["user"] == "kgw" and parsed["password"] == "p@ss/wörd:1"
    assert parsed["host"] == "postgres" and parsed["port"] == "5432" and parsed["dbname"] == "kgw"


def test_the_environment_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KGW_DB_PASSWORD", "from-env")
    assert conninfo_to_dict(_config(f"--db={URL}"))["password"] == "from-env"
    monkeypatch.delenv("KGW_DB_PASSWORD")
    assert _config(f"--db={URL}") == URL  # trust or peer authentication: no password at all


def test_a_password_file_without_a_postgres_url_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pg"
    secret.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="db-password-file"):
        _config("--db=var/kgw.db", f"--db-password-file={secret}")


def test_a_password_in_the_url_is_refused_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KGW_DEVICE_PASSWORD", "a-device-password")
    with pytest.raises(ConfigError, match="--db URL carries a password"):
        _config("--sip-host=0.0.0.0", "--db=postgresql://kgw:secret@postgres:5432/kgw")
    # On loopback (tests, the demo) it stays allowed, as with --mqtt.
    assert _config("--db=postgresql://kgw:secret@127.0.0.1:5432/kgw").endswith("@127.0.0.1:5432/kgw")
