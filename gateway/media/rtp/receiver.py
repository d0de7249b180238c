"""Sans-I/O RTP receiver for one GB/T 28181 media stream: filter, reorder, count.

The transport hands every datagram (or RFC 4571 frame) to :meth:`RtpReceiver.receive`
with its source and arrival time; :meth:`RtpReceiver.next_packet` then yields the
stream's packets in sequence order. Bad input never raises: it is dropped and
counted in :attr:`RtpReceiver.stats`.

Reordering uses a window of ``reorder_window`` sequence numbers. A gap is
declared lost (and skipped) when a packet arrives beyond the window, or when the
gap has been open ``max_delay`` seconds (checked on :meth:`receive` and
:meth:`flush`; :meth:`get_timer` says when). Sequence numbers are extended past
the 16-bit wrap internally. A jump of more than ``MAX_DROPOUT`` ahead or
``MAX_MISORDER`` behind is taken for a sender restart only when the next packet
follows it (RFC 3550 §A.1); the first such packet is dropped as ``out_of_range``.

Admission (issue 10, H3): a receiver made with ``armed=False`` drops everything as
``before_answer`` until :meth:`RtpReceiver.arm` names what the device's SDP answer
allows: the SSRCs (the answered ``y=``, and the offered one for devices that ignore
their own answer) and the source hosts (the answer's ``c=`` and the device's
authenticated signalling host, for NAT). Packets from another host are dropped as
``foreign_address``, with another SSRC as ``foreign_ssrc``. The first admitted packet
then locks the exact SSRC and source address; the receiver never adopts the first
sender of an open port.

Fast path (issue 12): once a stream is locked, a datagram from the locked address with
the plain GB/T 28181 header (``0x80``: no padding, extension or CSRC), an admitted
payload type, the locked SSRC and exactly the next sequence number while nothing is
held back is counted and queued as it came, without building an :class:`RtpPacket`.
That is what nearly every packet of a healthy stream is; everything else (the first
packet, gaps, reordering, restarts, other sources) takes the general path. Both give
the same counters, order and payloads: :meth:`RtpReceiver.next_payload` hands out the
payload bytes, :meth:`RtpReceiver.next_packet` the parsed packet.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields

from gateway.errors import ConfigError
from gateway.media.rtp.packet import (
    RTP_HEADER_SIZE,
    RtpPacket,
    RtpParseError,
    is_rtcp,
    seq_add,
    seq_diff,
    ts_diff,
)

Addr = tuple[str, int]

MAX_DROPOUT = 3000  # RFC 3550 §A.1
MAX_MISORDER = 100  # RFC 3550 §A.1
MAX_REORDER_WINDOW = 1024
DEFAULT_MAX_DELAY = 0.2
DEFAULT_MAX_READY = 1024
_RTCP_QUEUE = 64


@dataclass(frozen=True, slots=True)
class RtpReceiverStats:
    """Counters of one :class:`RtpReceiver`; a snapshot, taken by :attr:`RtpReceiver.stats`.

    ``received``/``bytes`` count RTP packets that passed the SSRC, PT and source
    filters (duplicates included); ``jitter`` is the RFC 3550 §6.4.1 interarrival
    jitter in timestamp units.
    """

    received: int = 0
    delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    reordered: int = 0
    late: int = 0  # arrived after its gap was declared lost (or before the first packet)
    out_of_range: int = 0  # far outside the window, not (yet) confirmed as a restart
    resyncs: int = 0
    foreign_ssrc: int = 0
    foreign_source: int = 0  # an allowed host, but not the address the stream locked on
    foreign_address: int = 0  # a host the device's answer does not name
    before_answer: int = 0  # arrived before arm(): the device has not answered yet
    bad_pt: int = 0
    malformed: int = 0
    rtcp: int = 0
    overflow: int = 0  # ready packets discarded because nobody called next_packet
    bytes: int = 0
    jitter: float = 0.0


_COUNTERS = tuple(f.name for f in fields(RtpReceiverStats) if f.name != "jitter")


class RtpReceiver:
    """Receive one RTP stream: SSRC/PT/source filtering, reordering, loss and jitter."""

    def __init__(
        self,
        expected_ssrc: int | None,
        payload_types: frozenset[int],
        clock_rate: int = 90000,
        reorder_window: int = 64,
        *,
        max_delay: float = DEFAULT_MAX_DELAY,
        lock_source: bool = True,
        max_ready: int = DEFAULT_MAX_READY,
        armed: bool = True,
    ) -> None:
        if not 1 <= reorder_window <= MAX_REORDER_WINDOW:
            raise ConfigError(f"reorder_window must be 1..{MAX_REORDER_WINDOW}, not {reorder_window}")
        if clock_rate <= 0 or max_delay < 0 or max_ready < 1:
            raise ConfigError("clock_rate and max_ready must be positive, max_delay not negative")
        if any(not 0 <= pt <= 0x7F for pt in payload_types):
            raise ConfigError(f"payload types must be 0..127: {sorted(payload_types)}")
        self._ssrc = expected_ssrc
        self._armed = armed
        self._ssrcs: frozenset[int] = frozenset() if expected_ssrc is None else frozenset({expected_ssrc})
        self._hosts: frozenset[str] | None = None  # None: any host
        self._payload_types = payload_types  # empty: accept any
        self._clock_rate = clock_rate
        self._window = reorder_window
        self._max_delay = max_delay
        self._lock_source = lock_source
        self._max_misorder = max(MAX_MISORDER, reorder_window)
        self._source: Addr | None = None
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._jitter = 0.0
        self._last_transit: tuple[float, int] | None = None  # (arrival, RTP timestamp)
        # Extended (unwrapped) sequence numbers: next to hand out, highest seen.
        self._next: int | None = None
        self._highest = 0
        self._probe: int | None = None  # the 16-bit seq that would confirm a restart
        self._buffer: dict[int, tuple[RtpPacket, float]] = {}
        self._gap_since: float | None = None
        # Ring of recently accepted extended seqs, to tell duplicates from late packets.
        self._seen = [-1] * (2 * self._max_misorder)
        # In-order packets: parsed ones, or (fast path) the datagram itself, a plain 12-byte header.
        self._ready: deque[RtpPacket | bytes] = deque()
        self._fast_source: Addr | None = None  # the locked source once the fast path may run
        self._max_ready = max_ready
        self._rtcp: deque[tuple[bytes, Addr]] = deque(maxlen=_RTCP_QUEUE)

    # --- inspection -------------------------------------------------------------

    @property
    def ssrc(self) -> int | None:
        """The SSRC accepted: the expected one, or the first valid packet's."""
        return self._ssrc

    @property
    def armed(self) -> bool:
        """Whether packets are admitted at all (False until the device's answer)."""
        return self._armed

    def arm(self, ssrcs: frozenset[int], hosts: frozenset[str] | None) -> None:
        """The device answered: admit its SSRCs (empty: any) from ``hosts`` (None: any host).

        A packet with one of ``ssrcs`` from one of ``hosts`` locks the stream on its
        SSRC and exact source address (see :attr:`ssrc`, :attr:`source`).
        """
        self._armed = True
        self._fast_source = None  # the next admitted packet re-checks the new hosts
        if self._ssrc is None:
            self._ssrcs = ssrcs
        self._hosts = hosts

    def admits_host(self, host: str) -> bool:
        """Whether a connection from ``host`` may carry this stream (TCP-PASSIVE accept check)."""
        return self._armed and (self._hosts is None or host in self._hosts)

    @property
    def source(self) -> Addr | None:
        """The address of the first accepted packet (the locked source)."""
        return self._source

    @property
    def stats(self) -> RtpReceiverStats:
        """A snapshot of the counters."""
        return RtpReceiverStats(**self._counts, jitter=self._jitter)

    @property
    def buffered(self) -> int:
        """Packets held back waiting for a gap to close."""
        return len(self._buffer)

    @property
    def ready(self) -> int:
        """Packets in order, waiting for :meth:`next_packet`."""
        return len(self._ready)

    # --- input ------------------------------------------------------------------

    def receive(self, data: bytes, source: Addr, arrival: float) -> None:
        """Take one datagram or RFC 4571 frame; never raises for bad input."""
        if source == self._fast_source and type(data) is bytes and len(data) >= RTP_HEADER_SIZE and data[0] == 0x80:
            second = data[1]
            if (
                (second & 0x7F in self._payload_types or not self._payload_types)
                and not 192 <= second <= 223
                and not self._buffer
                and (data[2] << 8 | data[3]) == (self._next or 0) & 0xFFFF
                and int.from_bytes(data[8:12]) == self._ssrc
            ):
                self._receive_next(data, arrival)
                return
        if not self._armed:
            self._counts["before_answer"] += 1
            return
        if self._hosts is not None and source[0] not in self._hosts:
            self._counts["foreign_address"] += 1
            return
        if is_rtcp(data):
            self._counts["rtcp"] += 1
            self._rtcp.append((bytes(data), source))
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            self._counts["malformed"] += 1
            return
        if self._admit(packet, source):
            self._counts["received"] += 1
            self._counts["bytes"] += len(data)
            self._insert(packet, arrival)
            if self._lock_source and self._source == source:
                self._fast_source = source
        self._expire(arrival)

    def _receive_next(self, data: bytes, arrival: float) -> None:
        """The fast path: exactly what :meth:`_insert` does for the next packet with nothing buffered."""
        counts = self._counts
        counts["received"] += 1
        counts["bytes"] += len(data)
        timestamp = int.from_bytes(data[4:8])
        last = self._last_transit  # _update_jitter, inlined
        self._last_transit = (arrival, timestamp)
        if last is not None:
            d = (arrival - last[0]) * self._clock_rate - ts_diff(timestamp, last[1])
            self._jitter += (abs(d) - self._jitter) / 16
        ext = self._next
        assert ext is not None
        self._probe = None
        self._highest = ext  # nothing is buffered, so every seen packet is below `ext`
        self._seen[ext % len(self._seen)] = ext
        self._next = ext + 1
        ready = self._ready
        if len(ready) >= self._max_ready:  # _push, inlined
            ready.popleft()
            counts["overflow"] += 1
        ready.append(data)

    def flush(self, now: float) -> None:
        """Skip gaps that have been open ``max_delay`` seconds by ``now``."""
        self._expire(now)

    def get_timer(self) -> float | None:
        """When :meth:`flush` should next be called, or ``None`` if no gap is open."""
        return None if self._gap_since is None else self._gap_since + self._max_delay

    # --- output -----------------------------------------------------------------

    def next_packet(self) -> RtpPacket | None:
        """The next packet in sequence order, or ``None`` when none is ready."""
        if not self._ready:
            return None
        self._counts["delivered"] += 1
        item = self._ready.popleft()
        return RtpPacket.parse(item) if isinstance(item, bytes) else item

    def next_payload(self) -> bytes | None:
        """The payload of the next packet in sequence order (what :meth:`next_packet` would carry)."""
        if not self._ready:
            return None
        self._counts["delivered"] += 1
        item = self._ready.popleft()
        return item[RTP_HEADER_SIZE:] if isinstance(item, bytes) else item.payload

    def next_rtcp(self) -> tuple[bytes, Addr] | None:
        """The next RTCP datagram seen on the RTP port (RFC 5761 mux), for the RTCP layer."""
        return self._rtcp.popleft() if self._rtcp else None

    # --- filtering ----------------------------------------------------------------

    def _admit(self, packet: RtpPacket, source: Addr) -> bool:
        if self._payload_types and packet.payload_type not in self._payload_types:
            self._counts["bad_pt"] += 1
            return False
        if self._ssrc is None:
            # docs/gb28181.md §15.4: a device may stream with its own y= (or ignore ours):
            # arm() names the SSRCs its answer allows; an empty set adopts the first.
            if self._ssrcs and packet.ssrc not in self._ssrcs:
                self._counts["foreign_ssrc"] += 1
                return False
            self._ssrc = packet.ssrc
        elif packet.ssrc != self._ssrc:
            self._counts["foreign_ssrc"] += 1
            return False
        if self._source is None:
            self._source = source
        elif self._lock_source and source != self._source:
            self._counts["foreign_source"] += 1
            return False
        return True

    # --- reordering ----------------------------------------------------------------

    def _insert(self, packet: RtpPacket, arrival: float) -> None:
        if self._next is None:
            self._next = self._highest = packet.sequence
        delta = seq_diff(packet.sequence, self._next & 0xFFFF)
        if delta > MAX_DROPOUT or delta < -self._max_misorder:
            if packet.sequence != self._probe:
                self._probe = seq_add(packet.sequence, 1)
                self._counts["out_of_range"] += 1
                return
            delta = self._restart(packet.sequence)
        self._probe = None
        ext = self._next + delta
        if delta < 0 or ext in self._buffer:
            seen = self._seen[ext % len(self._seen)] == ext
            self._counts["duplicates" if seen else "late"] += 1
            return
        self._update_jitter(packet.timestamp, arrival)
        if ext < self._highest:
            self._counts["reordered"] += 1
        else:
            self._highest = ext
        self._seen[ext % len(self._seen)] = ext
        if delta >= self._window:
            self._skip_to(ext - self._window + 1)
        self._buffer[ext] = (packet, arrival)
        self._release()

    def _restart(self, sequence: int) -> int:
        """Confirmed sender restart: hand out what is buffered, start over at ``sequence``."""
        self._counts["resyncs"] += 1
        if self._buffer:
            self._skip_to(max(self._buffer) + 1)
        assert self._next is not None
        # New extended numbers stay above every old one, so the ring cannot match stale entries.
        self._next = self._highest = (((self._highest >> 16) + 2) << 16) | sequence
        self._last_transit = None
        return 0

    def _skip_to(self, target: int) -> None:
        """Advance to ``target``: buffered packets below it go out, missing ones are lost."""
        assert self._next is not None
        released = sorted(ext for ext in self._buffer if ext < target)
        for ext in released:
            self._push(self._buffer.pop(ext)[0])
        self._counts["lost"] += max(0, target - self._next - len(released))
        self._next = max(self._next, target)
        self._gap_since = None

    def _release(self) -> None:
        assert self._next is not None
        while self._next in self._buffer:
            self._push(self._buffer.pop(self._next)[0])
            self._next += 1
        if not self._buffer:
            self._gap_since = None
        elif self._gap_since is None:
            self._gap_since = min(arrival for _, arrival in self._buffer.values())

    def _expire(self, now: float) -> None:
        # Compared as get_timer() computes it, so flush(get_timer()) always skips.
        while self._gap_since is not None and now >= self._gap_since + self._max_delay:
            self._skip_to(min(self._buffer))
            self._release()

    def _push(self, packet: RtpPacket | bytes) -> None:
        if len(self._ready) >= self._max_ready:
            self._ready.popleft()
            self._counts["overflow"] += 1
        self._ready.append(packet)

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        # RFC 3550 §6.4.1 / §A.8: J += (|D| - J) / 16, D the change in transit
        # time, in timestamp units. Differences keep it right across the
        # 32-bit timestamp wrap.
        last = self._last_transit
        self._last_transit = (arrival, timestamp)
        if last is None:
            return
        d = (arrival - last[0]) * self._clock_rate - ts_diff(timestamp, last[1])
        self._jitter += (abs(d) - self._jitter) / 16
