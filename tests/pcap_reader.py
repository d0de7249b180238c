"""A tiny classic-pcap reader for tests: Ethernet + IPv4 + UDP only.

Enough for the loopback captures in tests/fixtures (link type 1, no VLAN tags,
no IP fragments). Anything else in the file is skipped, not guessed at.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple

Addr = tuple[str, int]

_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_LINKTYPE_ETHERNET = 1
_ETHERTYPE_IPV4 = 0x0800
_IPPROTO_UDP = 17


class UdpDatagram(NamedTuple):
    """One UDP payload with its addresses and capture time (seconds)."""

    src: Addr
    dst: Addr
    payload: bytes
    time: float


def read_udp(path: Path) -> list[UdpDatagram]:
    """Every UDP datagram of a classic pcap file, in capture order."""
    data = path.read_bytes()
    endian, tick = _MAGIC[data[:4]]
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    assert linktype == _LINKTYPE_ETHERNET, f"{path.name}: link type {linktype}"
    out: list[UdpDatagram] = []
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(endian + "IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        datagram = _udp(frame, sec + frac * tick)
        if datagram is not None:
            out.append(datagram)
    return out


def _udp(frame: bytes, time: float) -> UdpDatagram | None:
    if len(frame) < 14 or struct.unpack_from("!H", frame, 12)[0] != _ETHERTYPE_IPV4:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    total_length, _, flags_fragment, _, proto = struct.unpack_from("!HHHBB", ip, 2)
    if ip[0] >> 4 != 4 or proto != _IPPROTO_UDP or flags_fragment & 0x3FFF:
        return None
    src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
    sport, dport, udp_length = struct.unpack_from("!HHH", ip, ihl)
    assert ihl + udp_length <= total_length <= len(ip)
    payload = ip[ihl + 8 : ihl + udp_length]
    return UdpDatagram((src, sport), (dst, dport), payload, time)
