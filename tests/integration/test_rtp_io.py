"""Media receive transports over real loopback sockets: UDP, TCP-PASSIVE, TCP-ACTIVE (docs/gb28181.md §15.5)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from gateway.errors import PortRangeExhausted
from gateway.io.rtp_io import Addr, MediaWatchdog, UdpRtpReceiverTransport
from gateway.io.rtp_tcp_io import MediaConnectError, TcpActiveRtpReceiver, TcpPassiveRtpReceiver
from gateway.media.ps import AccessUnit, PsDemuxer, PsMuxer, StreamType
from gateway.media.rtp import Rfc4571Framer, RtpPacketizer, RtpReceiver
from tests.conftest import wait_for

H264 = Path(__file__).resolve().parents[1] / "fixtures" / "ps" / "zlm_h264_640x360_idr50.ps"
SSRC = 200000001
RTCP_SR = bytes([0x80, 200, 0, 6]) + SSRC.to_bytes(4, "big") + bytes(20)


class Pipeline:
    """A media session's sink: RtpReceiver → PsDemuxer, recording how it ended."""

    def __init__(self, *, fail_every: int = 0) -> None:
        self.receiver = RtpReceiver(expected_ssrc=SSRC, payload_types=frozenset({96}))
        self.demuxer = PsDemuxer()
        self.units: list[AccessUnit] = []
        self.closed: list[str] = []
        self.fed = 0
        self.fail_every = fail_every

    def feed(self, data: bytes, source: Addr) -> None:
        self.fed += 1
        if self.fail_every and self.fed % self.fail_every == 0:
            raise RuntimeError("sink bug")
        self.receiver.receive(data, source, asyncio.get_running_loop().time())
        while (packet := self.receiver.next_packet()) is not None:
            self.units += self.demuxer.feed(packet.payload)

    def on_closed(self, reason: str) -> None:
        self.closed.append(reason)

    def finish(self) -> list[AccessUnit]:
        return self.units + self.demuxer.flush()


@pytest.fixture(scope="module")
def units() -> list[AccessUnit]:
    demuxer = PsDemuxer()
    return demuxer.feed(H264.read_bytes()) + demuxer.flush()


@pytest.fixture(scope="module")
def frames(units: list[AccessUnit]) -> list[list[bytes]]:
    """RTP packets per access unit, as a device would send them."""
    muxer = PsMuxer(StreamType.H264)
    packetizer = RtpPacketizer(SSRC, initial_sequence=65000)
    first = units[0].pts or 0
    return [[bytes(p) for p in packetizer.packetize(muxer.mux(u), (u.pts or 0) - first)] for u in units]


def rfc4571(frames: list[list[bytes]]) -> bytes:
    framer = Rfc4571Framer()
    return b"".join(framer.frame(p) for packets in frames for p in packets)


async def until(predicate: object, timeout: float = 30.0) -> None:
    assert callable(predicate)
    assert await wait_for(predicate, timeout=timeout, interval=0.005)


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 30.0) == b""
    except ConnectionResetError:  # closed with our bytes still unread: the kernel sends RST
        return True


# --- UDP -----------------------------------------------------------------------------------


async def test_udp_delivers_every_frame(units: list[AccessUnit], frames: list[list[bytes]]) -> None:
    sink = Pipeline()
    receiver = await UdpRtpReceiverTransport.open(sink)
    loop = asyncio.get_running_loop()
    sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("127.0.0.1", receiver.port))
    try:
        sent = 0
        for packets in frames:  # pace per frame: loopback drops a 280 KB burst past a small rcvbuf
            for p in packets:
                sender.sendto(p)
            sent += len(packets)
            await until(lambda n=sent: receiver.stats.packets >= n)  # type: ignore[misc]
        sender.sendto(RTCP_SR)
        await until(lambda: receiver.stats.rtcp == 1)
        assert sink.finish() == units
        assert sink.fed == sent  # the RTCP packet was counted, not fed
        assert sink.closed == []
    finally:
        sender.close()
        receiver.close()


