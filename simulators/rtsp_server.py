"""A real RTSP server that serves pullers: a consumer camera for tests and operators' simulators.

``ffmpeg -rtsp_flags listen`` only *receives* (a publisher pushes to it); a camera is
the other way round: it answers DESCRIBE/SETUP/PLAY from whoever pulls. GStreamer's
RTSP server (Debian ``gir1.2-gst-rtsp-server-1.0``) is one, with Basic/Digest auth.

Two halves in one module:

* :func:`serve` (run with the *system* ``/usr/bin/python3``, which has ``python3-gi``):
  ``/usr/bin/python3 -m simulators.rtsp_server --port 8554 --path /cam --codec h264
  [--user admin --password secret]``. One shared pipeline per path (a live test
  pattern encoded once, like a camera: every client gets the same stream). It prints
  ``ready`` on stdout once it listens.
* :class:`RtspServer` (any Python): starts that process, waits for ``ready``, stops it
  and starts it again on the same port (the camera gone and back).

Codecs: ``h264`` (x264, baseline, no B-frames), ``h265`` (x265) and ``mjpeg`` — the last
two are what the gateway must refuse clearly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

SYSTEM_PYTHON = "/usr/bin/python3"
CODECS = ("h264", "h265", "mjpeg")
READY = "ready"

_SOURCE = (
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width={w},height={h},framerate={fps}/1 ! "
    'timeoverlay font-desc="Sans 24" ! videoconvert ! video/x-raw,format=I420'
)
_ENCODERS = {
    # A key frame every `gop` frames; SPS/PPS in band with every key frame (config-interval=-1).
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bframes=0 bitrate={kbps} "
    "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=-1",
    "h265": "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} "
    "! rtph265pay name=pay0 pt=96 config-interval=-1",
    "mjpeg": "jpegenc quality=60 ! rtpjpegpay name=pay0 pt=26",
}


def launch_line(
    codec: str, *, width: int = 320, height: int = 240, fps: int = 25, gop: int = 10, kbps: int = 400
) -> str:
    """The gst-rtsp-server launch description of one camera stream."""
    source = _SOURCE.format(w=width, h=height, fps=fps)
    encoder = _ENCODERS[codec].format(gop=gop, kbps=kbps)
    return f"( {source} ! {encoder} )"


def serve(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT (system Python with GStreamer's introspection bindings)."""
    args = _parser().parse_args(argv)
    import gi  # type: ignore[import-not-found]

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found]

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.codec, width=args.width, height=args.height, fps=args.fps, gop=args.gop))
    factory.set_shared(True)  # one encoder per path, like a camera's
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        if args.auth == "digest":
            auth.set_supported_methods(GstRtspServer.RTSPAuthMethod.DIGEST)
            auth.add_digest(args.user, args.password, token)
        else:
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        role = Gst.Structure.from_string(
            "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
        )[0]
        factory.add_role_from_structure(role)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for signum in (2, 15):  # SIGINT, SIGTERM: leave the main loop, exit 0
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(READY, flush=True)
    loop.run()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="A simulated RTSP camera (GStreamer RTSP server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--codec", choices=CODECS, default="h264")
    parser.add_argument("--user", default="")
    parser.add_argument("--password", default="")
    parser.add_argument("--auth", choices=("basic", "digest"), default="basic")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=10, help="frames between key frames")
    return parser


def available() -> str | None:
    """Why the server cannot run here (None: it can): the system Python with GStreamer's RTSP server."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} missing"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return "GStreamer RTSP server missing (scripts/setup.sh installs gir1.2-gst-rtsp-server-1.0)"
    return None


@dataclass
class RtspServer:
    """One simulated camera as a child process: start, stop, start again on the same port."""

    port: int
    path: str = "/cam"
    codec: str = "h264"
    user: str = ""
    password: str = ""
    auth: str = "basic"
    gop: int = 10
    host: str = "127.0.0.1"
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The stream's URL without credentials (the gateway takes them apart)."""
        return f"rtsp://{self.host}:{self.port}{self.path}"

    def url_with(self, user: str, password: str) -> str:
        """The URL with credentials in it (as cameras' manuals print them)."""
        return f"rtsp://{quote(user, safe='')}:{quote(password, safe='')}@{self.host}:{self.port}{self.path}"

    def command(self) -> list[str]:
        cmd = [SYSTEM_PYTHON, "-m", "simulators.rtsp_server", "--host", self.host, "--port", str(self.port)]
        cmd += ["--path", self.path, "--codec", self.codec, "--gop", str(self.gop)]
        if self.user:
            cmd += ["--user", self.user, "--password", self.password, "--auth", self.auth]
        return cmd

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until it listens (RuntimeError when it does not)."""
        if self.process is not None and self.process.poll() is None:
            return
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root}
        env.pop("PYTHONHOME", None)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=0.2):
                    line = self.process.stdout.readline()
                    if line.strip() == READY:
                        return
                    if not line:
                        break
                if self.process.poll() is not None:
                    break
        error = self._stop_reading_errors()
        raise RuntimeError(f"RTSP server on port {self.port} did not start: {error}")

    def stop(self) -> None:
        """Stop the server (the camera goes away); the port is free again."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def _stop_reading_errors(self) -> str:
        process = self.process
        self.process = None
        if process is None:
            return ""
        with contextlib.suppress(Exception):
            process.kill()
        try:
            _, err = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            err = ""
        return (err or "").strip()[-500:]

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(serve())
