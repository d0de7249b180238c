"""The README's first command, as a new user runs it: ``scripts/demo.sh`` with no flags.

The demo once failed on its own default ports (the simulator's control endpoint
took a district platform's console port) while every test passed, because the
tests gave the demo ports of their own. This test uses the defaults, reads the
control URL from the banner like a user would, and presses a button through it.

A new user has no ``var/demo`` yet (the demo's default data directory); the next
time they run the demo it starts on what the first run left there. Both runs are
tested, in that order, from a moved-aside ``var/demo`` (put back afterwards). The
second one used to end with exit code 2 or a traceback under load: the store's
``PRAGMA optimize`` on close met the other connection's lock, and aiomqtt
registered a closed socket for writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from simulators.demo_ports import DemoPorts, ensure_free
from tests.conftest import http_json, wait_for
from tests.processes import banner_login, login_headers

ROOT = Path(__file__).resolve().parents[2]
DEMO_DATA = ROOT / "var" / "demo"  # `kgw demo`'s default --data-dir; scripts/demo.sh runs in ROOT
PRESS_LINE = re.compile(r"press\s+curl -X POST (http://127\.0\.0\.1:(\d+))/press")


@contextlib.contextmanager
def first_run_data_dir() -> Iterator[None]:
    """No ``var/demo`` when the test starts, as on a new user's first run; afterwards it is as before."""
    saved = DEMO_DATA.with_name(f"demo.kept-by-test-{os.getpid()}")
    moved = DEMO_DATA.exists()
    if moved:
        DEMO_DATA.rename(saved)
    try:
        yield
    finally:
        shutil.rmtree(DEMO_DATA, ignore_errors=True)  # what this run wrote
        if moved:
            saved.rename(DEMO_DATA)


@pytest.mark.timeout(480)
async def test_demo_sh_starts_on_its_defaults_and_a_button_press_reaches_the_gateway(tmp_path: Path) -> None:
    plan = DemoPorts()
    try:
        ensure_free(plan.uses())
    except ConfigError as exc:
        pytest.fail(f"cannot run the default demo here: {exc}")
    with first_run_data_dir():
        await _run_demo_and_press(plan, tmp_path / "first.out")
        assert (DEMO_DATA / "gateway.db").exists()
        await _run_demo_and_press(plan, tmp_path / "again.out")  # restarts on its own data


async def _run_demo_and_press(plan: DemoPorts, out: Path) -> None:
    with open(out, "wb") as sink:
        demo = subprocess.Popen(
            ["bash", "scripts/demo.sh"],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )

    def output() -> str:
        return out.read_text(errors="replace")

    try:
        started = await wait_for(lambda: "kgw demo is running" in output() or demo.poll() is not None, timeout=120)
        assert started and demo.poll() is None, f"the demo did not start:\n{output()[-4000:]}"
        banner = output()
        assert f"ports     {plan.summary()}" in banner
        match = PRESS_LINE.search(banner)
        assert match is not None, banner[-3000:]
        control, port = match.group(1), int(match.group(2))
        assert port == plan.control_port
        gateway = f"http://127.0.0.1:{plan.http}"

        async def registered() -> bool:
            status, body = await http_json(f"{control}/summary")
            return status == 200 and body["registered"] == body["devices"] > 0

        deadline = asyncio.get_running_loop().time() + 60
        while not await registered():
            assert asyncio.get_running_loop().time() < deadline, output()[-3000:]
            await asyncio.sleep(0.2)
        status, pressed = await http_json(f"{control}/press", {"kind": "button"})
        assert status == 200, pressed
        # Logged in as the banner's demo administrator, like a user who opens the console.
        session = await login_headers(gateway, *banner_login(banner))
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            status, alarms = await http_json(f"{gateway}/api/alarms?limit=200", headers=session)
            if status == 200 and any(a["device_id"] == pressed["device_id"] for a in alarms["items"]):
                break
            assert asyncio.get_running_loop().time() < deadline, f"the press never reached the gateway: {alarms}"
            await asyncio.sleep(0.2)
        # The police platform shows entrance cameras: the demo's installer confirmed them (names decide nothing).
        police = f"http://127.0.0.1:{plan.platform_http(1)}"
        police_session = await login_headers(police, *banner_login(banner))  # one login for every console
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            status, shared = await http_json(f"{police}/api/channels?limit=1000", headers=police_session)
            cameras = [c for c in shared["items"] if c["type_code"] == 131] if status == 200 else []
            if cameras:
                break
            assert asyncio.get_running_loop().time() < deadline, f"the police platform shows no camera: {shared}"
            await asyncio.sleep(0.2)
        status, ours = await http_json(f"{gateway}/api/channels?limit=1000", headers=session)
        assert status == 200, ours
        confirmed = {c["id"]: c["confirmed_area"] for c in ours["items"]}
        assert all(confirmed.get(c["id"]) in ("entrance", "perimeter") for c in cameras), cameras
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
        try:
            code = await asyncio.to_thread(demo.wait, 30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            raise
    assert code == 0, output()[-3000:]
    assert "Traceback" not in output(), output()[-3000:]
