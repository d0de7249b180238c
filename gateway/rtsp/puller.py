"""One RTSP camera's upstream: a thread that pulls it with PyAV (FFmpeg) and hands frames to the loop.

PyAV blocks (``av.open``, ``demux``), so each camera has its own thread; the only
thing it does with the event loop is ``call_soon_threadsafe``: a state change, a new
connection (its codec), each access unit. The loop side (:mod:`gateway.rtsp.service`)
owns the fan-out.

Reconnection: exponential backoff with jitter, capped (:func:`~gateway.rtsp.model.backoff_delay`),
reset by a connection that delivered a frame. A refusal an operator must fix — wrong
credentials (401/403) or a codec the gateway cannot pass through — is retried only every
``refused_retry`` seconds, so a camera is never hammered with a wrong password (many
cameras lock the account after a few failures).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import av.error

from gateway.media.ps import AccessUnit, StreamType
from gateway.rtsp.model import CameraState, RtspCamera, backoff_delay, redact_url
from gateway.rtsp.units import CODECS, access_unit, to_90khz

__all__ = ["DEFAULT_TIMING", "PullerTiming", "RtspPuller"]

log = logging.getLogger("kgw.rtsp")


@dataclass(frozen=True, slots=True)
class PullerTiming:
    """How a puller waits: reconnection backoff, refusals, FFmpeg's open and read timeouts (s)."""

    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    refused_retry: float = 300.0
    open_timeout: float = 5.0
    read_timeout: float = 5.0


DEFAULT_TIMING = PullerTiming()
# TCP interleaved (no UDP ports to open through a kindergarten's NAT, no loss); a short probe:
# the SDP's parameter sets say what the stream is, and FFmpeg's default 5 s analysis would
# only delay the first frame (cold: ~1.2 s → the GOP wait alone).
OPEN_OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "100000", "probesize": "32768", "fflags": "nobuffer"}


class RtspPuller:
    """Pulls one camera until stopped; reports through the three callbacks, always on ``loop``."""

    def __init__(
        self,
        camera: RtspCamera,
        loop: asyncio.AbstractEventLoop,
        *,
        on_state: Callable[[CameraState, str], None],
        on_connected: Callable[[StreamType], None],
        on_unit: Callable[[AccessUnit], None],
        timing: PullerTiming = DEFAULT_TIMING,
        rng: random.Random | None = None,
    ) -> None:
        self.camera = camera
        self.loop = loop
        self.timing = timing
        self._on_state = on_state
        self._on_connected = on_connected
        self._on_unit = on_unit
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self.attempts = 0  # connection attempts so far (tests bound them after a refusal)
        self.thread = threading.Thread(target=self._run, name=f"kgw-rtsp-{camera.channel_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to end (after the current packet, or FFmpeg's read timeout at worst)."""
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread; True when it ended."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    # --- the thread ----------------------------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: Any) -> bool:
        if self._stop.is_set():
            return False
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the gateway is gone
            self._stop.set()
            return False
        return True

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self.attempts += 1
            state, reason, delivered = self._session()
            if self._stop.is_set():
                return
            self._post(self._on_state, state, reason)
            if state.retries_soon:
                failures = 1 if delivered else failures + 1
                delay = backoff_delay(
                    failures, self._rng.random(), base=self.timing.backoff_base, cap=self.timing.backoff_cap
                )
            else:
                delay = self.timing.refused_retry
            log.info("rtsp %s: %s (%s); next attempt in %.1f s", self.camera.channel_id, state.value, reason, delay)
            self._stop.wait(delay)

    def _session(self) -> tuple[CameraState, str, bool]:
        """One connection, until it ends: the state it ended in, why, and whether it delivered frames."""
        timing = self.timing
        try:
            container = av.open(
                self.camera.pull_url,
                options=OPEN_OPTIONS,
                timeout=(timing.open_timeout, timing.read_timeout),
            )
        except (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError) as exc:
            return CameraState.AUTH_FAILED, _reason(exc), False
        except (av.error.FFmpegError, OSError) as exc:
            return CameraState.OFFLINE, _reason(exc), False
        delivered = False
        try:
            if not container.streams.video:
                return CameraState.UNSUPPORTED_CODEC, "no video stream", False
            video = container.streams.video[0]
            name = video.codec_context.name
            codec = CODECS.get(name)
            if codec is None:
                return CameraState.UNSUPPORTED_CODEC, name, False
            extradata = bytes(video.codec_context.extradata or b"")
            base = video.time_base
            num, den = (base.numerator, base.denominator) if base is not None else (1, 90000)
            for packet in container.demux(video):
                if self._stop.is_set():
                    break
                if packet.size == 0:
                    continue
                unit = access_unit(
                    codec, bytes(packet), to_90khz(packet.pts, num, den), to_90khz(packet.dts, num, den), extradata
                )
                if not delivered:
                    delivered = True
                    self._post(self._on_connected, codec)
                    self._post(self._on_state, CameraState.ONLINE, name)
                self._post(self._on_unit, unit)
            return CameraState.OFFLINE, "stream ended", delivered
        except (av.error.FFmpegError, OSError) as exc:
            return CameraState.OFFLINE, _reason(exc), delivered
        finally:
            container.close()


def _reason(exc: BaseException) -> str:
    """An FFmpeg error for logs and the console, without credentials (FFmpeg quotes the URL)."""
    return redact_url(str(exc))[:300]
