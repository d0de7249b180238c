"""The SQLite and PostgreSQL registry schemas mean the same at every version (same tables and columns)."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from gateway.registry.pg_schema import PG_MIGRATIONS
from gateway.registry.sqlite_schema import MIGRATIONS, split_statements


def _sqlite_columns(upto: int) -> dict[str, list[str]]:
    conn = sqlite3.connect(":memory:")
    for script in MIGRATIONS[:upto]:
        for statement in split_statements(script):
            conn.execute(statement)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: sorted(r[1] for r in conn.execute(f"PRAGMA table_info({t})")) for t in tables}


def _postgres_columns(url: str, upto: int) -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        for script in PG_MIGRATIONS[:upto]:
            conn.execute(script)
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        ).fetchall()
        conn.rollback()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    return {t: sorted(c) for t, c in sorted(columns.items())}


def test_both_backends_have_the_same_number_of_migrations() -> None:
    assert len(PG_MIGRATIONS) == len(MIGRATIONS)


@pytest.mark.parametrize("version", range(1, len(MIGRATIONS) + 1))
def test_each_version_has_the_same_tables_and_columns(postgres_url: str, version: int) -> None:
    assert _postgres_columns(postgres_url, version) == _sqlite_columns(version)
