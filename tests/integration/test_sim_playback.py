"""A simulated NVR plays back its recordings over real sockets, with the recorded time burned in.

The test is the gateway's media side itself (as in test_sim_streaming): a SIP UA with
the records helper's PlaySession and a history offer on 127.0.0.1, an RTP receiver
feeding RtpReceiver → PsDemuxer → PyAV's H.264 decoder, and :func:`read_stamp` on
every decoded picture — no OCR. It seeks, changes the scale, pauses, and waits for
the device's MediaStatus 121 at the end of the range.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import av
import pytest

from gateway.gb28181 import mansrtsp
from gateway.gb28181.device_recordings import RecordKind
from gateway.gb28181.device_records import DeviceRecords
from gateway.gb28181.play import PlayInfoAnswered, PlayMediaEnded, PlaySession, PlayStarted
from gateway.gb28181.sdp import MediaTransport, SessionType, offer_for_history
from gateway.gb28181.sip.transport import Peer, Transport
from gateway.io.rtp_io import Addr, UdpRtpReceiverTransport
from gateway.io.rtp_io import MediaTransport as RtpTransport
from gateway.io.rtp_tcp_io import TcpPassiveRtpReceiver
from gateway.media.ps import PsDemuxer
from gateway.media.rtp import RtpReceiver
from simulators.stamp import Stamp, read_stamp
from tests.conftest import wait_for
from tests.integration.test_sim_streaming import first_camera, start_uac

SSRC = "1100000007"
FPS = 25


class StampSink:
    """RTP → PS → H.264 → the stamp of every picture, with its arrival time (loop clock)."""

    def __init__(self) -> None:
        self.receiver = RtpReceiver(expected_ssrc=int(SSRC), payload_types=frozenset({96}))
        self.demuxer = PsDemuxer()
        self.codec: Any = av.CodecContext.create("h264", "r")
        self.seen: list[tuple[float, Stamp | None, int, bool]] = []  # (arrival, stamp, pts, keyframe)

    def feed(self, data: bytes, source: Addr) -> None:
        now = asyncio.get_running_loop().time()
        self.receiver.receive(data, source, now)
        while (packet := self.receiver.next_packet()) is not None:
            for unit in self.demuxer.feed(packet.payload):
                for frame in self.codec.decode(av.Packet(unit.data)):
                    self.seen.append((now, read_stamp(frame.to_ndarray(format="gray")), unit.pts or 0, unit.keyframe))

    def on_closed(self, reason: str) -> None:
        pass

    def times(self, since: float = 0.0) -> list[float]:
        """Recorded times shown (epoch s, with the frame fraction) of pictures that arrived after ``since``."""
        return [s.time(FPS) for at, s, _, _ in self.seen if at >= since and s is not None]


async def test_playback_seek_scale_pause_and_media_status(gateway_factory, fleet_factory):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2), provision=False)
    node = fleet.nodes[0]
    assert node.playback is not None and node.recordings is not None
    camera = first_camera(fleet)
    loop = asyncio.get_running_loop()
    uac, driver = await start_uac()
    sink = StampSink()
    media = await UdpRtpReceiverTransport.open(sink)
    start = int(time.time()) - 3600
    offer = offer_for_history(
        session_type=SessionType.PLAYBACK,
        channel_id=camera,
        start=start,
        end=start + 30,
        media_host="127.0.0.1",
        media_port=media.port,
        ssrc=SSRC,
    )
    device_peer = Peer(Transport.UDP, "127.0.0.1", node.host.endpoint.local_port)
    uac.session = session = PlaySession(
        uac.endpoint, service.config.id, service.config.id[:10], camera, device_peer, "127.0.0.1", media.port,
        MediaTransport.UDP, SSRC, offer=offer,
    )  # fmt: skip

    async def control(body: bytes) -> PlayInfoAnswered:
        key = session.send_info(body, loop.time())
        driver.flush_soon()
        assert await wait_for(lambda: any(isinstance(e, PlayInfoAnswered) and e.transaction == key for e in uac.events))
        return next(e for e in uac.events if isinstance(e, PlayInfoAnswered) and e.transaction == key)

    try:
        session.start(loop.time())
        driver.flush_soon()
        assert await wait_for(lambda: any(isinstance(e, PlayStarted) for e in uac.events), timeout=30)
        # Playback starts at the start of the range, first picture a key frame showing start + 0.
        assert await wait_for(lambda: len(sink.times()) >= 10, timeout=30)
        first = next(s for _, s, _, _ in sink.seen if s is not None)
        assert (first.epoch, first.frame) == (start, 0) and sink.seen[0][3]
        assert sink.seen[0][2] == 0  # PTS = npt in 90 kHz ticks
        (streamer,) = node.playback.streams.values()

        # Seek to npt 20: the next pictures show start + 20 (its key frame first), nothing in between.
        answered = await control(mansrtsp.seek(2, 20.0))
        assert answered.status == 200
        sought = loop.time()
        assert await wait_for(lambda: any(t >= start + 20 for t in sink.times(sought)), timeout=30)
        after = [t for t in sink.times(sought) if t >= start + 5]  # old pictures still in flight are < start + 5
        assert after[0] == start + 20.0, after[:5]

        # Scale 2: recorded time runs twice as fast as the wall clock.
        assert (await control(mansrtsp.set_scale(3, 2.0))).status == 200
        scaled = loop.time()
        assert await wait_for(lambda: len(sink.times(scaled)) >= 60, timeout=30)
        pairs = [(at, s.time(FPS)) for at, s, _, _ in sink.seen if at >= scaled and s is not None]
        (t0, r0), (t1, r1) = pairs[5], pairs[-1]
        assert t1 - t0 > 0.5
        assert 1.4 < (r1 - r0) / (t1 - t0) < 2.8, (r1 - r0, t1 - t0)
        since_seek = sink.times(sought)
        assert since_seek[since_seek.index(start + 20.0) :] == sorted(since_seek[since_seek.index(start + 20.0) :])
        pts = [p for at, _, p, _ in sink.seen if at >= sought]
        assert pts[pts.index(20 * 90000) :] == sorted(pts[pts.index(20 * 90000) :])  # a new scale never goes back

        # Pause: no more pictures until resumed; position holds.
        assert (await control(mansrtsp.pause(4))).status == 200
        paused_at = loop.time()
        frames_then = streamer.stats.frames
        await asyncio.sleep(0.6)  # an absence: checked against the device's own counter below
        assert streamer.stats.frames == frames_then
        assert not streamer.session.clock.playing
        assert not any(isinstance(e, PlayMediaEnded) for e in uac.events)
        assert (await control(mansrtsp.resume(5))).status == 200
        assert await wait_for(lambda: streamer.stats.frames > frames_then, timeout=30)
        assert loop.time() > paused_at

        # A bad body is refused; the end of the range brings MediaStatus 121 in the dialog.
        assert (await control(b"JUMP RTSP/1.0\r\nCSeq: 6\r\n")).status == 400
        assert await wait_for(lambda: any(isinstance(e, PlayMediaEnded) for e in uac.events), timeout=30)
        shown = sink.times()
        assert max(shown) >= start + 29
        feature = next(f for a in node.host.agents.values() for f in a.features if isinstance(f, DeviceRecords))
        assert (
            feature.stats.media_status_sent
            + sum(
                f.stats.media_status_sent
                for a in node.host.agents.values()
                for f in a.features
                if isinstance(f, DeviceRecords) and f is not feature
            )
            == 1
        )
        session.stop(loop.time())
        driver.flush_soon()
        assert await wait_for(lambda: not node.playback.streams, timeout=30)  # type: ignore[union-attr]
        assert streamer.closed and streamer.close_reason == "bye"
    finally:
        media.close()
        driver.close()


@pytest.mark.parametrize("transport", [MediaTransport.UDP, MediaTransport.TCP_PASSIVE], ids=lambda t: t.value)
async def test_download_sends_every_frame_at_downloadspeed(gateway_factory, fleet_factory, transport):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2), provision=False)
    node = fleet.nodes[0]
    camera = first_camera(fleet)
    loop = asyncio.get_running_loop()
    uac, driver = await start_uac()
    sink = StampSink()
    media: RtpTransport = await (
        UdpRtpReceiverTransport if transport is MediaTransport.UDP else TcpPassiveRtpReceiver
    ).open(sink)
    start = int(time.time()) - 7200
    offer = offer_for_history(
        session_type=SessionType.DOWNLOAD,
        channel_id=camera,
        start=start,
        end=start + 8,
        media_host="127.0.0.1",
        media_port=media.port,
        ssrc=SSRC,
        transport=transport,
        download_speed=4,
    )
    device_peer = Peer(Transport.UDP, "127.0.0.1", node.host.endpoint.local_port)
    uac.session = session = PlaySession(
        uac.endpoint, service.config.id, service.config.id[:10], camera, device_peer, "127.0.0.1", media.port,
        transport, SSRC, offer=offer,
    )  # fmt: skip
    try:
        session.start(loop.time())
        driver.flush_soon()
        assert await wait_for(lambda: any(isinstance(e, PlayStarted) for e in uac.events), timeout=30)
        began = loop.time()
        assert await wait_for(lambda: any(isinstance(e, PlayMediaEnded) for e in uac.events), timeout=30)
        took = loop.time() - began
        assert 1.5 < took < 8.0  # 8 s of recording at 4x: about 2 s (MediaStatus after a short grace)
        assert node.playback is not None
        (streamer,) = node.playback.streams.values()
        assert streamer.stats.frames == 8 * FPS  # every frame of the file, none dropped
        assert await wait_for(lambda: len(sink.times()) >= 8 * FPS - 5, timeout=10)  # loopback UDP: all or nearly
        shown = sink.times()
        assert shown == sorted(shown) and shown[0] == start and shown[-1] <= start + 8
        assert [pts for _, _, pts, _ in sink.seen[:3]] == [0, 3600, 7200]  # npt in 90 kHz ticks
        session.stop(loop.time())
        driver.flush_soon()
        assert await wait_for(lambda: not node.playback.streams, timeout=30)  # type: ignore[union-attr]

        # An alarm pressed through the fleet adds alarm files on the site's cameras (30 s before, 2 min after).
        assert node.recordings is not None
        record = fleet.press(0, "button")
        pressed = int(record.wall.timestamp())
        alarms = node.recordings.query(camera, pressed - 60, pressed + 60, int(time.time()) + 1, RecordKind.ALARM)
        assert [a.start for a in alarms if abs(a.start + 30 - pressed) <= 2]
    finally:
        media.close()
        driver.close()
