"""Benchmark: how many ~2 Mbit/s live streams the gateway relays per core without loss.

The gateway (:class:`gateway.app.GatewayService`, SIP and HTTP on port 0, on
uvloop like ``kgw gateway``) runs in this process; the simulated cameras run
in a separate process (this script with ``simulate``: a
:class:`simulators.fleet.Fleet` whose cameras replay one pre-encoded clip over
RTP/PS). ``kgw simulate`` has no video options, hence the child: the default
640x360 test card tops out at ~0.9 Mbit/s whatever bitrate is asked, so the
cameras stream 1280x720 @ 25 fps asked for 3 Mbit/s, which is ~1.9 Mbit/s on
the wire (``--width/--height/--bitrate``). Every camera streams the same clip
(one encode instead of one per camera; the gateway cannot tell).

For each N of ``--streams`` (streams are added, not reopened), the benchmark
calls ``service.live.watch(channel)`` for N camera channels, runs one consumer
task per stream that pulls access units (counting, no decoding), lets it
settle, then measures over ``--window`` seconds: RTP packets/s and Mbit/s
received by the gateway, RTP loss (sum of ``receiver.stats.lost``), kernel UDP
receive-buffer drops on the gateway's own sockets (``drops`` in ``/proc/net/udp``; the
host-wide ``/proc/net/snmp`` figure is reported too but counts other programs), units the consumers got or the
fanout skipped, the gateway's CPU (``time.process_time()`` of this process)
and VmRSS, and the simulator's CPU. "Streams per core" = N / (gateway CPU
seconds per second), given for the rows with zero loss.

Target (issue 3): at least 200 concurrent streams per core with no loss.

``--processes P`` (issue 12, relay capacity grows with cores): P gateway processes,
each a GatewayService with its own media port range (``--media-ports``, split in P
parts) and its own simulator child with N/P of the cameras, as the cluster topology
runs them. The processes open their streams and measure their windows together (a
start barrier); a row sums them: N streams per machine, zero loss only when every
process had none, CPU = the sum of the gateway processes' CPU.

``--zlm-bin PATH`` (issue 12, side by side): the same measurement against ZLMediaKit's
MediaServer instead of kgw. ZLMediaKit has no SIP, so a raw sender child (this script
with ``send``) streams the very clip the simulated cameras stream, with the same
packetizer and pacing (``RtpPacketizer`` + ``ClipReplayer``: byte-identical PS/RTP
apart from SSRC, sequence and timestamp origins), to one ``openRtpServer`` port per
stream; each stream has one consumer pulling HTTP-FLV (its RTMP muxer; every other
muxer is off or on demand, which favours ZLMediaKit). CPU is MediaServer's
utime+stime from /proc; "loss" is the host's UDP receive-buffer drops plus a consumer
bitrate short of the sender's by more than 10 %. (kgw's consumers count units in this
process; ZLMediaKit's also mux FLV and write to a socket: a cost kgw's bench skips.)

Usage: .venv/bin/python bench/relay_capacity.py [--streams 25,50,100] [--window 20] [--processes 2]
       .venv/bin/python bench/relay_capacity.py --zlm-bin /work/zlm/ZLMediaKit/release/linux/Release/MediaServer
Prints a table and writes bench/results/relay_capacity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")
CAMERAS_PER_KINDERGARTEN = 16


# --------------------------------------------------------------------------- helpers shared with first_frame.py


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    """Resident set size (VmRSS, or VmHWM for the peak) in MiB."""
    match = re.search(rf"{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped host-wide because a UDP receive buffer was full."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1], strict=True)).get("RcvbufErrors", 0))


def udp_socket_drops(pid: int) -> int:
    """Datagrams dropped on the UDP sockets process ``pid`` holds (``drops`` of /proc/net/udp).

    Unlike :func:`udp_rcvbuf_errors` it counts only this process's sockets, so other
    programs flooding loopback on a shared machine do not show up as the relay's loss.
    """
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    drops = 0
    for table in ("udp", "udp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 12 and fields[9] in inodes:
                    drops += int(fields[12])
    return drops


def clip_packets_per_s(frames: Any, seconds: float) -> float:
    """RTP packets per second one stream of the clip sends (the cameras' packetizer: DEFAULT_MAX_PAYLOAD)."""
    from gateway.media.rtp.sender import DEFAULT_MAX_PAYLOAD

    return sum(math.ceil(len(frame[0]) / DEFAULT_MAX_PAYLOAD) for frame in frames) / seconds


def nominal(row: dict[str, Any], us_per_packet: float, packets_per_s_per_stream: float) -> None:
    """Add what a row means at the clip's full rate, whatever the (possibly overloaded) sender achieved.

    On a busy machine the sender falls behind (its replayer skips frames), so N streams carry
    fewer packets than N cameras would; CPU per packet does not depend on that much, so
    ``cpu_percent_per_stream_at_nominal_rate`` = µs/packet × the clip's packets/s per stream.
    """
    per_stream = us_per_packet * packets_per_s_per_stream / 1e4  # % of one core
    row["sender_at_nominal_rate"] = row["packets_per_s"] >= 0.95 * packets_per_s_per_stream * row["streams"]
    row["cpu_percent_per_stream_at_nominal_rate"] = round(per_stream, 3)
    row["streams_per_core_at_nominal_rate"] = round(100 / per_stream, 1) if per_stream > 0 else None


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline figures: per core at the clip's full rate (zero-loss rows), and the largest N fully delivered."""
    clean = [r for r in rows if r["zero_loss"] and r["streams_per_core_at_nominal_rate"]]
    return {
        "streams_per_core_at_zero_loss": max((r["streams_per_core_at_nominal_rate"] for r in clean), default=None),
        "max_streams_tested_at_zero_loss": max((r["streams"] for r in clean if r["sender_at_nominal_rate"]), default=0),
    }


def run_loop(coro: Awaitable[Any]) -> Any:
    """Run on uvloop when installed, like ``kgw gateway``."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


def camera_channels(service: Any) -> list[str]:
    """Camera channel IDs (type code 131) the gateway knows, sorted."""
    return sorted(c for state in service.directory.devices.values() for c in state.reported if c[10:13] == "131")


async def start_gateway(media_ports: str = "") -> Any:
    from bench.registration_storm import TOKEN_FLAG  # the simulator provisions with its token
    from gateway.config import load_config, parse_token_hash_flag
    from gbplatform.app import build_gateway

    config = load_config(
        None,
        sip_port=0,
        http_port=0,
        db=":memory:",
        flush_interval=0.5,
        log_level="WARNING",
        api_tokens=(parse_token_hash_flag(TOKEN_FLAG[1]),),
        uplink_budget_mbps=0.0,  # 16 main streams of a kindergarten exceed its default 20 Mbit/s budget
        media_ports=media_ports,
    )
    service = build_gateway(config)
    await service.start()
    return service


def start_simulator(service: Any, cameras: int, args: argparse.Namespace, stats_file: str) -> subprocess.Popen[bytes]:
    """The simulated cameras in a child process: enough kindergartens of 16 cameras for ``cameras``."""
    kindergartens = max(1, math.ceil(cameras / CAMERAS_PER_KINDERGARTEN))
    return subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "simulate",
            "--sip-port",
            str(service.sip_port),
            "--api",
            f"http://127.0.0.1:{service.http_port}",
            "--gateway-id",
            service.config.id,
            "--kindergartens",
            str(kindergartens),
            "--width",
            str(args.width),
            "--height",
            str(args.height),
            "--bitrate",
            str(args.bitrate),
            "--stats-file",
            stats_file,
        ],
        cwd=ROOT,
    )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def wait_channels(service: Any, wanted: int, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        channels = camera_channels(service)
        if len(channels) >= wanted:
            return channels
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with {proc.returncode}")
        await asyncio.sleep(0.2)
    raise RuntimeError(f"only {len(camera_channels(service))} of {wanted} camera channels showed up")


def add_video_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument(
        "--bitrate",
        type=int,
        default=3_000_000,
        help="encoder bitrate asked for (3 Mbit/s at 1280x720 gives ~1.9 Mbit/s on the wire)",
    )


# --------------------------------------------------------------------------- the simulator child


def simulate_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="relay_capacity.py simulate")
    parser.add_argument("--sip-port", type=int, required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--gateway-id", required=True)
    parser.add_argument("--kindergartens", type=int, required=True)
    parser.add_argument("--stats-file", required=True)
    add_video_args(parser)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(_simulate(args))


async def _simulate(args: argparse.Namespace) -> None:
    from simulators.fleet import Fleet, FleetOptions
    from simulators.video import ClipCache, EncodedClip, VideoProfile

    class SharedClip(ClipCache):
        """Every camera replays the same clip: one encode for the whole fleet."""

        def get(self, title: str, subtitle: str, profile: VideoProfile) -> EncodedClip:
            return super().get("kgw relay bench", "camera", profile)

    profile = VideoProfile(width=args.width, height=args.height, bitrate=args.bitrate)
    clips = SharedClip()
    clip = clips.get("", "", profile)  # encode before any INVITE
    wire = sum(len(frame[0]) for frame in clip.frames) * 8 / profile.seconds
    clip_pps = clip_packets_per_s(clip.frames, profile.seconds)
    options = FleetOptions(
        gateway_port=args.sip_port,
        gateway_id=args.gateway_id,
        kindergartens=args.kindergartens,
        cameras=(CAMERAS_PER_KINDERGARTEN, CAMERAS_PER_KINDERGARTEN),
        api=args.api,
        video=profile,
    )
    fleet = Fleet(options, clips=clips)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await fleet.start()
    try:
        while not stopping.is_set():
            totals = fleet.media_totals()
            stats = {
                "frames": totals.frames,
                "packets": totals.packets,
                "bytes": totals.bytes,
                "streams": fleet.summary()["streams"],
                "clip_ps_bits_per_s": wire,
                "clip_packets_per_s": clip_pps,
            }
            tmp = args.stats_file + ".tmp"
            Path(tmp).write_text(json.dumps(stats))
            os.replace(tmp, args.stats_file)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1.0)
    finally:
        await fleet.stop(unregister=False)


# --------------------------------------------------------------------------- the benchmark


@dataclass
class Consumer:
    channel_id: str
    stream: Any
    viewer: str
    units: int = 0
    bytes: int = 0
    keyframes: int = 0
    active: bool = True


async def consume(consumer: Consumer) -> None:
    """Pull every unit the fanout has for this viewer; count, never decode."""
    stream, viewer = consumer.stream, consumer.viewer
    while consumer.active:
        units = stream.fanout.pull(viewer)
        for unit in units:
            consumer.units += 1
            consumer.bytes += len(unit.data)
            consumer.keyframes += unit.keyframe
        if not units:
            stream.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # (wait_for can swallow a cancel in 3.11)
                    await stream.wakeup.wait()


def snapshot(service: Any, consumers: list[Consumer], sim_pid: int, stats_file: str) -> dict[str, float]:
    live = service.live
    rtp = {"received": 0, "bytes": 0, "lost": 0}
    skipped = 0
    for consumer in consumers:
        stream = live.streams.get(consumer.channel_id)
        if stream is None:
            continue
        stats = stream.receiver.stats
        rtp["received"] += stats.received
        rtp["bytes"] += stats.bytes
        rtp["lost"] += stats.lost
        with contextlib.suppress(Exception):
            skipped += stream.fanout.consumer_stats(consumer.viewer).dropped_units
    try:
        sim = json.loads(Path(stats_file).read_text())
    except (OSError, ValueError):
        sim = {}
    return {
        "t": time.monotonic(),
        "cpu": time.process_time(),
        "sim_cpu": cpu_seconds(sim_pid),
        "packets": rtp["received"],
        "bytes": rtp["bytes"],
        "lost": rtp["lost"],
        "skipped": skipped,
        "units": sum(c.units for c in consumers),
        "unit_bytes": sum(c.bytes for c in consumers),
        "rcvbuf_errors": udp_socket_drops(os.getpid()),
        "host_rcvbuf_errors": udp_rcvbuf_errors(),
        "sim_packets": sim.get("packets", 0),
        "clip_ps_bits_per_s": sim.get("clip_ps_bits_per_s", 0.0),
        "clip_packets_per_s": sim.get("clip_packets_per_s", 0.0),
    }


async def barrier(path: str | None, name: str, parties: int) -> None:
    """Wait until ``parties`` workers wrote ``path.<name>`` (all processes start the step together)."""
    if path is None:
        return
    Path(f"{path}.{name}.{os.getpid()}").touch()
    folder, stem = Path(path).parent, Path(path).name
    deadline = time.monotonic() + 180
    while len(list(folder.glob(f"{stem}.{name}.*"))) < parties:
        if time.monotonic() > deadline:
            raise RuntimeError(f"barrier {name}: the other relay processes did not arrive")
        await asyncio.sleep(0.05)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    counts = sorted(args.streams)
    service = await start_gateway(args.media_ports)
    tmp = tempfile.mkdtemp(prefix="kgw-relay-")
    stats_file = f"{tmp}/sim.json"
    sim = start_simulator(service, counts[-1], args, stats_file)
    consumers: list[Consumer] = []
    tasks: list[asyncio.Task[None]] = []
    rows: list[dict[str, Any]] = []
    clip_bits = 0.0
    try:
        t0 = time.monotonic()
        channels = await wait_channels(service, counts[-1], sim)
        print(f"{len(channels)} camera channels online after {time.monotonic() - t0:.1f} s", flush=True)
        live = service.live
        for n in counts:
            await barrier(args.barrier, f"open{n}", args.parties)
            new = channels[len(consumers) : n]
            t_open = time.monotonic()
            opened = await asyncio.gather(*(live.watch(c) for c in new))
            open_s = time.monotonic() - t_open
            for channel_id, (stream, viewer) in zip(new, opened, strict=True):
                consumer = Consumer(channel_id, stream, viewer)
                consumers.append(consumer)
                tasks.append(asyncio.create_task(consume(consumer)))
            await barrier(args.barrier, f"opened{n}", args.parties)
            await asyncio.sleep(args.settle)
            before = snapshot(service, consumers, sim.pid, stats_file)
            await asyncio.sleep(args.window)
            after = snapshot(service, consumers, sim.pid, stats_file)
            d = {k: after[k] - before[k] for k in before}
            clip_bits = after["clip_ps_bits_per_s"]
            secs = d["t"]
            cpu_share = d["cpu"] / secs
            lost = int(d["lost"])
            row = {
                "streams": n,
                "open_s": round(open_s, 2),
                "window_s": round(secs, 1),
                "packets_per_s": round(d["packets"] / secs),
                "mbit_per_s": round(d["bytes"] * 8 / secs / 1e6, 1),
                "mbit_per_s_per_stream": round(d["bytes"] * 8 / secs / 1e6 / n, 2),
                "sim_packets_per_s": round(d["sim_packets"] / secs),
                "rtp_lost": lost,
                "udp_rcvbuf_errors": int(d["rcvbuf_errors"]),
                "host_udp_rcvbuf_errors": int(d["host_rcvbuf_errors"]),
                "units_per_s_to_consumers": round(d["units"] / secs),
                "units_skipped": int(d["skipped"]),
                "gateway_cpu_percent_of_one_core": round(100 * cpu_share, 1),
                "gateway_cpu_s": d["cpu"],
                "packets": int(d["packets"]),
                "gateway_cpu_us_per_packet": round(1e6 * d["cpu"] / max(d["packets"], 1), 1),
                "gateway_rss_mib": round(rss_mib(os.getpid()), 1),
                "simulator_cpu_percent_of_one_core": round(100 * d["sim_cpu"] / secs, 1),
                "streams_per_core": round(n / cpu_share, 1) if cpu_share > 0 else None,
                "zero_loss": lost == 0 and d["rcvbuf_errors"] == 0 and d["skipped"] == 0,
            }
            row["clip_packets_per_s"] = after["clip_packets_per_s"]
            nominal(row, 1e6 * d["cpu"] / max(d["packets"], 1), after["clip_packets_per_s"])
            rows.append(row)
            print(
                f"N={n}: {row['packets_per_s']} pkt/s, {row['mbit_per_s']} Mbit/s, lost {lost}, "
                f"gateway {row['gateway_cpu_percent_of_one_core']} % CPU, "
                f"simulator {row['simulator_cpu_percent_of_one_core']} %",
                flush=True,
            )
    finally:
        for consumer in consumers:
            consumer.active = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for consumer in consumers:
            service.live.leave(consumer.channel_id, consumer.viewer)
        await service.stop()
        stop_process(sim)
    return {
        "video": {
            "width": args.width,
            "height": args.height,
            "fps": 25,
            "encoder_bitrate": args.bitrate,
            "clip_ps_mbit_per_s": round(clip_bits / 1e6, 2),
        },
        "rows": rows,
        **summary(rows),
    }


# --------------------------------------------------------------------------- ZLMediaKit side by side


def send_main(argv: list[str]) -> None:
    """The raw sender child: the cameras' clip, packetizer and pacing, to fixed UDP ports (no SIP)."""
    parser = argparse.ArgumentParser(prog="relay_capacity.py send")
    parser.add_argument("--ports", required=True, help="comma-separated UDP ports on 127.0.0.1")
    parser.add_argument("--stats-file", required=True)
    add_video_args(parser)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        run_loop(_send(args))


async def _send(args: argparse.Namespace) -> None:
    from gateway.io.rtp_send_io import UdpRtpSender
    from gateway.media.rtp import ClipReplayer, RtpPacketizer
    from simulators.video import ClipCache, VideoProfile

    profile = VideoProfile(width=args.width, height=args.height, bitrate=args.bitrate)
    clip = await asyncio.to_thread(ClipCache().get, "kgw relay bench", "camera", profile)  # as SharedClip
    wire = sum(len(frame[0]) for frame in clip.frames) * 8 / profile.seconds
    clip_pps = clip_packets_per_s(clip.frames, profile.seconds)
    loop = asyncio.get_running_loop()
    totals = {"packets": 0, "bytes": 0, "frames": 0}

    class Stream:
        def __init__(self, sender: UdpRtpSender, ssrc: int) -> None:
            self.sender, self.packetizer = sender, RtpPacketizer(ssrc)
            self.replayer = ClipReplayer(clip.frames, profile.fps)
            self.t0 = loop.time()
            self.tick()

        def tick(self) -> None:
            for frame in self.replayer.frames_due(loop.time() - self.t0):
                packets = [bytes(p) for p in self.packetizer.packetize(frame.ps_frame, frame.timestamp)]
                totals["frames"] += 1
                totals["packets"] += len(packets)
                totals["bytes"] += sum(map(len, packets))
                self.sender.send(packets)
            loop.call_at(self.t0 + self.replayer.next_due_time(), self.tick)

    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    streams = []
    for i, port in enumerate(int(p) for p in args.ports.split(",")):
        sender = await UdpRtpSender.open("127.0.0.1", ("127.0.0.1", port))
        streams.append(Stream(sender, 0x10000 + i))
        await asyncio.sleep(0.013)  # stagger the streams' frame times like independent cameras
    while not stopping.is_set():
        stats = {**totals, "streams": len(streams), "clip_ps_bits_per_s": wire, "clip_packets_per_s": clip_pps}
        Path(args.stats_file + ".tmp").write_text(json.dumps(stats))
        os.replace(args.stats_file + ".tmp", args.stats_file)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 1.0)


