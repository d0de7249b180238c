"""MPEG program stream (PS) demux and mux as GB/T 28181 uses it (docs/gb28181.md §17.3-§17.4, §20).

Sans-I/O: :class:`PsDemuxer` turns a PS byte stream, fed in chunks of any size, into
:class:`AccessUnit` values; :class:`PsMuxer` turns access units into the PS layout that
ireader/ZLMediaKit write (pack header per frame, system header and PSM on key frames).
"""

from __future__ import annotations

from gateway.media.ps.demux import PsDemuxer
from gateway.media.ps.headers import (
    PackHeader,
    PesHeader,
    ProgramStreamMap,
    PsmEntry,
    SystemHeader,
    SystemHeaderStream,
    crc32_mpeg,
)
from gateway.media.ps.model import AccessUnit, DemuxStats, PsDemuxError, StreamId, StreamType
from gateway.media.ps.mux import MuxableUnit, PsMuxer

__all__ = [
    "AccessUnit",
    "DemuxStats",
    "MuxableUnit",
    "PackHeader",
    "PesHeader",
    "ProgramStreamMap",
    "PsDemuxError",
    "PsDemuxer",
    "PsMuxer",
    "PsmEntry",
    "StreamId",
    "StreamType",
    "SystemHeader",
    "SystemHeaderStream",
    "crc32_mpeg",
]
