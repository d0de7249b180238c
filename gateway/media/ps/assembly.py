"""Frame assembly: turn the PES payloads of one stream into access units.

Two strategies (docs/gb28181.md §17.4 "Frame assembly"):

* :class:`NalAssembler` (H.264, H.265) finds access-unit boundaries in the Annex-B byte
  stream itself, the way FFmpeg's parsers do (H.264 §7.4.1.2.3, H.265 §7.4.2.4.4). A PES
  timestamp belongs to the first access unit that *starts* inside that PES (ISO/IEC
  13818-1 §2.4.3.7). For GB/T 28181 senders, which put one frame in one PES (or a run of
  PES of which only the first has a PTS), this is the same as "a PES with a PTS starts a
  new frame"; it also copes with FFmpeg's 2 KiB packs, where a PES holds the tail of one
  frame and the head of the next, and with Hikvision-style one-NAL-per-PES streams.
* :class:`PesAssembler` (audio, unknown video): a PES with a PTS starts a new unit, PES
  without one continue it.

Both emit a unit only when the next one starts (or on ``flush``), and both are
chunking-independent: the same bytes give the same units however the PES were cut.
"""

from __future__ import annotations

from collections import deque

from gateway.media.ps.model import AccessUnit, PsDemuxError, StreamType

__all__ = ["NalAssembler", "PesAssembler", "VideoCodecProbe", "guess_audio_codec", "guess_video_codec"]

START_CODE = b"\x00\x00\x01"

