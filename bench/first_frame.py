"""Benchmark: time to first frame of a live stream, cold and warm.

Same set-up as ``relay_capacity.py``: the gateway (:class:`gateway.app.GatewayService`
on uvloop) in this process, the simulated cameras in a child process replaying
one pre-encoded 1280x720 @ 25 fps clip (~1.9 Mbit/s, a key frame a second; the
clip is encoded before the first INVITE, as a real camera does not encode on
demand).

* cold — the channel is not streaming: ``service.live.watch()`` sends the
  INVITE, waits for 200 OK / ACK and the first RTP; repeated over ``--repeat``
  different channels, one at a time (the streams opened before keep running).
* warm — a second viewer joins each of those running streams at a random
  point of its GOP; the fanout hands it the cached GOP, key frame first.

For each join we time, from the ``watch()`` call: ``watch()`` returning, the
first key-frame access unit pulled by the viewer, and the first frame decoded
by PyAV (``h264``, no B-frames). Reported as p50 and max.

Targets (issue 3): cold < 500 ms on loopback, warm < 100 ms.

Usage: .venv/bin/python bench/first_frame.py [--repeat 10]
Prints a table and writes bench/results/first_frame.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402

from bench.relay_capacity import (  # noqa: E402
    add_video_args,
    run_loop,
    start_gateway,
    start_simulator,
    stop_process,
    wait_channels,
)

TARGETS_MS = {"cold": 500.0, "warm": 100.0}


async def join(live: Any, channel_id: str, timeout: float = 10.0) -> tuple[dict[str, float], Any, str]:
    """One viewer joins; milliseconds from watch() to watch returning, first key unit, first decoded frame."""
    loop = asyncio.get_running_loop()
    decoder = av.CodecContext.create("h264", "r")
    t0 = time.perf_counter()
    stream, viewer = await live.watch(channel_id)
    times = {"watch_ms": (time.perf_counter() - t0) * 1000}
    deadline = loop.time() + timeout
    while "decoded_ms" not in times and loop.time() < deadline:
        units = stream.fanout.pull(viewer)
        for unit in units:
            if "keyframe_ms" not in times:
                if not unit.keyframe:
                    raise RuntimeError(f"{channel_id}: the viewer's first unit is not a key frame")
                times["keyframe_ms"] = (time.perf_counter() - t0) * 1000
            if decoder.decode(av.Packet(unit.data)):
                times["decoded_ms"] = (time.perf_counter() - t0) * 1000
                break
        if not units:
            stream.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.wakeup.wait(), 0.5)
    if "decoded_ms" not in times:
        raise RuntimeError(f"{channel_id}: no decoded frame within {timeout} s")
    return times, stream, viewer


def summarize(samples: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in ("watch_ms", "keyframe_ms", "decoded_ms"):
        values = [s[key] for s in samples]
        out[f"{key[:-3]}_p50_ms"] = round(statistics.median(values), 1)
        out[f"{key[:-3]}_max_ms"] = round(max(values), 1)
    return out


def joins_report(args: argparse.Namespace, samples: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """The video settings, and per kind of join its p50/max and the raw samples (also cascade_first_frame)."""
    return {
        "video": {"width": args.width, "height": args.height, "fps": 25, "encoder_bitrate": args.bitrate},
        "repeat": args.repeat,
        **{
            kind: {**summarize(s), "samples": [{k: round(v, 1) for k, v in x.items()} for x in s]}
            for kind, s in samples.items()
        },
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    service = await start_gateway()
    stats_file = f"{tempfile.mkdtemp(prefix='kgw-ff-')}/sim.json"
    sim = start_simulator(service, args.repeat, args, stats_file)
    viewers: list[tuple[str, str]] = []
    samples: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
    try:
        channels = (await wait_channels(service, args.repeat, sim))[: args.repeat]
        live = service.live
        rng = random.Random(args.seed)
        await asyncio.sleep(1.0)  # let catalog/device-info traffic settle
        for channel_id in channels:
            assert channel_id not in live.streams
            times, _, viewer = await join(live, channel_id)
            samples["cold"].append(times)
            viewers.append((channel_id, viewer))
            await asyncio.sleep(0.2)
        for channel_id in channels:
            await asyncio.sleep(rng.uniform(0.0, 1.0))  # somewhere in the GOP
            invites = live.invites_sent
            times, _, viewer = await join(live, channel_id)
            assert live.invites_sent == invites, "a warm join must not INVITE"
            samples["warm"].append(times)
            viewers.append((channel_id, viewer))
    finally:
        for channel_id, viewer in viewers:
            service.live.leave(channel_id, viewer)
        await service.stop()
        stop_process(sim)
    return joins_report(args, samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="channels joined cold, then warm (default 10)")
    parser.add_argument("--seed", type=int, default=3)
    add_video_args(parser)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "first_frame",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    report.update(run_loop(bench(args)))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "first_frame.json").write_text(json.dumps(report, indent=2))
    print(
        f"\n{'join':<6} {'watch() p50/max ms':>20} {'key frame p50/max ms':>22} {'decoded p50/max ms':>20} {'target':>8}"
    )
    for kind in ("cold", "warm"):
        r = report[kind]
        print(
            f"{kind:<6} {r['watch_p50_ms']:>9} / {r['watch_max_ms']:<8} {r['keyframe_p50_ms']:>10} / "
            f"{r['keyframe_max_ms']:<9} {r['decoded_p50_ms']:>9} / {r['decoded_max_ms']:<8} "
            f"{'< ' + str(int(TARGETS_MS[kind])):>8}"
        )
    print(f"report: {out / 'first_frame.json'}")


if __name__ == "__main__":
    main()
