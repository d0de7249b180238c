"""Benchmark: how many H.265 → H.264 streams one core transcodes in real time (issue 11).

**throughput** (the figure of record): single-threaded, in this process, the gateway's own
transcoder (:class:`gateway.media.transcode.HevcToH264`, PyAV: ``hevc`` decoder with one
thread, libx264 ``ultrafast``/``zerolatency`` with one thread, scaled to ≤ 1280x720) over an
H.265 clip encoded beforehand with libx265. CPU time of this thread (``time.thread_time``,
so other processes on a busy machine do not count) per frame, for decoding alone and for
the whole transcode; streams per core = frames per CPU-second / 25. Scenarios: a 1080p main
stream scaled to 720p, a 720p main stream, and sub-streams (640x360, 352x288 CIF).

Two kinds of picture: ``card`` is the simulators' test card (flat colours, a ball, text:
cheap to code), ``textured`` adds a static fine texture that pans and sensor grain, so the
encoders work as they would on a real scene; the planning figure is the textured one.

**realtime** (``--realtime K``): K cameras replayed at 25 fps into the real
:class:`gateway.transcoding.TranscodeService` (worker threads, backlog, GOP dropping) on an
event loop for ``--seconds``; frames out per second, the largest lag (s a unit waited
before its transcode took it) and frames dropped. On this shared 2-core machine it shows
the behaviour past capacity (lag bounded, whole GOPs dropped), not a capacity figure.

Usage: .venv/bin/python bench/transcode.py [--seconds 4] [--passes 3] [--realtime 2,6]
Prints tables and writes bench/results/transcode.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.gb28181.play import PlayState  # noqa: E402
from gateway.media.ps import AccessUnit, StreamId, StreamType  # noqa: E402
from gateway.media.relay import StreamFanout  # noqa: E402
from gateway.media.transcode import HevcToH264, TranscodeSettings  # noqa: E402
from gateway.transcoding import TranscodeService  # noqa: E402
from simulators.video import VideoProfile, render_frames  # noqa: E402

FPS = 25
CLOCK = 90000
SCENARIOS = (  # (name, width, height, H.265 bit/s)
    ("main 1080p → 720p", 1920, 1080, 4_000_000),
    ("main 720p", 1280, 720, 2_000_000),
    ("sub 640x360", 640, 360, 600_000),
    ("sub CIF 352x288", 352, 288, 384_000),
)


def hevc_clip(width: int, height: int, bitrate: int, seconds: float, textured: bool) -> list[AccessUnit]:
    """An H.265 clip as a camera would send it: key frame every second, no B-frames, headers repeated."""
    profile = VideoProfile(width=width, height=height, fps=FPS, seconds=seconds, codec="hevc", bitrate=bitrate)
    rng = np.random.default_rng(11)
    texture = rng.integers(0, 255, (height * 2, width * 2), dtype=np.uint8)
    enc = av.CodecContext.create("libx265", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, FPS)
    enc.framerate = Fraction(FPS)
    enc.bit_rate = bitrate
    enc.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "x265-params": f"log-level=error:repeat-headers=1:bframes=0:scenecut=0:open-gop=0:keyint={FPS}",
    }
    packets = []
    for n, bgr in enumerate(render_frames("基准幼儿园", "转码基准", profile)):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr[:, :, ::-1]), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        if textured:  # a panning fine texture and grain on the luma plane: a real scene's detail
            y = np.frombuffer(frame.planes[0], np.uint8).reshape(height, frame.planes[0].line_size)[:, :width]
            dx, dy = (3 * n) % width, (2 * n) % height
            detail = texture[dy : dy + height, dx : dx + width].astype(np.int16) // 4 - 32
            grain = rng.integers(-6, 7, (height, width), dtype=np.int16)
            mixed = np.clip(y.astype(np.int16) + detail + grain, 0, 255).astype(np.uint8)
            frame.planes[0].update(_pad(mixed, frame.planes[0].line_size))
        frame.pts = n
        packets += enc.encode(frame)
    packets += enc.encode(None)
    return [
        AccessUnit(StreamType.H265, StreamId.VIDEO, i * CLOCK // FPS, i * CLOCK // FPS, bytes(p), p.is_keyframe)
        for i, p in enumerate(packets)
    ]


def _pad(plane: np.ndarray, line_size: int) -> bytes:
    if plane.shape[1] == line_size:
        return plane.tobytes()
    out = np.zeros((plane.shape[0], line_size), np.uint8)
    out[:, : plane.shape[1]] = plane
    return out.tobytes()


def looped(clip: list[AccessUnit], passes: int) -> list[AccessUnit]:
    """The clip `passes` times, timestamps running on (each pass starts with a key frame)."""
    span = len(clip) * CLOCK // FPS
    return [replace(u, pts=(u.pts or 0) + k * span, dts=(u.pts or 0) + k * span) for k in range(passes) for u in clip]


def measure(units: list[AccessUnit]) -> dict[str, Any]:
    """CPU ms per frame: H.265 decode alone, and the gateway's whole transcode."""
    decoder = av.CodecContext.create("hevc", "r")
    decoder.thread_count = 1
    t0 = time.thread_time()
    decoded = 0
    for unit in units:
        decoded += len(decoder.decode(av.Packet(unit.data)))
    decode_cpu = time.thread_time() - t0

    transcoder = HevcToH264(TranscodeSettings())
    t0, w0 = time.thread_time(), time.perf_counter()
    out = transcoder.transcode(units)
    cpu, wall = time.thread_time() - t0, time.perf_counter() - w0
    frames = len(out)
    h264_bits = 8 * sum(len(u.data) for u in out)
    h265_bits = 8 * sum(len(u.data) for u in units)
    seconds = len(units) / FPS
    fps_per_core = frames / cpu
    return {
        "frames": frames,
        "decoded": decoded,
        "out_size": f"{transcoder.stats.width}x{transcoder.stats.height}",
        "in_mbps": round(h265_bits / seconds / 1e6, 2),
        "out_mbps": round(h264_bits / seconds / 1e6, 2),
        "decode_ms": round(1000 * decode_cpu / max(1, decoded), 2),
        "transcode_ms": round(1000 * cpu / frames, 2),
        "wall_ms": round(1000 * wall / frames, 2),
        "fps_per_core": round(fps_per_core, 1),
        "streams_per_core": round(fps_per_core / FPS, 2),
    }


