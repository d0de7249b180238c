"""Benchmark: from an upper platform's INVITE to its first decodable frame, through the gateway.

Set-up as ``first_frame.py`` (simulated 1280x720 @ 25 fps cameras in a child
process) plus a municipal platform: the gateway (:class:`GatewayService`)
registers with it, and the platform (another :class:`GatewayService` with a
platform ID, both in this process on uvloop) opens live views with its own
``live.watch()`` — an INVITE to the gateway, which serves it from its shared
relay (re-muxed PS over RTP, no re-encoding).

* cold — the camera is not streaming at all: platform INVITE → gateway INVITE
  to the camera → RTP up → PS re-mux → RTP to the platform → decoded frame.
* warm — the gateway already streams the camera to a viewer of its own; the
  platform's INVITE joins that stream (the camera sees no new INVITE) and starts
  from the gateway's cached key frame.

Usage: .venv/bin/python bench/cascade_first_frame.py [--repeat 8]
Prints a table and writes bench/results/cascade_first_frame.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.first_frame import join, joins_report  # noqa: E402
from bench.relay_capacity import add_video_args, run_loop, start_simulator, stop_process, wait_channels  # noqa: E402

PLATFORM_ID = "12010000002000000001"
PASSWORD = "bench-platform"


async def start_pair() -> tuple[Any, Any]:
    """The municipal platform, then the gateway registered with it."""
    from gateway.cascade.policy import SharePolicy
    from gateway.cascade.upper import UpperPlatformConfig
    from gateway.config import UpperSpec, load_config
    from gbplatform.app import build_gateway, build_platform

    municipal = build_platform(
        load_config(
            None,
            id=PLATFORM_ID,
            role="municipal",
            sip_port=0,
            http_port=0,
            db=":memory:",
            password=PASSWORD,
            log_level="WARNING",
        )
    )
    await municipal.start()
    link = UpperPlatformConfig(
        name="municipal",
        server_id=PLATFORM_ID,
        host="127.0.0.1",
        port=municipal.sip_port,
        password=PASSWORD,
        keepalive_interval=10.0,
    )
    gateway = build_gateway(
        load_config(
            None,
            sip_port=0,
            http_port=0,
            db=":memory:",
            flush_interval=0.5,
            log_level="WARNING",
            upper_platforms=(UpperSpec(link, SharePolicy.municipal()),),
        )
    )
    await gateway.start()
    return municipal, gateway


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    municipal, gateway = await start_pair()
    stats_file = f"{tempfile.mkdtemp(prefix='kgw-cff-')}/sim.json"
    sim = start_simulator(gateway, 2 * args.repeat, args, stats_file)
    held: list[tuple[Any, str, str]] = []
    samples: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    try:
        channels = (await wait_channels(gateway, 2 * args.repeat, sim))[: 2 * args.repeat]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not all(c in municipal.directory.channels for c in channels) and loop.time() < deadline:
            await asyncio.sleep(0.2)  # the platform learns them from the gateway's catalog NOTIFYs
        await asyncio.sleep(1.0)
        cold, warm = channels[: args.repeat], channels[args.repeat :]
        for channel_id in cold:
            invites = gateway.live.invites_sent
            times, _, viewer = await join(municipal.live, channel_id)
            assert gateway.live.invites_sent == invites + 1, "a cold join INVITEs the camera once"
            samples["cold"].append(times)
            held.append((municipal.live, channel_id, viewer))
            await asyncio.sleep(0.2)
        for channel_id in warm:
            _, _, local = await join(gateway.live, channel_id)  # the gateway already streams it
            held.append((gateway.live, channel_id, local))
            await asyncio.sleep(0.5)
            invites = gateway.live.invites_sent
            times, _, viewer = await join(municipal.live, channel_id)
            assert gateway.live.invites_sent == invites, "a warm join must not INVITE the camera"
            samples["warm"].append(times)
            held.append((municipal.live, channel_id, viewer))
    finally:
        for live, channel_id, viewer in held:
            live.leave(channel_id, viewer)
        await gateway.stop()
        await municipal.stop()
        stop_process(sim)
    return joins_report(args, samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=8, help="channels joined cold, and others warm (default 8)")
    add_video_args(parser)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "cascade_first_frame",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    report.update(run_loop(bench(args)))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cascade_first_frame.json").write_text(json.dumps(report, indent=2))
    print(f"\n{'join':<6} {'watch() p50/max ms':>20} {'key frame p50/max ms':>22} {'decoded p50/max ms':>20}")
    for kind in ("cold", "warm"):
        r = report[kind]
        print(
            f"{kind:<6} {r['watch_p50_ms']:>9} / {r['watch_max_ms']:<8} {r['keyframe_p50_ms']:>10} / "
            f"{r['keyframe_max_ms']:<9} {r['decoded_p50_ms']:>9} / {r['decoded_max_ms']:<8}"
        )
    print(f"report: {out / 'cascade_first_frame.json'}")


if __name__ == "__main__":
    main()
