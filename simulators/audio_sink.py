"""The simulated devices' speakers: receive broadcast audio (PCMA RTP) and report what was heard.

With ``ps`` the devices offered ``96 PS/90000`` (as many Hikvision/Dahua do): the audio then
comes as G.711 A-law inside an audio-only program stream, which the sink takes apart with
the gateway's :class:`~gateway.media.ps.PsDemuxer`; it keeps the PS bytes it received (up to
``MAX_PS_BYTES`` per call) so a test can hand them to ffprobe.

One :class:`AudioSinks` per fleet listens on one UDP port and one TCP port (RFC 4571; the
device offers ``a=setup:passive`` and the platform connects) for every simulated device;
the device's :class:`~gateway.gb28181.device_broadcast.DeviceBroadcast` tells it which SSRC
belongs to which device (:meth:`AudioSinks.expect`), and packets with any other SSRC are
counted and dropped. For each call it keeps the decoded samples (up to a minute) and
reports duration, level (RMS, dBFS) and the dominant frequency (numpy FFT, Hann window), so
a test can check that a test tone arrived: ``GET /devices/{id}/heard`` on the control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.errors import GatewayError
from gateway.gb28181.sdp import MediaTransport
from gateway.media.audio import PCMA_CLOCK, PCMA_PAYLOAD_TYPE, alaw_decode
from gateway.media.ps import PsDemuxer, StreamType
from gateway.media.rtp import Rfc4571Framer
from gateway.media.rtp.packet import RtpPacket
from gateway.media.rtp.sender import PS_PAYLOAD_TYPE

__all__ = ["AudioSinks", "Heard", "analyse"]

log = logging.getLogger("kgw.simulate.audio")
MAX_SECONDS = 60  # samples kept per call
HISTORY = 20  # calls kept per fleet
MAX_PS_BYTES = 1 << 20  # PS payload kept per call (~80 s of 20 ms packs)


@dataclass
class Heard:
    """One broadcast call as the device's speaker heard it."""

    device_id: str
    target: str
    ssrc: int
    packets: int = 0
    bad_packets: int = 0
    lost: int = 0
    ended: str | None = None
    transport: str = ""
    ps: bool = False  # the device offered PS: PT 96, A-law inside PS
    ps_bytes: bytearray = field(default_factory=bytearray, repr=False)
    _demuxer: PsDemuxer = field(default_factory=PsDemuxer, repr=False)
    _chunks: list[np.ndarray[Any, np.dtype[np.int16]]] = field(default_factory=list, repr=False)
    _samples: int = 0
    _last_seq: int | None = None

    def add(self, packet: RtpPacket, transport: str) -> None:
        """One RTP packet of this call."""
        if packet.payload_type != (PS_PAYLOAD_TYPE if self.ps else PCMA_PAYLOAD_TYPE):
            self.bad_packets += 1
            return
        if self._last_seq is not None:
            gap = (packet.sequence - self._last_seq - 1) & 0xFFFF
            self.lost += gap if gap < 1000 else 0
        self._last_seq = packet.sequence
        self.packets += 1
        self.transport = transport
        if self.ps:
            if len(self.ps_bytes) + len(packet.payload) <= MAX_PS_BYTES:
                self.ps_bytes += packet.payload
            for unit in self._demuxer.feed(packet.payload):
                if unit.stream_type is StreamType.G711A:
                    self._hear(alaw_decode(unit.data))
        else:
            self._hear(alaw_decode(packet.payload))

    def _hear(self, samples: np.ndarray[Any, np.dtype[np.int16]]) -> None:
        self._samples += len(samples)
        self._chunks.append(samples)
        kept = sum(len(c) for c in self._chunks)
        while self._chunks and kept - len(self._chunks[0]) >= MAX_SECONDS * PCMA_CLOCK:
            kept -= len(self._chunks.pop(0))

    def report(self) -> dict[str, Any]:
        """Duration, level and dominant frequency of what was heard."""
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        return {
            "device_id": self.device_id,
            "target": self.target,
            "ssrc": self.ssrc,
            "packets": self.packets,
            "lost": self.lost,
            "bad_packets": self.bad_packets,
            "transport": self.transport,
            "payload": "ps" if self.ps else "pcma",
            "ended": self.ended,
            "duration": round(self._samples / PCMA_CLOCK, 3),
            **analyse(samples),
        }