# --------------------------------------------------------------------------- realtime


@dataclass
class _Session:
    state: PlayState = PlayState.STREAMING


@dataclass(eq=False)
class _Camera:
    channel_id: str
    fanout: StreamFanout
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    session: _Session = field(default_factory=_Session)
    stream_number: int = 0

    @property
    def key(self) -> str:
        return self.channel_id


class _Live:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()

    def leave(self, channel_id: str, consumer: str) -> None:
        pass


async def realtime(clip: list[AccessUnit], streams: int, seconds: float) -> dict[str, Any]:
    """`streams` cameras at 25 fps through TranscodeService for `seconds`."""
    live = _Live()
    service = TranscodeService(live, max_transcodes=streams)
    cameras, viewers = [], []
    for n in range(streams):
        camera = _Camera(f"cam{n}", StreamFanout(f"cam{n}"))
        camera.fanout.attach("viewer", 0.0)
        transcode, viewer = service.join(camera, "viewer")
        cameras.append(camera)
        viewers.append((transcode, viewer))
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    cpu0 = time.process_time()
    while (elapsed := loop.time() - start) < seconds:
        due = int(elapsed * FPS)
        while sent <= due:
            unit = clip[sent % len(clip)]
            span = len(clip) * CLOCK // FPS
            shifted = replace(unit, pts=(unit.pts or 0) + (sent // len(clip)) * span)
            for camera in cameras:
                camera.fanout.publish(shifted, loop.time())
                camera.wakeup.set()
            sent += 1
        for transcode, viewer in viewers:
            transcode.fanout.pull(viewer)  # a viewer that keeps up
        await asyncio.sleep(0.01)
    cpu = time.process_time() - cpu0
    totals = service.totals()
    max_lag = max(t.max_lag_seen for t, _ in viewers)
    service.close()
    return {
        "streams": streams,
        "frames_in_per_stream": sent,
        "out_fps_per_stream": round(totals.frames_out / streams / seconds, 1),
        "max_lag_s": round(max_lag, 2),
        "dropped_frames": totals.dropped_frames,
        "gop_drops": totals.gop_drops,
        "cpu_cores_used": round(cpu / seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each encoded H.265 clip (default 4)")
    parser.add_argument("--passes", type=int, default=3, help="times each clip is transcoded (default 3)")
    parser.add_argument("--content", default="card,textured", help="card, textured or both (default)")
    parser.add_argument("--realtime", default="2,6", help="realtime runs: numbers of 720p cameras (default 2,6)")
    parser.add_argument("--realtime-seconds", type=float, default=10.0)
    parser.add_argument("--realtime-only", action="store_true", help="skip the throughput table (720p clip only)")
    args = parser.parse_args()

    rows = []
    clips: dict[tuple[str, bool], list[AccessUnit]] = {}
    for content in args.content.split(","):
        textured = content == "textured"
        for name, width, height, bitrate in SCENARIOS:
            if args.realtime_only and name != "main 720p":
                continue
            clip = hevc_clip(width, height, bitrate, args.seconds, textured)
            clips[(name, textured)] = clip
            if args.realtime_only:
                continue
            row = {
                "scenario": name,
                "content": content,
                "in_size": f"{width}x{height}",
                **measure(looped(clip, args.passes)),
            }
            rows.append(row)
            print(
                f"{name:<20} {content:<9} {row['in_size']:>9} → {row['out_size']:<9} "
                f"in {row['in_mbps']:>5} Mbit/s out {row['out_mbps']:>5} Mbit/s  "
                f"decode {row['decode_ms']:>6} ms  transcode {row['transcode_ms']:>6} ms/frame  "
                f"{row['fps_per_core']:>7} fps/core = {row['streams_per_core']:>6} streams/core",
                flush=True,
            )

    realtime_rows = []
    source = clips.get(("main 720p", True)) or clips[("main 720p", False)]
    for count in (int(n) for n in args.realtime.split(",") if n):
        result = asyncio.run(realtime(source, count, args.realtime_seconds))
        realtime_rows.append(result)
        print(
            f"realtime {count} x 720p: {result['out_fps_per_stream']} fps out per stream, max lag "
            f"{result['max_lag_s']} s, {result['dropped_frames']} frames dropped in {result['gop_drops']} GOP drops, "
            f"{result['cpu_cores_used']} cores busy",
            flush=True,
        )

    report = {
        "benchmark": "transcode",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "av": av.__version__},
        "settings": {"fps": FPS, "clip_seconds": args.seconds, "passes": args.passes, "x264": "ultrafast zerolatency"},
        "throughput": rows,
        "realtime": realtime_rows,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "transcode_realtime.json" if args.realtime_only else "transcode.json"
    (out / name).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"report: {out / name}")


if __name__ == "__main__":
    main()
