"""Benchmark: alarm latency to the police MQTT subscriber DURING the whole city's registration storm.

Processes, all on loopback: a real Mosquitto broker; ``kgw gateway`` with the
MQTT sink (and, with ``--uppers``, registered with the demo's 18 upper
platforms — municipal, police, 16 districts — served by one child process, so
every registration also means catalog NOTIFYs upward); ``kgw simulate`` with the
whole city (2,314 kindergartens, 5,322 devices) started at once; and, in this
process, the police receiver (:class:`simulators.police_receiver.PoliceReceiver`)
subscribed over MQTT.

From the moment the simulator starts, ``--press-rate`` button presses per second
for ``--press-seconds`` s go through the simulator's control endpoint
(``POST /press {"registered": true}``: a random alarm box that is registered at
that moment — an alarm from a device the gateway has not admitted yet is held or
refused, which is not what is measured here). Per alarm:

* from receipt: arrival at the subscriber − the payload's ``received_at`` (the
  gateway's clock when the MESSAGE reached its SIP core; same machine, same clock);
* from send: arrival − the simulator's wall clock just before the MESSAGE left
  (includes the kernel socket queue in front of the gateway).

p50/p99/max of both, lost (pressed, never arrived), duplicate alarm ids, and
how many presses fell inside the storm (before every device was online).
``--py-spy PATH`` samples the gateway during the presses (diagnostic; py-spy
0.4.1 from PyPI, not a project dependency).

Target (issue 12): p99 < 50 ms from receipt during the storm, 0 lost.

Usage: .venv/bin/python bench/alarm_storm_latency.py [--kindergartens 2314] [--uppers]
Prints a table and writes bench/results/alarm_storm_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import registration_storm  # noqa: E402
from bench.alarm_latency import Arrivals, post, summarise, wait_until  # noqa: E402
from bench.registration_storm import (  # noqa: E402
    cpu_seconds,
    free_port,
    rss_mib,
    scrape,
    start_gateway,
    start_simulator,
    stop,
    wait_http,
)
from gateway.deployment import upper_password_env  # noqa: E402
from simulators.city import build_city, city_summary  # noqa: E402
from simulators.mosquitto import MosquittoBroker  # noqa: E402
from simulators.police_receiver import PoliceReceiver, _parse_rfc3339  # noqa: E402


class StampedArrivals(Arrivals):
    """Arrivals that also keep each alarm's ``received_at`` (the gateway's receipt, wall s)."""

    def __init__(self) -> None:
        super().__init__()
        self.received_at: dict[tuple[str, int], float] = {}

    def hook(self, channel: str, payload: dict[str, Any], arrival: float) -> None:
        super().hook(channel, payload, arrival)
        if payload.get("event") == "alarm":
            key = (payload["device"]["id"], int(payload["device"]["sn"]))
            self.received_at.setdefault(key, _parse_rfc3339(payload["received_at"]))


# --- the 18 upper platforms (child process) -------------------------------------------------


async def serve_uppers(path: str) -> None:
    """Run the demo's 18 platforms in this process; write where they listen to ``path``; run until killed."""
    import secrets  # noqa: PLC0415

    from gateway.config import load_config  # noqa: PLC0415
    from gbplatform.app import build_platform  # noqa: PLC0415
    from gbplatform.ids import platform_id  # noqa: PLC0415
    from simulators.demo_ports import demo_platforms  # noqa: PLC0415

    services = []
    listening: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for platform in demo_platforms():
            password = secrets.token_urlsafe(12)
            config = load_config(
                None,
                id=platform_id(platform.level, platform.district),
                role=platform.level,
                sip_port=0,
                http_port=0,
                password=password,
                db=f"{tmp}/{platform.name}.db",
                flush_interval=1.0,
                alarm_escalate_after=0,
            )
            service = build_platform(config)
            await service.start()
            services.append(service)
            listening[platform.name] = {
                "level": platform.level,
                "district": platform.district,
                "id": config.id,
                "sip_port": service.sip_port,
                "password": password,
            }
        Path(path).write_text(json.dumps(listening))
        try:
            await asyncio.Event().wait()
        finally:
            for service in services:
                await service.stop()