def analyse(samples: np.ndarray[Any, np.dtype[np.int16]], tail_seconds: float = 4.0) -> dict[str, Any]:
    """RMS (linear 0..1 and dBFS) and dominant frequency (Hz) of the last ``tail_seconds`` with sound."""
    if len(samples) == 0:
        return {"rms": 0.0, "rms_dbfs": None, "dominant_hz": None}
    x = samples.astype(np.float64) / 32768.0
    rms = float(np.sqrt(np.mean(x * x)))
    tail = x[-int(tail_seconds * PCMA_CLOCK) :]
    dominant = None
    if len(tail) >= 256 and np.any(tail):
        spectrum = np.abs(np.fft.rfft(tail * np.hanning(len(tail))))
        spectrum[0] = 0.0  # DC
        dominant = round(float(np.argmax(spectrum)) * PCMA_CLOCK / len(tail), 1)
    return {
        "rms": round(rms, 4),
        "rms_dbfs": round(20 * np.log10(rms), 1) if rms > 0 else None,
        "dominant_hz": dominant,
    }


class AudioSinks:
    """The speakers of a fleet: one UDP and one TCP port, calls told apart by SSRC.

    ``ps``: the fleet's devices offer PS (their calls expect A-law inside PS, PT 96).
    """

    def __init__(self, host: str = "127.0.0.1", *, ps: bool = False) -> None:
        self.host = host
        self.ps = ps
        self.calls: dict[int, Heard] = {}
        self.history: list[Heard] = []
        self.foreign = 0  # packets whose SSRC no call announced
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._udp_port = 0
        self._tcp_port = 0

    async def start(self) -> None:
        """Bind the UDP and TCP ports (any free ones on ``host``)."""
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(self.host, 0))
        self._udp_port = int(self._udp.get_extra_info("sockname")[1])
        self._tcp = await loop.create_server(lambda: _Tcp(self), self.host, 0)
        self._tcp_port = int(self._tcp.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Close both ports."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None

    # --- the AudioSink protocol of DeviceBroadcast ---------------------------------------------------

    def port_for(self, transport: MediaTransport) -> int:
        """UDP: where we receive; TCP (passive offer): where we listen."""
        return self._udp_port if transport is MediaTransport.UDP else self._tcp_port

    def expect(self, ssrc: int, device_id: str, target: str) -> None:
        """A call with ``ssrc`` to ``device_id`` begins."""
        heard = Heard(device_id, target, ssrc, ps=self.ps)
        self.calls[ssrc] = heard
        self.history.append(heard)
        del self.history[:-HISTORY]

    def ended(self, ssrc: int, reason: str) -> None:
        """That call is over (later packets with its SSRC are foreign)."""
        heard = self.calls.pop(ssrc, None)
        if heard is not None:
            heard.ended = reason

    # --- reports ---------------------------------------------------------------------------------------

    def heard(self, device_id: str) -> dict[str, Any] | None:
        """The latest call to ``device_id`` (running or ended), or None."""
        for heard in reversed(self.history):
            if heard.device_id == device_id:
                return {**heard.report(), "active": heard.ssrc in self.calls and self.calls[heard.ssrc] is heard}
        return None

    def ps_payload(self, device_id: str) -> bytes:
        """The PS bytes the latest call to ``device_id`` received (empty for PCMA calls)."""
        for heard in reversed(self.history):
            if heard.device_id == device_id:
                return bytes(heard.ps_bytes)
        return b""

    # --- input -----------------------------------------------------------------------------------------------

    def feed(self, data: bytes, transport: str) -> None:
        """One RTP packet from the platform."""
        try:
            packet = RtpPacket.parse(data)
        except GatewayError:
            self.foreign += 1
            return
        heard = self.calls.get(packet.ssrc)
        if heard is None:
            self.foreign += 1
            return
        heard.add(packet, transport)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, sinks: AudioSinks) -> None:
        self.sinks = sinks

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self.sinks.feed(data, "udp")
        except Exception:  # never let one packet break the socket
            log.exception("audio packet dropped")


class _Tcp(asyncio.Protocol):
    def __init__(self, sinks: AudioSinks) -> None:
        self.sinks = sinks
        self.framer = Rfc4571Framer()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            for packet in self.framer.feed(data):
                self.sinks.feed(packet, "tcp")
        except Exception:  # a broken stream: close this connection only
            log.info("audio TCP stream broken; closing it")
            if self.transport is not None:
                with contextlib.suppress(Exception):
                    self.transport.close()
