"""Benchmark: RTSP camera first frame (issue 13), cold and with the upstream already open.

``--cameras`` real RTSP cameras (GStreamer's RTSP server, simulators/rtsp_server.py: a live
320x240 @ 25 fps test pattern, H.264 with a key frame every ``--gop`` frames — 50, 2 s, is
a typical consumer camera) and the gateway (:class:`gateway.app.GatewayService`) in this
process.

* cold — the camera was just added (``RtspCameraService.add``): the puller connects
  (RTSP DESCRIBE/SETUP/PLAY) and the viewer waits for the first key frame. ms from
  ``add()`` to the first key-frame unit a ``live.watch()`` viewer pulls. This is what an
  on-demand design would cost every first viewer (plus up to one GOP).
* warm — the upstream is open (the gateway pulls every camera always): ms from
  ``watch()`` to ``watch()`` returning, to the first key-frame unit (the GOP cache) and to
  the first frame PyAV decodes. ``--repeat`` joins per camera at random points of the GOP.

Also the cost of pulling always: the process's CPU (``process_time``, puller threads
included) per camera over ``--window`` seconds with every camera open and no viewer.

Target (issue 13): first frame < 1 s (warm; cold is reported to show why the gateway pulls always).

Usage: .venv/bin/python bench/rtsp_first_frame.py [--cameras 4] [--gop 50] [--repeat 5] [--window 10]
Prints a table and writes bench/results/rtsp_first_frame.json.
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
sys.path.insert(0, str(ROOT / "platform"))

import av  # noqa: E402

from gateway.config import load_config  # noqa: E402
from gateway.live import LiveError  # noqa: E402
from gateway.registry.model import Kindergarten  # noqa: E402
from gateway.rtsp.model import RtspCameraConfig  # noqa: E402
from gbplatform.app import build_gateway  # noqa: E402
from simulators.rtsp_server import RtspServer, available  # noqa: E402

TARGET_MS = 1000.0
KG = Kindergarten("12010100112160012300", "和平区第一幼儿园", "120101")


def free_port() -> int:
    import socket

    for _ in range(200):
        port = random.randrange(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


async def first_key(live: Any, channel_id: str, started: float, timeout: float) -> dict[str, float]:
    """Join once: ms from ``started`` to watch returning, first key unit, first decoded frame."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            stream, viewer = await live.watch(channel_id)
            break
        except LiveError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.005)  # not online yet (cold): the puller is connecting
    times = {"watch_ms": (time.perf_counter() - started) * 1000}
    decoder = av.CodecContext.create("h264", "r")
    seen_key = False
    try:
        while loop.time() < deadline:
            for unit in stream.fanout.pull(viewer):
                if unit.keyframe and not seen_key:
                    seen_key = True
                    times["key_ms"] = (time.perf_counter() - started) * 1000
                if seen_key and decoder.decode(av.Packet(unit.data)):
                    times["decoded_ms"] = (time.perf_counter() - started) * 1000
                    return times
            stream.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.wakeup.wait(), 0.5)
        raise TimeoutError(f"no decoded frame from {channel_id}")
    finally:
        live.leave(channel_id, viewer)


def summary(samples: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(samples)}
    for key in ("watch_ms", "key_ms", "decoded_ms"):
        values = [s[key] for s in samples if key in s]
        if values:
            out[key] = {"p50": round(statistics.median(values), 1), "max": round(max(values), 1)}
    return out


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    servers = [RtspServer(free_port(), gop=args.gop) for _ in range(args.cameras)]
    for server in servers:
        server.start()
    tmp = tempfile.mkdtemp(prefix="kgw-rtsp-bench-")
    config = load_config(None, sip_port=0, http_port=0, db=os.path.join(tmp, "kgw.db"), flush_interval=0.5)
    service = build_gateway(config)
    await service.start()
    try:
        await service.provisioning.add_kindergartens([KG])
        live, rtsp = service.live, service.rtsp
        cold: list[dict[str, float]] = []
        channels = []
        for i, server in enumerate(servers):
            started = time.perf_counter()
            camera = await rtsp.add(RtspCameraConfig(KG.id, f"摄像机 {i + 1}", "other", server.url), "bench")
            channels.append(camera.channel_id)
            cold.append(await first_key(live, camera.channel_id, started, 30.0))
        # Every upstream open, no viewer: the cost of pulling always.
        for channel_id in channels:
            live.close(channel_id, "bench")
        await asyncio.sleep(1.0)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(args.window)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        warm: list[dict[str, float]] = []
        for _ in range(args.repeat):
            for channel_id in channels:
                await asyncio.sleep(random.uniform(0, args.gop / 25))  # a random point of the GOP
                live.close(channel_id, "bench")  # a new LiveStream on the open upstream (like the first viewer)
                warm.append(await first_key(live, channel_id, time.perf_counter(), 10.0))
        states = {s.state.value for _, s in rtsp.cameras()}
    finally:
        await service.stop()
        for server in servers:
            server.stop()
    return {
        "cameras": args.cameras,
        "gop_frames": args.gop,
        "fps": 25,
        "resolution": "320x240",
        "cold": summary(cold),
        "warm": summary(warm),
        "pull_cpu_ms_per_camera_second": round(cpu * 1000 / (args.cameras * wall), 2),
        "pull_window_s": round(wall, 1),
        "states_at_end": sorted(states),
        "target_ms": TARGET_MS,
        "warm_meets_target": summary(warm).get("key_ms", {}).get("max", 1e9) < TARGET_MS,
        "load_1min": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=4, help="RTSP cameras (default 4)")
    parser.add_argument("--gop", type=int, default=50, help="frames between key frames at 25 fps (default 50: 2 s)")
    parser.add_argument("--repeat", type=int, default=5, help="warm joins per camera (default 5)")
    parser.add_argument("--window", type=float, default=10.0, help="s of pulling measured for CPU (default 10)")
    args = parser.parse_args()
    missing = available()
    if missing is not None:
        sys.exit(f"rtsp_first_frame: {missing}")
    report = asyncio.run(bench(args))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "rtsp_first_frame.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"{'case':<6} {'n':>3} {'watch p50/max ms':>18} {'key frame p50/max':>18} {'decoded p50/max':>18}")
    for case in ("cold", "warm"):
        row = report[case]

        def cell(key: str, row: dict[str, Any] = row) -> str:
            value = row.get(key)
            return f"{value['p50']:.0f} / {value['max']:.0f}" if value else "-"

        print(f"{case:<6} {row['n']:>3} {cell('watch_ms'):>18} {cell('key_ms'):>18} {cell('decoded_ms'):>18}")
    print(
        f"pulling always: {report['pull_cpu_ms_per_camera_second']} ms CPU per camera-second "
        f"({args.cameras} cameras, {report['pull_window_s']} s); load {report['load_1min']:.1f}"
    )
    print(f"warm first key frame < {TARGET_MS:.0f} ms: {'yes' if report['warm_meets_target'] else 'NO'}")
    print(f"report: {out / 'rtsp_first_frame.json'}")


if __name__ == "__main__":
    main()