def upper_flags(listening: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """``--upper`` flags and the password variables for the gateway."""
    flags, env = [], {}
    for name, up in listening.items():
        target = up["level"] if up["level"] != "district" else f"district/{up['district']}"
        flags.append(f"--upper={target}={up['id']}@127.0.0.1:{up['sip_port']}")
        env[upper_password_env(name)] = up["password"]
    return flags, env


# --- the measurement -------------------------------------------------------------------------


async def press_at_rate(base: str, rate: float, seconds: float) -> tuple[list[tuple[tuple[str, int], float]], int]:
    """Press a registered alarm box ``rate`` times a second for ``seconds`` s; (key, pressed wall) and misses."""
    pressed: list[tuple[tuple[str, int], float]] = []
    misses = 0
    start = time.monotonic()
    n = 0

    async def one() -> None:
        nonlocal misses
        try:
            answer = await asyncio.to_thread(post, f"{base}/press", {"registered": True})
        except OSError:  # 404 while no alarm box is registered yet (urllib raises HTTPError, an OSError)
            misses += 1
            return
        pressed.append(((answer["device_id"], int(answer["sn"])), float(answer["pressed_at_wall"])))

    tasks = []
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) + 1
        while n < due:
            n += 1
            tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(max(0.0, n / rate - (time.monotonic() - start)))
    await asyncio.gather(*tasks)
    return pressed, misses


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "alarm_storm_latency",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "kindergartens": args.kindergartens,
        "uppers": args.uppers,
        "press_rate": args.press_rate,
        "press_seconds": args.press_seconds,
        "sim_nice": args.sim_nice,
        "gateway_nice": args.gateway_nice,
        "load_before": os.getloadavg(),
    }
    expected = city_summary(build_city(args.kindergartens))["devices"]
    report["devices"] = expected
    broker = MosquittoBroker()
    await broker.start()
    arrivals = StampedArrivals()
    police = PoliceReceiver(broker.url, client_id="bench-police", persistent=True, on_message=arrivals.hook)
    await police.start()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            extra: list[str] = []
            env = dict(os.environ)
            if args.uppers:
                where = f"{tmp}/uppers.json"
                uppers = subprocess.Popen([sys.executable, __file__, "--serve-uppers", where], cwd=ROOT)
                procs.append(uppers)
                if not await wait_until(lambda: Path(where).exists(), 60, 0.2):
                    raise RuntimeError("the upper platforms did not start")
                flags, passwords = upper_flags(json.loads(Path(where).read_text()))
                extra += flags
                env.update(passwords)
            sip, http, control = free_port(), free_port(), free_port()
            os.environ.update(env)  # start_gateway passes our environment on (the uppers' passwords)
            gateway = start_gateway(
                tmp, sip, http, "--mqtt", broker.url, "--alarm-escalate-after", "0", *extra, log_level="ERROR"
            )
            procs.append(gateway)
            if args.gateway_nice:  # e.g. -10: shield the gateway from other work on a shared machine
                os.setpriority(os.PRIO_PROCESS, gateway.pid, args.gateway_nice)
            await asyncio.to_thread(wait_http, http)
            if args.uppers:
                registered = await wait_until(
                    lambda: (
                        sum(v for k, v in scrape(http).items() if k.startswith("kgw_upper_platform_registered{")) >= 18
                    ),
                    60,
                    0.5,
                )
                if not registered:
                    raise RuntimeError("the gateway did not register with its 18 upper platforms")
                await asyncio.sleep(1.0)  # they subscribe to its catalog right after
            cpu0 = cpu_seconds(gateway.pid)
            t0 = time.time()
            simulator = start_simulator(
                sip,
                http,
                [
                    *("--kindergartens", str(args.kindergartens), "--rate", str(args.rate)),
                    *("--control-port", str(control), "--keepalive-interval", "60"),
                ],
            )
            procs.append(simulator)
            if args.sim_nice:  # devices are other machines in the field: let them not steal the gateway's core
                os.setpriority(os.PRIO_PROCESS, simulator.pid, args.sim_nice)
            base = f"http://127.0.0.1:{control}"
            online_at: list[float] = []

            async def watch_online() -> None:
                while not online_at:
                    try:
                        if (await asyncio.to_thread(scrape, http)).get("kgw_devices_online", 0) >= expected:
                            online_at.append(time.time())
                    except OSError:
                        pass
                    await asyncio.sleep(0.25)

            watcher = asyncio.create_task(watch_online())
            up = await wait_until(lambda: _control_up(base), 60, 0.05)
            if not up:
                raise RuntimeError("the simulator's control endpoint did not come up")
            spy = None
            if args.py_spy:
                spy = subprocess.Popen(
                    [args.py_spy, "record", "--format", "raw", "-r", "200", "-d", str(int(args.py_spy_seconds))]
                    + ["-p", str(gateway.pid), "-o", str(ROOT / "bench" / "results" / "alarm_storm_latency.spy")]
                )
            pressed, misses = await press_at_rate(base, args.press_rate, args.press_seconds)
            await wait_until(lambda: all(k in arrivals.at["mqtt"] for k, _ in pressed), args.timeout, 0.1)
            await asyncio.wait_for(watcher, args.timeout)
            if spy is not None:
                await asyncio.to_thread(spy.wait, 60)
            storm_end = online_at[0] if online_at else float("inf")
            at = arrivals.at["mqtt"]
            got = [(k, p) for k, p in pressed if k in at]
            in_storm = [(k, p) for k, p in got if p < storm_end]
            ids = arrivals.ids["mqtt"]
            report["storm"] = {
                "all_online_after_s": round(storm_end - t0, 2) if online_at else None,
                "gateway_cpu_s": round(cpu_seconds(gateway.pid) - cpu0, 2),
                "gateway_peak_rss_mib": round(rss_mib(gateway.pid), 1),
            }
            report["alarms"] = {
                "pressed": len(pressed),
                "press_misses_no_device_registered_yet": misses,
                "delivered": len(got),
                "lost": len(pressed) - len(got),
                "duplicate_ids": len(ids) - len(set(ids)),
                "pressed_during_storm": len(in_storm),
                "from_receipt_during_storm": summarise([(at[k] - arrivals.received_at[k]) * 1000 for k, _ in in_storm]),
                "from_send_during_storm": summarise([(at[k] - p) * 1000 for k, p in in_storm]),
                "from_receipt_all": summarise([(at[k] - arrivals.received_at[k]) * 1000 for k, _ in got]),
                "from_send_all": summarise([(at[k] - p) * 1000 for k, p in got]),
            }
            report["timeline"] = [  # per alarm: s after the simulator started, ms from receipt, ms from send
                [round(p - t0, 3), round((at[k] - arrivals.received_at[k]) * 1000, 1), round((at[k] - p) * 1000, 1)]
                for k, p in sorted(got, key=lambda item: item[1])
            ]
            metrics = scrape(http)
            report["gateway_register_requests"] = metrics.get('kgw_sip_requests_total{method="REGISTER"}', 0)
            report["gateway_bulk_lane_dropped"] = metrics.get('kgw_sip_dropped_total{reason="dropped_backlog"}', 0)
            report["load_after"] = os.getloadavg()
        finally:
            await asyncio.to_thread(stop, *reversed(procs))
            await police.stop()
            await broker.stop()
            broker.cleanup()
    return report


