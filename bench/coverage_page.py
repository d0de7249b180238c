"""Benchmark: the coverage dashboard for the whole simulated city (issue 13: page renders in < 1 s).

Builds the registry state of the simulators' city (``simulators.city.build_city``:
2,314 kindergartens; with ``--ipc`` every camera is its own device, ~20,000 devices
with the default ``--cameras 4,10``) in the directory of a gateway started in this
process (``build_gateway``, SQLite file in a temporary directory), with faults spread
on purpose (``--offline`` share of devices offline, unconfirmed entrances, missing
drills, a few flapping devices with real ``status_event`` rows over 90 days). Then:

1. ``CoverageService.evaluate(fresh=True)``: CPU ms (``process_time``) per full evaluation.
2. The API over loopback HTTP from a client thread: ``/api/coverage/kindergartens?all=true``,
   ``/summary``, ``/export.csv``, ``/export.xlsx`` — wall ms p50/max over ``--repeat``
   (each request evaluates afresh: the 1 s cache is cleared before it), and
   ``/history`` cold (90 days replayed from ``status_event`` and kept) and warm.
3. Headless Chromium (Debian's ``/usr/bin/chromium`` over the DevTools protocol, the
   API token as an extra header) loads ``/console/assets/coverage.html``
   ``--repeat`` times: ms from navigation start until the table of every kindergarten
   is in the DOM (``window.kgwCoverage.renderedAt``), p50/max.

Usage: .venv/bin/python bench/coverage_page.py [--kindergartens 2314] [--ipc/--no-ipc] [--repeat 5]
Prints a table and writes bench/results/coverage_page.json. ~1 minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "platform"))

import aiohttp  # noqa: E402

from gateway.config import load_config  # noqa: E402
from gateway.registry.model import (  # noqa: E402
    AreaConfirmation,
    AreaTag,
    Channel,
    Device,
    EntityKind,
    Kindergarten,
    StatusEvent,
    guess_area,
)
from gateway.security.accounts import ApiToken, secret_digest  # noqa: E402
from gateway.security.principal import Role  # noqa: E402
from gbplatform.app import build_gateway  # noqa: E402
from simulators.city import build_city  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,900",
    "--remote-debugging-port=0",
]  # fmt: skip
RESULTS = ROOT / "bench" / "results"


def populate(service: Any, args: argparse.Namespace) -> dict[str, int]:
    """The city's registry state in the node's directory, with faults; returns what was built."""
    rng = random.Random(args.seed)
    lo, hi = (int(x) for x in args.cameras.split(","))
    city = build_city(args.kindergartens, cameras_per_kindergarten=(lo, hi), ipc_mode=args.ipc)
    d = service.directory
    now = time.time()
    d.add_kindergartens(Kindergarten(k.id, k.name, k.district_code, k.address) for k in city)
    devices = channels = 0
    flapping: list[str] = []
    for kg in city:
        for sim in kg.devices:
            online = rng.random() >= args.offline
            d.put_device(Device(sim.id, kg.id, kg.district_code, sim.name, sim.type_code, online=online))
            rows = [
                Channel(c.id, sim.id, kg.id, kg.district_code, name=c.name, area=guess_area(c.name),
                        type_code=c.type_code, online=True)
                for c in sim.channels
            ]  # fmt: skip
            d.replace_channels(sim.id, rows)
            devices += 1
            channels += len(rows)
            for c in sim.channels:
                if c.kind == "camera" and c.area in ("entrance", "perimeter") and rng.random() < 0.9:
                    d.confirm_area(AreaConfirmation(c.id, AreaTag(c.area), "installer", now), 0.0)
            if rng.random() < 0.01:
                flapping.append(sim.id)
        if rng.random() < 0.7:
            service.coverage.last_drills[kg.id] = now - rng.uniform(0, 240) * 86400
    events = [
        StatusEvent(device_id, EntityKind.DEVICE, online, now - rng.uniform(0, 90 * 86400), "keepalive")
        for device_id in flapping
        for online in (False, True) * 5
    ]
    return {"kindergartens": len(city), "devices": devices, "channels": channels, "events": len(events)}, events


def fetch(url: str, token: str) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        size = len(response.read())
    return (time.perf_counter() - start) * 1000, size


class Cdp:
    """The smallest DevTools client: one websocket, flat sessions."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.ids, self.pending = ws, itertools.count(1), {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            future = self.pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data.get("result", data.get("error")))

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        msg_id = next(self.ids)
        self.pending[msg_id] = asyncio.get_running_loop().create_future()
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(self.pending[msg_id], 60)

    async def evaluate(self, session: str, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")


async def render_times(url: str, token: str, repeat: int) -> list[dict[str, float]]:
    """Load the page ``repeat`` times; per load ms to the full table and the row count."""
    out: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="kgw-bench-chromium-") as tmp:
        profile = Path(tmp) / "profile"
        proc = await asyncio.create_subprocess_exec(
            str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            port_file = profile / "DevToolsActivePort"
            for _ in range(600):
                if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                    break
                await asyncio.sleep(0.1)
            port, path = port_file.read_text().splitlines()[:2]
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
                cdp = Cdp(ws)
                target = (await cdp.call("Target.createTarget", url="about:blank"))["targetId"]
                session = (await cdp.call("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
                await cdp.call("Network.enable", session)
                await cdp.call("Network.setExtraHTTPHeaders", session, headers={"Authorization": f"Bearer {token}"})
                await cdp.call("Runtime.enable", session)
                for _ in range(repeat + 1):  # the first load warms the browser's caches: not counted
                    await cdp.call("Page.navigate", session, url=url)
                    state = None
                    for _ in range(600):
                        state = await cdp.evaluate(
                            session,
                            "(() => { const s = window.kgwCoverage; return s && s.ready ? {ms: s.renderedAt,"
                            " rows: document.querySelectorAll('#coverage-body tr').length} : null; })()",
                        )
                        if state:
                            break
                        await asyncio.sleep(0.05)
                    if not state:
                        raise RuntimeError("the coverage page never showed its table")
                    out.append(state)
                cdp.reader.cancel()
                await ws.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    return out[1:]


def stats(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 1), "max": round(max(values), 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    token = "kgw_bench_" + secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="kgw-bench-coverage-") as tmp:
        config = load_config(
            None, sip_port=0, http_port=0, db=str(Path(tmp) / "kgw.db"), coverage_refresh=3600.0,
            api_tokens=(ApiToken("bench", secret_digest(token), Role.CITY_ADMIN),),
        )  # fmt: skip
        service = build_gateway(config)
        await service.start()
        try:
            built, events = populate(service, args)
            await service.store.call(lambda store: store.append_status_events(events))
            coverage = service.coverage
            cpu = []
            for _ in range(args.repeat):
                start = time.process_time()
                evaluation = coverage.evaluate(fresh=True)
                cpu.append((time.process_time() - start) * 1000)
            counts = {s: sum(r.status.value == s for r in evaluation.rows) for s in ("complete", "partial", "missing")}
            base = f"http://127.0.0.1:{service.http_port}"
            api: dict[str, Any] = {}
            for name, path in (
                ("list_all", "/api/coverage/kindergartens?all=true"),
                ("summary", "/api/coverage/summary"),
                ("export_csv", "/api/coverage/export.csv"),
                ("export_xlsx", "/api/coverage/export.xlsx"),
            ):
                times, size = [], 0
                for _ in range(args.repeat):
                    coverage._cache = None  # every request evaluates the city afresh
                    ms, size = await asyncio.to_thread(fetch, base + path, token)
                    times.append(ms)
                api[name] = {**stats(times), "bytes": size}
            cold, _ = await asyncio.to_thread(fetch, base + "/api/coverage/history", token)
            warm, _ = await asyncio.to_thread(fetch, base + "/api/coverage/history", token)
            api["history_cold"] = {"p50": round(cold, 1), "max": round(cold, 1)}
            api["history_warm"] = {"p50": round(warm, 1), "max": round(warm, 1)}
            renders = await render_times(f"{base}/console/assets/coverage.html", token, args.repeat)
        finally:
            await service.stop()
    return {
        "built": built,
        "statuses": counts,
        "evaluate_cpu_ms": stats(cpu),
        "api_ms": api,
        "render_ms": stats([r["ms"] for r in renders]),
        "rows_rendered": renders[-1]["rows"],
        "repeat": args.repeat,
        "loadavg": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kindergartens", type=int, default=2314)
    parser.add_argument("--cameras", default="4,10", help="cameras per kindergarten, min,max (default 4,10)")
    parser.add_argument("--ipc", action=argparse.BooleanOptionalAction, default=True, help="every camera a device")
    parser.add_argument("--offline", type=float, default=0.02, help="share of devices offline (default 0.02)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(f"city: {report['built']}  statuses: {report['statuses']}  loadavg: {report['loadavg']}")
    print(f"{'what':<28}{'p50 ms':>10}{'max ms':>10}")
    print(f"{'evaluate (CPU)':<28}{report['evaluate_cpu_ms']['p50']:>10}{report['evaluate_cpu_ms']['max']:>10}")
    for name, row in report["api_ms"].items():
        print(f"{'GET ' + name:<28}{row['p50']:>10}{row['max']:>10}")
    print(f"{'Chromium render (table)':<28}{report['render_ms']['p50']:>10}{report['render_ms']['max']:>10}")
    print(f"rows rendered: {report['rows_rendered']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "coverage_page.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"report: {RESULTS / 'coverage_page.json'}")


if __name__ == "__main__":
    main()
