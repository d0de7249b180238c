"""Simulated PTZ cameras: a :class:`~gateway.gb28181.device_agent.DeviceFeature` that obeys DeviceControl, sans-I/O.

Each PTZ channel keeps a pan/tilt/zoom state (:class:`PtzPose`) that moves while a
PTZ command runs: the speed is integrated over the time until the next command (a
stop, another move, a preset call). Presets store a pose and give it back exactly;
``HomePosition`` returns the camera to its home preset after ``ResetTime`` seconds
without a command (a timer on the agent's client). Drag-zoom re-centres on the
drawn box and zooms by the window-to-box ratio.

Commands that are not PTZ (TeleBoot, RecordCmd, GuardCmd, AlarmCmd, IFameCmd, and
HomePosition/DragZoom too) are answered with a ``Response/DeviceControl`` Result,
as devices do; PTZ commands are not answered (WVP does not wait for one either).
:attr:`PtzCameras.result` (``OK``, ``ERROR`` or None for silence) lets tests
make the device misbehave.

Geometry, shared with the picture (``simulators/ptz_view.py``): the camera looks
at a panorama in normalised coordinates [0, 1]²; at zoom ``z`` it sees a window of
``0.5 / z`` of the panorama's width and height, centred at ``0.25 + (pan + 1) / 4``
horizontally and ``0.25 + (1 - tilt) / 4`` vertically (tilt up looks higher).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, replace
from typing import Final

from gateway.gb28181.device_agent import DeviceAgent
from gateway.gb28181.manscdp import ManscdpMessage, ResultResponse, UnknownCommand
from gateway.gb28181.manscdp.control import (
    CMD_DEVICE_CONTROL,
    AlarmReset,
    ControlCommand,
    DragZoom,
    GuardControl,
    HomePosition,
    InvalidControl,
    PtzCommand,
    PtzControl,
    RecordControl,
    TeleBoot,
    is_device_control,
    parse_control,
)
from gateway.gb28181.sip.endpoint import RequestReceived

__all__ = ["MAX_ZOOM", "ControlRecord", "PtzCameras", "PtzPose", "window_of"]

MAX_ZOOM: Final = 4.0
PAN_RATE: Final = 0.5  # pan/tilt units (the range is -1..1) per second at speed 255
ZOOM_RATE: Final = 1.0  # zoom factor per second at zoom speed 15
HISTORY: Final = 1000  # commands remembered per feature (tests and the benchmark read them)


@dataclass(frozen=True, slots=True)
class PtzPose:
    """Where a camera looks: ``pan`` and ``tilt`` in -1..1 (right, up positive), ``zoom`` in 1..MAX_ZOOM."""

    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 1.0

    def clamped(self) -> PtzPose:
        """The pose inside the mechanical range."""
        return PtzPose(_clamp(self.pan, -1.0, 1.0), _clamp(self.tilt, -1.0, 1.0), _clamp(self.zoom, 1.0, MAX_ZOOM))


def _clamp(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def window_of(pose: PtzPose) -> tuple[float, float, float, float]:
    """The part of the panorama the camera sees: ``(left, top, width, height)``, normalised to [0, 1]."""
    size = 0.5 / pose.zoom
    cx = 0.25 + (pose.pan + 1.0) / 4.0
    cy = 0.25 + (1.0 - pose.tilt) / 4.0
    return cx - size / 2, cy - size / 2, size, size


@dataclass(frozen=True, slots=True)
class ControlRecord:
    """A DeviceControl the device received (for tests and the latency benchmark)."""

    at: float
    channel_id: str
    command: ControlCommand


@dataclass(slots=True)
class _Motion:
    """What a running PTZ command does per second."""

    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0

    @property
    def moving(self) -> bool:
        return bool(self.pan or self.tilt or self.zoom)


@dataclass(slots=True)
class _Channel:
    pose: PtzPose = field(default_factory=PtzPose)
    since: float = 0.0  # when ``pose`` was last brought up to date
    motion: _Motion = field(default_factory=_Motion)
    presets: dict[int, PtzPose] = field(default_factory=dict)
    home: HomePosition | None = None
    focus: float = 0.0
    iris: float = 0.0

    def at(self, now: float) -> PtzPose:
        """The pose at ``now`` (motion integrated since the last update, clamped to the range)."""
        dt = max(0.0, now - self.since)
        if not self.motion.moving or dt == 0.0:
            return self.pose
        m = self.motion
        return PtzPose(self.pose.pan + m.pan * dt, self.pose.tilt + m.tilt * dt, self.pose.zoom + m.zoom * dt).clamped()

    def settle(self, now: float) -> None:
        """Bring the pose up to ``now`` before the motion changes."""
        self.pose = self.at(now)
        self.since = now


class PtzCameras:
    """The PTZ (and other DeviceControl) behaviour of one simulated device's channels."""

    def __init__(self, ptz_channels: Iterable[str], *, result: str | None = "OK") -> None:
        self.channels: dict[str, _Channel] = {channel: _Channel() for channel in ptz_channels}
        self.result = result
        """``Result`` of answered commands: "OK", "ERROR", or None to never answer (tests)."""
        self.received: deque[ControlRecord] = deque(maxlen=HISTORY)
        self.received_total = 0
        self.refused = 0  # unreadable commands, or PTZ for a channel without PTZ
        self.state: dict[str, str] = {}  # channel/device -> last RecordCmd/GuardCmd value (what it would do)

    # --- what the picture needs -------------------------------------------------------------------

    def pose(self, channel_id: str, now: float) -> PtzPose | None:
        """The channel's pose at ``now``; None for a channel without PTZ."""
        channel = self.channels.get(channel_id)
        return channel.at(now) if channel is not None else None

    def moving(self, channel_id: str) -> bool:
        """True while a PTZ command runs on the channel."""
        channel = self.channels.get(channel_id)
        return channel is not None and channel.motion.moving

    # --- DeviceFeature ------------------------------------------------------------------------------

    def on_message(self, agent: DeviceAgent, message: ManscdpMessage, now: float) -> bool:
        """Take ``Control/DeviceControl``; everything else is the agent's."""
        if not is_device_control(message):
            return False
        assert isinstance(message, UnknownCommand)
        try:
            command = parse_control(message.element)
        except InvalidControl:
            self.refused += 1
            self._answer(agent, message, now, ok=False)
            return True
        target = message.device_id
        self.received_total += 1
        self.received.append(ControlRecord(now, target, command))
        if isinstance(command, PtzControl):
            channel = self.channels.get(target)
            if channel is None:
                self.refused += 1  # a fixed camera ignores PTZ, as real ones do
            else:
                self._ptz(agent, target, channel, command.command, now)
            return True
        ok = self._other(agent, target, command, now)
        self._answer(agent, message, now, ok=ok)
        return True

    def on_call(self, agent: DeviceAgent, event: RequestReceived, now: float) -> bool:
        """Calls are not ours."""
        return False

    def on_timer(self, agent: DeviceAgent, key: Hashable, now: float) -> bool:
        """A channel's HomePosition reset time elapsed: go to its home preset."""
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == "ptz-home"):
            return False
        channel = self.channels.get(str(key[1]))
        if channel is not None and channel.home is not None and channel.home.enabled:
            home = channel.presets.get(channel.home.preset_index)
            if home is not None:
                channel.settle(now)
                channel.motion = _Motion()
                channel.pose = home
        return True

    # --- behaviour ----------------------------------------------------------------------------------

    def _ptz(self, agent: DeviceAgent, channel_id: str, channel: _Channel, command: PtzCommand, now: float) -> None:
        channel.settle(now)
        if command.is_motion:
            channel.motion = _Motion(
                pan=command.pan * PAN_RATE * command.data1 / 255,
                tilt=command.tilt * PAN_RATE * command.data2 / 255,
                zoom=command.zoom * ZOOM_RATE * command.data3 / 15,
            )
        elif command.is_focus_iris:
            channel.focus += command.focus * command.data1 / 255
            channel.iris += command.iris * command.data2 / 255
        elif (number := command.preset) is not None:
            channel.motion = _Motion()
            if command.instruction == 0x81:
                channel.presets[number] = channel.pose
            elif command.instruction == 0x82:
                channel.pose = channel.presets.get(number, channel.pose)
            else:
                channel.presets.pop(number, None)
        self._arm_home(agent, channel_id, channel, now)

    def _arm_home(self, agent: DeviceAgent, channel_id: str, channel: _Channel, now: float) -> None:
        """Any command restarts the idle time after which the camera goes home."""
        key = ("ptz-home", channel_id)
        if channel.home is not None and channel.home.enabled and channel.home.reset_time > 0:
            agent.client.set_timer(key, now + channel.home.reset_time)
        else:
            agent.client.cancel_timer(key)

    def _other(self, agent: DeviceAgent, target: str, command: ControlCommand, now: float) -> bool:
        """Commands answered with a Result; False for what this target cannot do."""
        channel = self.channels.get(target)
        if isinstance(command, HomePosition | DragZoom):
            if channel is None:
                self.refused += 1
                return False
            channel.settle(now)
            channel.motion = _Motion()
            if isinstance(command, HomePosition):
                channel.home = command
            else:
                channel.pose = _drag(channel.pose, command)
            self._arm_home(agent, target, channel, now)
            return True
        self.state[target] = _effect(command)
        return True

    def _answer(self, agent: DeviceAgent, message: UnknownCommand, now: float, *, ok: bool) -> None:
        if self.result is None:
            return  # a device that never answers (tests)
        result = self.result if ok else "ERROR"
        agent.client.reply(ResultResponse(CMD_DEVICE_CONTROL, message.sn, message.device_id, result), now)


def _effect(command: ControlCommand) -> str:
    """What a non-PTZ command would have done, in a word (tests read :attr:`PtzCameras.state`)."""
    if isinstance(command, RecordControl):
        return "recording" if command.start else "not_recording"
    if isinstance(command, GuardControl):
        return "armed" if command.arm else "disarmed"
    if isinstance(command, AlarmReset):
        return "alarm_reset"
    return "rebooted" if isinstance(command, TeleBoot) else "iframe_sent"


def _drag(pose: PtzPose, drag: DragZoom) -> PtzPose:
    """Centre the view on the drawn box; zoom in (or out) by how much of the window it covers."""
    left, top, width, height = window_of(pose)
    px = left + width * drag.mid_x / drag.length
    py = top + height * drag.mid_y / drag.width
    ratio = min(drag.length / drag.length_x, drag.width / drag.length_y)
    zoom = pose.zoom * ratio if drag.zoom_in else pose.zoom / ratio
    pan = (px - 0.25) * 4.0 - 1.0
    tilt = 1.0 - (py - 0.25) * 4.0
    return replace(pose, pan=pan, tilt=tilt, zoom=zoom).clamped()
