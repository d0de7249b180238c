"""Recording downloads: a Download session to the device, remuxed to an MP4 file (issue 11).

:meth:`DownloadService.start` opens its own INVITE per download (``s=Download``,
``u=<channel>:0``, ``t=<start> <end>`` in Unix seconds, ``a=downloadspeed``, a
history SSRC ``1…``; docs/gb28181.md §15.3–§15.6), receives RTP the way live view
does (:mod:`gateway.media_intake`, :class:`~gateway.media.rtp.RtpReceiver` armed by
the answer, :class:`~gateway.media.ps.PsDemuxer`), and hands the access units to a
:class:`~gateway.media.mp4_remux.Mp4Remuxer` in a worker thread (never on the loop).

Progress is the recorded time received (the span of video DTS) against the
requested range; ``bytes`` is the RTP payload received. A download ends when

* the device sends ``MediaStatus`` 121 in the dialog (end of file, §15.9): **done**
  once any video arrived (the device says that was all there is), after a short
  grace for RTP still in flight;
* the whole range arrived and the device said nothing for :data:`COMPLETE_WAIT` (one
  that never sends 121): **done**, and we hang up;
* the device hangs up, RTP stops (the RTP timeout) or the download runs far beyond
  its expected time: **done** if at least ``complete_ratio`` of the range arrived,
  else **failed** with the reason and how far it got.

Limits (:class:`DownloadLimits`): concurrent downloads in total and per user, the
longest range, the speeds a device is asked for, the backlog the remuxer may fall
behind by, and how long finished files are kept in the download directory (older
files, and any file left by a previous run, are deleted).

The service is a handler on the SIP router, like :class:`~gateway.live.LiveService`:
it takes the events of its own sessions by Call-ID (and keeps a finished session's
dialog for :data:`~gateway.play_sessions.RETIRED_FOR` so a late answer is ACKed and hung up).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.errors import GatewayError
from gateway.gb28181.play import PlayEnded, PlayFailed, PlayMediaEnded, PlaySession, PlayStarted
from gateway.gb28181.sdp import MediaTransport, SessionType, make_ssrc, offer_for_history
from gateway.history_uplink import HistoryUplink, rate_meter, speeds_from
from gateway.io.rtp_io import MediaTransport as RtpTransport
from gateway.live import PS_PAYLOAD_TYPES, SipContext, media_sources
from gateway.media.mp4_remux import CLOCK, Mp4Remuxer, Mp4RemuxError, TimestampUnwrapper
from gateway.media.ps import AccessUnit, PsDemuxer
from gateway.media.rtp import RtpReceiver
from gateway.media_intake import connect_active, open_intake
from gateway.play_sessions import PlaySessionHandler, PlaySessions
from gateway.registry.model import Channel, Kindergarten
from gateway.uplink import Reservation, UplinkExceeded

__all__ = [
    "Download",
    "DownloadError",
    "DownloadLimits",
    "DownloadService",
    "DownloadState",
    "download_directory",
    "download_filename",
    "local_stamp",
]

log = logging.getLogger("kgw.downloads")

END_GRACE = 0.5  # s after MediaStatus 121 for RTP still in flight before we hang up
COMPLETE_WAIT = 1.0  # s the whole range may have arrived before we hang up without the device's 121
# s short of the range that count as "all arrived": the demuxer holds the last frame until the next
# starts, and a device's last frame may sit a frame step before the end.
COMPLETE_SLACK = 0.5
SWEEP_EVERY = 600.0  # s between sweeps of the download directory
FILE_SUFFIX = ".mp4"
_ID_RE = re.compile(r"[0-9a-f]{32}")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|\s]+')


class DownloadState(StrEnum):
    """Where a download stands (the API's ``state``)."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class DownloadError(GatewayError):
    """A download cannot be started; ``status`` is the HTTP answer it deserves."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class DownloadLimits:
    """What one node allows (README "Recordings")."""

    total: int = 8  # running downloads on this node
    per_user: int = 2  # running downloads of one user
    max_range: int = 2 * 3600  # s of recording one download may ask for
    speeds: tuple[int, ...] = (1, 2, 4, 8)  # a=downloadspeed values we ask devices for
    keep: float = 24 * 3600.0  # s a finished file stays on disk
    complete_ratio: float = 0.95  # share of the range that makes a hung-up download "done"
    max_backlog: int = 64 * 1024 * 1024  # bytes of access units waiting for the remuxer
    slack: float = 60.0  # s beyond range/speed (doubled) before a slow download is given up


class ChannelDirectory(Protocol):
    """Where a channel is, and the names that go into the file name."""

    @property
    def channels(self) -> dict[str, Channel]: ...
    @property
    def kindergartens(self) -> dict[str, Kindergarten]: ...
    def device_of(self, channel_id: str) -> str | None: ...


@dataclass
class Download:
    """One download: its request, its session and media pipeline, and what it achieved."""

    id: str
    channel_id: str
    device_id: str
    owner: str
    start: int
    end: int
    speed: int
    filename: str
    path: Path
    created_at: float  # wall clock
    session: PlaySession | None = None
    transport: RtpTransport | None = None
    receiver: RtpReceiver = field(default_factory=lambda: RtpReceiver(None, PS_PAYLOAD_TYPES, armed=False))
    demuxer: PsDemuxer = field(default_factory=PsDemuxer)
    remuxer: Mp4Remuxer | None = None
    state: DownloadState = DownloadState.RUNNING
    error: str = ""
    end_reason: str = ""
    finished_at: float | None = None
    file_size: int = 0
    bytes: int = 0
    frames: int = 0
    first_dts: int | None = None
    last_dts: int | None = None
    mode: MediaTransport = MediaTransport.UDP
    backlog: list[AccessUnit] = field(default_factory=list)
    backlog_bytes: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    deadline: asyncio.TimerHandle | None = None
    complete: asyncio.TimerHandle | None = None  # the range arrived: hang up unless 121 or BYE come first
    ending: bool = False  # no more media wanted: the writer finishes the file
    unwrap: TimestampUnwrapper = field(default_factory=TimestampUnwrapper)
    uplink: Reservation | None = None  # its share of the kindergarten's uplink, released when media ends

    @property
    def duration(self) -> int:
        """Seconds of recording asked for."""
        return self.end - self.start

    @property
    def received(self) -> float:
        """Seconds of recorded video received (DTS span plus one frame step, 25 fps assumed for it)."""
        if self.first_dts is None or self.last_dts is None:
            return 0.0
        return (self.last_dts - self.first_dts + CLOCK // 25) / CLOCK

    @property
    def coverage(self) -> float:
        """Share of the range received, 0..1."""
        return min(1.0, self.received / self.duration) if self.duration > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        """The API's view (``GET /api/downloads/{id}``)."""
        return {
            "id": self.id,
            "channel_id": self.channel_id,
            "device_id": self.device_id,
            "owner": self.owner,
            "start": self.start,
            "end": self.end,
            "speed": self.speed,
            "state": self.state.value,
            "progress": 1.0 if self.state is DownloadState.DONE else round(self.coverage, 4),
            "received_seconds": round(self.received, 3),
            "bytes": self.bytes,
            "file_size": self.file_size,
            "filename": self.filename,
            "error": self.error,
            "end_reason": self.end_reason,
            "created_at": round(self.created_at, 3),
            "finished_at": round(self.finished_at, 3) if self.finished_at is not None else None,
        }


def download_filename(kindergarten: str, camera: str, start: int, end: int) -> str:
    """``和平区第三幼儿园_大门口_20261206-075930_20261206-080030.mp4`` (local time, safe characters).

    Path separators, control characters, whitespace and the characters Windows
    refuses become ``-``; names are cut to 40 characters each.
    """

    def clean(text: str, fallback: str) -> str:
        text = _UNSAFE.sub("-", text).strip("-.")[:40]
        return text or fallback

    if kindergarten and camera.startswith(kindergarten):  # catalogs often write "<kindergarten>·<place>"
        camera = camera.removeprefix(kindergarten).lstrip("·・-_ ")
    return f"{clean(kindergarten, '幼儿园')}_{clean(camera, '摄像机')}_{local_stamp(start)}_{local_stamp(end)}{FILE_SUFFIX}"


def local_stamp(epoch: int) -> str:
    """``20261206-075930``: the node's local time of an epoch second, for file names."""
    return datetime.fromtimestamp(epoch).strftime("%Y%m%d-%H%M%S")


def download_directory(configured: str, db: str) -> Path | None:
    """Where files go: ``configured``, else ``downloads/`` beside the node's SQLite file; None for an
    in-memory node (a temporary directory, removed at close), ``var/downloads`` for a database server."""
    if configured:
        return Path(configured)
    path = db.removeprefix("sqlite:///")
    if path in (":memory:", ""):
        return None
    if path.startswith(("postgresql:", "postgres:", "sqlite:")):
        return Path("var") / "downloads"
    return Path(path).resolve().parent / "downloads"


class _Sink:
    """RTP of one download → receiver → PS demuxer → the remuxer's backlog (called by the transport)."""

    def __init__(self, service: DownloadService, download_id: str) -> None:
        self.service = service
        self.download_id = download_id

    def feed(self, data: bytes, source: tuple[str, int]) -> None:
        download = self.service.downloads.get(self.download_id)
        if download is None or download.ending:
            return
        download.receiver.receive(data, source, self.service.loop.time())
        units: list[AccessUnit] = []
        while (packet := download.receiver.next_packet()) is not None:
            download.bytes += len(packet.payload)
            units.extend(download.demuxer.feed(packet.payload))
        if units:
            self.service.take_units(download, units)

    def on_closed(self, reason: str) -> None:
        self.service.media_closed(self.download_id, reason)


class DownloadService(PlaySessionHandler["Download"]):
    """Starts, tracks and finishes recording downloads; serves their files from ``directory``."""

    def __init__(
        self,
        sip: SipContext,
        channels: ChannelDirectory,
        directory: str | os.PathLike[str] | None,
        *,
        limits: DownloadLimits | None = None,
        media_host: str = "127.0.0.1",
        default_transport: MediaTransport = MediaTransport.UDP,
        play_timeout: float = 10.0,
        rtp_timeout: float = 10.0,
        media_ports: tuple[int, int] | None = None,
        uplink: HistoryUplink | None = None,
        measure_after: float = 10.0,
    ) -> None:
        self.sip = sip
        self.uplink = uplink  # None: no budget counted
        self.measure_after = measure_after  # s before the measured RTP rate replaces the uplink estimate
        self.channels = channels
        self._temporary = directory is None  # an in-memory node: files live as long as the node
        self.directory = Path(directory) if directory is not None else Path()
        self.limits = limits or DownloadLimits()
        self.media_host = media_host
        self.default_transport = default_transport
        self.play_timeout = play_timeout
        self.rtp_timeout = rtp_timeout
        self.media_ports: tuple[int, int] | int = media_ports or 0
        self.loop = asyncio.get_running_loop()
        self.downloads: dict[str, Download] = {}
        self._sessions: PlaySessions[Download] = PlaySessions(self.loop)  # by Call-ID, finished ones a while
        self._ssrc_seq = itertools.count(1)
        self._sweeper: asyncio.TimerHandle | None = None
        self.totals: dict[str, int] = {"started": 0, "done": 0, "failed": 0, "uplink_refused": 0}

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the directory and remove what a previous run left (no index survives a restart)."""
        if self._temporary:
            self.directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="kgw-downloads-"))
        await asyncio.to_thread(self._prepare_directory)
        self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)

    async def close(self) -> None:
        """Hang up every running download (failed: the gateway is stopping) and wait for the writers."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for download in list(self.downloads.values()):
            if download.state is DownloadState.RUNNING:
                self._end(download, "gateway stopping", force_failed=True)
        writers = [d.writer for d in self.downloads.values() if d.writer is not None]
        if writers:
            await asyncio.gather(*writers, return_exceptions=True)
        if self._temporary:
            await asyncio.to_thread(shutil.rmtree, self.directory, True)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Running downloads, and how downloads ended."""
        running = sum(1 for d in self.downloads.values() if d.state is DownloadState.RUNNING)
        yield GaugeMetricFamily("kgw_downloads_running", "Recording downloads running now", value=running)
        ended = CounterMetricFamily("kgw_downloads", "Recording downloads by outcome", labels=["outcome"])
        for key, value in self.totals.items():
            ended.add_metric([key], value)
        yield ended

    # --- the API ----------------------------------------------------------------------------------------

    async def start(self, channel_id: str, start: int, end: int, speed: int, owner: str) -> Download:
        """Start downloading ``start..end`` (Unix seconds) of a channel for ``owner``.

        Raises :class:`DownloadError` (400 bad range or speed, 404 unknown channel,
        409 device offline, 429/503 limits) before anything is sent.
        """
        limits = self.limits
        if not 0 < start < end:
            raise DownloadError("start and end must be epoch seconds with start < end (时间范围无效)", 400)
        if end - start > limits.max_range:
            raise DownloadError(
                f"range of {end - start} s exceeds the limit of {limits.max_range} s (下载时长超过上限)", 400
            )
        if speed not in limits.speeds:
            raise DownloadError(f"speed must be one of {list(limits.speeds)} (下载倍速无效)", 400)
        channel = self.channels.channels.get(channel_id)
        device_id = self.channels.device_of(channel_id)
        if channel is None or device_id is None:
            raise DownloadError(f"unknown channel {channel_id}", 404)
        peer = self.sip.peer_of(device_id)
        if peer is None:
            raise DownloadError(f"device {device_id} of channel {channel_id} is offline (设备离线)", 409)
        running = [d for d in self.downloads.values() if d.state is DownloadState.RUNNING]
        if sum(1 for d in running if d.owner == owner) >= limits.per_user:
            raise DownloadError(f"{limits.per_user} downloads of yours are running; wait for one (下载任务过多)", 429)
        if len(running) >= limits.total:
            raise DownloadError(f"{limits.total} downloads are running on this node (服务器下载任务已满)", 503)
        reservation: Reservation | None = None
        if self.uplink is not None:
            # main × speed; a slower speed when that does not fit (the answer's "speed" says which), else 503.
            try:
                reservation, factor = self.uplink.reserve(channel_id, "download", speeds_from(speed, limits.speeds))
            except UplinkExceeded as exc:
                self.totals["uplink_refused"] += 1
                log.info("download of %s refused: %s", channel_id, exc)
                raise DownloadError(str(exc), 503) from exc
            speed = int(factor)
        kindergarten = self.channels.kindergartens.get(channel.kindergarten_id or "")
        download_id = uuid.uuid4().hex
        download = Download(
            id=download_id,
            channel_id=channel_id,
            device_id=device_id,
            owner=owner,
            start=start,
            end=end,
            speed=speed,
            filename=download_filename(kindergarten.name if kindergarten else "", channel.name, start, end),
            path=self.directory / f"{download_id}{FILE_SUFFIX}",
            created_at=time.time(),
            mode=self.default_transport,
            uplink=reservation,
        )
        if reservation is not None and self.measure_after > 0:
            reservation.measure = rate_meter(download.receiver, self.loop.time(), self.loop.time, self.measure_after)
        download.remuxer = Mp4Remuxer(download.path)
        self.downloads[download_id] = download
        self.totals["started"] += 1
        sink = _Sink(self, download_id)
        try:
            download.transport, port = await open_intake(
                sink,
                download.receiver,
                download.mode,
                host=self.media_host,
                ports=self.media_ports,
                connect_timeout=self.play_timeout,
                rtp_timeout=self.rtp_timeout,
            )
        except BaseException as exc:
            self.downloads.pop(download_id, None)
            self.totals["started"] -= 1
            if reservation is not None:
                reservation.release()
            if isinstance(exc, GatewayError):
                raise DownloadError(f"no media port for the download: {exc}", 503) from exc
            raise
        sip = self.sip
        ssrc = make_ssrc(sip.domain, next(self._ssrc_seq), history=True)
        offer = offer_for_history(
            session_type=SessionType.DOWNLOAD,
            channel_id=channel_id,
            start=start,
            end=end,
            media_host=self.media_host,
            media_port=port,
            ssrc=ssrc,
            transport=download.mode,
            download_speed=speed,
        )
        session = PlaySession(
            sip.endpoint,
            sip.local_id,
            sip.domain,
            channel_id,
            peer,
            self.media_host,
            port,
            download.mode,
            ssrc,
            play_timeout=self.play_timeout,
            offer=offer,
        )
        download.session = session
        download.writer = self.loop.create_task(self._write(download), name=f"kgw-download-{download_id[:8]}")
        expected = (end - start) / speed
        download.deadline = self.loop.call_later(
            2 * expected + limits.slack + self.play_timeout, self._too_slow, download_id
        )
        session.start(self.loop.time())
        self._sessions.add(session, download)
        log.info("download %s of %s %d..%d at %dx started", download_id[:8], channel_id, start, end, speed)
        self._after(download)
        return download

    def get(self, download_id: str) -> Download | None:
        """A download by id (running or finished and kept)."""
        return self.downloads.get(download_id)

    def remove(self, download_id: str) -> bool:
        """Cancel a running download or forget a finished one, and delete its file."""
        download = self.downloads.get(download_id)
        if download is None:
            return False
        if download.state is DownloadState.RUNNING:
            self._end(download, "cancelled", force_failed=True)
        self.downloads.pop(download_id, None)
        if download.writer is not None and not download.writer.done():
            download.writer.add_done_callback(lambda _: _unlink(download.path))
        else:
            _unlink(download.path)
        return True

    # --- media ------------------------------------------------------------------------------------------

    def take_units(self, download: Download, units: list[AccessUnit]) -> None:
        """Units demuxed from the device's stream: progress, then the writer's backlog."""
        for unit in units:
            if unit.is_video:
                download.frames += 1
                stamp = unit.dts if unit.dts is not None else unit.pts
                if stamp is not None:
                    dts = download.unwrap.unwrap(stamp)
                    if download.first_dts is None:
                        download.first_dts = dts
                    download.last_dts = max(dts, download.last_dts or dts)
            download.backlog_bytes += len(unit.data)
        download.backlog.extend(units)
        download.wakeup.set()
        if download.backlog_bytes > self.limits.max_backlog:
            self._end(download, "the MP4 writer fell behind the device (写入过慢)", force_failed=True)
        elif download.received >= download.duration - COMPLETE_SLACK and download.complete is None:
            # The device should say "end of file" (121) now; one that never does is hung up.
            wait = COMPLETE_WAIT + max(0.0, download.duration - download.received) / download.speed
            download.complete = self.loop.call_later(wait, self._range_complete, download.id)

    def media_closed(self, download_id: str, reason: str) -> None:
        """The RTP transport ended by itself (no packets for the RTP timeout, connection lost)."""
        download = self.downloads.get(download_id)
        if download is not None and download.state is DownloadState.RUNNING and not download.ending:
            if download.session is not None:
                download.session.media_timeout(self.loop.time())
                self._after(download)
            self._end(download, f"media ended: {reason}")

    async def _write(self, download: Download) -> None:
        """The download's writer: backlog → remuxer in a worker thread, then finish the file."""
        remuxer = download.remuxer
        if remuxer is None:
            return
        try:
            while True:
                if not download.backlog:
                    if download.ending:
                        break
                    download.wakeup.clear()
                    await download.wakeup.wait()
                    continue
                batch, download.backlog, download.backlog_bytes = download.backlog, [], 0
                await asyncio.to_thread(remuxer.write, batch)
            if download.state is DownloadState.FAILED:  # decided when it ended: no file to finish
                await asyncio.to_thread(remuxer.abort)
                self._finish(download, failure=download.error)
                return
            stats = await asyncio.to_thread(remuxer.close)
        except Mp4RemuxError as exc:
            await asyncio.to_thread(remuxer.abort)
            self._finish(download, failure=f"cannot write the MP4: {exc}")
            return
        except asyncio.CancelledError:
            await asyncio.to_thread(remuxer.abort)
            raise
        download.file_size = await asyncio.to_thread(_size, download.path)
        log.info(
            "download %s: %d frames, %.1f s of %d s, %d bytes",
            download.id[:8],
            stats.video_frames,
            stats.duration,
            download.duration,
            download.file_size,
        )
        self._finish(download, failure=None)

    # --- ending -----------------------------------------------------------------------------------------

    def _end(self, download: Download, reason: str, *, force_failed: bool = False) -> None:
        """No more media: hang up, close the port, decide done or failed, let the writer finish."""
        if download.ending:
            return
        download.ending = True
        download.end_reason = reason
        complete = reason in ("complete", "end of file") and download.frames > 0
        complete = complete or download.coverage >= self.limits.complete_ratio
        if force_failed or not complete:
            download.state = DownloadState.FAILED
            got = f"{download.received:.0f} s of {download.duration} s ({download.coverage:.0%})"
            download.error = f"{reason}; received {got} (下载未完成)"
        for unit in download.demuxer.flush():
            download.backlog.append(unit)
        for handle in (download.timer, download.deadline, download.complete):
            if handle is not None:
                handle.cancel()
        download.timer = download.deadline = download.complete = None
        session = download.session
        if session is not None:
            session.stop(self.loop.time())
            self._sessions.retire(session)
            while session.next_event() is not None:
                pass
        if download.transport is not None:
            download.transport.close()
        if download.uplink is not None:
            download.uplink.release()
        download.wakeup.set()
        log.info("download %s ending: %s", download.id[:8], reason)

    def _finish(self, download: Download, failure: str | None) -> None:
        """The writer is done: the final state."""
        download.finished_at = time.time()
        if failure is not None:
            download.state = DownloadState.FAILED
            download.error = failure
            download.file_size = 0
        else:
            download.state = DownloadState.DONE
        self.totals[download.state.value] += 1

    def _too_slow(self, download_id: str) -> None:
        download = self.downloads.get(download_id)
        if download is not None and not download.ending:
            download.deadline = None
            self._end(download, "the device sends too slowly (设备发送过慢)")

    # --- SIP events (PlaySessionHandler routes them to the sessions) -------------------------------

    def _after(self, download: Download) -> None:
        """Drain the session's events, re-arm its timer (the play timeout)."""
        session = download.session
        if session is None:
            return
        while (event := session.next_event()) is not None:
            if isinstance(event, PlayStarted):
                log.info("download %s streaming (ssrc %s)", download.id[:8], event.spec.ssrc_text)
                download.receiver.arm(*media_sources(event.spec, session))
                if download.mode is MediaTransport.TCP_ACTIVE and download.transport is None:
                    host, port = event.spec.remote_host, event.spec.remote_port
                    self.loop.create_task(self._connect_active(download, host, port))
            elif isinstance(event, PlayMediaEnded):
                if download.complete is not None:  # the device said it: no need to guess
                    download.complete.cancel()
                self.loop.call_later(END_GRACE, self._end_of_file, download.id)
            elif isinstance(event, PlayFailed):
                reason = f"device refused: {event.status} {event.reason}"
                self.loop.call_soon(functools.partial(self._end, download, reason, force_failed=True))
            elif isinstance(event, PlayEnded):
                reason = "device hung up" if event.reason == "device_bye" else event.reason
                self.loop.call_soon(self._end, download, reason)
        if download.timer is not None:
            download.timer.cancel()
            download.timer = None
        deadline = session.get_timer()
        if deadline is not None and not download.ending:
            download.timer = self.loop.call_at(deadline, self._on_timer, download)

    def _range_complete(self, download_id: str) -> None:
        download = self.downloads.get(download_id)
        if download is not None and not download.ending:
            download.complete = None
            self._end(download, "complete")

    def _end_of_file(self, download_id: str) -> None:
        download = self.downloads.get(download_id)
        if download is not None and not download.ending:
            self._end(download, "end of file")

    def _on_timer(self, download: Download) -> None:
        download.timer = None
        if download.session is not None:
            download.session.handle_timer(self.loop.time())
            self._after(download)

    async def _connect_active(self, download: Download, host: str, port: int) -> None:
        """TCP active: connect to the device's listening port from its answer."""
        try:
            transport = await connect_active(
                _Sink(self, download.id), host, port, connect_timeout=self.play_timeout, rtp_timeout=self.rtp_timeout
            )
        except GatewayError as exc:
            log.warning("download %s: cannot connect to %s:%d for media: %s", download.id[:8], host, port, exc)
            self._end(download, "media connect failed", force_failed=True)
            return
        if download.ending:
            transport.close()
        else:
            download.transport = transport

    # --- the directory ----------------------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.directory.iterdir():
            if path.suffix == FILE_SUFFIX and _ID_RE.fullmatch(path.stem):
                _unlink(path)

    def _sweep(self) -> None:
        """Forget finished downloads older than the keep time and delete their files."""
        cutoff = time.time() - self.limits.keep
        for download in list(self.downloads.values()):
            if download.finished_at is not None and download.finished_at < cutoff:
                self.remove(download.id)
        self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
