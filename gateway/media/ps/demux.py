"""Incremental, sans-I/O MPEG program-stream demuxer for GB/T 28181 media.

Feed it the PS byte stream (RTP payloads concatenated in sequence order, docs/gb28181.md §17.4)
in chunks of any size; it returns access units as they complete. The parser loop
follows ireader's ``ps_demuxer_input``: wait for the first ``00 00 01 BA``, then read
pack headers (MPEG-2, MPEG-1, Hikvision's truncated one), system headers, PSMs, PES,
the end code, and skip private/padding/other packets by their length.

Bad input is never raised: a packet that does not end where the next start code
begins, or bytes that are no start code at all, make the parser count a resync, drop
the units being assembled, and search for the next pack header. Every buffer is capped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.media.ps.assembly import NalAssembler, PesAssembler, VideoCodecProbe, guess_audio_codec
from gateway.media.ps.headers import (
    BAD,
    NEED_MORE,
    PesHeader,
    ProgramStreamMap,
    is_pes_stream_id,
    is_skippable_stream_id,
    read_pack_header_size,
    read_pes_header,
)
from gateway.media.ps.model import (
    AccessUnit,
    DemuxStats,
    PsDemuxError,
    StreamId,
    StreamType,
    is_video_stream_id,
)

__all__ = ["PsDemuxer"]

PACK_START = b"\x00\x00\x01\xba"
DEFAULT_MAX_UNIT_SIZE = 4 * 1024 * 1024
DEFAULT_MAX_BUFFERED = 16 * 1024 * 1024
UNBOUNDED_PIECE = 64 * 1024  # an unbounded PES is handed on in pieces of this size, whatever the chunking
PROBE_LIMIT = 256 * 1024  # bytes of a PSM-less video stream inspected before calling it UNKNOWN_VIDEO

Assembler = NalAssembler | PesAssembler


@dataclass(slots=True)
class _Track:
    """One elementary stream: its type (None while probing) and frame assembler."""

    stream_id: int
    declared: StreamType | None  # what the PSM said, None when guessed
    stream_type: StreamType | None = None
    assembler: Assembler | None = None
    probe: list[tuple[bytes, int | None, int | None, bool]] = field(default_factory=list)
    probe_bytes: int = 0
    codec_probe: VideoCodecProbe = field(default_factory=VideoCodecProbe)

    @property
    def buffered(self) -> int:
        return self.probe_bytes + (self.assembler.buffered if self.assembler else 0)


def _make_assembler(stream_type: StreamType, stream_id: int) -> Assembler:
    if stream_type in (StreamType.H264, StreamType.H265):
        return NalAssembler(stream_type, stream_id)
    return PesAssembler(stream_type, stream_id)


class PsDemuxer:
    """Program stream in, :class:`AccessUnit` out; see the module docstring.

    ``max_unit_size`` caps one access unit (larger ones are dropped and counted in
    ``stats.oversized``); ``max_buffered`` caps what all streams hold together.
    """

    def __init__(self, *, max_unit_size: int = DEFAULT_MAX_UNIT_SIZE, max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        if max_unit_size <= 0 or max_buffered < max_unit_size:
            raise PsDemuxError("need 0 < max_unit_size <= max_buffered")
        self.max_unit_size = max_unit_size
        self.max_buffered = max_buffered
        self.stats = DemuxStats()
        self._buf = bytearray()
        self._synced = False
        self._unbounded: _Track | None = None  # a video PES with PES_packet_length 0 in progress
        self._unbounded_seen = 0  # bytes of it already searched for its end
        self._psm_version: int | None = None
        self._psm_types: dict[int, StreamType] = {}
        self._tracks: dict[int, _Track] = {}
        # A PES split over many RTP packets: the parser stopped at a packet whose end (plus the
        # next start code) is not here yet; until the buffer holds this many bytes, feeding only
        # appends (a 64 KiB key-frame PES is ~45 RTP payloads, each would re-read its header).
        self._need = 0

    @property
    def stream_types(self) -> dict[int, StreamType]:
        """Stream id -> type, for every stream seen (PSM-declared or guessed)."""
        known = {sid: t.stream_type for sid, t in self._tracks.items() if t.stream_type is not None}
        return {**self._psm_types, **known}

    def feed(self, data: bytes | bytearray | memoryview) -> list[AccessUnit]:
        """Add bytes; return the access units they completed, in stream order."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise PsDemuxError(f"feed() takes bytes, not {type(data).__name__}")
        self._buf += data
        if len(self._buf) < self._need:
            return []
        out: list[AccessUnit] = []
        self._parse(out, final=False)
        return out

    def flush(self) -> list[AccessUnit]:
        """End of stream: parse what is left and emit every unit still being assembled."""
        out: list[AccessUnit] = []
        self._parse(out, final=True)
        if self._unbounded is not None:
            self._deliver(self._unbounded, bytes(self._buf), None, None, False, out)
            self._unbounded = None
            self._unbounded_seen = 0
        else:
            self.stats.dropped_bytes += len(self._buf)  # a cut-off header or garbage tail
        self._buf.clear()
        for track in list(self._tracks.values()):
            self._emit(self._flush_track(track), out)
        self._synced = False
        return out

    # --- the packet loop -----------------------------------------------------------------

    def _parse(self, out: list[AccessUnit], final: bool) -> None:
        buf = self._buf
        pos = 0
        self._need = 0
        while True:
            if self._unbounded is not None:
                pos = self._continue_unbounded(pos, out)
                if self._unbounded is not None:
                    break
            if not self._synced:
                found = buf.find(PACK_START, pos)
                skip_to = found if found >= 0 else max(pos, len(buf) - 3)
                self.stats.dropped_bytes += skip_to - pos
                pos = skip_to
                if found < 0:
                    break
                self._synced = True
            if len(buf) - pos < 4:
                break
            if buf[pos] != 0 or buf[pos + 1] != 0 or buf[pos + 2] > 1:
                pos = self._lose_sync(pos)
                continue
            if buf[pos + 2] == 0:  # zero stuffing between packets
                pos += 1
                continue
            step = self._packet(pos, out, final)
            if step == NEED_MORE:
                self._need = max(0, self._need - pos)  # set when a sized packet waits for its end
                break
            pos = self._lose_sync(pos) if step == BAD else pos + step
        del buf[:pos]

    def _packet(self, pos: int, out: list[AccessUnit], final: bool) -> int:
        """Handle the packet at ``pos``; return its size, ``NEED_MORE`` or ``BAD``."""
        buf = self._buf
        sid = buf[pos + 3]
        if sid == StreamId.PACK:
            size = read_pack_header_size(buf, pos)
            if size > 0:
                self.stats.packs += 1
            return size
        if sid == StreamId.END:
            return 4
        if sid < StreamId.END:
            return BAD
        if len(buf) - pos < 6:
            return NEED_MORE
        total = 6 + (buf[pos + 4] << 8 | buf[pos + 5])
        if total == 6 and is_pes_stream_id(sid):
            return self._start_unbounded(pos, sid, out)
        avail = len(buf) - pos
        if avail < total + 4 and not final:
            self._need = pos + total + 4
            return NEED_MORE  # wait for the packet and the start code that must follow it
        if avail < total:
            return self._truncated_tail(pos)
        if avail >= total + 4 and not self._start_code_at(pos + total):
            return BAD  # wrong length (or garbage after the packet)
        if sid == StreamId.PSM:
            self._on_psm(pos, total, out)
        elif is_pes_stream_id(sid):
            header = read_pes_header(buf, pos, pos + total)
            if not isinstance(header, PesHeader):
                return BAD
            self.stats.pes += 1
            track = self._track(sid)
            self._deliver(track, bytes(buf[pos + header.header_size : pos + total]), header.pts, header.dts, True, out)
        else:
            assert is_skippable_stream_id(sid)
            self.stats.skipped_packets += 1
        return total

    def _start_code_at(self, pos: int) -> bool:
        """Is ``buf[pos:]`` a PS start code (or zero stuffing before one)? Needs 4 bytes."""
        b = self._buf
        return b[pos] == 0 and b[pos + 1] == 0 and (b[pos + 2] == 0 or (b[pos + 2] == 1 and b[pos + 3] >= 0xB9))

    def _truncated_tail(self, pos: int) -> int:
        """At end of stream a packet claims more bytes than remain."""
        if self._buf.find(PACK_START, pos + 4) >= 0:
            return BAD  # a pack header inside it: the length was wrong, resync there
        self.stats.dropped_bytes += len(self._buf) - pos
        return len(self._buf) - pos

    def _lose_sync(self, pos: int) -> int:
        """Bad bytes at ``pos``: drop what is being assembled, search the next pack header."""
        self.stats.resyncs += 1
        self._synced = False
        for track in self._tracks.values():
            self._drop_track(track)
        self.stats.dropped_bytes += 1
        return pos + 1

    # --- unbounded video PES (PES_packet_length 0) ---------------------------------------

    def _start_unbounded(self, pos: int, sid: int, out: list[AccessUnit]) -> int:
        if not is_video_stream_id(sid):
            return BAD  # only video may leave its length open (§2.4.3.7)
        header = read_pes_header(self._buf, pos, len(self._buf))
        if not isinstance(header, PesHeader):
            return header
        self.stats.pes += 1
        track = self._track(sid)
        self._unbounded = track
        self._deliver(track, b"", header.pts, header.dts, True, out)
        return header.header_size

    def _continue_unbounded(self, pos: int, out: list[AccessUnit]) -> int:
        """Hand on the payload up to the next PS start code, in fixed-size pieces."""
        track = self._unbounded
        assert track is not None
        buf = self._buf
        end = self._find_ps_start_code(pos + self._unbounded_seen)
        limit = end if end >= 0 else len(buf) - 3  # the last bytes may begin the start code
        while limit - pos >= UNBOUNDED_PIECE:
            self._deliver(track, bytes(buf[pos : pos + UNBOUNDED_PIECE]), None, None, False, out)
            pos += UNBOUNDED_PIECE
        if end < 0:
            self._unbounded_seen = max(0, limit - pos)
            return pos
        self._deliver(track, bytes(buf[pos:end]), None, None, False, out)
        self._unbounded = None
        self._unbounded_seen = 0
        return end

    def _find_ps_start_code(self, pos: int) -> int:
        """First ``00 00 01 xx`` with xx >= 0xB9 at or after ``pos`` (NAL start codes have xx < 0x80)."""
        buf = self._buf
        while True:
            pos = buf.find(b"\x00\x00\x01", pos)
            if pos < 0 or pos + 3 >= len(buf):
                return -1
            if buf[pos + 3] >= 0xB9:
                return pos
            pos += 3

    # --- streams ---------------------------------------------------------------------------

    def _on_psm(self, pos: int, total: int, out: list[AccessUnit]) -> None:
        try:
            psm = ProgramStreamMap.parse(self._buf[pos : pos + total])
        except PsDemuxError:
            self.stats.skipped_packets += 1
            return
        types = {e.stream_id: StreamType.from_psm(e.stream_type, e.stream_id) for e in psm.entries}
        if psm.version == self._psm_version and types == self._psm_types:
            return  # the usual repeat on every key frame
        # A new version rebuilds the table (docs/gb28181.md §17.4); so does a changed table under the
        # same version: ZLMediaKit's H.264 and H.265 streams both say version 1.
        self._psm_version = psm.version
        self._psm_types = types
        self.stats.psm_updates += 1
        for sid, track in list(self._tracks.items()):
            declared = self._psm_types.get(sid)
            if declared == track.declared:
                continue
            if declared is not None and declared == track.stream_type:
                track.declared = declared  # the PSM confirms the guess
                continue
            self._emit(self._flush_track(track), out)
            del self._tracks[sid]

    def _track(self, sid: int) -> _Track:
        track = self._tracks.get(sid)
        if track is None:
            declared = self._psm_types.get(sid)
            track = _Track(sid, declared)
            if declared is not None and declared is not StreamType.UNKNOWN_VIDEO:
                self._set_type(track, declared)
            self._tracks[sid] = track
        return track

    def _set_type(self, track: _Track, stream_type: StreamType) -> None:
        track.stream_type = stream_type
        track.assembler = _make_assembler(stream_type, track.stream_id)

    def _deliver(
        self, track: _Track, data: bytes, pts: int | None, dts: int | None, new_pes: bool, out: list[AccessUnit]
    ) -> None:
        """Give one PES payload (or piece) to its stream, probing the codec if needed."""
        if track.assembler is None:
            track.probe.append((data, pts, dts, new_pes))
            track.probe_bytes += len(data)
            if not is_video_stream_id(track.stream_id):
                self._set_type(track, guess_audio_codec(data))
            else:
                guess = track.codec_probe.feed(data)
                if guess is None and track.probe_bytes < PROBE_LIMIT:
                    return
                self._set_type(track, guess or StreamType.UNKNOWN_VIDEO)
            self._replay(track, out)
        else:
            assert track.assembler is not None
            self._emit(track.assembler.push(data, pts, dts, new_pes), out)
        self._enforce_caps(track)

    def _replay(self, track: _Track, out: list[AccessUnit]) -> None:
        assert track.assembler is not None
        for data, pts, dts, new_pes in track.probe:
            self._emit(track.assembler.push(data, pts, dts, new_pes), out)
        track.probe.clear()
        track.probe_bytes = 0

    def _flush_track(self, track: _Track) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        if track.assembler is None and track.probe:
            self._set_type(track, track.codec_probe.leader or StreamType.UNKNOWN_VIDEO)
            self._replay(track, out)
        if track.assembler is not None:
            out.extend(track.assembler.flush())
            self._collect_dropped(track)
        return out

    def _drop_track(self, track: _Track) -> None:
        self.stats.dropped_bytes += track.probe_bytes
        track.probe.clear()
        track.probe_bytes = 0
        if track.assembler is not None:
            self.stats.dropped_bytes += track.assembler.drop()
            self._collect_dropped(track)

    def _collect_dropped(self, track: _Track) -> None:
        if track.assembler is not None:
            self.stats.dropped_bytes += track.assembler.dropped
            track.assembler.dropped = 0

    def _enforce_caps(self, track: _Track) -> None:
        self._collect_dropped(track)
        if track.buffered > self.max_unit_size:
            self.stats.oversized += 1
            self._drop_track(track)
        # One track holds at most max_unit_size <= max_buffered after the check above: no sum needed.
        if len(self._tracks) > 1 and sum(t.buffered for t in self._tracks.values()) > self.max_buffered:
            for other in self._tracks.values():
                if other.buffered:
                    self.stats.oversized += 1
                    self._drop_track(other)

    def _emit(self, units: list[AccessUnit], out: list[AccessUnit]) -> None:
        self.stats.units += len(units)
        out.extend(units)
