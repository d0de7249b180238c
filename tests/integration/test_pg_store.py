"""The registry store's PostgreSQL-only behaviour: migrating once across processes, surviving a server
restart, and clear errors for a server that is not there or refuses us.

The behaviour both backends share is tested on both by tests/unit/test_registry_store.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from gateway.errors import StoreError
from gateway.registry import Device, DeviceFilter
from gateway.registry.backends import open_store
from gateway.registry.pg_schema import PG_MIGRATIONS
from gateway.registry.pg_store import PgStore
from simulators.postgres import PostgresServer


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of this module's own: these tests stop it and change its authentication."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def test_processes_starting_together_migrate_exactly_once(postgres_url: str) -> None:
    stores = [PgStore(postgres_url) for _ in range(4)]
    for store in stores:
        store.open()
    together = threading.Barrier(len(stores))
    applied: list[int] = []
    errors: list[BaseException] = []

    def start(store: PgStore) -> None:
        try:
            together.wait(timeout=30)
            applied.append(store.migrate())
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert not errors, errors
        assert sorted(applied, reverse=True)[0] >= 1 and sum(applied) == len(PG_MIGRATIONS), applied
        with psycopg.connect(postgres_url) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM kgw_schema ORDER BY version")]
        assert versions == list(range(1, len(PG_MIGRATIONS) + 1))
        assert all(s.schema_version() == len(PG_MIGRATIONS) for s in stores)
    finally:
        for store in stores:
            store.close()


def test_the_pool_reconnects_after_the_server_restarts(own_server: PostgresServer) -> None:
    url = own_server.create_database("restart")
    store = PgStore(url, timeout=3.0)
    store.open()
    try:
        store.migrate()
        store.upsert_devices([Device("d1", None, "120101", "重启前")])
        own_server.stop()
        with pytest.raises(StoreError):  # down: a clear StoreError after the timeout, no hang
            store.get_device("d1")
        own_server.start()
        # The first call after the restart already works: dead pooled connections are replaced.
        store.upsert_devices([Device("d2", None, "120101", "重启后")])
        assert [d.name for d in store.list_devices(DeviceFilter()).items] == ["重启前", "重启后"]
    finally:
        store.close()


def test_an_unreachable_server_is_a_clear_store_error() -> None:
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as caught:
        open_store("postgresql://kgw:s3cret@127.0.0.1:1/kgw")  # nothing listens on port 1
    assert "Connection refused" in str(caught.value) or "connect" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_an_unknown_database_is_a_clear_store_error(own_server: PostgresServer) -> None:
    with pytest.raises(StoreError, match='database "no_such_db" does not exist'):
        open_store(own_server.url_for("no_such_db"))


def test_a_wrong_password_is_a_clear_store_error(own_server: PostgresServer) -> None:
    hba = own_server.data_dir / "pg_hba.conf"
    trusting = hba.read_text()
    own_server.sql("postgres", "ALTER ROLE kgw PASSWORD 'right-one'")
    # psql (the helper's superuser) keeps the local socket; TCP clients must give a password.
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
    own_server.sql("postgres", "SELECT pg_reload_conf()")
    try:
        base = own_server.url.removeprefix("postgresql://kgw@")
        with pytest.raises(StoreError, match="password authentication failed") as caught:
            open_store(f"postgresql://kgw:wrong-one@{base}")
        assert "wrong-one" not in str(caught.value)
        store = open_store(f"postgresql://kgw:right-one@{base}")
        try:
            assert store.schema_version() == len(PG_MIGRATIONS)
        finally:
            store.close()
    finally:
        hba.write_text(trusting)
        own_server.sql("postgres", "SELECT pg_reload_conf()")


def test_a_write_that_loses_a_deadlock_is_retried(postgres_url: str) -> None:
    store = open_store(postgres_url)
    assert isinstance(store, PgStore)
    calls: list[int] = []

    def body(conn: Any) -> int:
        calls.append(1)
        conn.execute(
            "INSERT INTO kindergarten (id, name, district_code) VALUES (%s, '园', '120101')", (f"k{len(calls)}",)
        )
        if len(calls) == 1:
            raise pg_errors.DeadlockDetected("deadlock detected (simulated)")
        return len(calls)

    try:
        assert store._write(body) == 2
        # The losing attempt was rolled back: only the second insert is there.
        assert [k.id for k in store.list_kindergartens().items] == ["k2"]
    finally:
        store.close()
