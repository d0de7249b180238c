"""An upper platform's DeviceControl, judged by its sharing policy and relayed to the device (docs/gb28181.md §16.5).

The gateway, as a lower platform, receives ``Control/DeviceControl`` MESSAGEs
about the channels it shares. :meth:`ControlRelay.status` is the SIP answer given
before anything is acted on (:meth:`UpperLink.message_status`):

* 403 for a channel the upper's policy does not share (an unknown channel too:
  the upper learns nothing about what exists outside its policy), for
  ``TeleBoot`` (never from an upper, as WVP), and for PTZ of a channel whose
  catalog does not say it can move;
* the police platform steers no camera (PTZCmd, HomePosition, DragZoom) unless
  its ``[[upper_platforms]]`` entry says ``allow_ptz = true``, and sends no other
  command but ``IFameCmd`` (a key frame changes nothing at the site);
* 400 for a body we cannot read, 480 while the device is not registered.

Accepted commands are sent to the device that serves the channel with our own SN
in the device's charset. PTZ is fire and forget (as from the console); for the
others the device's Result (ERROR when it does not answer) is sent back to the
upper as ``Response/DeviceControl`` with the upper's SN.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper import UpperLink
from gateway.command_broker import CommandBroker
from gateway.gb28181.manscdp import ManscdpMessage, ResultResponse, UnknownCommand
from gateway.gb28181.manscdp.control import (
    CMD_DEVICE_CONTROL,
    PTZ_TYPES_STEERABLE,
    ControlCommand,
    IFrame,
    InvalidControl,
    PtzControl,
    TeleBoot,
    control_body,
    control_result,
    is_device_control,
    parse_control,
    steers_camera,
)
from gateway.registry.model import Channel

__all__ = ["ANSWER_TIMEOUT", "ControlRelay"]

log = logging.getLogger("kgw.cascade.control")

ANSWER_TIMEOUT = 5.0  # s the device has to answer before the upper is told ERROR
NOT_AVAILABLE = 480  # SIP Temporarily Unavailable: the device is not registered


class ControlRelay:
    """Decides and relays the uppers' DeviceControl for one gateway."""

    def __init__(
        self, policies: Mapping[str, SharePolicy], channels: Mapping[str, Channel], *, timeout: float = ANSWER_TIMEOUT
    ) -> None:
        self.policies = policies
        self.channels = channels
        self.timeout = timeout
        self.commands: CommandBroker | None = None
        """Set by the composition root once device access's command broker exists."""
        self.relayed = 0
        self.refused = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, commands: CommandBroker) -> None:
        """Commands go to devices through this broker."""
        self.commands = commands

    # --- UpperLink hooks ----------------------------------------------------------------------

    def status(self, link: UpperLink, message: ManscdpMessage) -> int | None:
        """The SIP status for a DeviceControl of ``link``'s upper: 200 or its refusal; None: not a DeviceControl."""
        if not is_device_control(message):
            return None
        assert isinstance(message, UnknownCommand)
        verdict = self._verdict(link, message)
        if verdict != 200:
            self.refused += 1
            log.info("DeviceControl from %s about %s refused %d", link.name, message.device_id[:20], verdict)
        return verdict

    def _verdict(self, link: UpperLink, message: UnknownCommand) -> int:
        try:
            command = parse_control(message.element)
        except InvalidControl:
            return 400
        policy = self.policies.get(link.name)
        channel = self.channels.get(message.device_id)
        if policy is None or channel is None or not policy.allows_channel(channel):
            return 403
        if not _allowed(command, policy, link):
            return 403
        if steers_camera(command) and channel.ptz_type not in PTZ_TYPES_STEERABLE:
            return 403
        if self.commands is None or not self.commands.is_registered(channel.device_id):
            return NOT_AVAILABLE
        return 200

    def relay(self, link: UpperLink, message: ManscdpMessage, now: float) -> bool:
        """An accepted DeviceControl: send it on to the device (after :meth:`status` said 200); False: not one."""
        if not is_device_control(message):
            return False
        if self.commands is None:
            return True
        assert isinstance(message, UnknownCommand)
        channel = self.channels.get(message.device_id)
        try:
            command = parse_control(message.element)
        except InvalidControl:
            return True
        if channel is None:
            return True
        body = control_body(channel.id, command)
        self.relayed += 1
        if isinstance(command, PtzControl):
            self.commands.send(channel.device_id, CMD_DEVICE_CONTROL, body)
            return True
        task = asyncio.get_running_loop().create_task(self._await_result(link, message, channel.device_id, command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _await_result(
        self, link: UpperLink, message: UnknownCommand, device_id: str, command: ControlCommand
    ) -> None:
        assert self.commands is not None
        answer = await self.commands.request(
            device_id, CMD_DEVICE_CONTROL, control_body(message.device_id, command), self.timeout
        )
        result = "OK" if isinstance(answer, ResultResponse) and control_result(answer) else "ERROR"
        reply = ResultResponse(CMD_DEVICE_CONTROL, message.sn, message.device_id, result)
        link.client.reply(reply, asyncio.get_running_loop().time())

    def close(self) -> None:
        """Drop the answers still awaited (shutdown)."""
        for task in self._tasks:
            task.cancel()


def _allowed(command: ControlCommand, policy: SharePolicy, link: UpperLink) -> bool:
    """What this upper may ask for at all (the channel being shared is checked apart)."""
    if isinstance(command, TeleBoot):
        return False  # a reboot from above takes a kindergarten's recorder away: never (WVP: 403)
    if policy.level is not PolicyLevel.POLICE:
        return True
    if isinstance(command, IFrame):
        return True
    return steers_camera(command) and link.config.allow_ptz
