"""Where a device's RTP comes in for one INVITE: the receiving end for UDP, TCP passive or TCP active.

Live view (:mod:`gateway.live`) and downloads (:mod:`gateway.downloads`) open the same
kinds of media sessions to a device; this is the part they share: before the INVITE, bind
what the offer's ``m=`` port names (a UDP port, or a TCP listener the device connects to
after the ACK), and after the answer, connect to the device for TCP active
(docs/gb28181.md §15.5). The RTP receiver decides what is admitted: a TCP passive
listener takes only a connection from a host the device's answer armed (issue 10, H3).
"""

from __future__ import annotations

from gateway.gb28181.sdp import MediaTransport
from gateway.io.ports import PortSpec
from gateway.io.rtp_io import MediaSink, UdpRtpReceiverTransport
from gateway.io.rtp_io import MediaTransport as RtpTransport
from gateway.io.rtp_tcp_io import TcpActiveRtpReceiver, TcpPassiveRtpReceiver
from gateway.media.rtp import RtpReceiver

__all__ = ["DISCARD_PORT", "connect_active", "open_intake"]

DISCARD_PORT = 9  # m= port of a TCP-active offer: not used (RFC 4145 names "9", the discard port)


async def open_intake(
    sink: MediaSink,
    receiver: RtpReceiver,
    mode: MediaTransport,
    *,
    host: str,
    ports: PortSpec,
    connect_timeout: float,
    rtp_timeout: float,
) -> tuple[RtpTransport | None, int]:
    """The transport to offer and its port; (None, 9) for TCP active, which connects after the answer."""
    if mode is MediaTransport.UDP:
        udp = await UdpRtpReceiverTransport.open(sink, host=host, ports=ports, rtp_timeout=rtp_timeout)
        return udp, udp.port
    if mode is MediaTransport.TCP_PASSIVE:  # we listen; the device connects after the ACK
        tcp = await TcpPassiveRtpReceiver.open(
            sink,
            host=host,
            ports=ports,
            connect_timeout=connect_timeout,
            rtp_timeout=rtp_timeout,
            admit=lambda peer: receiver.admits_host(peer[0]),
        )
        return tcp, tcp.port
    return None, DISCARD_PORT


async def connect_active(
    sink: MediaSink, host: str, port: int, *, connect_timeout: float, rtp_timeout: float
) -> RtpTransport:
    """TCP active: connect to the device's listening port from its answer (MediaConnectError if not)."""
    return await TcpActiveRtpReceiver.connect(
        sink, host, port, connect_timeout=connect_timeout, rtp_timeout=rtp_timeout
    )
