"""Pytest fixtures for a real PostgreSQL server (registered by tests/conftest.py).

``postgres_server`` starts one server for the whole session (``initdb`` + ``pg_ctl``
into a temp folder on a free loopback port, see :mod:`simulators.postgres`);
``postgres_url`` gives each test a fresh empty database on it, so tests never see
each other's rows. ``db_url`` is parametrised over both backends: a test that takes
it runs once on a SQLite file and once on PostgreSQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.postgres import PostgresServer

__all__ = ["db_url", "postgres_server", "postgres_url"]

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql://`` URL of a new empty database for this test."""
    return postgres_server.create_database(f"test_{next(_database_numbers)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL, once per backend: a SQLite file in ``tmp_path``, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kgw.db'}"
    return str(request.getfixturevalue("postgres_url"))
