"""What the live service needs to know about a channel's streams, from the rest of the gateway.

:class:`StreamPlanner` answers, per channel: which kindergarten's uplink it uses, how to
name it in an uplink message, how its device spells the stream number
(:func:`~gateway.gb28181.stream_number.choose_style`: manufacturer from DeviceInfo in the
directory, ``X-GB-Ver`` from the device's REGISTER, configured overrides), and whether it
has a sub-stream at all: a device that refused the sub-stream, or answered it with its
main stream, is remembered so that it is not asked again (until the gateway restarts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from gateway.gb28181.stream_number import MAIN, SUB, StreamStyle, choose_style

if TYPE_CHECKING:
    from gateway.registry.directory import Directory

__all__ = ["StreamChoice", "StreamPlanner", "parse_choice"]

log = logging.getLogger("kgw.substreams")


class StreamChoice(Enum):
    """What a viewer asks for: a stream, or ``AUTO`` (whatever already runs, else main)."""

    MAIN = "main"
    SUB = "sub"
    AUTO = "auto"


def parse_choice(value: object) -> StreamChoice:
    """``"main"``/``"sub"``/``"auto"`` (also 0/1); ValueError otherwise."""
    if value in (0, "0"):
        return StreamChoice.MAIN
    if value in (1, "1"):
        return StreamChoice.SUB
    if isinstance(value, str):
        try:
            return StreamChoice(value.strip().lower())
        except ValueError:
            pass
    raise ValueError(f'stream must be "main", "sub" or "auto", not {str(value)[:20]!r}')


def stream_name(number: int) -> str:
    """``main`` / ``sub`` (``stream<n>`` beyond)."""
    return {MAIN: "main", SUB: "sub"}.get(number, f"stream{number}")


@dataclass
class StreamPlanner:
    """Per-channel stream facts; every lookup is optional (no directory: no kindergarten, 2022 form)."""

    directory: Directory | None = None
    gb_version_of: Callable[[str], str | None] = lambda device_id: None
    style_overrides: Mapping[str, StreamStyle] = field(default_factory=dict)
    default_style: StreamStyle = StreamStyle.STREAMNUMBER
    no_sub: dict[str, str] = field(default_factory=dict)  # channel -> why it has no sub-stream

    def kindergarten_of(self, channel_id: str) -> str | None:
        """The kindergarten whose uplink the channel's streams use (None: none known, no budget)."""
        if self.directory is None:
            return None
        channel = self.directory.channels.get(channel_id)
        if channel is not None and channel.kindergarten_id:
            return channel.kindergarten_id
        device = self.directory.device(channel.device_id if channel is not None else channel_id)
        return device.kindergarten_id if device is not None else None

    def label(self, channel_id: str, number: int) -> str:
        """``<channel> <name> main`` for uplink messages and the API."""
        channel = self.directory.channels.get(channel_id) if self.directory is not None else None
        name = f" {channel.name[:40]}" if channel is not None and channel.name else ""
        return f"{channel_id}{name} {stream_name(number)}"

    def style_of(self, device_id: str, channel_id: str) -> StreamStyle:
        """How this device spells the stream number in an offer."""
        manufacturer = ""
        if self.directory is not None:
            device = self.directory.device(device_id)
            channel = self.directory.channels.get(channel_id)
            manufacturer = (device.manufacturer if device is not None else "") or (
                channel.manufacturer if channel is not None else ""
            )
        return choose_style(
            device_id=device_id,
            manufacturer=manufacturer,
            gb_version=self.gb_version_of(device_id),
            overrides=self.style_overrides,
            default=self.default_style,
        )

    def has_sub(self, channel_id: str) -> bool:
        """False once the channel showed it has no sub-stream."""
        return channel_id not in self.no_sub

    def record_no_sub(self, channel_id: str, reason: str) -> None:
        """Remember that the channel has no sub-stream (it is asked for main from now on)."""
        if channel_id not in self.no_sub:
            log.info("channel %s has no sub-stream (%s): main stream from now on", channel_id, reason)
        self.no_sub[channel_id] = reason
