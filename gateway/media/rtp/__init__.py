"""RTP for GB/T 28181 media: packet codec, RFC 4571 TCP framing, reordering receiver, packetizer and clip replay."""

from __future__ import annotations

from gateway.media.rtp.packet import (
    RtpBuildError,
    RtpError,
    RtpPacket,
    RtpParseError,
    RtpParseReason,
    is_rtcp,
    seq_add,
    seq_diff,
    seq_newer,
    ts_add,
    ts_diff,
    ts_newer,
)
from gateway.media.rtp.receiver import RtpReceiver, RtpReceiverStats
from gateway.media.rtp.sender import ClipReplayer, ReplayFrame, RtpPacketizer, rewrite_pes_timestamps
from gateway.media.rtp.tcp_framing import Rfc4571Framer, RtpFramingError, RtpFramingReason

__all__ = [
    "ClipReplayer",
    "ReplayFrame",
    "Rfc4571Framer",
    "RtpBuildError",
    "RtpError",
    "RtpFramingError",
    "RtpFramingReason",
    "RtpPacket",
    "RtpParseError",
    "RtpParseReason",
    "RtpReceiver",
    "RtpReceiverStats",
    "RtpPacketizer",
    "is_rtcp",
    "rewrite_pes_timestamps",
    "seq_add",
    "seq_diff",
    "seq_newer",
    "ts_add",
    "ts_diff",
    "ts_newer",
]
