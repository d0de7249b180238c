"""HTTP endpoints of PTZ and device control (README "PTZ and device control").

* ``POST /api/channels/{id}/ptz {"action", "speed": 0..255, "preset": 1..255}``
  (PTZ_CONTROL): a move, zoom, focus, iris, stop or preset; fire and forget, with
  an automatic stop when the release never comes (:mod:`gateway.device_control`).
* ``GET /api/channels/{id}/ptz`` (PTZ_CONTROL): ``{"channel_id", "ptz_type", "steerable"}``,
  what the console's pad asks before it shows itself for a cell.
* ``POST /api/devices/{id}/control {"command", "channel_id"?, …}`` (DEVICE_CONTROL):
  ``teleboot``, ``record_start``/``record_stop`` (``stream_number``), ``guard_set``/
  ``guard_reset``, ``alarm_reset`` (``alarm_method``, ``alarm_type``),
  ``home_position`` (``enabled``, ``reset_time``, ``preset``), ``drag_zoom_in``/
  ``drag_zoom_out`` (``length``, ``width``, ``mid_x``, ``mid_y``, ``length_x``,
  ``length_y``) and ``iframe``; answered once the device's Result is in. Commands
  that move the camera (home position, drag zoom) also need PTZ_CONTROL on the
  channel and a PTZ-capable channel.

Out of scope answers like unknown (404); bad input 400; a channel without PTZ or
an offline device 409; a device answering ERROR 502; no answer 504. Every request
is audited (:mod:`gateway.httpapi.audit_routes`).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway.device_control import ControlError, DeviceControlService
from gateway.gb28181.manscdp.control import (
    PTZ_TYPES_STEERABLE,
    AlarmReset,
    ControlCommand,
    DragZoom,
    GuardControl,
    HomePosition,
    IFrame,
    InvalidControl,
    RecordControl,
    TeleBoot,
    ptz_command,
    steers_camera,
)
from gateway.httpapi.common import json_error, json_object, json_response
from gateway.httpapi.guard import denied, requires, scoped_channel
from gateway.httpapi.identity import principal_of
from gateway.registry.directory import Directory
from gateway.registry.model import Channel
from gateway.security.scope import Capability, allows, may_see_channel, may_see_device

__all__ = ["CONTROL", "CONTROL_DIRECTORY", "add_control_routes", "parse_device_command"]

CONTROL = web.AppKey("kgw_device_control", DeviceControlService)
CONTROL_DIRECTORY = web.AppKey("kgw_control_directory", Directory)

_STATUS: Final[dict[int, type[web.HTTPException]]] = {
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    502: web.HTTPBadGateway,
    504: web.HTTPGatewayTimeout,
}


def _failed(exc: ControlError) -> web.HTTPException:
    return json_error(_STATUS.get(exc.status, web.HTTPInternalServerError), str(exc))


def _steerable_channel(request: web.Request) -> Channel:
    """The path's channel if the caller may steer it; else the unknown channel's 404."""
    return scoped_channel(request, request.app[CONTROL_DIRECTORY].channels, Capability.PTZ_CONTROL)


@requires(Capability.PTZ_CONTROL)
async def channel_ptz_info(request: web.Request) -> web.Response:
    """GET /api/channels/{id}/ptz: whether the caller can steer this camera (its catalog PTZType)."""
    channel = _steerable_channel(request)
    steerable = channel.ptz_type in PTZ_TYPES_STEERABLE
    return json_response({"channel_id": channel.id, "ptz_type": channel.ptz_type, "steerable": steerable})


@requires(Capability.PTZ_CONTROL)
async def channel_ptz(request: web.Request) -> web.Response:
    """POST /api/channels/{id}/ptz: one PTZ command to the device serving the channel."""
    channel_id = _steerable_channel(request).id
    body = await json_object(request)
    try:
        command = ptz_command(body.get("action", ""), body.get("speed", 128), body.get("preset"))
    except InvalidControl as exc:
        raise json_error(web.HTTPBadRequest, f"{exc} (云台指令无效)") from exc
    try:
        sent = await request.app[CONTROL].ptz(channel_id, command)
    except ControlError as exc:
        raise _failed(exc) from exc
    return json_response({**sent, "action": body["action"]})


_INTS: Final = ("stream_number", "reset_time", "preset", "length", "width", "mid_x", "mid_y", "length_x", "length_y")


def _int(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidControl(f"{name} must be an integer")
    return value


def parse_device_command(body: dict[str, Any]) -> ControlCommand:
    """The command of a ``/control`` request body; :class:`InvalidControl` for anything else."""
    name = body.get("command")
    if name == "teleboot":
        return TeleBoot()
    if name in ("record_start", "record_stop"):
        stream = body.get("stream_number")
        return RecordControl(name == "record_start", _int(body, "stream_number") if stream is not None else None)
    if name in ("guard_set", "guard_reset"):
        return GuardControl(name == "guard_set")
    if name == "alarm_reset":
        method, kind = body.get("alarm_method"), body.get("alarm_type")
        return AlarmReset(str(method) if method is not None else None, str(kind) if kind is not None else None)
    if name == "home_position":
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidControl("enabled must be true or false")
        return HomePosition(enabled, _int(body, "reset_time", 0), _int(body, "preset", 0))
    if name in ("drag_zoom_in", "drag_zoom_out"):
        return DragZoom(
            name == "drag_zoom_in",
            *(_int(body, key) for key in ("length", "width", "mid_x", "mid_y", "length_x", "length_y")),
        )
    if name == "iframe":
        return IFrame()
    raise InvalidControl(f"unknown command {str(name)[:40]!r}")


@requires(Capability.DEVICE_CONTROL)
async def device_control(request: web.Request) -> web.Response:
    """POST /api/devices/{id}/control: a DeviceControl command; answered with the device's Result."""
    device_id = request.match_info["id"]
    directory = request.app[CONTROL_DIRECTORY]
    device = directory.device(device_id)
    principal = principal_of(request)
    if device is None or not may_see_device(principal, device, Capability.DEVICE_CONTROL):
        message = f"unknown device {device_id}"
        if device is None:
            raise json_error(web.HTTPNotFound, message)
        raise denied(request, principal, Capability.DEVICE_CONTROL, device_id, message)
    body = await json_object(request)
    try:
        command = parse_device_command(body)
    except (InvalidControl, TypeError) as exc:
        raise json_error(web.HTTPBadRequest, f"{exc} (设备控制指令无效)") from exc
    target = body.get("channel_id") or device_id
    if not isinstance(target, str):
        raise json_error(web.HTTPBadRequest, "channel_id must be a string")
    if target != device_id:
        channel = directory.channels.get(target)
        if channel is None or channel.device_id != device_id:
            raise json_error(web.HTTPNotFound, f"{target} is not a channel of device {device_id}")
        if steers_camera(command):
            if not allows(principal, Capability.PTZ_CONTROL) or not may_see_channel(
                principal, channel, Capability.PTZ_CONTROL
            ):
                raise denied(request, principal, Capability.PTZ_CONTROL, target, f"unknown channel {target}")
            if channel.ptz_type not in PTZ_TYPES_STEERABLE:
                raise json_error(web.HTTPConflict, f"channel {target} has no PTZ (该摄像机不支持云台控制)")
    elif steers_camera(command):
        raise json_error(web.HTTPBadRequest, f"{body.get('command')} needs the channel_id of a PTZ camera")
    try:
        result = await request.app[CONTROL].control(device_id, target, command)
    except ControlError as exc:
        raise _failed(exc) from exc
    return json_response({**result, "command": body.get("command")})


def add_control_routes(app: web.Application, service: DeviceControlService, directory: Directory) -> None:
    """Register the PTZ and device-control endpoints."""
    app[CONTROL], app[CONTROL_DIRECTORY] = service, directory
    app.router.add_get("/api/channels/{id}/ptz", channel_ptz_info)
    app.router.add_post("/api/channels/{id}/ptz", channel_ptz)
    app.router.add_post("/api/devices/{id}/control", device_control)
