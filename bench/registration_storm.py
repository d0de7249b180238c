"""Benchmark: the whole city registers at once, then keeps alive.

Two phases, each with the gateway and the simulator as separate processes
(``kgw gateway`` and ``kgw simulate``) talking SIP over loopback UDP with
digest authentication:

1. storm — the whole city (2,314 kindergartens: one NVR, one alarm box and
   for 30 % a perimeter alarm each) starts registering; we measure from the
   gateway's first REGISTER to the moment every device is online, the
   registrations per second, the gateway's CPU seconds and peak RSS.
2. keepalive — a city of about 20,000 devices (every camera registers itself,
   ``--ipc``) keeps alive every 60 s; once all are online and their catalogs
   have settled, we measure the gateway's CPU share over a window.

Targets (issue 2): whole city online in under 10 s; steady keepalives of
20,000 devices under 5 % of one core.

Usage: .venv/bin/python bench/registration_storm.py [--phase storm|keepalive|both] [--window 60]
       [--postgres | --db postgresql://…]   (the gateway's registry on PostgreSQL instead of SQLite)
Prints a table and writes bench/results/registration_storm.json.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulators.city import SimKindergarten, build_city  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

# The benchmarks' API token: gateways started here accept it (by its SHA-256), every urllib call
# of the benchmarks sends it (/metrics needs a login), and `kgw simulate --api` reads KGW_API_TOKEN.
BENCH_TOKEN = os.environ.setdefault("KGW_API_TOKEN", "kgw_bench_" + secrets.token_urlsafe(32))
TOKEN_FLAG = ["--api-token-hash", f"bench:city_admin:{hashlib.sha256(BENCH_TOKEN.encode()).hexdigest()}"]


class _BenchToken(urllib.request.BaseHandler):
    def http_request(self, request: urllib.request.Request) -> urllib.request.Request:
        if not request.has_header("Authorization"):
            request.add_unredirected_header("Authorization", f"Bearer {BENCH_TOKEN}")
        return request


urllib.request.install_opener(urllib.request.build_opener(_BenchToken()))


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) in MiB."""
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def scrape(http: int) -> dict[str, float]:
    """The gateway's metrics as {name{labels}: value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def wait_http(http: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=2).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gateway did not come up")


def phase_db(tmp: str) -> str:
    """The gateway's database for one phase: a SQLite file in ``tmp`` unless --postgres / --db (see main)."""
    return f"{tmp}/bench.db"


def start_gateway(tmp: str, sip: int, http: int, *extra: str, log_level: str = "WARNING") -> subprocess.Popen[bytes]:
    """``kgw gateway`` on these ports with its registry in ``tmp`` (``extra``: more flags)."""
    args = ["gateway", "--sip-port", str(sip), "--http-port", str(http), "--db", phase_db(tmp), *TOKEN_FLAG, *extra]
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", *args, "--log-level", log_level], cwd=ROOT)


def start_simulator(sip: int, http: int, extra: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            "--gateway",
            f"127.0.0.1:{sip}",
            "--api",
            f"http://127.0.0.1:{http}",
            "--log-level",
            "WARNING",
            *extra,
        ],
        cwd=ROOT,
    )


def start_simulators(sip: int, http: int, extra: list[str], processes: int) -> list[subprocess.Popen[bytes]]:
    """``processes`` simulators, each running every N-th kindergarten of the same city (``--shard I/N``)."""
    if processes == 1:
        return [start_simulator(sip, http, extra)]
    return [start_simulator(sip, http, [*extra, "--shard", f"{i}/{processes}"]) for i in range(processes)]


