"""Byte layouts of the program-stream structures (ISO/IEC 13818-1 §2.5.3, docs/gb28181.md §17.3).

Each structure is a frozen dataclass with ``parse`` and ``__bytes__``. The ``read_*``
functions are the demuxer's lenient, allocation-free probes over a growing buffer: they
answer ``NEED_MORE`` (0), ``BAD`` (-1) or a result, and never raise on bad bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.media.ps.model import PTS_MASK, PsDemuxError, StreamId

__all__ = [
    "BAD",
    "NEED_MORE",
    "PackHeader",
    "PesHeader",
    "ProgramStreamMap",
    "PsmEntry",
    "SystemHeader",
    "SystemHeaderStream",
    "crc32_mpeg",
    "decode_timestamp",
    "encode_timestamp",
    "read_pack_header_size",
    "read_pes_header",
]

NEED_MORE = 0
BAD = -1

Buffer = bytes | bytearray | memoryview

# --- 90 kHz timestamps and CRC ------------------------------------------------------


def encode_timestamp(prefix: int, ts: int) -> bytes:
    """Five bytes ``pppp TTT1 T*8 T*7 1 T*8 T*7 1`` for a 33-bit PTS/DTS (§2.4.3.7)."""
    ts &= PTS_MASK
    return bytes(
        (
            (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
            (ts >> 22) & 0xFF,
            ((ts >> 14) & 0xFE) | 1,
            (ts >> 7) & 0xFF,
            ((ts << 1) & 0xFE) | 1,
        )
    )


def decode_timestamp(buf: Buffer, pos: int) -> int:
    """Read a 33-bit PTS/DTS from five bytes; marker bits are not checked (lenient)."""
    return (
        ((buf[pos] >> 1) & 0x07) << 30
        | buf[pos + 1] << 22
        | (buf[pos + 2] >> 1) << 15
        | buf[pos + 3] << 7
        | buf[pos + 4] >> 1
    )


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg(data: Buffer) -> int:
    """CRC-32/MPEG-2 (poly 0x04C11DB7, init all ones, no reflection), as PSMs carry it."""
    crc = 0xFFFFFFFF
    for byte in bytes(data):
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


# --- pack header ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackHeader:
    """``pack_header()``: SCR (90 kHz base + 27 MHz extension) and program_mux_rate.

    ``mux_rate`` is in units of 50 bytes/s; ireader/ZLMediaKit always write 6106.
    """

    scr: int
    mux_rate: int = 6106
    scr_ext: int = 0
    stuffing: int = 0

    def __bytes__(self) -> bytes:
        scr = self.scr & PTS_MASK
        rate = self.mux_rate & 0x3FFFFF
        ext = self.scr_ext & 0x1FF
        return (
            b"\x00\x00\x01\xba"
            + bytes(
                (
                    0x44 | ((scr >> 27) & 0x38) | ((scr >> 28) & 0x03),
                    (scr >> 20) & 0xFF,
                    0x04 | ((scr >> 12) & 0xF8) | ((scr >> 13) & 0x03),
                    (scr >> 5) & 0xFF,
                    0x04 | ((scr << 3) & 0xF8) | (ext >> 7),
                    ((ext << 1) & 0xFE) | 1,
                    rate >> 14,
                    (rate >> 6) & 0xFF,
                    ((rate << 2) & 0xFC) | 0x03,
                    0xF8 | (self.stuffing & 0x07),
                )
            )
            + b"\xff" * (self.stuffing & 0x07)
        )

    @classmethod
    def parse(cls, data: Buffer) -> PackHeader:
        """Parse an MPEG-2 pack header (MPEG-1 and truncated ones are only skipped)."""
        if len(data) < 14 or bytes(data[:4]) != b"\x00\x00\x01\xba" or data[4] & 0xC0 != 0x40:
            raise PsDemuxError("not an MPEG-2 pack header")
        b = bytes(data[4:14])
        scr = (
            ((b[0] >> 3) & 0x07) << 30
            | (b[0] & 0x03) << 28
            | b[1] << 20
            | (b[2] >> 3) << 15
            | (b[2] & 0x03) << 13
            | b[3] << 5
            | b[4] >> 3
        )
        ext = (b[4] & 0x03) << 7 | b[5] >> 1
        rate = b[6] << 14 | b[7] << 6 | b[8] >> 2
        return cls(scr=scr, mux_rate=rate, scr_ext=ext, stuffing=b[9] & 0x07)


def read_pack_header_size(buf: Buffer, pos: int) -> int:
    """Length of the pack header starting at ``buf[pos]`` (``00 00 01 BA`` already seen).

    MPEG-2 (``01`` marker): 14 bytes plus 0-7 stuffing bytes. MPEG-1 (``0010``): 12 bytes,
    as FFmpeg's ``-f mpeg`` writes. Hikvision H.265 sometimes sends ``00 00 01 BA``
    followed at once by the next start code (docs/gb28181.md §17.4): that counts as a 4-byte pack.
    """
    avail = len(buf) - pos
    if avail < 5:
        return NEED_MORE
    marker = buf[pos + 4]
    if marker & 0xC0 == 0x40:
        size = 14 + (buf[pos + 13] & 0x07) if avail >= 14 else 14
        return size if avail >= size else NEED_MORE
    if marker & 0xF0 == 0x20:
        return 12 if avail >= 12 else NEED_MORE
    if marker == 0:
        if avail < 7:
            return NEED_MORE
        return 4 if buf[pos + 5] == 0 and buf[pos + 6] == 1 else BAD
    return BAD


# --- system header ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SystemHeaderStream:
    """One ``stream_id`` entry of a system header with its P-STD buffer bound."""

    stream_id: int
    buffer_scale: int
    buffer_size: int


@dataclass(frozen=True, slots=True)
class SystemHeader:
    """``system_header()`` as ireader writes it (rate_bound 26234, no locks, docs/gb28181.md §17.3)."""

    streams: tuple[SystemHeaderStream, ...]
    rate_bound: int = 26234
    audio_bound: int = 0
    video_bound: int = 0

    def __bytes__(self) -> bytes:
        rate = self.rate_bound & 0x3FFFFF
        body = bytearray(
            (
                0x80 | (rate >> 15),
                (rate >> 7) & 0xFF,
                ((rate << 1) & 0xFE) | 1,
                (self.audio_bound & 0x3F) << 2,  # fixed_flag 0, CSPS_flag 0
                0x20 | (self.video_bound & 0x1F),  # audio/video lock 0, marker
                0x7F,  # packet_rate_restriction_flag 0, reserved
            )
        )
        for s in self.streams:
            size = s.buffer_size & 0x1FFF
            body += bytes((s.stream_id, 0xC0 | (s.buffer_scale & 1) << 5 | size >> 8, size & 0xFF))
        return b"\x00\x00\x01\xbb" + len(body).to_bytes(2, "big") + bytes(body)

    @classmethod
    def parse(cls, data: Buffer) -> SystemHeader:
        """Parse a complete system header."""
        if len(data) < 12 or bytes(data[:4]) != b"\x00\x00\x01\xbb":
            raise PsDemuxError("not a system header")
        end = 6 + int.from_bytes(data[4:6], "big")
        if end > len(data) or end < 12:
            raise PsDemuxError("system header length out of range")
        b = bytes(data[:end])
        rate = (b[6] & 0x7F) << 15 | b[7] << 7 | b[8] >> 1
        streams = tuple(
            SystemHeaderStream(b[i], (b[i + 1] >> 5) & 1, (b[i + 1] & 0x1F) << 8 | b[i + 2])
            for i in range(12, end - 2, 3)
            if b[i] & 0x80
        )
        return cls(streams=streams, rate_bound=rate, audio_bound=b[9] >> 2, video_bound=b[10] & 0x1F)


# --- program stream map ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PsmEntry:
    """One elementary stream of a PSM: its ``stream_type`` byte, id and descriptors."""

    stream_type: int
    stream_id: int
    info: bytes = b""


@dataclass(frozen=True, slots=True)
class ProgramStreamMap:
    """``program_stream_map()`` (§2.5.4): stream_type per elementary stream id.

    ``parse`` is lenient the way ireader's reader is: the CRC is not checked, and when an
    ``elementary_stream_info_length`` runs past the map (Tiandy, some H.265 cameras; docs/gb28181.md
    §17.4) the entries read so far are kept and the rest is ignored.
    """

    version: int
    entries: tuple[PsmEntry, ...]
    info: bytes = b""

    def __bytes__(self) -> bytes:
        es_map = b"".join(
            bytes((e.stream_type, e.stream_id)) + len(e.info).to_bytes(2, "big") + e.info for e in self.entries
        )
        body = (
            bytes((0xC0 | (self.version & 0x1F), 0x01))  # current_next 1, single_extension 1, marker
            + len(self.info).to_bytes(2, "big")
            + self.info
            + len(es_map).to_bytes(2, "big")
            + es_map
        )
        head = b"\x00\x00\x01\xbc" + (len(body) + 4).to_bytes(2, "big") + body
        return head + crc32_mpeg(head).to_bytes(4, "big")

    @classmethod
    def parse(cls, data: Buffer) -> ProgramStreamMap:
        """Parse a PSM; raises :class:`PsDemuxError` only when no entry can be read at all."""
        if len(data) < 16 or bytes(data[:4]) != b"\x00\x00\x01\xbc":
            raise PsDemuxError("not a program stream map")
        end = min(len(data), 6 + int.from_bytes(data[4:6], "big"))
        b = bytes(data[:end])
        if end < 12:
            raise PsDemuxError("program stream map too short")
        version = b[6] & 0x1F
        info_end = 10 + int.from_bytes(b[8:10], "big")
        if info_end + 2 > end:
            raise PsDemuxError("program_stream_info_length runs past the map")
        info = b[10:info_end]
        map_end = min(info_end + 2 + int.from_bytes(b[info_end : info_end + 2], "big"), end - 4)
        entries = []
        i = info_end + 2
        while i + 4 <= map_end:
            info_len = int.from_bytes(b[i + 2 : i + 4], "big")
            if i + 4 + info_len > map_end:  # broken elementary_stream_info_length: keep the entry, stop
                entries.append(PsmEntry(b[i], b[i + 1]))
                break
            entries.append(PsmEntry(b[i], b[i + 1], b[i + 4 : i + 4 + info_len]))
            i += 4 + info_len
        return cls(version=version, entries=tuple(entries), info=info)


# --- PES ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PesHeader:
    """The fixed part of a PES packet header and its timestamps.

    ``packet_length`` is the 16-bit PES_packet_length (0 = unbounded video);
    ``header_size`` counts from the start code to the first payload byte.
    """

    stream_id: int
    packet_length: int
    header_size: int
    pts: int | None = None
    dts: int | None = None
    data_alignment: bool = False

    def __bytes__(self) -> bytes:
        """Render an MPEG-2 header; ``header_size`` and the field sizes are derived."""
        flags = 0
        fields = b""
        if self.pts is not None:
            if self.dts is not None and self.dts != self.pts:
                flags, fields = 0xC0, encode_timestamp(3, self.pts) + encode_timestamp(1, self.dts)
            else:
                flags, fields = 0x80, encode_timestamp(2, self.pts)
        return (
            bytes((0, 0, 1, self.stream_id))
            + self.packet_length.to_bytes(2, "big")
            + bytes((0x84 if self.data_alignment else 0x80, flags, len(fields)))
            + fields
        )


def read_pes_header(buf: Buffer, pos: int, end: int) -> PesHeader | int:
    """Parse the PES header at ``buf[pos]``, reading no further than ``end``.

    Accepts MPEG-2 headers (``10`` marker) and MPEG-1 ones (stuffing ``FF``, optional
    STD buffer field, ``0010``/``0011``/``0F`` timestamp field). Returns ``NEED_MORE``
    when ``end`` cuts the header, ``BAD`` when it cannot be a header.
    """
    if end - pos < 9:
        return NEED_MORE
    sid = buf[pos + 3]
    length = buf[pos + 4] << 8 | buf[pos + 5]
    if length and 6 + length < 9:
        return BAD
    flags0 = buf[pos + 6]
    if flags0 & 0xC0 == 0x80:
        size = 9 + buf[pos + 8]
        if length and size > 6 + length:
            return BAD
        if end - pos < size:
            return NEED_MORE
        pts_flags = buf[pos + 7] >> 6
        pts = dts = None
        if pts_flags == 1 or size < (9, 9, 14, 19)[pts_flags]:
            return BAD  # PTS_DTS_flags '01' is forbidden (§2.4.3.7), or the fields do not fit
        if pts_flags >= 2:
            pts = decode_timestamp(buf, pos + 9)
            dts = decode_timestamp(buf, pos + 14) if pts_flags == 3 else pts
        return PesHeader(sid, length, size, pts, dts, bool(flags0 & 0x04))
    return _read_mpeg1_pes_header(buf, pos, end, sid, length)


def _read_mpeg1_pes_header(buf: Buffer, pos: int, end: int, sid: int, length: int) -> PesHeader | int:
    """ISO/IEC 11172-1 §2.4.3.3 packet header (FFmpeg's ``-f mpeg`` output)."""
    complete = bool(length) and end >= pos + 6 + length
    limit = pos + 6 + length if complete else end
    short = BAD if complete else NEED_MORE
    i = pos + 6
    while i < limit and buf[i] == 0xFF and i - pos < 6 + 16:  # at most 16 stuffing bytes
        i += 1
    if i < limit and buf[i] & 0xC0 == 0x40:  # STD_buffer_scale and size
        i += 2
    if i >= limit:
        return short
    kind = buf[i] & 0xF0
    size = {0x20: 5, 0x30: 10}.get(kind, 1 if buf[i] == 0x0F else 0)
    if not size:
        return BAD
    if i + size > limit:
        return short
    pts = decode_timestamp(buf, i) if size >= 5 else None
    dts = decode_timestamp(buf, i + 5) if size == 10 else pts
    return PesHeader(sid, length, i + size - pos, pts, dts, False)


def is_pes_stream_id(stream_id: int) -> bool:
    """Stream ids whose packets carry an elementary stream we demux (audio or video)."""
    return 0xC0 <= stream_id <= 0xEF


def is_skippable_stream_id(stream_id: int) -> bool:
    """Packets we skip by their 16-bit length: system header, PSM copies, private, padding, 0xF0-0xFF."""
    return stream_id in (StreamId.SYSTEM_HEADER, StreamId.PRIVATE_1, StreamId.PADDING, StreamId.PRIVATE_2) or (
        stream_id >= 0xF0
    )
