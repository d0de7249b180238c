"""H3: attacker video must not replace a camera's at stream start.

The review found that a media port accepted any SSRC from any address until the camera's
first packet and then kept that lock: with ``media_ports`` known, spraying the range before
the camera's answer put the attacker's picture into the snapshot while the camera's packets
were dropped as ``foreign_ssrc``. Here an attacker sprays a small media port range with
RTP/PS (its own 320x180 picture) from 127.0.0.2 — with its own SSRC and with the SSRC the
gateway offers — and from the camera's own host with a foreign SSRC, before and after the
answer. The snapshot must be the camera's 640x360 picture, and the drops are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import cv2
import numpy as np

from gateway.gb28181.sdp import MediaTransport
from gateway.io.rtp_io import UdpRtpReceiverTransport
from gateway.media.rtp import RtpPacketizer
from simulators.video import VideoProfile, encode_clip
from tests.conftest import free_ports, wait_for

ATTACKER_HOST = "127.0.0.2"  # another host on the loopback network
PORTS = 8


def _camera(fleet) -> str:
    for agent in fleet.agents.values():
        for channel in agent.profile.channels:
            if channel.device_id[10:13] == "131":
                return channel.device_id
    raise AssertionError("no camera in the simulated kindergarten")


def _attacker_packets(ssrc: int) -> list[bytes]:
    """One second of the attacker's clip (a key frame first) as RTP datagrams."""
    clip = encode_clip("ATTACKER", "hijack", VideoProfile(width=320, height=180, seconds=1.0, gop=5))
    packetizer = RtpPacketizer(ssrc)
    return [bytes(p) for frame, pts, _key in clip.frames for p in packetizer.packetize(frame, pts)]


class _Sprayer:
    """Sends the attacker's clip to every port of the range, over and over."""

    def __init__(self, low: int) -> None:
        self.low = low
        self.sent = 0
        self.offered_ssrc: int | None = None
        self._stop = False

    async def run(self, own_ssrc: int) -> None:
        own = await asyncio.to_thread(_attacker_packets, own_ssrc)
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.bind((ATTACKER_HOST, 0))
        same_host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        same_host.bind(("127.0.0.1", 0))
        predicted: list[bytes] = []
        try:
            while not self._stop:
                if self.offered_ssrc is not None and not predicted:
                    predicted = await asyncio.to_thread(_attacker_packets, self.offered_ssrc)
                for port in range(self.low, self.low + PORTS):
                    for data in own[:40]:
                        other.sendto(data, ("127.0.0.1", port))  # another host, its own SSRC
                        same_host.sendto(data, ("127.0.0.1", port))  # the camera's host, a foreign SSRC
                    for data in predicted[:40]:
                        other.sendto(data, ("127.0.0.1", port))  # another host, the offered SSRC
                    self.sent += 1
                await asyncio.sleep(0.005)
        finally:
            other.close()
            same_host.close()

    def stop(self) -> None:
        self._stop = True


async def test_attacker_spraying_media_ports_cannot_replace_the_camera(gateway_factory, fleet_factory, monkeypatch):
    low = free_ports(PORTS)
    early = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    early.bind((ATTACKER_HOST, 0))
    bait = _rtp(0x0BADBEEF, 1)
    original_open = UdpRtpReceiverTransport.open.__func__

    async def open_then_spray(cls, *args, **kwargs):  # the spray that lands before the INVITE is even sent
        transport = await original_open(cls, *args, **kwargs)
        for _ in range(5):
            early.sendto(bait, ("127.0.0.1", transport.port))
        return transport

    monkeypatch.setattr(UdpRtpReceiverTransport, "open", classmethod(open_then_spray))
    service = await gateway_factory(media_ports=f"{low}-{low + PORTS - 1}")
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id = _camera(fleet)
    assert await wait_for(lambda: (c := service.directory.channels.get(channel_id)) is not None and c.online, 60)
    live = service.live
    assert live is not None

    sprayer = _Sprayer(low)
    spray = asyncio.create_task(sprayer.run(0x0BADBEEF))
    try:
        assert await wait_for(lambda: sprayer.sent > 0, 60), "the attacker started spraying"
        watching = asyncio.create_task(live.watch(channel_id, MediaTransport.UDP))
        assert await wait_for(lambda: channel_id in live.streams, 30)
        sprayer.offered_ssrc = live.streams[channel_id].session.offer.ssrc_int
        stream, viewer = await watching
        live.leave(channel_id, viewer)
        jpeg = await live.snapshot(channel_id, wait=30.0)
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        assert image.shape[:2] == (360, 640), f"the snapshot shows the attacker's picture {image.shape[:2]}"
        receiver = stream.receiver
        assert receiver.source is not None and receiver.source[0] == "127.0.0.1"
        totals = live.rtp_totals()
        assert totals["dropped_before_answer"] > 0, totals
        assert totals["dropped_foreign_address"] > 0, totals
        assert totals["dropped_foreign_ssrc"] > 0, totals
    finally:
        sprayer.stop()
        early.close()
        with contextlib.suppress(Exception):
            await spray


