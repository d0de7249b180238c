"""GB/T 28181 program-stream muxer, laid out the way ireader's ``mpeg-ps-enc.c`` does.

That is the PS ZLMediaKit sends and most platforms expect (docs/gb28181.md §17.3, §20)::

    pack header                      every frame, video and audio; SCR = DTS - 3600
    system header + PSM              on every video key frame, else once 30 packs have passed
    PES 0xE0 (video) / 0xC0 (audio)  PES_packet_length capped at 0xFF80; only the first PES
                                     of a frame has PTS (and DTS when it differs) and, on
                                     video key frames, data_alignment_indicator

Unlike ireader we do not insert an access unit delimiter when a frame lacks one: the
muxer is a pass-through, so a demux -> mux -> demux round trip keeps every byte.

An audio-only stream (``video=None``) is what a device that offers ``PS/90000`` for voice
broadcast expects: its system header and PSM name the audio stream alone, and with no key
frames to wait for they come every ``PSM_PERIOD`` packs from the first.
"""

from __future__ import annotations

from typing import Protocol

from gateway.media.ps.headers import PackHeader, PesHeader, ProgramStreamMap, PsmEntry, SystemHeader, SystemHeaderStream
from gateway.media.ps.model import PTS_MASK, PsDemuxError, StreamId, StreamType

__all__ = ["MAX_PES_PACKET_LENGTH", "MuxableUnit", "PsMuxer"]

MAX_PES_PACKET_LENGTH = 0xFF80  # ireader's MAX_PES_PACKET: "64k pes data, reserved 0x7F for hik"
SCR_LEAD = 3600  # SCR runs 40 ms ahead of DTS (ireader: dts - 3600)
DEFAULT_MUX_RATE = 6106  # 50-byte units; the constant ireader and ZLMediaKit write
DEFAULT_RATE_BOUND = 26234
PSM_PERIOD = 30


class MuxableUnit(Protocol):
    """What :meth:`PsMuxer.mux` reads from a frame; :class:`AccessUnit` fits."""

    @property
    def data(self) -> bytes: ...

    @property
    def pts(self) -> int | None: ...

    @property
    def dts(self) -> int | None: ...

    @property
    def keyframe(self) -> bool: ...

    @property
    def is_video(self) -> bool: ...


class PsMuxer:
    """Access units in, GB/T 28181 PS bytes out (one pack per frame). Sans-I/O, stateful.

    ``psm_info`` becomes the PSM's program_stream_info descriptors (empty by default;
    ireader writes a 0x71 descriptor naming itself). ``video`` None makes an audio-only
    stream (``audio`` then required).
    """

    def __init__(
        self,
        video: StreamType | None,
        audio: StreamType | None = None,
        *,
        mux_rate: int = DEFAULT_MUX_RATE,
        rate_bound: int = DEFAULT_RATE_BOUND,
        psm_info: bytes = b"",
    ) -> None:
        if video is not None and (not video.is_video or video.wire_value is None):
            raise PsDemuxError(f"not a video stream type PS can name: {video!r}")
        if audio is not None and (audio.is_video or audio.wire_value is None):
            raise PsDemuxError(f"not an audio stream type PS can name: {audio!r}")
        if video is None and audio is None:
            raise PsDemuxError("a program stream needs a video or an audio stream")
        self.video = video
        self.audio = audio
        self.mux_rate = mux_rate
        streams: list[SystemHeaderStream] = []
        entries: list[PsmEntry] = []
        if video is not None:
            streams.append(SystemHeaderStream(StreamId.VIDEO, 1, 400))  # ireader: video 400 x 1024
            entries.append(PsmEntry(video, StreamId.VIDEO))
        if audio is not None:
            streams.append(SystemHeaderStream(StreamId.AUDIO, 0, 32))  # audio 32 x 128
            entries.append(PsmEntry(audio, StreamId.AUDIO))
        system = SystemHeader(
            tuple(streams), rate_bound, audio_bound=int(audio is not None), video_bound=int(video is not None)
        )
        # ireader bumps the PSM version once per stream added: 1 for video only, 2 with audio.
        psm = ProgramStreamMap(version=len(entries), entries=tuple(entries), info=psm_info)
        self._headers = bytes(system) + bytes(psm)
        self._packs_since_psm = 0
        self._last_scr = 0

    def mux(self, unit: MuxableUnit) -> bytes:
        """One frame as PS bytes: pack header, maybe system header + PSM, then its PES."""
        if not unit.is_video and self.audio is None:
            raise PsDemuxError("audio unit given to a muxer created without audio")
        if unit.is_video and self.video is None:
            raise PsDemuxError("video unit given to an audio-only muxer")
        pts, dts = unit.pts, unit.dts
        if pts is not None:
            pts &= PTS_MASK
            dts = pts if dts is None else dts & PTS_MASK
            self._last_scr = dts - SCR_LEAD if dts >= SCR_LEAD else 0
        out = bytearray(bytes(PackHeader(self._last_scr, self.mux_rate)))
        if unit.is_video and unit.keyframe:
            self._packs_since_psm = 0
        if self._packs_since_psm % PSM_PERIOD == 0:
            out += self._headers
        self._packs_since_psm += 1
        sid = StreamId.VIDEO if unit.is_video else StreamId.AUDIO
        first = PesHeader(
            sid,
            0,
            0,
            pts,
            dts if unit.is_video else pts,
            data_alignment=unit.is_video and unit.keyframe,
        )
        self._write_pes(out, first, unit.data)
        return bytes(out)

    @staticmethod
    def _write_pes(out: bytearray, first: PesHeader, data: bytes) -> None:
        """Split ``data`` into PES packets of at most MAX_PES_PACKET_LENGTH; only the first is stamped."""
        header = bytes(first)
        pos = 0
        while pos < len(data):
            room = MAX_PES_PACKET_LENGTH - (len(header) - 6)
            chunk = data[pos : pos + room]
            length = len(header) - 6 + len(chunk)
            out += header[:4] + length.to_bytes(2, "big") + header[6:] + chunk
            pos += len(chunk)
            header = bytes(PesHeader(first.stream_id, 0, 0))