def free_tcp_udp_port() -> int:
    import socket

    for _ in range(100):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free port")


ZLM_SECRET = "kgw-relay-bench"


def zlm_config(folder: Path, args_port_range: str) -> dict[str, int]:
    """A MediaServer config.ini: loopback ports, API secret, only the muxer the consumers pull (FLV).

    The RTP ports come from ``--media-ports`` (default 30000-39999: below the kernel's ephemeral
    range, where outgoing connections of other programs would collide with ZLMediaKit's binds).
    """
    ports = {name: free_tcp_udp_port() for name in ("http", "rtsp", "rtmp", "rtp_proxy")}
    text = f"""[api]
apiDebug=1
secret={ZLM_SECRET}
[general]
enableVhost=0
mediaServerId=kgw-bench
streamNoneReaderDelayMS=60000
[protocol]
enable_hls=0
enable_hls_fmp4=0
enable_mp4=0
enable_rtsp=0
enable_rtmp=1
enable_ts=0
enable_fmp4=0
rtmp_demand=1
[hls]
segNum=0
[http]
port={ports["http"]}
sslport=0
[rtmp]
port={ports["rtmp"]}
sslport=0
[rtsp]
port={ports["rtsp"]}
sslport=0
[rtp_proxy]
port={ports["rtp_proxy"]}
port_range={args_port_range}
timeoutSec=30
[shell]
port=0
[rtc]
port=0
tcpPort=0
[srt]
port=0
[onvif]
port=0
"""
    (folder / "config.ini").write_text(text)
    return ports


