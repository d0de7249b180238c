"""``kgw platform``, ``kgw gateway`` and ``kgw demo`` with ``--db postgresql://…``: real processes, a real PostgreSQL.

A police platform and the gateway each keep their registry in a database of their own on one
server; the simulator's devices register with the gateway, the gateway registers upward; the
rows are then read back from PostgreSQL with the store, not through the processes' APIs.
"""

from __future__ import annotations

import asyncio
import signal

import psycopg
import pytest

from gateway.registry import DeviceFilter
from gateway.registry.backends import open_store
from gateway.registry.pg_store import PgStore
from simulators.city import build_city
from simulators.postgres import PostgresServer
from tests.conftest import free_ports, free_sip_port, http_json, wait_for
from tests.processes import Proc, banner_login, free_tcp_port, login_headers, until_json

GATEWAY_ID = "12010000002090000001"


def _stored_devices(url: str) -> dict[str, bool]:
    store = open_store(url)
    try:
        assert isinstance(store, PgStore)
        return {d.id: d.online for d in store.list_devices(DeviceFilter(limit=1000)).items}
    finally:
        store.close()


@pytest.mark.slow  # three processes: ~6 s idle, 12 s on the shared machine
async def test_gateway_and_platform_keep_their_registry_in_postgresql(tmp_path, procs, postgres_server: PostgresServer):
    gateway_db = postgres_server.create_database("e2e_gateway")
    police_db = postgres_server.create_database("e2e_police")
    p_sip, p_http, g_sip, g_http = free_sip_port(), free_tcp_port(), free_sip_port(), free_tcp_port()
    secret = tmp_path / "police.pw"
    secret.write_text("pw-police\n", encoding="utf-8")
    police = Proc(
        "police",
        ["platform", "--level", "police", "--sip-port", str(p_sip), "--http-port", str(p_http),
         "--password", "pw-police", "--db", police_db, "--log-level", "WARNING"],
        tmp_path,
    )  # fmt: skip
    procs.append(police)
    await until_json(f"http://127.0.0.1:{p_http}/healthz", lambda b: b["status"] == "ok", police)
    gateway = Proc(
        "gateway",
        ["gateway", "--sip-port", str(g_sip), "--http-port", str(g_http), "--db", gateway_db,
         "--upper", f"police=12010000002000000110@127.0.0.1:{p_sip}", "--upper-password-file", f"police={secret}",
         "--log-level", "WARNING"],
        tmp_path,
    )  # fmt: skip
    procs.append(gateway)
    api = f"http://127.0.0.1:{g_http}"
    await until_json(f"{api}/healthz", lambda b: b["status"] == "ok", gateway)
    simulator = Proc(
        "simulate",
        ["simulate", "--gateway", f"127.0.0.1:{g_sip}", "--kindergartens", "1", "--api", api, "--log-level", "WARNING"],
        tmp_path,
    )
    procs.append(simulator)
    ids = {d.id for k in build_city(1, seed=2020) for d in k.devices}
    await until_json(
        f"{api}/api/devices?limit=1000", lambda b: {d["id"] for d in b["items"] if d["online"]} == ids, simulator
    )
    await until_json(f"http://127.0.0.1:{p_http}/api/devices", lambda b: b["total"] == 1, police)

    # Presence reaches the database in the gateway's flushes: wait for the rows, not a fixed time.
    async def stored_online() -> dict[str, bool]:
        for _ in range(300):
            rows = await asyncio.to_thread(_stored_devices, gateway_db)
            if rows and all(rows.get(i) for i in ids):
                return rows
            await asyncio.sleep(0.1)
        raise AssertionError(f"devices not online in PostgreSQL: {rows}")

    assert set(await stored_online()) == ids
    assert set(await asyncio.to_thread(_stored_devices, police_db)) == {GATEWAY_ID}

    assert await simulator.stop(signal.SIGINT) == 0, simulator.output()[-3000:]
    assert await gateway.stop(signal.SIGTERM) == 0, gateway.output()[-3000:]
    assert await police.stop(signal.SIGTERM) == 0, police.output()[-3000:]
    assert "Traceback" not in gateway.output() + police.output() + simulator.output()
    rows = await asyncio.to_thread(_stored_devices, gateway_db)
    assert set(rows) == ids and not any(rows.values()), "devices are stored offline after they unregistered"


async def test_demo_keeps_registry_accounts_alarms_and_audit_in_postgresql(tmp_path, procs, postgres_url: str):
    base = free_ports(3)
    sip, http, control = base, base + 1, base + 2
    demo = Proc(
        "demo",
        ["demo", "--db", postgres_url, "--no-platforms", "--kindergartens", "2", "--sip-port", str(sip),
         "--http-port", str(http), "--control-port", str(control), "--alarm-rate", "0",
         "--data-dir", str(tmp_path / "demo"), "--log-level", "WARNING"],
        tmp_path,
    )  # fmt: skip
    procs.append(demo)
    api = f"http://127.0.0.1:{http}"
    await until_json(f"{api}/healthz", lambda b: b["devices_online"] > 0, demo, timeout=90)
    assert await wait_for(lambda: "kgw demo is running" in demo.output(), timeout=30)
    session = await login_headers(api, *banner_login(demo.output()))  # the admin is a row in PostgreSQL
    status, pressed = await http_json(f"http://127.0.0.1:{control}/press", {"kind": "button"})
    assert status == 200, pressed
    await until_json(f"{api}/api/alarms", lambda b: b["total"] == 1, demo, headers=session)
    assert await demo.stop(signal.SIGINT) == 0, demo.output()[-3000:]
    assert "Traceback" not in demo.output()

    def counts() -> dict[str, int]:
        with psycopg.connect(postgres_url) as conn:
            return {
                t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])  # type: ignore[index]
                for t in ("device", "channel", "account_user", "alarm", "audit_log")
            }

    stored = await asyncio.to_thread(counts)
    assert stored["device"] == len({d.id for k in build_city(2, seed=2020) for d in k.devices}), stored
    assert stored["channel"] > 0 and stored["account_user"] >= 1 and stored["alarm"] == 1, stored
    assert stored["audit_log"] > 0, stored
    assert not list((tmp_path / "demo").glob("*.db")), "nothing of the gateway's went to SQLite"
