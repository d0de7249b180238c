"""Commands to devices whose answers a caller awaits: DeviceControl, RecordInfo, Broadcast, …

Device access sends a command MESSAGE someone built (:meth:`DeviceAccess.send_command`)
and reports what the device sends back as ``ManscdpReceived`` events; this broker pairs
them by (sender, CmdType, SN) the way :class:`~gateway.query_broker.QueryBroker` pairs
queries. The sender is the device whose registered session the answer came from (never
the answer's own ``DeviceID``: a RecordInfo answer names the channel, and anyone can
write a ``DeviceID``). Three shapes of use:

* :meth:`CommandBroker.send`: fire and forget (a PTZ automatic stop);
* :meth:`AnswerStream.wait_accepted`: the device's SIP answer to the MESSAGE (PTZ moves: no
  ``Response`` follows them, but the 403 of a gateway that will not let an upper steer must reach
  the person who pressed the button);
* :meth:`CommandBroker.request`: the first answer (``Response/DeviceControl``, ``Broadcast``);
* :meth:`CommandBroker.open`: every answer until the caller has enough (RecordInfo
  arrives in many MESSAGEs sharing one SN; the caller counts to ``SumNum``).

:meth:`CommandBroker.listen` gives services the unsolicited notifies they handle
(``MediaStatus`` outside a dialog, for instance) before they are counted as ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.gb28181.access import CommandBody
from gateway.gb28181.manscdp import ManscdpMessage

__all__ = ["AnswerStream", "CommandBroker", "CommandFailed", "CommandSender", "NotifyListener"]

NotifyListener = Callable[[str, ManscdpMessage], bool]
"""``(sender device, message) -> handled``: a service's hook for unsolicited messages."""


class CommandSender(Protocol):
    """What the broker needs of device access."""

    def send_command(self, device_id: str, cmd_type: str, body: CommandBody, now: float) -> int | None: ...
    def is_registered(self, device_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class CommandFailed:
    """The command MESSAGE itself was refused (>= 300) or never answered by SIP."""

    reason: str


@dataclass(eq=False)
class AnswerStream:
    """Every answer to one command, in arrival order, until :meth:`close` (or a failure)."""

    device_id: str
    cmd_type: str
    sn: int
    _queue: asyncio.Queue[ManscdpMessage | CommandFailed] = field(default_factory=asyncio.Queue)
    _close: Callable[[], None] = lambda: None
    # The device's SIP answer to the MESSAGE: 2xx (True) or a CommandFailed.
    accepted: asyncio.Future[bool | CommandFailed] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    async def next(self, timeout: float) -> ManscdpMessage | CommandFailed | None:
        """The next answer, a :class:`CommandFailed`, or None when none came within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None

    async def wait_accepted(self, timeout: float) -> bool | CommandFailed | None:
        """The device's SIP answer to the MESSAGE: True (2xx), a :class:`CommandFailed`, or None (none in time)."""
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self.accepted)
        except TimeoutError:
            return None

    def put(self, item: ManscdpMessage | CommandFailed) -> None:
        """Queue an answer (the broker's side)."""
        self._queue.put_nowait(item)
        if isinstance(item, CommandFailed) and not self.accepted.done():
            self.accepted.set_result(item)

    def close(self) -> None:
        """Stop receiving: later answers with this SN are counted as ignored."""
        self._close()


class CommandBroker:
    """Sends commands through device access and hands their answers to whoever awaits them."""

    def __init__(self, access: CommandSender, timeout: float = 10.0) -> None:
        self.access = access
        self.timeout = timeout
        self._streams: dict[tuple[str, str, int], AnswerStream] = {}
        self._listeners: dict[str, list[NotifyListener]] = {}

    def is_registered(self, device_id: str) -> bool:
        """Whether the device has a live registration (commands to others cannot be sent)."""
        return self.access.is_registered(device_id)

    def send(self, device_id: str, cmd_type: str, body: CommandBody) -> int | None:
        """Send without waiting for an answer; the SN, or None when the device has no session."""
        return self.access.send_command(device_id, cmd_type, body, asyncio.get_running_loop().time())

    def open(self, device_id: str, cmd_type: str, body: CommandBody) -> AnswerStream | None:
        """Send and collect every answer with the command's SN; None when the device has no session.

        The caller must :meth:`AnswerStream.close` the stream (``try/finally``).
        """
        sn = self.access.send_command(device_id, cmd_type, body, asyncio.get_running_loop().time())
        if sn is None:
            return None
        key = (device_id, cmd_type.lower(), sn)
        stream = AnswerStream(device_id, cmd_type, sn)
        stream._close = lambda: self._drop(key, stream)
        self._streams[key] = stream
        return stream

    async def request(
        self, device_id: str, cmd_type: str, body: CommandBody, timeout: float | None = None
    ) -> ManscdpMessage | CommandFailed | None:
        """Send and await the first answer: the message, a :class:`CommandFailed`, or None (no session, no answer)."""
        stream = self.open(device_id, cmd_type, body)
        if stream is None:
            return None
        try:
            return await stream.next(self.timeout if timeout is None else timeout)
        finally:
            stream.close()

    def listen(self, cmd_type: str, listener: NotifyListener) -> Callable[[], None]:
        """Offer unsolicited messages of ``cmd_type`` to ``listener``; returns the function that stops it."""
        listeners = self._listeners.setdefault(cmd_type.lower(), [])
        listeners.append(listener)
        return lambda: listeners.remove(listener) if listener in listeners else None

    def deliver(self, device_id: str, message: ManscdpMessage) -> bool:
        """A trusted message from ``device_id``'s session: True when an awaited answer or a listener took it."""
        cmd_type = str(message.cmd_type).lower()
        stream = self._streams.get((device_id, cmd_type, message.sn))
        if stream is not None:
            stream.put(message)
            return True
        return any(listener(device_id, message) for listener in tuple(self._listeners.get(cmd_type, ())))

    def delivered(self, device_id: str, cmd_type: str, sn: int) -> None:
        """The device answered the command MESSAGE 2xx."""
        stream = self._streams.get((device_id, cmd_type.lower(), sn))
        if stream is not None and not stream.accepted.done():
            stream.accepted.set_result(True)

    def fail(self, device_id: str, cmd_type: str, sn: int, reason: str) -> bool:
        """The command MESSAGE failed at the SIP level; True when someone was waiting for it."""
        stream = self._streams.get((device_id, cmd_type.lower(), sn))
        if stream is None:
            return False
        stream.put(CommandFailed(reason))
        return True

    def _drop(self, key: tuple[str, str, int], stream: AnswerStream) -> None:
        if self._streams.get(key) is stream:
            del self._streams[key]
