"""Benchmark: PTZ latency from the console's click (HTTP POST) to the DeviceControl at the camera.

Processes, on loopback: ``kgw gateway`` (its own process, as deployed) and, in this
process, one simulated kindergarten (:class:`simulators.fleet.Fleet`) whose
entrance ball camera records when each DeviceControl MESSAGE reaches it, and an
HTTP client with a kept-alive connection, as the console's browser has. Each
command is a ``POST /api/channels/{id}/ptz`` alternating a move and a stop (a
click and its release); the latency is from just before the POST is written to
the moment the simulated camera handles the MESSAGE (both on this process's loop
clock). Commands are sent one after another; ``--gap`` seconds between them.

Target (issue 11): p99 < 50 ms on loopback.

Usage: .venv/bin/python bench/ptz_latency.py [--commands 500] [--gap 0.005]
Prints a table and writes bench/results/ptz_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.registration_storm import BENCH_TOKEN, cpu_seconds, free_port, start_gateway, stop, wait_http  # noqa: E402
from gateway.gb28181.device_ptz import PtzCameras  # noqa: E402
from gateway.gb28181.sip.transport import Transport  # noqa: E402
from simulators.fleet import Fleet, FleetOptions  # noqa: E402
from simulators.video import VideoProfile  # noqa: E402


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by nearest rank; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _ms(value: float | None) -> float | None:
    return round(value * 1000, 2) if value is not None else None


async def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return bool(predicate())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        sip, http = free_port(), free_port()
        gateway = start_gateway(tmp, sip, http)
        fleet: Fleet | None = None
        try:
            await asyncio.to_thread(wait_http, http)
            base = f"http://127.0.0.1:{http}"
            fleet = Fleet(
                FleetOptions(
                    gateway_port=sip,
                    kindergartens=1,
                    cameras=(3, 3),
                    transport=Transport.UDP,
                    api=base,
                    api_token=BENCH_TOKEN,
                    video=VideoProfile(width=160, height=90),
                )
            )
            await fleet.start()
            agent, feature, channel_id = _ptz_camera(fleet)
            headers = {"Authorization": f"Bearer {BENCH_TOKEN}"}
            async with aiohttp.ClientSession(headers=headers) as client:
                if not await _channel_ready(client, base, channel_id):
                    raise RuntimeError(f"the gateway never listed {channel_id} as a PTZ camera")
                cpu0 = cpu_seconds(gateway.pid)
                result = await _measure(client, f"{base}/api/channels/{channel_id}/ptz", feature, args)
                result["gateway_cpu_s"] = round(cpu_seconds(gateway.pid) - cpu0, 2)
            result.update(channel_id=channel_id, device_id=agent.profile.device_id)
            return result
        finally:
            if fleet is not None:
                await fleet.stop(unregister=False)
            stop(gateway)


def _ptz_camera(fleet: Fleet) -> tuple[Any, PtzCameras, str]:
    for agent in fleet.agents.values():
        for feature in agent.features:
            if isinstance(feature, PtzCameras) and feature.channels:
                return agent, feature, next(iter(feature.channels))
    raise RuntimeError("the simulated kindergarten has no PTZ camera")


async def _channel_ready(client: aiohttp.ClientSession, base: str, channel_id: str) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with client.get(f"{base}/api/channels?limit=1000") as response:
            if response.status == 200:
                items = (await response.json())["items"]
                if any(c["id"] == channel_id and c.get("ptz_type") == 1 and c.get("online") for c in items):
                    return True
        await asyncio.sleep(0.2)
    return False


async def _measure(
    client: aiohttp.ClientSession, url: str, feature: PtzCameras, args: argparse.Namespace
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    to_device: list[float] = []
    round_trip: list[float] = []
    lost = failed = 0
    for n in range(args.commands + args.warmup):
        body = {"action": "left", "speed": 64} if n % 2 == 0 else {"action": "stop"}
        before = feature.received_total
        started = loop.time()
        async with client.post(url, json=body) as response:
            await response.read()
            status = response.status
        answered = loop.time()
        if status != 200:
            failed += 1
            continue
        if not await _wait(lambda b=before: feature.received_total > b, 5.0):
            lost += 1
            continue
        if n >= args.warmup:
            to_device.append(feature.received[-1].at - started)
            round_trip.append(answered - started)
        if args.gap:
            await asyncio.sleep(args.gap)
    return {
        "commands": args.commands,
        "received": len(to_device),
        "lost": lost,
        "failed": failed,
        "to_device_ms": {
            "p50": _ms(percentile(to_device, 0.5)),
            "p99": _ms(percentile(to_device, 0.99)),
            "max": _ms(max(to_device, default=None)),
        },
        "http_round_trip_ms": {
            "p50": _ms(percentile(round_trip, 0.5)),
            "p99": _ms(percentile(round_trip, 0.99)),
            "max": _ms(max(round_trip, default=None)),
        },
        "target_p99_ms": 50,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=500, help="measured PTZ commands (moves and stops)")
    parser.add_argument("--warmup", type=int, default=20, help="commands sent first and not measured")
    parser.add_argument("--gap", type=float, default=0.005, help="s between commands")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    report["ok"] = bool(
        report["received"] == args.commands and (report["to_device_ms"]["p99"] or 1e9) < report["target_p99_ms"]
    )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ptz_latency.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nPTZ: {report['commands']} commands to {report['channel_id']} (ball camera), one after another")
    print(f"{'measure':<28} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, key in (("click -> DeviceControl at cam", "to_device_ms"), ("HTTP round trip", "http_round_trip_ms")):
        row = report[key]
        print(f"{label:<28} {row['p50']:>8} {row['p99']:>8} {row['max']:>8}")
    print(f"lost {report['lost']}, failed {report['failed']}, gateway CPU {report['gateway_cpu_s']} s")
    print(f"target p99 < {report['target_p99_ms']} ms: {'met' if report['ok'] else 'NOT met'}")
    print(f"\nreport: {out / 'ptz_latency.json'}")


if __name__ == "__main__":
    main()
