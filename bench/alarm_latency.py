"""Benchmark: alarm latency from the button press to the police, and the whole-city alarm storm.

Processes, all on loopback: a real Mosquitto broker; ``kgw gateway`` with the
MQTT and webhook sinks; ``kgw simulate`` with the whole city (2,314
kindergartens, ~5,300 devices) keeping alive every 60 s in the background and
its HTTP control endpoint; and, in this process, the police receiver
(:class:`simulators.police_receiver.PoliceReceiver`) subscribed over MQTT and
serving the webhook.

1. latency — ``--presses`` button presses, one every ``--interval`` s, each in
   the next kindergarten: from the simulator's wall clock just before the
   device sends its MESSAGE (``pressed_at_wall``) to the receiver's wall clock
   when the MQTT message / the webhook POST arrives. p50/p99/max per sink.
2. storm — every kindergarten presses at once (``POST /press-all``): all
   delivered? lost, duplicated ids, time from the first press until the last
   alarm arrives, per sink; gateway CPU seconds.

Targets (issue 4): p99 < 50 ms on loopback; storm: all delivered, none lost,
no duplicate ids.

Usage: .venv/bin/python bench/alarm_latency.py [--kindergartens 2314] [--presses 300]
Prints a table and writes bench/results/alarm_latency.json (``--postgres``: the gateway on an embedded
PostgreSQL, bench/results/alarm_latency_postgres.json).
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench.registration_storm import (  # noqa: E402
    cpu_seconds,
    free_port,
    rss_mib,
    scrape,
    start_gateway,
    stop,
    wait_http,
)
from simulators.city import build_city, city_summary  # noqa: E402
from simulators.mosquitto import MosquittoBroker  # noqa: E402
from simulators.police_receiver import PoliceReceiver  # noqa: E402
from simulators.postgres import PostgresServer  # noqa: E402

SECRET = "bench-secret"
SINKS = ("mqtt", "webhook")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


class Arrivals:
    """(device id, SN) -> arrival wall time, per sink, and ids seen."""

    def __init__(self) -> None:
        self.at: dict[str, dict[tuple[str, int], float]] = {sink: {} for sink in SINKS}
        self.ids: dict[str, list[str]] = {sink: [] for sink in SINKS}

    def hook(self, channel: str, payload: dict[str, Any], arrival: float) -> None:
        if payload.get("event") != "alarm":
            return
        key = (payload["device"]["id"], int(payload["device"]["sn"]))
        self.at[channel].setdefault(key, arrival)
        self.ids[channel].append(payload["alarm_id"])


def summarise(latencies_ms: list[float]) -> dict[str, float | int | None]:
    return {
        "count": len(latencies_ms),
        "p50_ms": round(percentile(latencies_ms, 0.50) or 0, 2) if latencies_ms else None,
        "p99_ms": round(percentile(latencies_ms, 0.99) or 0, 2) if latencies_ms else None,
        "max_ms": round(max(latencies_ms), 2) if latencies_ms else None,
    }


async def wait_until(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "alarm_latency",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "kindergartens": args.kindergartens,
        "backend": "postgresql" if args.postgres else "sqlite",
    }
    expected = city_summary(build_city(args.kindergartens))["devices"]
    report["devices"] = expected
    broker = MosquittoBroker()
    await broker.start()
    arrivals = Arrivals()
    police = PoliceReceiver(
        broker.url,
        client_id="bench-police",
        persistent=True,
        webhook=("127.0.0.1", 0),
        secret=SECRET,
        on_message=arrivals.hook,
    )
    await police.start()
    procs: list[subprocess.Popen[bytes]] = []
    postgres = PostgresServer() if args.postgres else None  # --postgres: an embedded server, its URL as --db
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if postgres is not None:
                await asyncio.to_thread(postgres.start)
            sip, http, control = free_port(), free_port(), free_port()
            gateway = start_gateway(
                tmp,
                sip,
                http,
                *(("--db", postgres.url) if postgres is not None else ()),
                *("--mqtt", broker.url, "--webhook-url", police.webhook_url, "--webhook-secret", SECRET),
                *("--alarm-escalate-after", "0"),
                log_level="ERROR",
            )
            procs.append(gateway)
            await asyncio.to_thread(wait_http, http)
            simulator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway.cli",
                    "simulate",
                    "--gateway",
                    f"127.0.0.1:{sip}",
                    "--api",
                    f"http://127.0.0.1:{http}",
                    "--kindergartens",
                    str(args.kindergartens),
                    "--control-port",
                    str(control),
                    "--keepalive-interval",
                    "60",
                    "--log-level",
                    "WARNING",
                ],
                cwd=ROOT,
            )
            procs.append(simulator)
            online = await wait_until(lambda: scrape(http).get("kgw_devices_online", 0) >= expected, 120, 0.5)
            if not online:
                raise RuntimeError("the city did not come online")
            await asyncio.sleep(args.settle)  # catalogs and DeviceInfo answers settle; keepalives go on
            base = f"http://127.0.0.1:{control}"
            city = build_city(args.kindergartens)

            # 1. latency: one press at a time, each in the next kindergarten
            pressed: list[tuple[tuple[str, int], float]] = []
            for n in range(args.presses):
                answer = await asyncio.to_thread(post, f"{base}/press", {"kindergarten": city[n % len(city)].id})
                pressed.append(((answer["device_id"], int(answer["sn"])), float(answer["pressed_at_wall"])))
                await asyncio.sleep(args.interval)
            await wait_until(lambda: all(len(arrivals.at[s]) >= len(pressed) for s in SINKS), 30)
            latency: dict[str, Any] = {}
            for sink in SINKS:
                values = [(arrivals.at[sink][key] - at) * 1000 for key, at in pressed if key in arrivals.at[sink]]
                latency[sink] = summarise(values) | {"lost": len(pressed) - len(values)}
            report["latency"] = latency | {"presses": len(pressed), "interval_s": args.interval}

            # 2. storm: every kindergarten at once
            await asyncio.sleep(1.1)  # a new second: the storm's presses are new events
            ids_before = {sink: len(arrivals.ids[sink]) for sink in SINKS}
            cpu0 = cpu_seconds(gateway.pid)
            spy = None
            if args.py_spy:  # diagnostic: sample the gateway during the storm
                spy = subprocess.Popen(
                    [
                        args.py_spy,
                        "record",
                        "--format",
                        "raw",
                        "-r",
                        "200",
                        "-d",
                        "6",
                        "-p",
                        str(gateway.pid),
                        "-o",
                        str(ROOT / "bench" / "results" / "alarm_storm.spy"),
                    ]
                )
                await asyncio.sleep(1.0)
            answer = await asyncio.to_thread(post, f"{base}/press-all", {"kind": "button"})
            storm_keys = [
                ((item["device_id"], int(item["sn"])), float(item["pressed_at_wall"])) for item in answer["items"]
            ]
            first_press = min(at for _, at in storm_keys)
            done = await wait_until(
                lambda: all(sum(1 for k, _ in storm_keys if k in arrivals.at[s]) == len(storm_keys) for s in SINKS),
                args.storm_timeout,
                0.1,
            )
            storm: dict[str, Any] = {
                "pressed": len(storm_keys),
                "all_delivered": done,
                "press_all_took_s": round(max(at for _, at in storm_keys) - first_press, 3),
            }
            for sink in SINKS:
                got = [arrivals.at[sink][k] for k, _ in storm_keys if k in arrivals.at[sink]]
                ids = arrivals.ids[sink][ids_before[sink] :]
                storm[sink] = {
                    "delivered": len(got),
                    "lost": len(storm_keys) - len(got),
                    "duplicate_ids": len(ids) - len(set(ids)),
                    "last_arrival_after_first_press_s": round(max(got) - first_press, 3) if got else None,
                    "latency": summarise(
                        [(arrivals.at[sink][k] - at) * 1000 for k, at in storm_keys if k in arrivals.at[sink]]
                    ),
                }
            storm["gateway_cpu_s"] = round(cpu_seconds(gateway.pid) - cpu0, 2)
            if spy is not None:
                await asyncio.to_thread(spy.wait, 30)
            summary = json.loads(urllib.request.urlopen(f"{base}/summary", timeout=10).read())
            storm["device_alarms_answered"] = summary.get("alarms_answered")
            storm["device_alarms_pressed"] = summary.get("alarms_pressed")
            metrics = scrape(http)
            storm["gateway_duplicates_recognised"] = metrics.get("kgw_alarms_duplicate_total", 0)
            storm["gateway_peak_rss_mib"] = round(rss_mib(gateway.pid), 1)
            report["storm"] = storm
            report["receiver"] = police.report()
        finally:
            await asyncio.to_thread(stop, *reversed(procs))
            if postgres is not None:
                await asyncio.to_thread(postgres.cleanup)
            await police.stop()
            await broker.stop()
            broker.cleanup()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kindergartens", type=int, default=2314)
    parser.add_argument("--presses", type=int, default=300, help="single presses for the latency phase")
    parser.add_argument("--interval", type=float, default=0.1, help="s between single presses")
    parser.add_argument("--settle", type=float, default=20.0, help="s to wait after the city is online")
    parser.add_argument("--storm-timeout", type=float, default=120.0)
    parser.add_argument("--py-spy", help="path of py-spy: sample the gateway during the storm (diagnostic)")
    parser.add_argument("--postgres", action="store_true", help="the gateway on an embedded PostgreSQL, not SQLite")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "alarm_latency_postgres.json" if args.postgres else "alarm_latency.json"
    (out / name).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nbackend: {report['backend']}")
    print(f"\ncity: {report['kindergartens']} kindergartens, {report['devices']} devices keeping alive every 60 s")
    print(f"\n{'phase':<8} {'sink':<8} {'count':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'lost':>5}")
    for sink in SINKS:
        row = report["latency"][sink]
        print(
            f"{'latency':<8} {sink:<8} {row['count']:>6} {row['p50_ms']:>8} {row['p99_ms']:>8} {row['max_ms']:>8} "
            f"{row['lost']:>5}"
        )
    storm = report["storm"]
    for sink in SINKS:
        row = storm[sink]
        lat = row["latency"]
        print(
            f"{'storm':<8} {sink:<8} {row['delivered']:>6} {lat['p50_ms']:>8} {lat['p99_ms']:>8} {lat['max_ms']:>8} "
            f"{row['lost']:>5}   dup ids {row['duplicate_ids']}, last arrival "
            f"{row['last_arrival_after_first_press_s']} s after the first press"
        )
    print(
        f"storm: {storm['pressed']} pressed (press-all took {storm['press_all_took_s']} s), all delivered: "
        f"{storm['all_delivered']}, gateway CPU {storm['gateway_cpu_s']} s, "
        f"devices answered {storm['device_alarms_answered']}/{storm['device_alarms_pressed']}"
    )
    print(f"\nreport: {out / name}")


if __name__ == "__main__":
    main()
