"""The ``kgw`` command as an operator runs it: real processes, real ports, signals."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any

import pytest

from gateway.registry import DeviceFilter
from gateway.registry.backends import open_store
from simulators.city import build_city
from tests.conftest import free_ports, free_sip_port, http_json, wait_for
from tests.processes import KGW, ROOT, Proc, banner_login, free_tcp_port, login_headers, until_json


def run_kgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KGW, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


# --- help and errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["gateway", "--help"], ["simulate", "--help"], ["demo", "--help"]])
async def test_help_exits_zero(args):
    result = await asyncio.to_thread(run_kgw, *args)
    assert result.returncode == 0, result.stderr
    assert "usage: kgw" in result.stdout


async def test_help_names_every_command_and_gateway_option():
    top = (await asyncio.to_thread(run_kgw, "--help")).stdout
    for command in ("gateway", "simulate", "demo"):
        assert command in top
    gateway = (await asyncio.to_thread(run_kgw, "gateway", "--help")).stdout
    for flag in ("--config", "--sip-port", "--http-port", "--id", "--db", "--enrolment", "--keepalive-interval"):
        assert flag in gateway


async def test_bad_gateway_id_is_a_clear_error(tmp_path):
    result = await asyncio.to_thread(run_kgw, "gateway", "--id", "123", "--db", str(tmp_path / "g.db"))
    assert result.returncode != 0
    assert "123" in result.stderr and "20 digits" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["gateway", "--sip-port", "notaport"],
        ["gateway", "--enrolment", "sometimes"],
        ["gateway", "--config", "/nonexistent/kgw.toml"],
        ["simulate", "--gateway", "nohostport"],
        ["bogus-command"],
    ],
)
async def test_bad_arguments_exit_nonzero_without_traceback(args):
    result = await asyncio.to_thread(run_kgw, *args)
    assert result.returncode != 0
    assert result.stderr.strip()
    assert "Traceback" not in result.stderr


async def test_unknown_config_key_is_refused(tmp_path):
    config = tmp_path / "kgw.toml"
    config.write_text("[gateway]\nsip_prot = 5060\n", encoding="utf-8")
    result = await asyncio.to_thread(run_kgw, "gateway", "--config", str(config))
    assert result.returncode != 0
    assert "sip_prot" in result.stderr
    assert "Traceback" not in result.stderr


# --- gateway + simulator as two processes ---------------------------------------------------------------------


async def test_gateway_and_simulator_processes(tmp_path, procs):
    sip, http = free_sip_port(), free_tcp_port()
    db = tmp_path / "g.db"
    gateway = Proc(
        "gateway",
        ["gateway", "--sip-port", str(sip), "--http-port", str(http), "--db", str(db), "--log-level", "WARNING"],
        tmp_path,
    )
    procs.append(gateway)
    api = f"http://127.0.0.1:{http}"
    health = await until_json(f"{api}/healthz", lambda b: b["status"] == "ok", gateway)
    assert health["sip_port"] == sip

    simulator = Proc(
        "simulate",
        ["simulate", "--gateway", f"127.0.0.1:{sip}", "--kindergartens", "2", "--api", api, "--log-level", "WARNING"],
        tmp_path,
    )
    procs.append(simulator)
    ids = {d.id for k in build_city(2, seed=2020) for d in k.devices}  # what `kgw simulate` plans by default
    devices = await until_json(
        f"{api}/api/devices?limit=1000",
        lambda b: {d["id"] for d in b["items"] if d["online"]} == ids,
        simulator,
    )
    assert devices["total"] == len(ids)
    assert all(d["kindergarten_id"] for d in devices["items"]), "the simulator provisioned its kindergartens"
    status, kindergartens = await http_json(f"{api}/api/kindergartens")
    assert kindergartens["total"] == 2

    assert await simulator.stop(signal.SIGINT) == 0, simulator.output()[-3000:]
    assert await gateway.stop(signal.SIGTERM) == 0, gateway.output()[-3000:]
    assert "Traceback" not in gateway.output() + simulator.output()

    def read_store() -> tuple[list[Any], list[Any]]:
        store = open_store(str(db))
        try:
            page = store.list_devices(DeviceFilter(limit=1000))
            return list(page.items), store.list_status_events(limit=1000)
        finally:
            store.close()

    rows, events = await asyncio.to_thread(read_store)
    assert {d.id for d in rows} == ids
    assert not any(d.online for d in rows), "devices are stored offline after they unregistered"
    latest: dict[str, Any] = {}
    for event in events:  # newest first
        latest.setdefault(event.entity_id, event)
    assert all(latest[i].reason == "unregistered" and not latest[i].online for i in ids)


# --- demo ---------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)  # 20 processes' worth of start-up on a possibly busy machine
async def test_demo_runs_and_stops_on_sigint(tmp_path, procs):
    """The demo brings up the 18 platforms, the gateway (registered with all of them), the city, a
    Mosquitto broker and the police receiver; a button pressed through the simulator's control
    endpoint reaches the police over MQTT and the district, municipal and police platforms."""
    base = free_ports(21)  # SIP, then the gateway's HTTP port and the 18 consoles, then the control endpoint
    sip, http, control = base, base + 1, base + 20
    demo = Proc(
        "demo",
        [
            "demo",
            "--kindergartens",
            "3",
            "--sip-port",
            str(sip),
            "--http-port",
            str(http),
            "--control-port",
            str(control),
            "--alarm-rate",
            "0",
            "--keepalive-interval",
            "5",
            "--data-dir",
            str(tmp_path / "demo"),
            "--log-level",
            "WARNING",
        ],
        tmp_path,
    )
    procs.append(demo)
    api = f"http://127.0.0.1:{http}"
    health = await until_json(f"{api}/healthz", lambda b: b["devices_online"] > 0, demo, timeout=90)
    assert health["sip_port"] == sip
    assert await wait_for(lambda: "kgw demo is running" in demo.output(), timeout=30)
    assert demo.output().count("  platform  http://127.0.0.1:") == 18
    # The banner's demo administrator: one login, valid on the gateway's and every platform's console.
    user, password = banner_login(demo.output())
    assert user == "admin" and len(password) >= 10
    status, _ = await http_json(f"{api}/api/districts", headers={})
    assert status == 401, "the demo runs with logins"
    session = await login_headers(api, user, password)
    status, districts = await http_json(f"{api}/api/districts", headers=session)
    assert status == 200 and districts["items"]
    uppers = await until_json(
        f"{api}/api/upper-platforms",
        lambda b: len(b["items"]) == 18 and all(u["state"] == "registered" for u in b["items"]),
        demo,
        headers=session,
    )
    municipal = f"http://127.0.0.1:{http + 1}"  # the municipal platform's console and API
    await until_json(f"{api}/healthz", lambda b: b["devices_online"] >= 6, demo)
    await until_json(f"{municipal}/api/channels", lambda b: b["total"] > 0, demo, timeout=90, headers=session)
    status, pressed = await http_json(f"http://127.0.0.1:{control}/press", {"kind": "button"})
    assert status == 200, pressed
    alarms = await until_json(f"{api}/api/alarms", lambda b: b["total"] == 1, demo, headers=session)
    assert alarms["items"][0]["device_id"] == pressed["device_id"]
    sinks = await until_json(
        f"{api}/api/alarm-sinks",
        lambda b: b["items"] and all(s["depth"] == 0 for s in b["items"]),
        demo,
        headers=session,
    )
    assert {s["sink"] for s in sinks["items"]} == {"mqtt", "gb"}
    await until_json(f"{municipal}/api/alarms", lambda b: b["total"] == 1, demo, headers=session)
    # The operator acknowledges on the municipal console with the same login (the session cookie
    # is per host); the alarm records the user.
    municipal_session = {**session, "Origin": municipal}
    alarm_id = (await http_json(f"{municipal}/api/alarms", headers=session))[1]["items"][0]["id"]
    status, acked = await http_json(f"{municipal}/api/alarms/{alarm_id}/ack", {}, headers=municipal_session)
    assert status == 200 and acked["acknowledged_by"] == "admin", acked
    assert len(uppers["items"]) == 18
    assert await demo.stop(signal.SIGINT) == 0, demo.output()[-3000:]
    assert "Traceback" not in demo.output()
    assert "police receiver: mqtt: 1 received, 1 unique" in demo.output(), demo.output()[-2000:]


async def test_platform_and_gateway_processes_cascade(tmp_path, procs):
    """`kgw platform --level police` and `kgw gateway --upper police=…` as an operator runs them."""
    p_sip, p_http, g_sip, g_http = free_sip_port(), free_tcp_port(), free_sip_port(), free_tcp_port()
    police_secret = tmp_path / "police.pw"
    police_secret.write_text("pw-police\n", encoding="utf-8")
    police = Proc(
        "police",
        [
            "platform",
            "--level",
            "police",
            "--sip-port",
            str(p_sip),
            "--http-port",
            str(p_http),
            "--password",
            "pw-police",
            "--db",
            str(tmp_path / "police.db"),
            "--log-level",
            "INFO",
        ],
        tmp_path,
    )
    procs.append(police)
    health = await until_json(f"http://127.0.0.1:{p_http}/healthz", lambda b: True, police)
    assert health["role"] == "police" and health["gateway_id"] == "12010000002000000110"
    gateway = Proc(
        "gateway",
        [
            "gateway",
            "--sip-port",
            str(g_sip),
            "--http-port",
            str(g_http),
            "--db",
            str(tmp_path / "gw.db"),
            "--upper",
            f"police=12010000002000000110@127.0.0.1:{p_sip}",
            "--upper-password-file",  # the police link's own password, not the device password (issue 10, H1)
            f"police={police_secret}",
            "--log-level",
            "INFO",
        ],
        tmp_path,
    )
    procs.append(gateway)
    uppers = await until_json(
        f"http://127.0.0.1:{g_http}/api/upper-platforms",
        lambda b: b["items"] and b["items"][0]["state"] == "registered",
        gateway,
    )
    assert uppers["items"][0]["level"] == "police"
    devices = await until_json(f"http://127.0.0.1:{p_http}/api/devices", lambda b: b["total"] == 1, police)
    assert devices["items"][0]["id"] == "12010000002090000001"
    assert await gateway.stop(signal.SIGTERM) == 0
    assert "registered with upper platform police" in gateway.output()
    assert await police.stop(signal.SIGTERM) == 0
    assert "Traceback" not in gateway.output() + police.output()
