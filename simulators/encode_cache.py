"""Encode once, replay many times: a thread-safe LRU of whatever a simulator encodes.

Live clips (:mod:`simulators.video`), PTZ views (:mod:`simulators.ptz_view`) and recorded
seconds (:mod:`simulators.playback_video`) are each encoded once per key and replayed by
every camera that shows them. Misses are encoded in worker threads (``asyncio.to_thread``),
so the cache is thread-safe; two threads missing the same key at once may both encode, and
the first one stored wins. :meth:`EncodeCache.peek` never encodes: it is safe on the event loop.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from gateway.errors import ConfigError

__all__ = ["EncodeCache"]

_Key = TypeVar("_Key", bound=Hashable)
_Value = TypeVar("_Value")


class EncodeCache(Generic[_Key, _Value]):
    """``encode(key)`` once per key; the ``max_size`` most recently used kept."""

    def __init__(self, encode: Callable[[_Key], _Value], max_size: int, *, what: str = "encode cache") -> None:
        if max_size < 1:
            raise ConfigError(f"{what} size must be positive, not {max_size}")
        self.max_size = max_size
        self.hits = 0
        self.misses = 0
        self._encode = encode
        self._items: OrderedDict[_Key, _Value] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def peek(self, key: _Key) -> _Value | None:
        """The cached value, or None (never encodes)."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return value

    def get(self, key: _Key) -> _Value:
        """The cached value, encoding it on a miss (call from a worker thread)."""
        value = self.peek(key)
        if value is not None:
            return value
        with self._lock:
            self.misses += 1
        value = self._encode(key)
        with self._lock:
            value = self._items.setdefault(key, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)
        return value