def _control_up(base: str) -> bool:
    import urllib.request  # noqa: PLC0415

    try:
        urllib.request.urlopen(f"{base}/summary", timeout=2).read()
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kindergartens", type=int, default=2314)
    parser.add_argument("--rate", type=float, default=5000.0, help="simulator devices started per second")
    parser.add_argument("--press-rate", type=float, default=20.0, help="alarm presses per second")
    parser.add_argument("--press-seconds", type=float, default=10.0, help="s of presses from the city's start")
    parser.add_argument("--gateway-nice", type=int, default=0, help="nice value of the gateway (negative: root)")
    parser.add_argument("--sim-nice", type=int, default=0, help="nice value of the simulator process (0: as ours)")
    parser.add_argument("--uppers", action="store_true", help="register the gateway with the demo's 18 platforms")
    parser.add_argument("--timeout", type=float, default=120.0, help="s to wait for the city and the alarms")
    parser.add_argument("--py-spy", help="path of py-spy: sample the gateway during the presses (diagnostic)")
    parser.add_argument("--py-spy-seconds", type=float, default=12.0, help="s to sample from the first press")
    parser.add_argument("--serve-uppers", metavar="FILE", help=argparse.SUPPRESS)  # the child process mode
    parser.add_argument("--postgres", action="store_true", help="the gateway on an embedded PostgreSQL (--db)")
    args = parser.parse_args()
    if args.serve_uppers:
        try:
            import uvloop  # noqa: PLC0415

            uvloop.run(serve_uppers(args.serve_uppers))
        except KeyboardInterrupt:
            pass
        return
    name = "alarm_storm_latency"
    if args.postgres:  # registration_storm.start_gateway reads its phase_db for --db
        from simulators.postgres import PostgresServer  # noqa: PLC0415

        server = PostgresServer()
        server.start()
        atexit.register(server.cleanup)
        registration_storm.phase_db = lambda tmp: server.url
        name = "alarm_storm_latency_postgres"
    report = asyncio.run(run(args))
    report["db"] = "postgresql" if args.postgres else "sqlite"
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    storm, alarms = report["storm"], report["alarms"]
    print(
        f"\ncity: {report['kindergartens']} kindergartens, {report['devices']} devices starting at once"
        f"{' + 18 upper platforms' if report['uppers'] else ''}; all online after {storm['all_online_after_s']} s; "
        f"gateway CPU {storm['gateway_cpu_s']} s, peak RSS {storm['gateway_peak_rss_mib']} MiB, "
        f"{report['gateway_register_requests']:.0f} REGISTERs; "
        f"load {report['load_before'][0]:.1f} -> {report['load_after'][0]:.1f}"
    )
    print(f"\n{'alarms':<26} {'count':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for key in ("from_receipt_during_storm", "from_send_during_storm", "from_receipt_all", "from_send_all"):
        row = alarms[key]
        print(f"{key:<26} {row['count']:>6} {row['p50_ms']!s:>8} {row['p99_ms']!s:>8} {row['max_ms']!s:>8}")
    print(
        f"pressed {alarms['pressed']} ({alarms['pressed_during_storm']} during the storm), delivered "
        f"{alarms['delivered']}, lost {alarms['lost']}, duplicate ids {alarms['duplicate_ids']}"
    )
    print(f"\nreport: {out / name}.json")


if __name__ == "__main__":
    main()