async def test_udp_silence_times_out_and_sink_bugs_are_contained() -> None:
    sink = Pipeline(fail_every=1)
    receiver = await UdpRtpReceiverTransport.open(sink, rtp_timeout=0.3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(3):
            s.sendto(b"\x80\x60" + bytes(10), ("127.0.0.1", receiver.port))
    await until(lambda: receiver.stats.feed_errors == 3)
    await until(lambda: sink.closed == ["rtp_timeout"])
    assert receiver.closed and receiver.transport is None


async def test_udp_port_range_skips_busy_ports_then_is_exhausted() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(PortRangeExhausted) as info:
            await UdpRtpReceiverTransport.open(Pipeline(), ports=(port, port))
        assert (info.value.low, info.value.high) == (port, port)
        receiver = await UdpRtpReceiverTransport.open(Pipeline(), ports=(port, min(port + 20, 65535)))
        assert port < receiver.port <= port + 20
        receiver.close()


# --- TCP-PASSIVE: the test is the device and connects -------------------------------------


async def test_tcp_passive_delivers_every_frame_and_refuses_a_second_connection(
    units: list[AccessUnit], frames: list[list[bytes]]
) -> None:
    sink = Pipeline()
    receiver = await TcpPassiveRtpReceiver.open(sink)
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    await until(lambda: receiver.connected)
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", receiver.port)
    assert await closed_by_peer(reader2)
    assert receiver.stats.refused_connections == 1
    writer.write(rfc4571(frames))
    await writer.drain()
    total = sum(map(len, frames))
    await until(lambda: receiver.stats.packets == total)
    assert sink.finish() == units
    writer.close()
    writer2.close()
    await until(lambda: sink.closed == ["peer_closed"])


async def test_tcp_passive_device_never_connects() -> None:
    sink = Pipeline()
    receiver = await TcpPassiveRtpReceiver.open(sink, connect_timeout=0.2)
    await until(lambda: sink.closed == ["no_connection"])
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", receiver.port)


async def test_tcp_silent_peer_times_out() -> None:
    sink = Pipeline()
    receiver = await TcpPassiveRtpReceiver.open(sink, rtp_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    assert await closed_by_peer(reader)
    assert sink.closed == ["rtp_timeout"]
    writer.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x05hello" * 8,
        b"\x00\x0c\x80\x60" + bytes(10) + b"\x00\x05hello" * 4,
        b"$\x00\x05\xdc" + bytes(1500),
        b"GET / HTTP/1.1\r\n" + bytes(0x4745),
    ],
    ids=["not-rtp", "desync-after-rtp", "rtsp-interleaved", "http"],
)
async def test_tcp_garbage_closes_that_stream_only(garbage: bytes, frames: list[list[bytes]]) -> None:
    sink = Pipeline()
    receiver = await TcpPassiveRtpReceiver.open(sink)
    reader, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    writer.write(garbage)
    assert await closed_by_peer(reader)
    assert sink.closed == ["framing_error"]
    writer.close()
    # The loop still serves other streams.
    other = Pipeline()
    second = await TcpPassiveRtpReceiver.open(other)
    _, writer = await asyncio.open_connection("127.0.0.1", second.port)
    writer.write(rfc4571(frames[:3]))
    await until(lambda: second.stats.packets == sum(map(len, frames[:3])))
    writer.close()
    second.close()


async def test_tcp_port_range_exhausted() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortRangeExhausted):
            await TcpPassiveRtpReceiver.open(Pipeline(), ports=(port, port))


# --- TCP-ACTIVE: the test is the device and listens ---------------------------------------


async def test_tcp_active_connects_late_listener_and_receives_every_frame(
    units: list[AccessUnit], frames: list[list[bytes]]
) -> None:
    with socket.socket() as probe:  # a port with nobody listening yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def device(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(rfc4571(frames))
        await writer.drain()
        writer.close()  # the device ends the stream after the clip

    async def listen_later() -> asyncio.Server:
        await asyncio.sleep(0.3)  # the device starts listening after its 200 OK
        return await asyncio.start_server(device, "127.0.0.1", port)

    sink = Pipeline()
    server_task = asyncio.create_task(listen_later())
    receiver = await TcpActiveRtpReceiver.connect(sink, "127.0.0.1", port, connect_timeout=30.0)
    server = await server_task
    await until(lambda: sink.closed == ["peer_closed"])
    assert receiver.stats.packets == sum(map(len, frames))
    assert sink.finish() == units
    server.close()


async def test_tcp_active_nobody_listening_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MediaConnectError) as info:
        await TcpActiveRtpReceiver.connect(Pipeline(), "127.0.0.1", port, connect_timeout=0.3)
    assert info.value.port == port


# --- watchdog --------------------------------------------------------------------------------


class _VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test moves it: timers fire exactly on time.

    The watchdog's rule is about time (0.2 s after the last touch, never before); on the real
    clock a busy machine can stall the loop between two touches longer than the timeout, and
    the watchdog would rightly fire early.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def test_watchdog_rearms_lazily_and_fires_once() -> None:
    loop = _VirtualClockLoop()
    fired: list[float] = []

    async def advance(seconds: float) -> None:
        loop.now += seconds
        for _ in range(3):  # the timers now due run
            await asyncio.sleep(0)

    async def scenario() -> None:
        dog = MediaWatchdog(0.25, lambda: fired.append(loop.time()))
        dog.start()
        for _ in range(4):  # touched every 0.125 s: the timer keeps moving itself to last touch + 0.25
            await advance(0.125)
            dog.touch()
        assert not fired and dog.armed
        await advance(0.125)
        assert not fired, "0.125 s after the last touch"
        await advance(0.125)
        assert fired == [1000.75], "0.25 s after the last touch (1000.5)"
        assert not dog.armed
        await advance(10.0)
        assert fired == [1000.75], "once"

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
