"""Benchmark: recording downloads — speed achieved against ``a=downloadspeed``, and PS→MP4 remux throughput.

* download — the gateway (:class:`gateway.app.GatewayService`) and one simulated
  kindergarten (its NVR answers Download INVITEs with the recorded time burned in,
  :mod:`simulators.playback`) in this process, on loopback. For each asked speed a
  ``--seconds`` long range is downloaded through :class:`gateway.downloads.DownloadService`
  (own INVITE, RTP, PS demux, MP4 remux in a worker thread); we time start → done and
  report the achieved speed (recorded seconds per wall second) against the asked one,
  the MP4 size and duration (ffprobe). The simulator encodes its pictures in this
  process too (ahead, in worker threads), so on a 2-core machine it competes with the
  gateway: the achieved speed is a lower bound for the gateway.
* remux — the PS fixture of ``tests/fixtures/ps`` (H.264 640x360 25 fps, and H.265)
  demuxed once, then remuxed into MP4 files ``--remux-repeat`` times: frames and
  seconds of video per second of one core (the remuxer never re-encodes).

Usage: .venv/bin/python bench/download.py [--seconds 20] [--speeds 1,2,4,8]
Prints a table and writes bench/results/download.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "platform"))

from gateway.media.mp4_remux import Mp4Remuxer  # noqa: E402
from gateway.media.ps import AccessUnit, PsDemuxer  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "ps"


def ffprobe_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return float(out.stdout.strip())


async def bench_downloads(seconds: int, speeds: list[int]) -> list[dict[str, Any]]:
    from gateway.config import load_config
    from gateway.gb28181.sip.transport import Transport
    from gbplatform.app import build_gateway
    from simulators.fleet import Fleet, FleetOptions

    workdir = Path(tempfile.mkdtemp(prefix="kgw-dl-bench-"))
    config = load_config(
        None, sip_port=0, http_port=0, db=":memory:", flush_interval=0.5, log_level="WARNING",
        download_dir=str(workdir), downloads_per_user=8,
    )  # fmt: skip
    service = build_gateway(config)
    await service.start()
    fleet = Fleet(
        FleetOptions(
            gateway_port=service.sip_port, gateway_id=config.id, password=config.password,
            kindergartens=1, cameras=(2, 2), transport=Transport.UDP,
        )
    )  # fmt: skip
    await fleet.start()
    rows = []
    try:
        loop = asyncio.get_running_loop()
        camera = next(
            c.device_id for a in fleet.agents.values() for c in a.profile.channels if c.device_id[10:13] == "131"
        )
        deadline = loop.time() + 60
        while not getattr(service.directory.channels.get(camera), "online", False):
            if loop.time() > deadline:
                raise RuntimeError("the simulated camera never came online")
            await asyncio.sleep(0.1)
        start = int(time.time()) - 6 * 3600
        for speed in speeds:
            start -= seconds + 60  # another stretch each time: nothing cached on either side
            t0 = time.perf_counter()
            download = await service.downloads.start(camera, start, start + seconds, speed, "bench")
            while download.state.value == "running":
                await asyncio.sleep(0.02)
            wall = time.perf_counter() - t0
            if download.state.value != "done":
                raise RuntimeError(f"download at {speed}x failed: {download.error}")
            duration = await asyncio.to_thread(ffprobe_duration, download.path)
            rows.append(
                {
                    "speed": speed,
                    "range_s": seconds,
                    "wall_s": round(wall, 2),
                    "achieved_speed": round(seconds / wall, 2),
                    "mp4_duration_s": round(duration, 2),
                    "mp4_bytes": download.file_size,
                    "end_reason": download.end_reason,
                }
            )
    finally:
        await fleet.stop(unregister=False)
        await service.stop()
    return rows


def demux(name: str) -> list[AccessUnit]:
    demuxer = PsDemuxer()
    data = (FIXTURES / name).read_bytes()
    return [u for u in demuxer.feed(data) + demuxer.flush() if u.is_video]


def bench_remux(repeat: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="kgw-remux-") as tmp:
        for name, codec in (("zlm_h264_640x360_idr50.ps", "h264"), ("zlm_h265_640x360_idr50.ps", "h265")):
            units = demux(name)
            frames = seconds = 0.0
            t0 = time.process_time()
            for i in range(repeat):
                remuxer = Mp4Remuxer(Path(tmp) / f"{codec}-{i}.mp4")
                remuxer.write(units)
                stats = remuxer.close()
                frames += stats.video_frames
                seconds += stats.duration
            cpu = time.process_time() - t0
            rows.append(
                {
                    "codec": codec,
                    "files": repeat,
                    "frames_per_cpu_s": round(frames / cpu),
                    "video_s_per_cpu_s": round(seconds / cpu, 1),
                    "mbit_per_cpu_s": round(sum(len(u.data) for u in units) * repeat * 8 / cpu / 1e6, 1),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20, help="recorded seconds per download")
    parser.add_argument("--speeds", default="1,2,4,8", help="a=downloadspeed values to ask for")
    parser.add_argument("--remux-repeat", type=int, default=50)
    args = parser.parse_args()
    speeds = [int(s) for s in args.speeds.split(",")]
    downloads = asyncio.run(bench_downloads(args.seconds, speeds))
    remux = bench_remux(args.remux_repeat)
    print(f"{'speed':>5} {'range s':>8} {'wall s':>7} {'achieved':>9} {'mp4 s':>6} {'mp4 bytes':>10}  end")
    for r in downloads:
        print(
            f"{r['speed']:>5} {r['range_s']:>8} {r['wall_s']:>7} {r['achieved_speed']:>8}x "
            f"{r['mp4_duration_s']:>6} {r['mp4_bytes']:>10}  {r['end_reason']}"
        )
    print(f"\n{'codec':>5} {'frames/cpu-s':>13} {'video s/cpu-s':>14} {'Mbit/cpu-s':>11}")
    for r in remux:
        print(f"{r['codec']:>5} {r['frames_per_cpu_s']:>13} {r['video_s_per_cpu_s']:>14} {r['mbit_per_cpu_s']:>11}")
    out = ROOT / "bench" / "results" / "download.json"
    out.write_text(json.dumps({"downloads": downloads, "remux": remux}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
