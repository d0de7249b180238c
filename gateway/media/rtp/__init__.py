"""RTP receive for GB/T 28181 media: packet codec, RFC 4571 TCP framing, reordering receiver."""

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
from gateway.media.rtp.tcp_framing import Rfc4571Framer, RtpFramingError, RtpFramingReason

__all__ = [
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
    "is_rtcp",
    "seq_add",
    "seq_diff",
    "seq_newer",
    "ts_add",
    "ts_diff",
    "ts_newer",
]
