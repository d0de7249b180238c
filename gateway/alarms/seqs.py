"""Alarm seqs from blocks the store reserved (sans-I/O): unique across gateway nodes, no round trip per alarm.

Several nodes share one database, so an alarm's ``seq`` cannot be "the highest
I know + 1". The store reserves blocks of consecutive seqs from one counter
(:meth:`~gateway.alarms.store.AlarmStore.reserve_seqs`); intake numbers alarms
from the current block and the service asks for the next block while enough of
this one is left (``wants_more``), so a press normally costs no extra database
round trip. Blocks come from an increasing counter, so one node's seqs only
grow: its per-kindergarten delivery order (by seq) is its receipt order.
"""

from __future__ import annotations

from collections import deque
from typing import Final

__all__ = ["SEQ_BLOCK", "SeqBlocks", "SeqsExhausted"]

SEQ_BLOCK: Final = 256  # seqs reserved at once: a storm of 2,314 presses needs ~10 reservations


class SeqsExhausted(LookupError):
    """``take`` with no seq left: the caller must wait for the next block first."""


class SeqBlocks:
    """The seqs this node may still hand out, in increasing order."""

    def __init__(self, block: int = SEQ_BLOCK, low_water: int | None = None) -> None:
        if block < 1:
            raise ValueError("block must be at least 1")
        self.block = block
        self.low_water = block // 2 if low_water is None else low_water
        self._ranges: deque[range] = deque()
        self.reserved = 0  # blocks added (how many reservations intake needed)

    @property
    def available(self) -> int:
        """Seqs left."""
        return sum(len(r) for r in self._ranges)

    @property
    def wants_more(self) -> bool:
        """Whether the next block should be reserved now (at most ``low_water`` left)."""
        return self.available <= self.low_water

    def add(self, first: int, count: int) -> None:
        """A block the store reserved: ``first`` … ``first + count - 1`` (above every earlier block)."""
        if self._ranges and first < self._ranges[-1].stop:
            raise ValueError(f"block at {first} is not above the previous one")
        self._ranges.append(range(first, first + count))
        self.reserved += 1

    def take(self) -> int:
        """The next seq; :class:`SeqsExhausted` when none is left."""
        while self._ranges:
            current = self._ranges[0]
            if current:
                self._ranges[0] = current[1:]
                return current[0]
            self._ranges.popleft()
        raise SeqsExhausted("no alarm seq reserved")
