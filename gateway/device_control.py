"""PTZ and DeviceControl on asyncio: what the HTTP routes (and the benchmark) call.

PTZ commands are fire and forget (:meth:`CommandBroker.send`, as WVP does): a
console button held down sends a move, its release the stop. A stop lost on the
way (a closed browser tab, a dropped request) must not leave a camera spinning,
so every move arms an automatic stop per channel (``ptz_auto_stop`` seconds,
re-armed by each move, cancelled by the stop); the console repeats a held move
well within that time. Other commands (TeleBoot, RecordCmd, GuardCmd, AlarmCmd,
HomePosition, DragZoom, IFameCmd) await the device's ``Response/DeviceControl``
Result (:meth:`CommandBroker.request`).

Only channels whose catalog says they can move (``PTZType`` 1, 2, 4 or 5, see
:data:`~gateway.gb28181.manscdp.control.PTZ_TYPES_STEERABLE`) take PTZ; a fixed
bullet (3) or a channel whose catalog gave no type is refused before anything is
sent. Errors carry the HTTP status the route answers with.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from gateway.command_broker import AnswerStream, CommandBroker, CommandFailed
from gateway.errors import GatewayError
from gateway.gb28181.manscdp.control import (
    CMD_DEVICE_CONTROL,
    PTZ_TYPES_STEERABLE,
    ControlCommand,
    PtzCommand,
    PtzControl,
    control_body,
    control_result,
)
from gateway.registry.directory import Directory

__all__ = [
    "ControlError",
    "DeviceControlService",
    "DeviceOffline",
    "DeviceRefused",
    "NoAnswer",
    "NotPtzCapable",
    "UnknownTarget",
]

log = logging.getLogger("kgw.control")

_MOTION_STOP = PtzCommand(0x00)
_FI_STOP = PtzCommand(0x40)


class ControlError(GatewayError):
    """A command that could not be carried out; ``status`` is the HTTP answer."""

    status = 500


class UnknownTarget(ControlError):
    """No such channel or device."""

    status = 404


class NotPtzCapable(ControlError):
    """PTZ for a channel whose catalog does not say it can move."""

    status = 409


class DeviceOffline(ControlError):
    """The device has no live registration: nothing can be sent."""

    status = 409


class DeviceRefused(ControlError):
    """The device answered ``Result ERROR``, or refused the MESSAGE at the SIP level."""

    status = 502


class NoAnswer(ControlError):
    """The device did not answer in time."""

    status = 504


@dataclass(slots=True)
class _AutoStop:
    handle: asyncio.TimerHandle
    device_id: str
    stop: PtzCommand


class DeviceControlService:
    """Sends PTZ and DeviceControl commands to the devices that serve channels."""

    def __init__(
        self,
        commands: CommandBroker,
        directory: Directory,
        *,
        auto_stop: float = 2.0,
        answer_timeout: float = 5.0,
        confirm_timeout: float = 2.0,
    ) -> None:
        self.commands = commands
        self.confirm_timeout = confirm_timeout  # s for the SIP answer to a PTZ MESSAGE
        self.directory = directory
        self.auto_stop = auto_stop
        self.answer_timeout = answer_timeout
        self.sent = 0
        self.auto_stops = 0
        self._timers: dict[str, _AutoStop] = {}

    # --- PTZ -------------------------------------------------------------------------------------

    async def ptz(self, channel_id: str, command: PtzCommand) -> dict[str, Any]:
        """Send a PTZ command for a PTZ-capable channel; what was sent once the device took the MESSAGE.

        No ``Response`` follows a PTZ command (WVP does not wait for one either), but the SIP
        answer does, within milliseconds: a refusal (the 403 of a gateway that will not let
        this platform steer) is reported as :class:`DeviceRefused`. Without any answer within
        ``confirm_timeout`` (a lossy UDP path still retransmitting) the command counts as sent,
        ``confirmed`` False.
        """
        channel = self.directory.channels.get(channel_id)
        if channel is None:
            raise UnknownTarget(f"unknown channel {channel_id}")
        if channel.ptz_type not in PTZ_TYPES_STEERABLE:
            kind = "unknown" if channel.ptz_type is None else str(channel.ptz_type)
            raise NotPtzCapable(f"channel {channel_id} has no PTZ (PTZType {kind}) (该摄像机不支持云台控制)")
        device_id = channel.device_id
        pending = self._timers.get(channel_id)
        if command.is_stop and pending is not None:
            command = pending.stop  # "stop" ends whatever runs: a focus/iris move needs the FI stop
        stream = self._open(device_id, channel_id, command)
        try:
            outcome = await stream.wait_accepted(self.confirm_timeout)
        finally:
            stream.close()
        if isinstance(outcome, CommandFailed):
            raise DeviceRefused(f"设备拒绝云台命令 (the device refused the PTZ command: {outcome.reason})")
        moving = (command.is_motion or command.is_focus_iris) and not command.is_stop
        if moving:
            self._arm(channel_id, device_id, _FI_STOP if command.is_focus_iris else _MOTION_STOP)
        elif command.is_motion or command.is_focus_iris or command.preset is not None:
            self._disarm(channel_id)
        return {
            "channel_id": channel_id,
            "device_id": device_id,
            "ptz_cmd": command.encode(),
            "sn": stream.sn,
            "confirmed": outcome is True,
            "auto_stop": self.auto_stop if moving else None,
        }

    def _open(self, device_id: str, channel_id: str, command: PtzCommand) -> AnswerStream:
        if not self.commands.is_registered(device_id):
            raise DeviceOffline(f"device {device_id} is offline (设备离线)")
        stream = self.commands.open(device_id, CMD_DEVICE_CONTROL, control_body(channel_id, PtzControl(command)))
        if stream is None:
            raise DeviceOffline(f"device {device_id} is offline (设备离线)")
        self.sent += 1
        return stream

    def _send(self, device_id: str, channel_id: str, command: PtzCommand) -> int:
        if not self.commands.is_registered(device_id):
            raise DeviceOffline(f"device {device_id} is offline (设备离线)")
        sn = self.commands.send(device_id, CMD_DEVICE_CONTROL, control_body(channel_id, PtzControl(command)))
        if sn is None:
            raise DeviceOffline(f"device {device_id} is offline (设备离线)")
        self.sent += 1
        return sn

    def _arm(self, channel_id: str, device_id: str, stop: PtzCommand) -> None:
        self._disarm(channel_id)
        loop = asyncio.get_running_loop()
        handle = loop.call_later(self.auto_stop, self._fire, channel_id)
        self._timers[channel_id] = _AutoStop(handle, device_id, stop)

    def _disarm(self, channel_id: str) -> None:
        pending = self._timers.pop(channel_id, None)
        if pending is not None:
            pending.handle.cancel()

    def _fire(self, channel_id: str) -> None:
        """No stop came in time (a lost release): stop the camera ourselves."""
        pending = self._timers.pop(channel_id, None)
        if pending is None:
            return
        self.auto_stops += 1
        log.info("PTZ of %s: no stop within %.1f s, stopping it", channel_id, self.auto_stop)
        try:
            self._send(pending.device_id, channel_id, pending.stop)
        except ControlError as exc:
            log.info("automatic PTZ stop of %s not sent: %s", channel_id, exc)

    def moving(self, channel_id: str) -> bool:
        """True while an automatic stop is armed for the channel (a move runs)."""
        return channel_id in self._timers

    # --- other DeviceControl ------------------------------------------------------------------------

    async def control(self, device_id: str, target_id: str, command: ControlCommand) -> dict[str, Any]:
        """Send ``command`` about ``target_id`` (the device or one of its channels) and await its Result."""
        if device_id not in self.directory.devices:
            raise UnknownTarget(f"unknown device {device_id}")
        if target_id != device_id and self.directory.device_of(target_id) != device_id:
            raise UnknownTarget(f"{target_id} is not a channel of device {device_id}")
        if not self.commands.is_registered(device_id):
            raise DeviceOffline(f"device {device_id} is offline (设备离线)")
        self.sent += 1
        answer = await self.commands.request(
            device_id, CMD_DEVICE_CONTROL, control_body(target_id, command), self.answer_timeout
        )
        if answer is None:
            if not self.commands.is_registered(device_id):
                raise DeviceOffline(f"device {device_id} is offline (设备离线)")
            raise NoAnswer(f"device {device_id} did not answer within {self.answer_timeout:g} s (设备未应答)")
        if isinstance(answer, CommandFailed):
            raise DeviceRefused(f"device {device_id} refused the command: {answer.reason} (设备拒绝)")
        if control_result(answer) is not True:
            raise DeviceRefused(f"device {device_id} answered Result ERROR (设备执行失败)")
        return {"device_id": device_id, "target_id": target_id, "result": "OK"}

    def close(self) -> None:
        """Cancel every pending automatic stop (shutdown)."""
        for pending in self._timers.values():
            pending.handle.cancel()
        self._timers.clear()