async def test_tcp_passive_port_refuses_other_hosts(gateway_factory, fleet_factory):
    """TCP-PASSIVE: a connection from another host never takes the stream's one connection slot."""
    low = free_ports(PORTS)
    service = await gateway_factory(media_ports=f"{low}-{low + PORTS - 1}")
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    channel_id = _camera(fleet)
    assert await wait_for(lambda: (c := service.directory.channels.get(channel_id)) is not None and c.online, 60)
    live = service.live
    assert live is not None
    packets = await asyncio.to_thread(_attacker_packets, 0x0BADBEEF)
    framed = b"".join(struct.pack("!H", len(p)) + p for p in packets[:60])
    writers: list[asyncio.StreamWriter] = []
    stop = asyncio.Event()

    async def occupy() -> None:
        """Connect from another host to every listening port of the range as soon as it opens."""
        taken: set[int] = set()
        while not stop.is_set():
            for port in range(low, low + PORTS):
                if port in taken:
                    continue
                with contextlib.suppress(OSError):
                    _reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER_HOST, 0))
                    writer.write(framed)
                    writers.append(writer)
                    taken.add(port)
            await asyncio.sleep(0.01)

    occupier = asyncio.create_task(occupy())
    try:
        stream, viewer = await live.watch(channel_id, MediaTransport.TCP_PASSIVE)
        live.leave(channel_id, viewer)
        jpeg = await live.snapshot(channel_id, wait=30.0)
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[:2] == (360, 640), "the camera's picture"
        assert stream.transport is not None and stream.transport.stats.foreign_connections > 0
        assert live.rtp_totals()["dropped_foreign_connection"] > 0
    finally:
        stop.set()
        occupier.cancel()
        with contextlib.suppress(BaseException):
            await occupier
        for writer in writers:
            writer.close()


def _rtp(ssrc: int, seq: int) -> bytes:
    return bytes(RtpPacketizer(ssrc, initial_sequence=seq).packetize(b"\x00\x00\x01\xba" + bytes(20), 0)[0])


def test_receiver_admits_nothing_before_the_answer_then_only_the_answered_source():
    from gateway.media.rtp import RtpReceiver

    receiver = RtpReceiver(None, frozenset({96}), armed=False)
    receiver.receive(_rtp(7, 1), ("10.0.0.9", 4000), 0.0)
    assert receiver.stats.before_answer == 1 and receiver.ssrc is None and receiver.source is None
    assert not receiver.admits_host("192.168.1.64")
    receiver.arm(frozenset({1234, 5678}), frozenset({"192.168.1.64", "203.0.113.7"}))
    receiver.receive(_rtp(1234, 2), ("10.0.0.9", 4000), 0.01)  # right SSRC, another host
    receiver.receive(_rtp(7, 3), ("203.0.113.7", 4000), 0.02)  # the device's NAT host, foreign SSRC
    assert receiver.stats.foreign_address == 1 and receiver.stats.foreign_ssrc == 1 and receiver.ready == 0
    receiver.receive(_rtp(5678, 4), ("203.0.113.7", 4000), 0.03)  # the offered SSRC via NAT: locks
    assert receiver.ssrc == 5678 and receiver.source == ("203.0.113.7", 4000) and receiver.ready == 1
    receiver.receive(_rtp(5678, 5), ("203.0.113.7", 4001), 0.04)  # same host, another port: not the lock
    receiver.receive(_rtp(1234, 6), ("203.0.113.7", 4000), 0.05)  # the other allowed SSRC: not the lock
    assert receiver.stats.foreign_source == 1 and receiver.stats.foreign_ssrc == 2
    assert receiver.admits_host("192.168.1.64") and not receiver.admits_host("10.0.0.9")
