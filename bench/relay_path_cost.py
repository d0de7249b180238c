"""Benchmark: the relay's per-packet path alone (RTP receiver -> PS demuxer -> fanout), no sockets.

The simulated cameras' clip (1280x720 @ 25 fps, ~1.8 Mbit/s, as ``relay_capacity.py``)
is cut into RTP packets once; then ``--loops`` passes of it (sequence numbers running on)
go through :func:`gateway.live.feed_rtp` into a :class:`StreamFanout` with one consumer
pulled every frame. Reports CPU µs per packet (``process_time``, best of ``--repeat``)
and, with ``--callgrind``, instructions per packet counted by ``valgrind --tool=callgrind``
(the difference between a run with ``--loops`` passes and one with none, so start-up and
imports cancel out): a figure a busy machine does not disturb, for before/after comparisons
of the code on the hot path (issue 12).

Usage: .venv/bin/python bench/relay_path_cost.py [--loops 20] [--repeat 5] [--callgrind]
Prints a table and writes bench/results/relay_path_cost.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def clip_packets(width: int, height: int, bitrate: int) -> list[bytes]:
    """The bench clip as RTP datagrams, one pass (the cameras' packetizer)."""
    from gateway.media.rtp import RtpPacketizer
    from simulators.video import ClipCache, VideoProfile

    clip = ClipCache().get("kgw relay bench", "camera", VideoProfile(width=width, height=height, bitrate=bitrate))
    packetizer = RtpPacketizer(0x1234ABCD)
    return [bytes(p) for frame, pts, _key in clip.frames for p in packetizer.packetize(frame, pts)]


def passes(packets: list[bytes], loops: int) -> list[bytes]:
    """``loops`` passes with running sequence numbers (built before timing)."""
    out = []
    seq = 0
    for _ in range(loops):
        for p in packets:
            out.append(p[:2] + seq.to_bytes(2, "big") + p[4:])
            seq = (seq + 1) & 0xFFFF
    return out


def run_path(datagrams: list[bytes]) -> int:
    """Feed every datagram through receiver -> demuxer -> fanout; returns the units the consumer got."""
    from gateway.live import feed_rtp
    from gateway.media.ps import PsDemuxer
    from gateway.media.relay import StreamFanout
    from gateway.media.rtp import RtpReceiver

    receiver, demuxer, fanout = RtpReceiver(0x1234ABCD, frozenset({96})), PsDemuxer(), StreamFanout("bench")
    fanout.attach("viewer", 0.0)
    source = ("127.0.0.1", 40000)
    units = 0
    for i, data in enumerate(datagrams):
        now = i * 0.0057  # ~175 packets/s, the clip's rate
        if feed_rtp(receiver, demuxer, fanout, data, source, now):
            units += len(fanout.pull("viewer"))
    return units


def callgrind_instructions(args: argparse.Namespace, loops: int) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__, "--inner"]
    cmd += [str(loops), "--width", str(args.width), "--height", str(args.height), "--bitrate", str(args.bitrate)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    match = re.search(r"Collected : (\d+)", out.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total in: {out.stderr[-500:]}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=20, help="passes of the 4 s clip per timed run")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the best counts")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per packet (valgrind)")
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)  # one run under valgrind
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--bitrate", type=int, default=3_000_000)
    args = parser.parse_args()
    packets = clip_packets(args.width, args.height, args.bitrate)
    if args.inner is not None:
        run_path(passes(packets, args.inner))
        return
    datagrams = passes(packets, args.loops)
    best = float("inf")
    units = 0
    for _ in range(args.repeat):
        t0 = time.process_time()
        units = run_path(datagrams)
        best = min(best, time.process_time() - t0)
    report: dict[str, Any] = {
        "benchmark": "relay_path_cost",
        "python": sys.version.split()[0],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "packets": len(datagrams),
        "units": units,
        "packets_per_pass": len(packets),
        "cpu_us_per_packet": round(1e6 * best / len(datagrams), 2),
    }
    if args.callgrind:
        if shutil.which("valgrind") is None:
            raise SystemExit("valgrind is not installed")
        loops = max(2, args.loops // 4)
        extra = callgrind_instructions(args, loops) - callgrind_instructions(args, 0)
        report["instructions_per_packet"] = round(extra / (loops * len(packets)))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "relay_path_cost.json").write_text(json.dumps(report, indent=2))
    print(f"{'packets':>10} {'units':>8} {'µs/packet':>10} {'instr/packet':>13}")
    print(
        f"{report['packets']:>10} {report['units']:>8} {report['cpu_us_per_packet']:>10} "
        f"{report.get('instructions_per_packet', '-')!s:>13}"
    )
    print(f"report: {out / 'relay_path_cost.json'}")


if __name__ == "__main__":
    main()
