"""Re-muxing the shared stream for one more receiver: access units → GB PS → RTP (sans-I/O).

Used where the gateway sends a live stream on (an upper platform's INVITE): the
elementary-stream bytes are wrapped again, never re-encoded.
"""

from __future__ import annotations

from gateway.media.ps import AccessUnit, PsMuxer, StreamType
from gateway.media.rtp import RtpPacketizer

__all__ = ["PsRtpRemuxer"]


class PsRtpRemuxer:
    """Access units of the shared stream → RTP packets of GB PS for one receiver; sans-I/O.

    No re-encoding: the elementary-stream bytes pass through :class:`PsMuxer`
    (pack header per frame, system header + PSM on every video key frame) and
    :class:`RtpPacketizer` (the receiver's SSRC; the 90 kHz RTP timestamp is the
    unit's DTS, else PTS, so the receiver's clock follows the camera's). Nothing
    goes out before the first video key frame. Audio passes when ``audio`` names
    its PSM type, else it is dropped and counted.
    """

    def __init__(
        self, ssrc: int, *, audio: StreamType | None = None, initial_sequence: int = 0, initial_timestamp: int = 0
    ) -> None:
        self.audio = audio if audio is not None and audio.wire_value is not None else None
        self._packetizer = RtpPacketizer(ssrc, initial_sequence=initial_sequence, initial_timestamp=initial_timestamp)
        self._muxer: PsMuxer | None = None
        self._last_ts = 0
        self.units = 0
        self.dropped = 0  # before the first key frame, or audio we cannot name

    def remux(self, unit: AccessUnit) -> list[bytes]:
        """The RTP packets of one access unit (none while waiting for a key frame).

        Raises :class:`PsDemuxError` for a video stream PS cannot name (no PSM type).
        """
        if self._muxer is None:
            if not (unit.is_video and unit.keyframe):
                self.dropped += 1
                return []
            self._muxer = PsMuxer(unit.stream_type, self.audio)
        if not unit.is_video and self._muxer.audio is None:
            self.dropped += 1
            return []
        ps = self._muxer.mux(unit)
        stamp = unit.dts if unit.dts is not None else unit.pts
        if stamp is not None:
            self._last_ts = stamp
        self.units += 1
        return [bytes(p) for p in self._packetizer.packetize(ps, self._last_ts)]
