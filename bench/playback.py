"""Benchmark: playback of a device's recordings — request → first frame, seek → first frame at the new time.

The gateway (:class:`gateway.app.GatewayService`, uvloop) and one simulated
kindergarten (``simulators.fleet``: an NVR whose cameras keep a 7-day recording
index and play it back with the recorded time burned into every picture,
``simulators.playback``) run in this process over loopback UDP; the NVR encodes
each recorded second on demand in worker threads (x264 ultrafast, 640x360@25,
one GOP per second), as the simulator always does.

* request — ``PlaybackService.start()`` (the Playback INVITE, 200/ACK) for a new
  window each time (so the NVR's second cache is cold), then the first picture
  decoded by PyAV from the playback's fanout. ``--repeat`` times, one at a time.
* seek — on a running playback, ``control(seek)`` to a random position (MANSRTSP
  INFO answered 200), then the first decoded picture whose burned-in time *is* the
  new position (read back with :func:`simulators.stamp.read_stamp`): what a user
  dragging the timeline waits for.

Targets (issue 11): request p50 < 1 s, seek p50 < 500 ms.

Usage: .venv/bin/python bench/playback.py [--repeat 10]
Prints a table and writes bench/results/playback.json.
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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "platform"))

import av  # noqa: E402

from bench.relay_capacity import camera_channels, run_loop, start_gateway  # noqa: E402

TARGETS_MS = {"request": 1000.0, "seek": 500.0}
FPS = 25


async def first_picture(pb: Any, consumer: str, want: float | None, timeout: float = 10.0) -> float:
    """Wait for the first decoded picture (showing recorded second ``want`` when given); loop time of it."""
    from simulators.stamp import read_stamp

    loop = asyncio.get_running_loop()
    decoder = av.CodecContext.create("h264", "r")
    deadline = loop.time() + timeout
    keyed = False
    while loop.time() < deadline:
        units = pb.fanout.pull(consumer)
        for unit in units:
            keyed = keyed or unit.keyframe  # a fresh decoder starts at a key frame
            if not keyed:
                continue
            for frame in decoder.decode(av.Packet(unit.data)):
                if want is None:
                    return loop.time()
                stamp = read_stamp(frame.to_ndarray(format="gray"))
                if stamp is not None and stamp.epoch == int(want) and stamp.frame == 0:
                    return loop.time()
        if not units:
            pb.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pb.wakeup.wait(), 0.2)
    raise RuntimeError(f"no picture{'' if want is None else f' showing {want}'} within {timeout} s")


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values), 1), "max_ms": round(max(values), 1), "n": len(values)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from simulators.fleet import Fleet, FleetOptions

    service = await start_gateway()
    fleet = Fleet(
        FleetOptions(
            gateway_port=service.sip_port,
            gateway_id=service.config.id,
            password=service.config.password,
            kindergartens=1,
            cameras=(4, 4),
        )
    )
    await fleet.start()
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    samples: dict[str, list[float]] = {"request": [], "seek": []}
    try:
        deadline = loop.time() + 60
        while not camera_channels(service) and loop.time() < deadline:
            await asyncio.sleep(0.2)
        channels = camera_channels(service)
        if not channels:
            raise RuntimeError("no camera channel came online")
        channel_id = channels[0]
        await asyncio.sleep(1.0)  # let catalog/device-info traffic settle
        now = int(time.time())
        for n in range(args.repeat):
            start = now - 6 * 86400 + n * 3 * 3600 + rng.randrange(3600)  # a new window each time: cold cache
            t0 = loop.time()
            pb = await service.playback.start(channel_id, start, start + 600, owner="bench")
            pb.fanout.attach("bench", loop.time())
            samples["request"].append((await first_picture(pb, "bench", None) - t0) * 1000)
            await asyncio.sleep(0.3)
            position = rng.randrange(60, 540)
            t1 = loop.time()
            await service.playback.control(pb.id, "seek", position=float(position))
            samples["seek"].append((await first_picture(pb, "bench", start + position) - t1) * 1000)
            service.playback.stop(pb.id, "bench")
            await asyncio.sleep(0.2)
    finally:
        await fleet.stop(unregister=False)
        await service.stop()
    return {
        "video": {"width": 640, "height": 360, "fps": FPS},
        "repeat": args.repeat,
        **{kind: {**summary(values), "samples_ms": [round(v, 1) for v in values]} for kind, values in samples.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="playbacks started, each then seeked once (default 10)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "playback",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    report.update(run_loop(bench(args)))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "playback.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'':10} {'p50 ms':>8} {'max ms':>8} {'target':>8}")
    for kind in ("request", "seek"):
        row = report[kind]
        ok = "ok" if row["p50_ms"] < TARGETS_MS[kind] else "MISSED"
        print(f"{kind:10} {row['p50_ms']:>8} {row['max_ms']:>8} {'<' + str(int(TARGETS_MS[kind])):>8} {ok}")
    print(f"report: {out / 'playback.json'}")


if __name__ == "__main__":
    main()
