"""Benchmark: the whole city's catalog delivered to the municipal and the police platforms.

Separate processes on loopback: the municipal platform and the police platform
(``kgw platform``), the gateway (``kgw gateway --upper …`` registered with both,
UDP, digest) and the simulated city (``kgw simulate``, 2,314 kindergartens).

1. fill — from the first REGISTER of the city to the moment each platform
   holds every channel its policy allows; the platforms subscribed to the
   gateway's catalog when it registered, so this is the NOTIFY path during the
   registration storm.
2. query — a fresh full Catalog query from each platform to the gateway
   (``POST /api/devices/<gateway>/query/Catalog`` on the platform): time until the
   last chunk arrived and how many MESSAGEs carried it (8 items per message).

Usage: .venv/bin/python bench/cascade_catalog.py [--kindergartens 2314]
Prints a table and writes bench/results/cascade_catalog.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.registration_storm import TOKEN_FLAG, cpu_seconds, free_port, scrape, stop, wait_http  # noqa: E402
from gateway.cascade.policy import SharePolicy  # noqa: E402
from gateway.registry.model import Channel, guess_area  # noqa: E402
from simulators.city import build_city  # noqa: E402

GATEWAY_ID = "12010000002090000001"
IDS = {"municipal": "12010000002000000001", "police": "12010000002000000110"}


def expected_counts(kindergartens: int) -> dict[str, int]:
    """How many channels each platform's policy allows over the simulated city."""
    channels = [
        Channel(
            id=ch.id,
            device_id=d.id,
            kindergarten_id=k.id,
            district_code=k.district_code,
            name=ch.name,
            area=guess_area(ch.name),
            type_code=ch.type_code,
        )
        for k in build_city(kindergartens)
        for d in k.devices
        for ch in d.channels
    ]
    police = SharePolicy.police()
    return {"municipal": len(channels), "police": sum(1 for c in channels if police.allows_channel(c))}


def kgw(*args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "gateway.cli", *args, *TOKEN_FLAG, "--log-level", "WARNING"]
    return subprocess.Popen(command, cwd=ROOT)


def wait_until(predicate: Any, timeout: float, step: float = 0.1) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic()
        time.sleep(step)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kindergartens", type=int, default=2314)
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args()
    expected = expected_counts(args.kindergartens)
    report: dict[str, Any] = {
        "benchmark": "cascade_catalog",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "kindergartens": args.kindergartens,
        "expected_channels": expected,
    }
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ports = {name: (free_port(), free_port()) for name in IDS}
            for name, (sip, http) in ports.items():
                procs.append(
                    kgw(
                        "platform",
                        "--level",
                        name,
                        "--sip-port",
                        str(sip),
                        "--http-port",
                        str(http),
                        "--db",
                        f"{tmp}/{name}.db",
                    )
                )
                wait_http(http)
            gw_sip, gw_http = free_port(), free_port()
            uppers = [f"--upper={name}={IDS[name]}@127.0.0.1:{ports[name][0]}" for name in IDS]
            gateway = kgw(
                "gateway", "--sip-port", str(gw_sip), "--http-port", str(gw_http), "--db", f"{tmp}/gw.db", *uppers
            )
            procs.append(gateway)
            wait_http(gw_http)
            subscribed = wait_until(
                lambda: all(
                    scrape(gw_http).get(f'kgw_upper_platform_registered{{level="{n}",platform="{n}"}}') == 1
                    for n in IDS
                ),
                30,
            )
            if subscribed is None:
                raise RuntimeError("the gateway did not register with the platforms")
            time.sleep(1.0)  # the platforms subscribe right after the registration
            cpu0 = cpu_seconds(gateway.pid)
            start = time.monotonic()
            procs.append(
                kgw(
                    "simulate",
                    "--gateway",
                    f"127.0.0.1:{gw_sip}",
                    "--api",
                    f"http://127.0.0.1:{gw_http}",
                    "--kindergartens",
                    str(args.kindergartens),
                    "--rate",
                    "5000",
                )
            )
            fill: dict[str, Any] = {}
            for name, (_, http) in ports.items():
                done = wait_until(
                    lambda h=http, n=name: scrape(h).get("kgw_channels_known", 0) >= expected[n],  # type: ignore[misc]
                    args.timeout,
                    0.25,
                )
                got = scrape(http).get("kgw_channels_known", 0)
                fill[name] = {
                    "channels": int(got),
                    "expected": expected[name],
                    "seconds_from_city_start": round(done - start, 2) if done else None,
                }
            fill["gateway_cpu_s"] = round(cpu_seconds(gateway.pid) - cpu0, 2)
            report["fill"] = fill
            time.sleep(3.0)
            query: dict[str, Any] = {}
            for name, (_, http) in ports.items():
                before = scrape(http)
                key = 'kgw_sip_requests_total{method="MESSAGE"}'
                items_key = f'kgw_upper_catalog_items_total{{platform="{name}"}}'
                gw_before = scrape(gw_http).get(items_key, 0)
                t0 = time.monotonic()
                request = urllib.request.Request(
                    f"http://127.0.0.1:{http}/api/devices/{GATEWAY_ID}/query/Catalog", data=b"", method="POST"
                )
                urllib.request.urlopen(request, timeout=30).read()
                sent = wait_until(lambda g=gw_before, k=items_key: scrape(gw_http).get(k, 0) > g, args.timeout, 0.05)
                after = scrape(http)
                query[name] = {
                    "seconds": round(sent - t0, 2) if sent else None,
                    "items": int(scrape(gw_http).get(items_key, 0) - gw_before),
                    "messages": int(after.get(key, 0) - before.get(key, 0)),
                }
            report["query"] = query
        finally:
            stop(*reversed(procs))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cascade_catalog.json").write_text(json.dumps(report, indent=2))
    print(f"\ncity: {args.kindergartens} kindergartens; expected channels {expected}")
    print(
        f"{'platform':<10} {'fill: channels':>15} {'s from city start':>18} {'query s':>8} {'items':>7} {'MESSAGEs':>9}"
    )
    for name in IDS:
        f, q = report["fill"][name], report["query"][name]
        print(
            f"{name:<10} {f['channels']:>15} {f['seconds_from_city_start']!s:>18} {q['seconds']!s:>8} "
            f"{q['items']:>7} {q['messages']:>9}"
        )
    print(f"gateway CPU during the fill: {report['fill']['gateway_cpu_s']} s")
    print(f"\nreport: {out / 'cascade_catalog.json'}")


if __name__ == "__main__":
    main()
