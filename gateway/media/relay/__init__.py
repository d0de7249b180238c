"""Relay: one upstream session per channel fanned out to many consumers (issue 3).

Sans-I/O: :class:`StreamFanout` queues access units per consumer with a GOP cache for
late joiners and drops slow consumers to the next key frame; :class:`FanoutRegistry`
keeps one fanout per channel and says when an upstream INVITE must be opened.
"""

from __future__ import annotations

from gateway.media.relay.fanout import (
    ConsumerAlreadyAttached,
    ConsumerState,
    ConsumerStats,
    FanoutRegistry,
    FanoutStats,
    RelayError,
    StreamFanout,
    UnknownConsumer,
)

__all__ = [
    "ConsumerAlreadyAttached",
    "ConsumerState",
    "ConsumerStats",
    "FanoutRegistry",
    "FanoutStats",
    "RelayError",
    "StreamFanout",
    "UnknownConsumer",
]
