"""Benchmark: the gateway's SIP cores alone, with no sockets.

A simulated city's devices (device-role cores) and the gateway's device-access
core exchange datagrams in memory. This isolates the CPU cost of parsing,
transactions, digest and MANSCDP from the kernel and the event loop:
registration of every device (401 + digest), then its DeviceInfo and catalog,
then a minute of keepalives.

Usage: .venv/bin/python bench/sip_core_throughput.py [--kindergartens 2314] [--profile]
Prints a table and writes bench/results/sip_core_throughput.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.gb28181.access import AccessConfig, DeviceAccess  # noqa: E402
from gateway.gb28181.auth_throttle import AuthThrottle  # noqa: E402
from gateway.gb28181.device_agent import AgentHost, AgentTiming, DeviceAgent, ServerInfo  # noqa: E402
from gateway.gb28181.registrar import Registrar, RegistrarConfig  # noqa: E402
from gateway.gb28181.sip.auth import DigestServer  # noqa: E402
from gateway.gb28181.sip.endpoint import SipEndpoint  # noqa: E402
from gateway.gb28181.sip.idsource import SeededIds  # noqa: E402
from gateway.gb28181.sip.router import SipRouter  # noqa: E402
from gateway.gb28181.sip.transport import Peer, Transport  # noqa: E402
from simulators.city import build_city  # noqa: E402
from simulators.fleet import device_profile  # noqa: E402

GW_ID = "12010000002090000001"


class Clock:
    now = 1000.0


def build(kindergartens: int) -> tuple[SipRouter, list[SipRouter]]:
    gw_endpoint = SipEndpoint(SeededIds("gw"), local_host="10.0.0.1", local_port=5060)
    registrar = Registrar(
        RegistrarConfig(gateway_id=GW_ID, realm=GW_ID[:10], device_password="12345678"),
        DigestServer(GW_ID[:10], b"k" * 32),
        AuthThrottle(),
        provisioned_credential=lambda _: None,
        is_provisioned=lambda _: False,
        is_known=lambda _: True,  # as in the storm benchmark, the city is provisioned (no new-ID limit)
    )
    access = DeviceAccess(gw_endpoint, registrar, AccessConfig(gateway_id=GW_ID, realm=GW_ID[:10]))
    hosts: list[SipRouter] = []
    for index, kg in enumerate(build_city(kindergartens)):
        endpoint = SipEndpoint(SeededIds(f"kg{index}"), local_host="10.1.0.1", local_port=10000 + index)
        host = AgentHost(endpoint)
        server = ServerInfo(GW_ID, GW_ID[:10], Peer(Transport.UDP, "10.0.0.1", 5060))
        for device in kg.devices:
            host.add(
                DeviceAgent(
                    device_profile(device, kg, "12345678"), server, endpoint, timing=AgentTiming(keepalive_interval=60)
                )
            )
        hosts.append(SipRouter(endpoint, [host], unclaimed_status=404))
    return SipRouter(gw_endpoint, [access]), hosts


def pump(access: SipRouter, hosts: list[SipRouter], by_port: dict[int, SipRouter]) -> int:
    """Move datagrams until quiet; returns how many were delivered."""
    moved = 0
    busy = True
    while busy:
        busy = False
        for host in hosts:
            for data, _peer in host.endpoint.data_to_send():
                access.receive(data, Peer(Transport.UDP, "10.1.0.1", host.endpoint.local_port), Clock.now)
                moved += 1
                busy = True
        for data, peer in access.endpoint.data_to_send():
            target = by_port.get(peer.port)
            if target is not None:
                target.receive(data, Peer(Transport.UDP, "10.0.0.1", 5060), Clock.now)
                moved += 1
                busy = True
    return moved


def run(kindergartens: int) -> dict[str, float]:
    access, hosts = build(kindergartens)
    by_port = {h.endpoint.local_port: h for h in hosts}
    devices = sum(len(h.handlers[0].agents) for h in hosts)  # type: ignore[attr-defined]
    t0 = time.process_time()
    for host in hosts:
        host.handlers[0].start_all(Clock.now)  # type: ignore[attr-defined]
    moved = pump(access, hosts, by_port)
    t_register = time.process_time() - t0
    online = access.handlers[0].liveness.online_count  # type: ignore[attr-defined]
    # one minute of keepalives, driven by the agents' timers at 1 s resolution
    t1 = time.process_time()
    keepalive_moved = 0
    for _ in range(61):
        Clock.now += 1.0
        for host in hosts:
            if (t := host.get_timer()) is not None and t <= Clock.now:
                host.handle_timer(Clock.now)
        if (t := access.get_timer()) is not None and t <= Clock.now:
            access.handle_timer(Clock.now)
        keepalive_moved += pump(access, hosts, by_port)
    t_keepalive = time.process_time() - t1
    return {
        "devices": devices,
        "online_after_registration": online,
        "datagrams_registration_phase": moved,
        "cpu_s_registration_phase_both_roles": round(t_register, 3),
        "us_per_datagram_registration_phase": round(1e6 * t_register / max(moved, 1), 1),
        "datagrams_keepalive_minute": keepalive_moved,
        "cpu_s_keepalive_minute_both_roles": round(t_keepalive, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kindergartens", type=int, default=2314)
    parser.add_argument("--profile", action="store_true", help="print the top functions by own time")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        result = profiler.runcall(run, args.kindergartens)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    else:
        result = run(args.kindergartens)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sip_core_throughput.json").write_text(json.dumps({"benchmark": "sip_core_throughput", **result}, indent=2))
    print(f"{'metric':<40} {'value':>12}")
    for key, value in result.items():
        print(f"{key:<40} {value:>12}")


if __name__ == "__main__":
    main()
