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
Prints a table and writes bench/results/registration_storm.json.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulators.city import build_city, city_summary  # noqa: E402

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


def wait_http(http: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=2).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gateway did not come up")


def start_gateway(tmp: str, sip: int, http: int, *extra: str, log_level: str = "WARNING") -> subprocess.Popen[bytes]:
    """``kgw gateway`` on these ports with its registry in ``tmp`` (``extra``: more flags)."""
    args = ["gateway", "--sip-port", str(sip), "--http-port", str(http), "--db", f"{tmp}/bench.db", *TOKEN_FLAG, *extra]
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


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_phase(name: str, sim_args: list[str], expected: int, window: float, timeout: float) -> dict[str, float]:
    """Run one gateway + simulator pair and measure."""
    with tempfile.TemporaryDirectory() as tmp:
        sip, http = free_port(), free_port()
        gateway = start_gateway(tmp, sip, http)
        simulator = None
        try:
            wait_http(http)
            cpu0 = cpu_seconds(gateway.pid)
            simulator = start_simulator(sip, http, sim_args)
            t_first = t_online = None
            cpu_at_online = 0.0
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                m = scrape(http)
                now = time.monotonic()
                if t_first is None and m.get('kgw_sip_requests_total{method="REGISTER"}', 0) > 0:
                    t_first = now
                if m.get("kgw_devices_online", 0) >= expected:
                    t_online = now
                    cpu_at_online = cpu_seconds(gateway.pid)
                    break
                time.sleep(0.05)
            if t_online is None or t_first is None:
                raise RuntimeError(f"{name}: only {m.get('kgw_devices_online')} of {expected} devices came online")
            result = {
                "devices": expected,
                "time_to_all_online_s": round(t_online - t_first, 3),
                "registrations_per_s": round(expected / max(t_online - t_first, 1e-6), 1),
                "gateway_cpu_s_until_online": round(cpu_at_online - cpu0, 2),
                "register_requests": m.get('kgw_sip_requests_total{method="REGISTER"}', 0),
            }
            if window > 0:
                time.sleep(min(30.0, window / 2))  # let DeviceInfo/Catalog answers settle
                before = scrape(http)
                c0, t0 = cpu_seconds(gateway.pid), time.monotonic()
                time.sleep(window)
                c1, t1 = cpu_seconds(gateway.pid), time.monotonic()
                after = scrape(http)
                key = 'kgw_sip_requests_total{method="MESSAGE"}'
                messages = after.get(key, 0) - before.get(key, 0)
                result.update(
                    {
                        "window_s": round(t1 - t0, 1),
                        "messages_per_s": round(messages / (t1 - t0), 1),
                        "gateway_cpu_percent_of_one_core": round(100 * (c1 - c0) / (t1 - t0), 2),
                        "gateway_cpu_us_per_keepalive": round(1e6 * (c1 - c0) / max(messages, 1), 1),
                        "devices_online_at_end": after.get("kgw_devices_online", 0),
                    }
                )
            result["gateway_peak_rss_mib"] = round(rss_mib(gateway.pid), 1)
            return result
        finally:
            stop(*(p for p in (simulator, gateway) if p is not None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=["storm", "keepalive", "both"], default="both")
    parser.add_argument("--kindergartens", type=int, default=2314)
    parser.add_argument(
        "--window",
        type=float,
        default=120.0,
        help="keepalive measurement window, s (two 60 s keepalive cycles by default)",
    )
    parser.add_argument("--rate", type=float, default=5000.0, help="simulator devices started per second")
    args = parser.parse_args()
    report: dict[str, object] = {
        "benchmark": "registration_storm",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if args.phase in ("storm", "both"):
        n = city_summary(build_city(args.kindergartens))["devices"]
        report["storm"] = run_phase(
            "storm", ["--kindergartens", str(args.kindergartens), "--rate", str(args.rate)], n, 0, 120
        )
    if args.phase in ("keepalive", "both"):
        sim = ["--kindergartens", str(args.kindergartens), "--ipc", "--cameras", "7-8", "--rate", str(args.rate)]
        n = city_summary(build_city(args.kindergartens, ipc_mode=True, cameras_per_kindergarten=(7, 8)))["devices"]
        report["keepalive"] = run_phase("keepalive", sim, n, args.window, 300)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "registration_storm.json").write_text(json.dumps(report, indent=2))
    print(f"\n{'phase':<10} {'metric':<34} {'value':>12}")
    for phase in ("storm", "keepalive"):
        for key, value in (report.get(phase) or {}).items():  # type: ignore[union-attr]
            print(f"{phase:<10} {key:<34} {value:>12}")
    print(f"\nreport: {out / 'registration_storm.json'}")


if __name__ == "__main__":
    main()
