"""Simulated cameras answer a live INVITE and stream decodable H.264 over real sockets.

The gateway does not INVITE yet, so the test plays the gateway's media side itself:
a second SIP UA (SipEndpoint + SipDriver on 127.0.0.1:0) runs a PlaySession towards
the kindergarten's shared SIP socket, with its own RTP receive transport feeding
RtpReceiver → PsDemuxer → an H.264 decoder.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import av
import pytest

from gateway.gb28181.device_agent import is_camera
from gateway.gb28181.play import PlayEnded, PlayEvent, PlaySession, PlayStarted
from gateway.gb28181.sdp import MediaTransport
from gateway.gb28181.sip.endpoint import RequestReceived, SipEndpoint
from gateway.gb28181.sip.idsource import RandomIds
from gateway.gb28181.sip.message import make_response
from gateway.gb28181.sip.transport import Peer, Transport
from gateway.io.rtp_io import Addr, UdpRtpReceiverTransport
from gateway.io.rtp_io import MediaTransport as RtpTransport
from gateway.io.rtp_tcp_io import TcpActiveRtpReceiver, TcpPassiveRtpReceiver
from gateway.io.sip_io import SipDriver
from gateway.media.ps import AccessUnit, PsDemuxer
from gateway.media.rtp import RtpReceiver
from simulators.fleet import Fleet
from tests.conftest import wait_for

SSRC = "0100000001"
RTCP_SR = bytes([0x80, 200, 0, 6]) + bytes(24)  # an empty sender report: counted by the receiver, never fed


class Uac:
    """A minimal SIP core for SipDriver: one PlaySession on its own endpoint."""

    def __init__(self) -> None:
        self.endpoint = SipEndpoint(RandomIds(), local_host="127.0.0.1", local_port=0, user_agent="kgw-test")
        self.session: PlaySession | None = None
        self.events: list[PlayEvent] = []

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        self.endpoint.receive(data, peer, now)
        self._route(now)

    def get_timer(self) -> float | None:
        timers = [t for t in (self.endpoint.get_timer(), self.session and self.session.get_timer()) if t is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        if self.session is not None:
            self.session.handle_timer(now)
        self._route(now)

    def _route(self, now: float) -> None:
        session = self.session
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, RequestReceived):
                if (session is None or not session.handle_request(event, now)) and event.transaction is not None:
                    self.endpoint.send_response(event.transaction, make_response(event.request, 481), now)
            elif session is not None:
                session.handle_response(event, now)
        while session is not None and (play_event := session.next_event()) is not None:
            self.events.append(play_event)


class Decoder:
    """The media sink: RtpReceiver → PsDemuxer → H.264 decoder, counting decoded pictures."""

    def __init__(self) -> None:
        self.receiver = RtpReceiver(expected_ssrc=int(SSRC), payload_types=frozenset({96}))
        self.demuxer = PsDemuxer()
        self.codec: Any = av.CodecContext.create("h264", "r")
        self.units: list[AccessUnit] = []
        self.widths: list[int] = []
        self.closed: list[str] = []

    def feed(self, data: bytes, source: Addr) -> None:
        self.receiver.receive(data, source, asyncio.get_running_loop().time())
        while (packet := self.receiver.next_packet()) is not None:
            for unit in self.demuxer.feed(packet.payload):
                self.units.append(unit)
                self.widths += [frame.width for frame in self.codec.decode(av.Packet(unit.data))]

    def on_closed(self, reason: str) -> None:
        self.closed.append(reason)


async def media_drained(media: RtpTransport, transport: MediaTransport) -> None:
    """Wait until the receiver has read everything the camera sent before it stopped.

    TCP: the camera closes its connection, and the end of the stream comes after its last
    byte. UDP: an RTCP packet sent now is queued behind every datagram already on the socket;
    once it is counted, they have all been read.
    """
    if transport is MediaTransport.UDP:
        assert isinstance(media, UdpRtpReceiverTransport)
        rtcp = media.stats.rtcp
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as marker:
            marker.sendto(RTCP_SR, ("127.0.0.1", media.port))
        assert await wait_for(lambda: media.stats.rtcp == rtcp + 1, timeout=30)
    else:
        assert await wait_for(lambda: media.closed, timeout=30), "the camera closed its connection"


def first_camera(fleet: Fleet) -> str:
    return next(c.device_id for a in fleet.agents.values() for c in a.profile.channels if is_camera(c))


async def start_uac() -> tuple[Uac, SipDriver]:
    uac = Uac()
    driver = SipDriver(uac)
    await driver.listen("127.0.0.1", 0, tcp=False)
    return uac, driver


@pytest.mark.parametrize("transport", list(MediaTransport), ids=lambda t: t.value)
async def test_camera_streams_h264_and_stops_on_bye(gateway_factory, fleet_factory, transport: MediaTransport):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    assert await wait_for(lambda: fleet.summary()["registered"] == fleet.summary()["devices"], timeout=60)
    node = fleet.nodes[0]
    assert node.media is not None
    loop = asyncio.get_running_loop()
    uac, driver = await start_uac()
    sink = Decoder()
    media: RtpTransport | None = None
    if transport is MediaTransport.UDP:
        media = await UdpRtpReceiverTransport.open(sink)
    elif transport is MediaTransport.TCP_PASSIVE:
        media = await TcpPassiveRtpReceiver.open(sink)
    port = media.port if isinstance(media, UdpRtpReceiverTransport | TcpPassiveRtpReceiver) else 9
    device_peer = Peer(Transport.UDP, "127.0.0.1", node.host.endpoint.local_port)
    uac.session = session = PlaySession(
        uac.endpoint,
        service.config.id,
        service.config.id[:10],
        first_camera(fleet),
        device_peer,
        "127.0.0.1",
        port,
        transport,
        SSRC,
    )
    try:
        session.start(loop.time())
        assert await wait_for(lambda: any(isinstance(e, PlayStarted) for e in uac.events), timeout=30)
        if transport is MediaTransport.TCP_ACTIVE:
            assert session.spec is not None
            media = await TcpActiveRtpReceiver.connect(sink, session.spec.remote_host, session.spec.remote_port)

        assert await wait_for(lambda: sum(w == 640 for w in sink.widths) >= 25, timeout=30), sink.widths
        assert sink.units[0].keyframe
        (streamer,) = node.media.streams.values()
        assert streamer.stats.frames >= 25 and streamer.stats.packets > streamer.stats.frames

        session.stop(loop.time())
        assert await wait_for(lambda: any(isinstance(e, PlayEnded) for e in uac.events), timeout=30)
        assert await wait_for(lambda: not node.media.streams, timeout=30)  # type: ignore[union-attr]
        assert streamer.closed and streamer.close_reason == "bye" and not streamer.sending
        sent = streamer.stats.packets
        assert media is not None
        await media_drained(media, transport)
        # Nothing reached us beyond what the camera had sent when the BYE stopped it, and it
        # counted no packet since (over TCP not one was lost either).
        assert streamer.stats.packets == sent
        assert media.stats.packets == sent if transport is not MediaTransport.UDP else media.stats.packets <= sent
        assert fleet.media_totals().frames >= 25
    finally:
        if media is not None:
            media.close()
        driver.close()


async def test_lost_tcp_connection_makes_the_camera_hang_up(gateway_factory, fleet_factory):
    service = await gateway_factory()
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    assert await wait_for(lambda: fleet.summary()["registered"] == fleet.summary()["devices"], timeout=60)
    node = fleet.nodes[0]
    assert node.media is not None
    loop = asyncio.get_running_loop()
    uac, driver = await start_uac()
    sink = Decoder()
    media = await TcpPassiveRtpReceiver.open(sink)
    device_peer = Peer(Transport.UDP, "127.0.0.1", node.host.endpoint.local_port)
    uac.session = session = PlaySession(
        uac.endpoint,
        service.config.id,
        service.config.id[:10],
        first_camera(fleet),
        device_peer,
        "127.0.0.1",
        media.port,
        MediaTransport.TCP_PASSIVE,
        SSRC,
    )
    try:
        session.start(loop.time())
        assert await wait_for(lambda: len(sink.widths) >= 5, timeout=30)
        (streamer,) = node.media.streams.values()
        media.close()  # the gateway's media side drops the connection
        assert await wait_for(lambda: any(isinstance(e, PlayEnded) for e in uac.events), timeout=30)
        ended = [e for e in uac.events if isinstance(e, PlayEnded)]
        assert ended[0].reason == "device_bye"
        assert streamer.closed and streamer.close_reason == "connection_lost"
        assert not node.media.streams
    finally:
        media.close()
        driver.close()