def current_rss_mib(pid: int) -> float:
    """Resident set size now (VmRSS) in MiB."""
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def ipc_cameras(devices: int, kindergartens: int) -> tuple[int, int]:
    """The ``--cameras`` range whose ``--ipc`` city has about ``devices`` devices.

    Each kindergarten has its cameras (one IPC each), an alarm box and, for 30 %,
    a perimeter alarm: about ``cameras + 1.3`` devices.
    """
    mean = devices / kindergartens - 1.3
    lo = max(2, min(98, int(mean)))
    return (lo, lo + 1) if mean - lo >= 0.25 else (lo, lo)


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def spy_on(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy for ``seconds`` into collapsed stacks (``flamegraph.pl``/speedscope read them)."""
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "-r",
            "100",
            "-d",
            str(max(1, int(seconds))),
            "-p",
            str(pid),
            "-o",
            str(out),
            "-f",
            "raw",
        ],
        stdout=subprocess.DEVNULL,
    )


GATEWAY_ID = "12010000002090000001"
POLL = 0.5  # s between scrapes of every gateway's /metrics (each costs the gateway a few ms at 20k devices)


@dataclass
class Gateway:
    """One ``kgw gateway`` process of the benchmark and the devices it must get online."""

    index: int
    sip: int
    http: int
    gateway_id: str
    districts: tuple[str, ...]
    expected: int
    proc: subprocess.Popen[bytes] | None = None
    simulators: list[subprocess.Popen[bytes]] = field(default_factory=list)
    t_online: float | None = None
    cpu_online: float = 0.0
    t_settled: float | None = None
    cpu_settled: float = 0.0


def split_districts(city: list[SimKindergarten], n: int) -> list[tuple[tuple[str, ...], int]]:
    """The city's districts in ``n`` shares of about equal devices (largest first, to the lightest share)."""
    devices: dict[str, int] = {}
    for kg in city:
        devices[kg.district_code] = devices.get(kg.district_code, 0) + len(kg.devices)
    shares: list[tuple[list[str], list[int]]] = [([], [0]) for _ in range(n)]
    for code, count in sorted(devices.items(), key=lambda item: -item[1]):
        codes, total = min(shares, key=lambda share: share[1][0])
        codes.append(code)
        total[0] += count
    return [(tuple(sorted(codes)), total[0]) for codes, total in shares]


def settled_catalogs(m: dict[str, float]) -> float:
    """Catalog queries finished one way or another (complete, partial, or failed)."""
    return (
        m.get('kgw_catalogs_total{result="complete"}', 0)
        + m.get('kgw_catalogs_total{result="partial"}', 0)
        + m.get('kgw_query_failures_total{cmd="Catalog"}', 0)
    )


def run_phase(
    name: str,
    sim_args: list[str],
    city: list[SimKindergarten],
    window: float,
    timeout: float,
    *,
    sim_processes: int = 1,
    gateways: int = 1,
    via_redirect: bool = False,
    py_spy: str | None = None,
    settle: float = 30.0,
) -> dict[str, Any]:
    """Run ``gateways`` gateway processes + simulator(s) and measure.

    With several gateways each serves a share of the districts (``--districts``,
    the others as ``--peer``) with its own SQLite registry; each gets its own
    simulator(s) running only its districts (``--only-districts``), or, with
    ``via_redirect``, every simulator registers at the first gateway, which
    answers other districts' devices with a 302 that they follow.

    CPU seconds are counted from the first REGISTER (the simulator's
    provisioning of kindergartens through the API comes before and is not
    registration work): until every device is online, and until every device's
    catalog query finished ("settled": the DeviceInfo and Catalog queries each
    registration triggers are part of its cost).
    """
    shares = split_districts(city, gateways) if gateways > 1 else [((), sum(len(k.devices) for k in city))]
    total = sum(count for _, count in shares)
    with tempfile.TemporaryDirectory() as tmp:
        gws = [
            Gateway(i, free_port(), free_port(), f"{GATEWAY_ID[:-2]}{i + 1:02d}", codes, count)
            for i, (codes, count) in enumerate(shares)
        ]
        spy = settle_spy = None
        try:
            for gw in gws:
                extra = ["--id", gw.gateway_id, "--node", f"gw{gw.index}"]
                if gateways > 1:
                    extra += ["--districts", ",".join(gw.districts)]
                    for other in gws:
                        if other is not gw:
                            extra += ["--peer", f"{','.join(other.districts)}=127.0.0.1:{other.sip}/{other.gateway_id}"]
                Path(f"{tmp}/gw{gw.index}").mkdir()
                gw.proc = start_gateway(f"{tmp}/gw{gw.index}", gw.sip, gw.http, *extra)
            for gw in gws:
                wait_http(gw.http)
            for gw in gws:
                if via_redirect and gw.index > 0:
                    continue
                target = gws[0] if via_redirect else gw
                mine = [] if gateways == 1 or via_redirect else ["--only-districts", ",".join(gw.districts)]
                gw.simulators = start_simulators(
                    target.sip, target.http, [*sim_args, "--gateway-id", target.gateway_id, *mine], sim_processes
                )
            procs = [gw.proc for gw in gws if gw.proc is not None]
            sims = [p for gw in gws for p in gw.simulators]
            t_first: float | None = None
            cpu_first: dict[int, float] = {}
            sim_first = sim_online = sim_settled = 0.0
            deadline = time.monotonic() + timeout
            metrics: dict[int, dict[str, float]] = {}
            while time.monotonic() < deadline:
                metrics = {gw.index: scrape(gw.http) for gw in gws}
                now = time.monotonic()
                registers = sum(m.get('kgw_sip_requests_total{method="REGISTER"}', 0) for m in metrics.values())
                if t_first is None and registers > 0:
                    t_first = now
                    cpu_first = {gw.index: cpu_seconds(gw.proc.pid) for gw in gws if gw.proc is not None}
                    sim_first = sum(cpu_seconds(p.pid) for p in sims)
                    if py_spy:
                        spy = spy_on(py_spy, procs[0].pid, 20, ROOT / "bench" / "results" / f"{name}-gateway.stacks")
                for gw in gws:
                    m = metrics[gw.index]
                    assert gw.proc is not None
                    if t_first is not None and gw.t_online is None and m.get("kgw_devices_online", 0) >= gw.expected:
                        gw.t_online, gw.cpu_online = now, cpu_seconds(gw.proc.pid)
                        if all(g.t_online is not None for g in gws):
                            sim_online = sum(cpu_seconds(p.pid) for p in sims)
                            if py_spy:  # and what follows: the paced queries, catalogs, first keepalives
                                settle_spy = spy_on(
                                    py_spy, procs[0].pid, 20, ROOT / "bench" / "results" / f"{name}-settle.stacks"
                                )
                    if gw.t_online is not None and gw.t_settled is None and settled_catalogs(m) >= gw.expected:
                        gw.t_settled, gw.cpu_settled = now, cpu_seconds(gw.proc.pid)
                        if all(g.t_settled is not None for g in gws):
                            sim_settled = sum(cpu_seconds(p.pid) for p in sims)
                if all(gw.t_settled is not None for gw in gws):
                    break
                if any(p.poll() is not None for p in (*procs, *sims)):
                    raise RuntimeError(f"{name}: a process exited")
                time.sleep(POLL)
            online = sum(m.get("kgw_devices_online", 0) for m in metrics.values())
            if t_first is None or any(gw.t_online is None for gw in gws):
                raise RuntimeError(f"{name}: only {online} of {total} devices came online")
            t_online = max(gw.t_online or 0.0 for gw in gws)
            cpu_online = sum(gw.cpu_online - cpu_first[gw.index] for gw in gws)
            result: dict[str, Any] = {
                "devices": total,
                "gateway_processes": gateways,
                "simulator_processes": len(sims),
                "via_redirect": via_redirect,
                "time_to_all_online_s": round(t_online - t_first, 3),
                "registrations_per_s": round(total / max(t_online - t_first, 1e-6), 1),
                "gateway_cpu_s_until_online": round(cpu_online, 2),
                "gateway_cpu_ms_per_registration": round(1000 * cpu_online / total, 3),
                "simulator_cpu_s_until_online": round(sim_online - sim_first, 2),
                "register_requests": sum(
                    m.get('kgw_sip_requests_total{method="REGISTER"}', 0) for m in metrics.values()
                ),
            }
            if all(gw.t_settled is not None for gw in gws):
                t_settled = max(gw.t_settled or 0.0 for gw in gws)
                cpu_settled = sum(gw.cpu_settled - cpu_first[gw.index] for gw in gws)
                result.update(
                    {
                        "time_to_catalogs_settled_s": round(t_settled - t_first, 3),
                        "gateway_cpu_s_until_settled": round(cpu_settled, 2),
                        "gateway_cpu_ms_per_device_settled": round(1000 * cpu_settled / total, 3),
                        "simulator_cpu_s_until_settled": round(sim_settled - sim_first, 2),
                    }
                )
            if window > 0:
                time.sleep(settle)  # let the last DeviceInfo/Catalog answers and the first keepalives pass
                before = {gw.index: scrape(gw.http) for gw in gws}
                c0, t0 = sum(cpu_seconds(p.pid) for p in procs), time.monotonic()
                s0 = sum(cpu_seconds(p.pid) for p in sims)
                time.sleep(window)
                c1, t1 = sum(cpu_seconds(p.pid) for p in procs), time.monotonic()
                s1 = sum(cpu_seconds(p.pid) for p in sims)
                after = {gw.index: scrape(gw.http) for gw in gws}
                key = 'kgw_sip_requests_total{method="MESSAGE"}'
                messages = sum(after[i].get(key, 0) - before[i].get(key, 0) for i in after)
                result.update(
                    {
                        "window_s": round(t1 - t0, 1),
                        "messages_per_s": round(messages / (t1 - t0), 1),
                        "gateway_cpu_percent_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 2),
                        "gateway_cpu_us_per_keepalive": round(1e6 * (c1 - c0) / max(messages, 1), 1),
                        "simulator_cpu_percent_of_one_core": round(100 * (s1 - s0) / (t1 - t0), 2),
                        "devices_online_at_end": sum(m.get("kgw_devices_online", 0) for m in after.values()),
                    }
                )
            result["per_gateway"] = [
                {
                    "node": f"gw{gw.index}",
                    "districts": len(gw.districts) or 16,
                    "devices": gw.expected,
                    "time_to_online_s": round((gw.t_online or 0.0) - t_first, 3),
                    "cpu_s_until_online": round(gw.cpu_online - cpu_first[gw.index], 2),
                    "peak_rss_mib": round(rss_mib(gw.proc.pid), 1),
                    "rss_mib": round(current_rss_mib(gw.proc.pid), 1),
                }
                for gw in gws
                if gw.proc is not None
            ]
            result["gateway_peak_rss_mib"] = max(row["peak_rss_mib"] for row in result["per_gateway"])
            result["simulator_peak_rss_mib"] = round(max(rss_mib(p.pid) for p in sims), 1)
            return result
        finally:
            for profiler in (spy, settle_spy):
                if profiler is not None:
                    profiler.wait(timeout=60)
            stop(*(p for gw in gws for p in gw.simulators), *(gw.proc for gw in gws if gw.proc is not None))


def ipc_phase(args: argparse.Namespace, name: str, devices: int, window: float, timeout: float) -> dict[str, Any]:
    """A city where every camera registers itself (``--ipc``), sized to about ``devices`` devices."""
    cameras = ipc_cameras(devices, args.kindergartens)
    spec = f"{cameras[0]}-{cameras[1]}"
    sim = ["--kindergartens", str(args.kindergartens), "--ipc", "--cameras", spec, "--rate", str(args.rate)]
    city = build_city(args.kindergartens, ipc_mode=True, cameras_per_kindergarten=cameras)
    return run_phase(
        name,
        sim,
        city,
        window,
        timeout,
        sim_processes=args.sim_processes,
        gateways=args.gateways,
        via_redirect=args.via_redirect,
        py_spy=args.py_spy,
    )


PHASES = ("storm", "ipc", "keepalive", "city50k")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--phase",
        default="storm,ipc,keepalive",
        help=f"comma-separated phases of {', '.join(PHASES)}, or 'all' (default storm,ipc,keepalive)",
    )
    parser.add_argument("--kindergartens", type=int, default=2314)
    parser.add_argument("--devices", type=int, default=20_000, help="ipc phase: devices, about (default 20000)")
    parser.add_argument("--big-devices", type=int, default=50_000, help="city50k phase: devices, about (default 50000)")
    parser.add_argument(
        "--window",
        type=float,
        default=120.0,
        help="keepalive measurement window, s (two 60 s keepalive cycles by default; city50k: the same)",
    )
    parser.add_argument("--rate", type=float, default=5000.0, help="simulator devices started per second")
    parser.add_argument(
        "--sim-processes",
        type=int,
        default=1,
        help="simulator processes sharing the city (kgw simulate --shard I/N); the simulators share the cores",
    )
    parser.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="gateway processes, each serving a share of the districts (--districts/--peer) with its own "
        "simulator(s) running only those districts",
    )
    parser.add_argument(
        "--via-redirect",
        action="store_true",
        help="with --gateways N: every simulator registers at the first gateway and follows its 302s",
    )
    parser.add_argument("--py-spy", help="path of py-spy: sample the gateway for 20 s from the first REGISTER")
    parser.add_argument("--db", help="the gateway's database URL, e.g. postgresql://kgw@host/db (empty; every phase)")
    parser.add_argument("--postgres", action="store_true", help="an embedded PostgreSQL, a fresh database per phase")
    args = parser.parse_args()
    global phase_db  # noqa: PLW0603 (one option, read by start_gateway)
    if args.postgres:
        from simulators.postgres import PostgresServer  # noqa: PLC0415

        server = PostgresServer()
        server.start()
        atexit.register(server.cleanup)
        numbers = iter(range(1, 100))
        phase_db = lambda tmp: server.create_database(f"bench_{next(numbers)}")  # noqa: E731
    elif args.db:
        phase_db = lambda tmp: args.db  # noqa: E731
    phases = PHASES if args.phase == "all" else tuple(p.strip() for p in args.phase.split(","))
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    report: dict[str, object] = {
        "benchmark": "registration_storm",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg()[0],
        "db": "postgresql" if args.postgres or (args.db or "").startswith("postgres") else "sqlite",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if "storm" in phases:
        report["storm"] = run_phase(
            "storm",
            ["--kindergartens", str(args.kindergartens), "--rate", str(args.rate)],
            build_city(args.kindergartens),
            0,
            120,
            sim_processes=args.sim_processes,
            gateways=args.gateways,
            via_redirect=args.via_redirect,
        )
    if "ipc" in phases:
        report["ipc"] = ipc_phase(args, "ipc", args.devices, 0, 300)
    if "keepalive" in phases:
        report["keepalive"] = ipc_phase(args, "keepalive", 20_000, args.window, 300)
    if "city50k" in phases:
        report["city50k"] = ipc_phase(args, "city50k", args.big_devices, args.window, 600)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "registration_storm" if report["db"] == "sqlite" else "registration_storm_postgresql"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    print(f"\n{'phase':<10} {'metric':<36} {'value':>12}")
    for phase in PHASES:
        for key, value in (report.get(phase) or {}).items():  # type: ignore[attr-defined]
            if key == "per_gateway":
                for row in value:
                    print(f"{phase:<10} {row['node']:<36} {json.dumps(row)}")
            else:
                print(f"{phase:<10} {key:<36} {value!s:>12}")
    print(f"\nreport: {out / name}.json")


if __name__ == "__main__":
    main()
