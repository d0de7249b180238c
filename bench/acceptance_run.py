"""Benchmark: one kindergarten's whole acceptance run (验收), as an operator runs it over the HTTP API.

Everything real and in this process (uvloop): the gateway (:class:`GatewayService`) with its
district, municipal and police platforms (three more :class:`GatewayService` nodes it registers
with) and a Mosquitto broker (Debian's ``mosquitto``) as the police alarm integration; one
simulated kindergarten (``simulators.fleet``) with ``--cameras`` (16) cameras behind its NVR
streaming ``--width``x``--height`` H.264, and its one-button alarm box.

The run: ``POST /api/acceptance`` → channels check → a snapshot of every camera (decoded and
judged; ``snapshot_concurrency`` at once) → the operator confirms the areas (the plan's, at
once) → the drill window opens → the guard presses the button at once → every upper level's
delivery proof → the report. Measured: wall time from the POST to the finished run, each
check's own time, the drill's end-to-end time per target, the process's CPU time over the run,
``--repeat`` (3) runs of the same kindergarten. Target: a 16-camera kindergarten in < 30 s.

Usage: .venv/bin/python bench/acceptance_run.py [--cameras 16] [--repeat 3] [--concurrency 8]
Prints a table and writes bench/results/acceptance_run.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "platform"))

from bench.relay_capacity import run_loop  # noqa: E402

TOKEN = os.environ.setdefault("KGW_API_TOKEN", "kgw_bench_acceptance_token_0123456789abcdef")
TARGET_S = 30.0


def _http(url: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


async def http(url: str, body: Any = None) -> Any:
    return await asyncio.to_thread(_http, url, body)


async def start_city(args: argparse.Namespace) -> tuple[Any, Any, list[Any], Any]:
    from gateway.cascade.policy import PolicyLevel, SharePolicy
    from gateway.cascade.upper import UpperPlatformConfig
    from gateway.config import UpperSpec, load_config
    from gateway.security.accounts import ApiToken, secret_digest
    from gateway.security.principal import Role
    from gbplatform.app import build_gateway, build_platform
    from gbplatform.ids import platform_id
    from simulators.fleet import Fleet, FleetOptions, fleet_city
    from simulators.mosquitto import MosquittoBroker
    from simulators.video import VideoProfile

    video = VideoProfile(width=args.width, height=args.height, seconds=2.0, bitrate=args.bitrate)
    plan = FleetOptions(kindergartens=1, cameras=(args.cameras, args.cameras), video=video, sub_streams=0.0)
    district = fleet_city(plan)[0].district_code
    broker = MosquittoBroker()
    await broker.start()
    nodes: list[Any] = []
    uppers = []
    for level, code in (("district", district), ("municipal", None), ("police", None)):
        own = platform_id(level, code)
        node = build_platform(
            load_config(
                None,
                id=own,
                role=level,
                sip_port=0,
                http_port=0,
                db=":memory:",
                password=f"pw-{own}",
                log_level="WARNING",
            )
        )
        await node.start()
        nodes.append(node)
        link = UpperPlatformConfig(
            name=level,
            server_id=own,
            host="127.0.0.1",
            port=node.sip_port,
            password=f"pw-{own}",
            keepalive_interval=10.0,
            register_retry_min=0.2,
            register_retry_max=1.0,
        )
        uppers.append(UpperSpec(link, SharePolicy(PolicyLevel(level), code)))
    gateway = build_gateway(
        load_config(
            None,
            sip_port=0,
            http_port=0,
            db=":memory:",
            flush_interval=0.5,
            log_level="WARNING",
            upper_platforms=tuple(uppers),
            mqtt=broker.url,
            api_tokens=(ApiToken("operator", secret_digest(TOKEN), Role.CITY_ADMIN),),
            acceptance_drill_wait=60.0,
            acceptance_proof_wait=30.0,
        )
    )
    await gateway.start()
    gateway.acceptance.settings = replace(gateway.acceptance.settings, snapshot_concurrency=args.concurrency)
    fleet = Fleet(
        FleetOptions(
            gateway_port=gateway.sip_port,
            gateway_id=gateway.config.id,
            password=gateway.config.password,
            kindergartens=1,
            cameras=(args.cameras, args.cameras),
            video=video,
            sub_streams=0.0,
            confirm_areas=False,
            api=f"http://127.0.0.1:{gateway.http_port}",
            api_token=TOKEN,
        )
    )
    await fleet.start()
    channels = sum(len(d.channels) for k in fleet.city for d in k.devices)
    deadline = time.monotonic() + 120
    while len(gateway.directory.channels) < channels or not all(
        s["state"] == "registered" for s in gateway.cascade.status()
    ):
        if time.monotonic() > deadline:
            raise SystemExit("the kindergarten or the uppers never came up")
        await asyncio.sleep(0.2)
    return gateway, fleet, nodes, broker


async def one_run(gateway: Any, fleet: Any) -> dict[str, Any]:
    kg = fleet.city[0]
    api = f"http://127.0.0.1:{gateway.http_port}/api/acceptance"
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run = await http(api, {"kindergarten_id": kg.id})
    areas = {c.id: c.area for d in kg.devices for c in d.channels if c.kind == "camera"}
    pressed = False
    at_areas = at_press = None
    while not run["finished"]:
        if run["state"] == "confirm_areas":
            at_areas = time.perf_counter() - wall0
            run = await http(f"{api}/{run['id']}/areas", {"areas": areas})
        if run["state"] == "drill" and not pressed:
            at_press = time.perf_counter() - wall0
            fleet.press(kg.id, "button")
            pressed = True
        await asyncio.sleep(0.05)
        run = await http(f"{api}/{run['id']}")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    checks = {c["name"]: c for c in run["checks"]}
    drill = checks["drill"]
    return {
        "state": run["state"],
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "to_areas_s": round(at_areas or 0.0, 3),
        "to_press_s": round(at_press or 0.0, 3),
        "checks": {name: {"state": c["state"], "elapsed_s": c["elapsed"]} for name, c in checks.items()},
        "cameras": len(areas),
        "snapshots": sum(1 for i in checks["pictures"]["items"] if i.get("snapshot")),
        "drill_targets": {i["subject"]: {"level": i["level"], "end_to_end_s": i["elapsed"]} for i in drill["items"]},
        "fix": {name: c["fix"] for name, c in checks.items() if c["fix"]},
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    gateway, fleet, nodes, broker = await start_city(args)
    runs = []
    try:
        for _ in range(args.repeat):
            runs.append(await one_run(gateway, fleet))
    finally:
        await fleet.stop(unregister=False)
        await gateway.stop()
        for node in reversed(nodes):
            await node.stop()
        await broker.stop()
    walls = [r["wall_s"] for r in runs]
    return {
        "cameras": args.cameras,
        "video": f"{args.width}x{args.height}",
        "snapshot_concurrency": args.concurrency,
        "load_avg_1m": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "wall_s_median": statistics.median(walls),
        "wall_s_max": max(walls),
        "target_s": TARGET_S,
        "ok": all(r["state"] == "passed" for r in runs) and max(walls) < TARGET_S,
        "runs": runs,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"acceptance run, {report['cameras']} cameras ({report['video']}), snapshot concurrency "
        f"{report['snapshot_concurrency']}, load {report['load_avg_1m']:.1f} on {report['cpu_count']} cores",
        f"{'run':>3} {'state':>7} {'wall s':>7} {'cpu s':>6} {'channels':>9} {'pictures':>9} {'areas':>6} "
        f"{'drill':>6}  drill end-to-end per target (s)",
    ]
    for n, run in enumerate(report["runs"], 1):
        c = run["checks"]
        e2e = ", ".join(f"{t['level']} {t['end_to_end_s']}" for t in run["drill_targets"].values())
        lines.append(
            f"{n:>3} {run['state']:>7} {run['wall_s']:>7.2f} {run['cpu_s']:>6.2f} "
            + " ".join(
                f"{(c[k]['elapsed_s'] or 0):>{w}.2f}"
                for k, w in (("channels", 9), ("pictures", 9), ("areas", 6), ("drill", 6))
            )
            + f"  {e2e}"
        )
    verdict = "OK" if report["ok"] else "NOT MET"
    lines.append(
        f"median {report['wall_s_median']:.2f} s, max {report['wall_s_max']:.2f} s (target < {TARGET_S:.0f} s): {verdict}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="cameras snapshotted at once")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--bitrate", type=int, default=1_500_000)
    args = parser.parse_args()
    report = run_loop(main(args))
    print(table(report))
    out = ROOT / "bench" / "results" / "acceptance_run.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"wrote {out}")
