"""Identity generation (Call-ID, tags, branches) passed into the cores.

Cores never call ``random`` themselves (docs/design.md §2): production code passes a
:class:`RandomIds` built on ``os.urandom``; tests pass a :class:`SeededIds` so
every message is byte-for-byte reproducible.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol

BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 §8.1.1.7


class IdSource(Protocol):
    """Where cores get fresh identifiers."""

    def token(self, nbytes: int = 8) -> str:
        """A fresh lower-case hex token of ``2 * nbytes`` characters."""
        ...

    def number(self, digits: int) -> int:
        """A fresh non-negative integer below ``10 ** digits`` (SN, SSRC sequence)."""
        ...


class RandomIds:
    """Unpredictable identifiers from the OS entropy pool.

    Every response needs a fresh To tag; one ``getrandom`` system call per tag
    was 4 % of the keepalive CPU, so random bytes are drawn 4 KiB at a time.
    """

    _POOL = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def _take(self, n: int) -> bytes:
        if self._pos + n > len(self._pool):
            self._pool = os.urandom(max(self._POOL, n))
            self._pos = 0
        chunk = self._pool[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def token(self, nbytes: int = 8) -> str:
        """See :class:`IdSource`."""
        return self._take(nbytes).hex()

    def number(self, digits: int) -> int:
        """See :class:`IdSource`."""
        modulus: int = 10**digits  # typeshed: int ** int is Any (a negative exponent gives a float)
        return int.from_bytes(self._take(8), "big") % modulus


class SeededIds:
    """Deterministic identifiers for tests: a counter hashed with a seed."""

    def __init__(self, seed: str = "kgw") -> None:
        self._seed = seed
        self._counter = 0

    def _next(self) -> bytes:
        self._counter += 1
        return hashlib.sha256(f"{self._seed}:{self._counter}".encode()).digest()

    def token(self, nbytes: int = 8) -> str:
        """See :class:`IdSource`."""
        return self._next()[:nbytes].hex()

    def number(self, digits: int) -> int:
        """See :class:`IdSource`."""
        modulus: int = 10**digits  # typeshed: int ** int is Any (a negative exponent gives a float)
        return int.from_bytes(self._next()[:8], "big") % modulus


def new_branch(ids: IdSource) -> str:
    """A Via branch with the RFC 3261 magic cookie."""
    return BRANCH_MAGIC + ids.token(8)