def zlm_api(http_port: int, method: str, **params: Any) -> dict[str, Any]:
    import urllib.parse
    import urllib.request

    query = urllib.parse.urlencode({"secret": ZLM_SECRET, **params})
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/index/api/{method}?{query}", timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    if answer.get("code") != 0:
        raise RuntimeError(f"ZLMediaKit {method}: {answer}")
    return answer


@dataclass
class FlvConsumer:
    stream_id: str
    bytes: int = 0


async def consume_flv(consumer: FlvConsumer, http_port: int) -> None:
    """Pull one stream as HTTP-FLV and count its bytes (retrying until the stream exists)."""
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            request = f"GET /rtp/{consumer.stream_id}.live.flv HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            writer.write(request.encode())
            while chunk := await reader.read(256 * 1024):
                consumer.bytes += len(chunk)
        except OSError:
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.5)


async def zlm_bench(args: argparse.Namespace) -> dict[str, Any]:
    counts = sorted(args.streams)
    folder = Path(tempfile.mkdtemp(prefix="kgw-zlm-"))
    ports = zlm_config(folder, args.media_ports)
    zlm = subprocess.Popen(
        [args.zlm_bin, "-c", str(folder / "config.ini"), "-l", "1"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    senders: list[subprocess.Popen[bytes]] = []
    tasks: list[asyncio.Task[None]] = []
    consumers: list[FlvConsumer] = []
    rows: list[dict[str, Any]] = []
    clip_bits = 0.0
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await asyncio.to_thread(zlm_api, ports["http"], "getServerConfig")
                break
            except (OSError, RuntimeError):
                if zlm.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("ZLMediaKit MediaServer did not start") from None
                await asyncio.sleep(0.3)
        stats_files: list[str] = []
        for n in counts:
            new = [f"cam{i}" for i in range(len(consumers), n)]
            rtp_ports = []
            for stream_id in new:
                for attempt in range(5):  # a port of the range taken by another program: ZLM moves on
                    try:
                        answer = await asyncio.to_thread(
                            zlm_api, ports["http"], "openRtpServer", port=0, tcp_mode=0, stream_id=stream_id
                        )
                        break
                    except RuntimeError:
                        if attempt == 4:
                            raise
                rtp_ports.append(int(answer["port"]))
            stats_file = str(folder / f"send{len(senders)}.json")
            stats_files.append(stats_file)
            cmd = [sys.executable, str(Path(__file__).resolve()), "send", "--ports", ",".join(map(str, rtp_ports))]
            cmd += ["--stats-file", stats_file, "--width", str(args.width), "--height", str(args.height)]
            senders.append(subprocess.Popen([*cmd, "--bitrate", str(args.bitrate)], cwd=ROOT))
            for stream_id in new:
                consumer = FlvConsumer(stream_id)
                consumers.append(consumer)
                tasks.append(asyncio.create_task(consume_flv(consumer, ports["http"])))
            await asyncio.sleep(args.settle + 3)  # the sender encodes its clip first

            def snap() -> dict[str, float]:
                sent = {"packets": 0, "bytes": 0}
                for path in stats_files:
                    with contextlib.suppress(OSError, ValueError):
                        stats = json.loads(Path(path).read_text())
                        sent["packets"] += stats["packets"]
                        sent["bytes"] += stats["bytes"]
                return {
                    "t": time.monotonic(),
                    "cpu": cpu_seconds(zlm.pid),
                    "sim_cpu": sum(cpu_seconds(p.pid) for p in senders),
                    "sent_packets": sent["packets"],
                    "sent_bytes": sent["bytes"],
                    "flv_bytes": sum(c.bytes for c in consumers),
                    "rcvbuf_errors": udp_socket_drops(zlm.pid),
                    "host_rcvbuf_errors": udp_rcvbuf_errors(),
                }

            before = snap()
            await asyncio.sleep(args.window)
            after = snap()
            d = {k: after[k] - before[k] for k in before}
            secs = d["t"]
            share = d["cpu"] / secs
            sent_mbit = d["sent_bytes"] * 8 / secs / 1e6
            flv_mbit = d["flv_bytes"] * 8 / secs / 1e6
            clip_bits = json.loads(Path(stats_files[0]).read_text()).get("clip_ps_bits_per_s", 0.0)
            row = {
                "streams": n,
                "window_s": round(secs, 1),
                "packets_per_s": round(d["sent_packets"] / secs),
                "mbit_per_s": round(sent_mbit, 1),
                "consumer_flv_mbit_per_s": round(flv_mbit, 1),
                "udp_rcvbuf_errors": int(d["rcvbuf_errors"]),
                "host_udp_rcvbuf_errors": int(d["host_rcvbuf_errors"]),
                "zlm_cpu_percent_of_one_core": round(100 * share, 1),
                "zlm_cpu_us_per_packet": round(1e6 * d["cpu"] / max(d["sent_packets"], 1), 1),
                "zlm_rss_mib": round(rss_mib(zlm.pid), 1),
                "sender_cpu_percent_of_one_core": round(100 * d["sim_cpu"] / secs, 1),
                "streams_per_core": round(n / share, 1) if share > 0 else None,
                "zero_loss": d["rcvbuf_errors"] == 0 and flv_mbit >= 0.9 * sent_mbit,
            }
            clip_pps = json.loads(Path(stats_files[0]).read_text()).get("clip_packets_per_s", 0.0)
            nominal(row, 1e6 * d["cpu"] / max(d["sent_packets"], 1), clip_pps)
            rows.append(row)
            print(
                f"ZLM N={n}: {row['packets_per_s']} pkt/s sent, {row['mbit_per_s']} Mbit/s, FLV out {flv_mbit:.1f} "
                f"Mbit/s, MediaServer {row['zlm_cpu_percent_of_one_core']} % CPU, rcvbuf drops {row['udp_rcvbuf_errors']}",
                flush=True,
            )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for proc in senders:
            stop_process(proc)
        stop_process(zlm)
    return {
        "server": "ZLMediaKit",
        "zlm_bin": args.zlm_bin,
        "video": {"width": args.width, "height": args.height, "clip_ps_mbit_per_s": round(clip_bits / 1e6, 2)},
        "rows": rows,
        **summary(rows),
    }


def split_ports(spec: str, parts: int) -> list[str]:
    """``"30000-39999"`` in ``parts`` disjoint ranges, one per gateway process."""
    lo, hi = (int(x) for x in spec.split("-", 1))
    size = (hi - lo + 1) // parts
    if size < 4:
        raise SystemExit(f"--media-ports {spec} is too small for {parts} processes")
    return [f"{lo + i * size}-{lo + (i + 1) * size - 1}" for i in range(parts)]


def run_processes(args: argparse.Namespace) -> dict[str, Any]:
    """``--processes P``: P relay processes (gateway + its simulator each), N/P streams each, summed per row."""
    parts = args.processes
    tmp = tempfile.mkdtemp(prefix="kgw-relay-procs-")
    workers = []
    for i, ports in enumerate(split_ports(args.media_ports, parts)):
        share = ",".join(str(math.ceil(n / parts)) for n in sorted(args.streams))
        result = f"{tmp}/worker{i}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--streams", share, "--window", str(args.window)]
        cmd += ["--settle", str(args.settle), "--media-ports", ports, "--barrier", f"{tmp}/step"]
        cmd += ["--parties", str(parts), "--result-file", result, "--width", str(args.width)]
        cmd += ["--height", str(args.height), "--bitrate", str(args.bitrate)]
        workers.append((subprocess.Popen(cmd, cwd=ROOT), result))
    results = []
    for proc, result in workers:
        if proc.wait() != 0:
            raise SystemExit(f"a relay process failed with {proc.returncode}")
        results.append(json.loads(Path(result).read_text()))
    rows = []
    for per in zip(*(r["rows"] for r in results), strict=True):
        secs = max(r["window_s"] for r in per)
        cpu = sum(r["gateway_cpu_s"] for r in per)
        packets = sum(r["packets"] for r in per)
        n = sum(r["streams"] for r in per)
        share = cpu / secs
        lost = sum(r["rtp_lost"] for r in per)
        rcvbuf = sum(r["udp_rcvbuf_errors"] for r in per)  # each process's own sockets
        row = {
            "streams": n,
            "window_s": secs,
            "packets_per_s": sum(r["packets_per_s"] for r in per),
            "mbit_per_s": round(sum(r["mbit_per_s"] for r in per), 1),
            "rtp_lost": lost,
            "udp_rcvbuf_errors": rcvbuf,
            "units_skipped": sum(r["units_skipped"] for r in per),
            "gateway_cpu_percent_of_one_core": round(100 * share, 1),
            "gateway_cpu_us_per_packet": round(1e6 * cpu / max(packets, 1), 1),
            "gateway_rss_mib": round(sum(r["gateway_rss_mib"] for r in per), 1),
            "simulator_cpu_percent_of_one_core": round(sum(r["simulator_cpu_percent_of_one_core"] for r in per), 1),
            "streams_per_core": round(n / share, 1) if share > 0 else None,
            "zero_loss": all(r["zero_loss"] for r in per),
            "per_process": per,
        }
        nominal(row, 1e6 * cpu / max(packets, 1), per[0]["clip_packets_per_s"])
        rows.append(row)
    return {
        "video": results[0]["video"],
        "rows": rows,
        **summary(rows),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "simulate":
        simulate_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "send":
        send_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--streams",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[25, 50, 100],
        help="comma-separated stream counts (default 25,50,100)",
    )
    parser.add_argument("--window", type=float, default=20.0, help="measurement window per count, s")
    parser.add_argument("--settle", type=float, default=5.0, help="s between opening streams and measuring")
    parser.add_argument(
        "--processes", type=int, default=1, help="gateway processes sharing the streams (default 1: this process)"
    )
    parser.add_argument(
        "--media-ports", default="30000-39999", help="RTP port range split among --processes (default 30000-39999)"
    )
    # internal: one relay process of a --processes run
    parser.add_argument("--zlm-bin", help="measure ZLMediaKit's MediaServer at this path instead of kgw")
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    parser.add_argument("--parties", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    add_video_args(parser)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "relay_capacity",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "processes": args.processes,
    }
    if args.zlm_bin:
        report.update(run_loop(zlm_bench(args)))
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / "relay_capacity_zlm.json").write_text(json.dumps(report, indent=2))
        keys = ["streams", "packets_per_s", "mbit_per_s", "consumer_flv_mbit_per_s", "udp_rcvbuf_errors"]
        keys += ["zlm_cpu_percent_of_one_core", "zlm_cpu_us_per_packet", "zlm_rss_mib", "streams_per_core"]
        keys += ["sender_at_nominal_rate", "streams_per_core_at_nominal_rate"]
        print("\n" + " ".join(f"{k[:14]:>14}" for k in keys))
        for row in report["rows"]:
            print(" ".join(f"{row[k]!s:>14}" for k in keys))
        print(f"report: {out / 'relay_capacity_zlm.json'}")
        return
    if args.result_file:  # a worker of a --processes run
        Path(args.result_file).write_text(json.dumps(run_loop(bench(args))))
        return
    if args.processes > 1:
        report.update(run_processes(args))
    else:
        args.media_ports = ""
        report.update(run_loop(bench(args)))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "relay_capacity.json").write_text(json.dumps(report, indent=2))
    cols = [
        ("streams", "N"),
        ("packets_per_s", "pkt/s"),
        ("mbit_per_s", "Mbit/s"),
        ("rtp_lost", "lost"),
        ("udp_rcvbuf_errors", "rcvbuf"),
        ("units_skipped", "skipped"),
        ("gateway_cpu_percent_of_one_core", "gw CPU %"),
        ("gateway_cpu_us_per_packet", "us/pkt"),
        ("gateway_rss_mib", "RSS MiB"),
        ("simulator_cpu_percent_of_one_core", "sim CPU %"),
        ("streams_per_core", "streams/core"),
        ("sender_at_nominal_rate", "sender ok"),
        ("streams_per_core_at_nominal_rate", "nominal s/c"),
    ]
    print(f"\nvideo: {report['video']}; gateway processes: {args.processes}")
    print(" ".join(f"{title:>12}" for _, title in cols))
    for row in report["rows"]:
        print(" ".join(f"{row[key]!s:>12}" for key, _ in cols))
    print(
        f"streams per core at zero loss (CPU per packet x the clip's packet rate): "
        f"{report['streams_per_core_at_zero_loss']} (largest zero-loss N with the sender at full rate: "
        f"{report['max_streams_tested_at_zero_loss']}; target >= 200)"
    )
    print(f"report: {out / 'relay_capacity.json'}")


if __name__ == "__main__":
    main()