# H.264 nal_unit_type values that begin a new access unit once the current one has a
# slice: SEI, SPS, PPS, AUD, 14-18 (§7.4.1.2.3).
_H264_AU_OPENERS = frozenset({6, 7, 8, 9, 14, 15, 16, 17, 18})
_H264_VCL = frozenset({1, 2, 3, 4, 5})
_H264_PROFILES = frozenset({66, 77, 88, 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# H.265: VPS, SPS, PPS, AUD, prefix SEI, reserved 41-44 and unspecified 48-55 (§7.4.2.4.4).
_H265_AU_OPENERS = frozenset({32, 33, 34, 35, 39, 41, 42, 43, 44, *range(48, 56)})
_H265_GUESS_TYPES = frozenset({*range(0, 10), *range(16, 22), *range(32, 41)})


def _h264_plausible(b0: int, b1: int) -> bool:
    kind, nri = b0 & 0x1F, (b0 >> 5) & 3
    if b0 & 0x80:
        return False
    if kind == 1:
        return True
    if kind == 5 or kind == 8:
        return nri != 0
    if kind == 7:
        return nri != 0 and b1 in _H264_PROFILES
    return kind in (6, 9, 10, 11, 12) and nri == 0  # SEI, AUD, end of seq/stream, filler


def _h265_plausible(b0: int, b1: int) -> bool:
    # forbidden bit 0, nuh_layer_id 0, nuh_temporal_id_plus1 >= 1
    return b0 & 0x81 == 0 and b1 >> 3 == 0 and b1 & 7 != 0 and (b0 >> 1) & 0x3F in _H265_GUESS_TYPES


class VideoCodecProbe:
    """Tell H.264 from H.265 by NAL headers when there is no PSM (docs/gb28181.md §17.4).

    Each NAL header that only one of the two codecs could have written is a vote.
    Feeding is incremental (linear in the bytes seen, however they are cut).
    """

    def __init__(self) -> None:
        self._votes = {StreamType.H264: 0, StreamType.H265: 0}
        self._tail = b""  # the last bytes, where a start code may not be complete yet

    def feed(self, data: bytes) -> StreamType | None:
        """Count the NAL headers in ``data``; return the leader, None while tied."""
        payload = self._tail + data
        i = payload.find(START_CODE)
        while 0 <= i <= len(payload) - 5:
            b0, b1 = payload[i + 3], payload[i + 4]
            avc, hevc = _h264_plausible(b0, b1), _h265_plausible(b0, b1)
            if avc != hevc:
                self._votes[StreamType.H264 if avc else StreamType.H265] += 1
            i = payload.find(START_CODE, i + 3)
        self._tail = payload[-4:]
        return self.leader

    @property
    def leader(self) -> StreamType | None:
        """The codec with more votes, None while tied."""
        avc, hevc = self._votes[StreamType.H264], self._votes[StreamType.H265]
        if avc == hevc:
            return None
        return StreamType.H264 if avc > hevc else StreamType.H265


def guess_video_codec(payload: bytes) -> StreamType | None:
    """H.264 or H.265 by the NAL headers in ``payload``; None when none of them decides."""
    return VideoCodecProbe().feed(payload)


def guess_audio_codec(payload: bytes) -> StreamType:
    """An ADTS sync word means AAC; anything else (G.711 has no sync) is unknown audio."""
    if len(payload) >= 3 and payload[0] == 0xFF and payload[1] & 0xF6 == 0xF0 and (payload[2] >> 2) & 0x0F < 13:
        return StreamType.AAC
    return StreamType.UNKNOWN_AUDIO


class PesAssembler:
    """Units delimited by PES timestamps: a PES with a PTS opens a unit (audio, unknown video)."""

    def __init__(self, stream_type: StreamType, stream_id: int) -> None:
        self.stream_type = stream_type
        self.stream_id = stream_id
        self._data = bytearray()
        self._open = False
        self._pts: int | None = None
        self._dts: int | None = None
        self._key = not stream_type.is_video  # every audio frame is a random-access point
        self.dropped = 0
        """Bytes that arrived while no unit was open (after a reset or at the start)."""

    @property
    def buffered(self) -> int:
        """Bytes held for the unit being assembled."""
        return len(self._data)

    def push(self, data: bytes, pts: int | None, dts: int | None, new_pes: bool = True) -> list[AccessUnit]:
        """Add one PES payload (or more of an unbounded one); returns the unit it completed, if any."""
        out: list[AccessUnit] = []
        if pts is not None and new_pes:
            out = self.flush()
            self._open, self._pts, self._dts = True, pts, dts
        if self._open:
            self._data += data
        else:
            self.dropped += len(data)
        return out

    def flush(self) -> list[AccessUnit]:
        """Emit the unit being assembled (end of stream, or codec change)."""
        out = []
        if self._open and self._data:
            out.append(AccessUnit(self.stream_type, self.stream_id, self._pts, self._dts, bytes(self._data), self._key))
        self._data.clear()
        self._open = False
        return out

    def drop(self) -> int:
        """Discard the unit being assembled; returns its size. The next PTS reopens."""
        size = len(self._data)
        self._data.clear()
        self._open = False
        return size


class NalAssembler:
    """Access units of an H.264 or H.265 Annex-B stream, boundaries found from NAL syntax."""

    def __init__(self, stream_type: StreamType, stream_id: int) -> None:
        if stream_type not in (StreamType.H264, StreamType.H265):
            raise PsDemuxError(f"NalAssembler needs H264 or H265, not {stream_type!r}")
        self.stream_type = stream_type
        self.stream_id = stream_id
        self._hevc = stream_type is StreamType.H265
        self._need = 3 if self._hevc else 2  # bytes after the start code that decide a boundary
        self._buf = bytearray()  # the open unit (from its first start code), then unscanned bytes
        self._base = 0  # stream offset of _buf[0]
        self._scan = 0  # where the start-code search resumes
        self._open = False
        self._has_vcl = False
        self._key = False
        self._pts: int | None = None
        self._dts: int | None = None
        self._pes: deque[tuple[int, int | None, int | None]] = deque()  # (offset, pts, dts) per PES
        self.dropped = 0
        """Bytes skipped while looking for the first access-unit start."""

    @property
    def buffered(self) -> int:
        """Bytes held: the unit being assembled plus bytes not scanned yet."""
        return len(self._buf)

    def push(self, data: bytes, pts: int | None, dts: int | None, new_pes: bool = True) -> list[AccessUnit]:
        """Add one PES payload, or (``new_pes=False``) more of an unbounded one; returns completed units."""
        if new_pes and (pts is not None or not self._pes or self._pes[-1][1] is not None):
            self._pes.append((self._base + len(self._buf), pts, dts))
        if not data:
            return []
        self._buf += data
        return self._split(final=False)

    def flush(self) -> list[AccessUnit]:
        """Emit everything still held (end of stream, or codec change)."""
        out = self._split(final=True)
        if self._open and self._buf:
            out.append(self._unit(len(self._buf)))
        else:
            self.dropped += len(self._buf)
        self._reset()
        return out

    def drop(self) -> int:
        """Discard the open unit and unscanned bytes; returns how many bytes that was."""
        size = len(self._buf)
        self._reset()
        return size

    def _reset(self) -> None:
        self._base += len(self._buf)
        self._buf.clear()
        self._scan = 0
        self._open = self._has_vcl = self._key = False
        self._pes.clear()

    def _split(self, final: bool) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        buf = self._buf
        i = self._scan
        while True:
            j = buf.find(START_CODE, i)
            if j < 0:
                i = max(i, len(buf) - 3)  # a (4-byte) start code may straddle the next push
                break
            h = j + 3
            if h + self._need > len(buf) and not final:
                i = j
                break
            opens, vcl, key = self._classify(buf, h)
            if opens and (not self._open or self._has_vcl):
                start = j - 1 if j > 0 and buf[j - 1] == 0 else j  # a 4-byte start code opens the unit
                if self._open:
                    out.append(self._unit(start))
                else:
                    self.dropped += start
                del buf[:start]
                self._base += start
                j, h = j - start, h - start
                self._begin(self._base + h)
            if self._open:
                self._has_vcl |= vcl
                self._key |= key
            i = h
        if not self._open and i > 1:  # nothing to keep before the first unit starts
            cut = i - 1  # keep one byte: it may be the leading zero of a 4-byte start code
            self.dropped += cut
            del buf[:cut]
            self._base += cut
            i -= cut
            while len(self._pes) > 1 and self._pes[1][0] <= self._base:
                self._pes.popleft()  # PES wholly skipped: their timestamps own nothing
        self._scan = i
        return out

    def _classify(self, buf: bytearray, h: int) -> tuple[bool, bool, bool]:
        """(opens a unit after a slice, is a slice, marks a key frame) for the NAL at ``h``."""
        if h >= len(buf) or buf[h] & 0x80:
            return False, False, False
        b0 = buf[h]
        if self._hevc:
            kind = (b0 >> 1) & 0x3F
            if kind < 32:  # VCL: first_slice_segment_in_pic_flag opens a picture
                first = h + 2 < len(buf) and bool(buf[h + 2] & 0x80)
                return first, True, 16 <= kind <= 21
            return kind in _H265_AU_OPENERS, False, False
        kind = b0 & 0x1F
        if kind in _H264_VCL:  # first_mb_in_slice == 0 (ue(v) '1') opens a picture
            first = kind != 3 and kind != 4 and h + 1 < len(buf) and bool(buf[h + 1] & 0x80)
            return first, True, kind == 5
        return kind in _H264_AU_OPENERS, False, kind == 7

    def _begin(self, header_offset: int) -> None:
        """Open a unit; it takes the PTS of the PES its first NAL header lies in, if unused."""
        self._open, self._has_vcl, self._key = True, False, False
        self._pts = self._dts = None
        owner = None
        while self._pes and self._pes[0][0] <= header_offset:
            owner = self._pes.popleft()
        if owner is not None and owner[1] is not None:
            self._pts, self._dts = owner[1], owner[2]
            self._pes.appendleft((owner[0], None, None))  # later units in this PES get no PTS

    def _unit(self, end: int) -> AccessUnit:
        data = bytes(self._buf[:end])
        return AccessUnit(self.stream_type, self.stream_id, self._pts, self._dts, data, self._key)
