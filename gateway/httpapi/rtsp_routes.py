"""``/api/rtsp-cameras``: cameras that do not speak GB/T 28181, added by URL (issue 13).

Scope: provisioning (运维 and 市级管理员, within their district when they have one).
Changes are audited (``PROVISIONING``, the middleware). A password is write-only: no
answer ever carries it, only ``has_password``; URLs are returned without credentials.

The area given when a camera is added counts as the operator's *confirmation* only when
the caller may confirm areas (``AREA_CONFIRM``: a 市级管理员, or a 区级值班员 who cannot
add cameras); a 运维 gives a suggestion, and police see the camera only after someone
allowed to confirm it did — the configuration form must not be a way around the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.errors import StoreError
from gateway.httpapi.common import json_error, json_response
from gateway.httpapi.guard import denied, requires
from gateway.httpapi.identity import principal_of
from gateway.registry.directory import Directory
from gateway.registry.model import AreaTag
from gateway.rtsp.model import InvalidRtspCamera, RtspCamera, RtspCameraConfig
from gateway.rtsp.service import RtspCameraService, RtspStatus, UnknownRtspCamera
from gateway.security.principal import Principal
from gateway.security.scope import Capability, may_see_kindergarten

__all__ = ["RTSP_CAMERAS", "camera_json", "rtsp_part"]

RTSP_CAMERAS = web.AppKey("kgw_rtsp_cameras", RtspCameraService)
RTSP_DIRECTORY = web.AppKey("kgw_rtsp_directory", Directory)
_TEXT_FIELDS = ("name", "area", "url", "username", "password")


def camera_json(camera: RtspCamera, status: RtspStatus) -> dict[str, Any]:
    """A camera as the API shows it: never its password, never credentials in its URL."""
    return {
        "channel_id": camera.channel_id,
        "device_id": camera.device_id,
        "kindergarten_id": camera.kindergarten_id,
        "district_code": camera.district_code,
        "name": camera.name,
        "area": camera.area.value,
        "url": camera.safe_url,
        "username": camera.username,
        "has_password": bool(camera.password),
        "enabled": camera.enabled,
        "created_by": camera.created_by,
        "created_at": camera.created_at,
        "state": status.state.value,
        "state_label": status.label,
        "detail": status.detail,
        "since": status.since,
        "attempts": status.attempts,
    }


def _may_confirm(principal: Principal, app: web.Application, kindergarten_id: str) -> bool:
    kindergarten = app[RTSP_DIRECTORY].kindergartens.get(kindergarten_id)
    return kindergarten is not None and may_see_kindergarten(principal, kindergarten, Capability.AREA_CONFIRM)


def _in_scope(request: web.Request, kindergarten_id: str, target: str) -> Principal:
    """The caller, when it may provision this kindergarten (403 and an audit record otherwise)."""
    principal = principal_of(request)
    kindergarten = request.app[RTSP_DIRECTORY].kindergartens.get(kindergarten_id)
    if kindergarten is None or not may_see_kindergarten(principal, kindergarten, Capability.PROVISION):
        message = f"unknown kindergarten {kindergarten_id}"
        raise denied(request, principal, Capability.PROVISION, target, message)
    return principal


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise json_error(web.HTTPUnsupportedMediaType, "send application/json")
    try:
        body = await request.json()
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"bad JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "expected a JSON object")
    for key in _TEXT_FIELDS + ("kindergarten_id",):
        if key in body and not isinstance(body[key], str):
            raise json_error(web.HTTPBadRequest, f"{key} must be a string")
    if "enabled" in body and not isinstance(body["enabled"], bool):
        raise json_error(web.HTTPBadRequest, "enabled must be true or false")
    return body


@requires(Capability.PROVISION)
async def add_camera(request: web.Request) -> web.Response:
    """POST /api/rtsp-cameras {kindergarten_id, name, area, url, username?, password?} → 201 with the camera."""
    body = await _body(request)
    missing = [k for k in ("kindergarten_id", "name", "url") if not body.get(k)]
    if missing:
        raise json_error(web.HTTPBadRequest, f"missing {', '.join(missing)}")
    kindergarten_id = body["kindergarten_id"]
    principal = _in_scope(request, kindergarten_id, kindergarten_id)
    config = RtspCameraConfig(
        kindergarten_id,
        body["name"],
        body.get("area") or AreaTag.OTHER.value,
        body["url"],
        body.get("username", ""),
        body.get("password", ""),
    )
    service = request.app[RTSP_CAMERAS]
    try:
        camera = await service.add(
            config, principal.username, confirm=_may_confirm(principal, request.app, kindergarten_id)
        )
    except InvalidRtspCamera as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from exc
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    _, status = service.camera(camera.channel_id)
    return json_response(camera_json(camera, status), status=201)


@requires(Capability.PROVISION)
async def list_cameras(request: web.Request) -> web.Response:
    """GET /api/rtsp-cameras?kindergarten= : the cameras the caller may provision, with their state."""
    principal = principal_of(request)
    directory = request.app[RTSP_DIRECTORY]
    wanted = request.query.get("kindergarten")
    items = []
    for camera, status in request.app[RTSP_CAMERAS].cameras():
        kindergarten = directory.kindergartens.get(camera.kindergarten_id)
        if wanted and camera.kindergarten_id != wanted:
            continue
        if kindergarten is None or not may_see_kindergarten(principal, kindergarten, Capability.PROVISION):
            continue
        items.append(camera_json(camera, status))
    return json_response({"items": items, "total": len(items)})


def _existing(request: web.Request) -> tuple[RtspCameraService, RtspCamera, Principal]:
    service = request.app[RTSP_CAMERAS]
    channel_id = request.match_info["id"]
    try:
        camera, _ = service.camera(channel_id)
    except UnknownRtspCamera as exc:
        raise json_error(web.HTTPNotFound, str(exc)) from exc
    principal = _in_scope(request, camera.kindergarten_id, channel_id)
    return service, camera, principal


@requires(Capability.PROVISION)
async def edit_camera(request: web.Request) -> web.Response:
    """PATCH /api/rtsp-cameras/{id} {name?, area?, url?, username?, password?, enabled?}."""
    service, camera, principal = _existing(request)
    body = await _body(request)
    if "kindergarten_id" in body and body["kindergarten_id"] != camera.kindergarten_id:
        raise json_error(web.HTTPBadRequest, "a camera cannot move to another kindergarten: remove it and add it there")
    try:
        updated = await service.update(
            camera.channel_id,
            principal.username,
            **{k: body[k] for k in _TEXT_FIELDS if k in body},
            enabled=body.get("enabled"),
            confirm=_may_confirm(principal, request.app, camera.kindergarten_id),
        )
    except InvalidRtspCamera as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from exc
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    _, status = service.camera(updated.channel_id)
    return json_response(camera_json(updated, status))


@requires(Capability.PROVISION)
async def delete_camera(request: web.Request) -> web.Response:
    """DELETE /api/rtsp-cameras/{id}: stop pulling it; its channel leaves the catalog."""
    service, camera, principal = _existing(request)
    try:
        await service.remove(camera.channel_id, principal.username)
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    return json_response({"channel_id": camera.channel_id, "removed": True})


def rtsp_part(service: RtspCameraService, directory: Directory) -> Callable[[web.Application], None]:
    """The web part serving ``/api/rtsp-cameras``."""

    def add(app: web.Application) -> None:
        app[RTSP_CAMERAS], app[RTSP_DIRECTORY] = service, directory
        app.router.add_post("/api/rtsp-cameras", add_camera)
        app.router.add_get("/api/rtsp-cameras", list_cameras)
        app.router.add_patch("/api/rtsp-cameras/{id}", edit_camera)
        app.router.add_delete("/api/rtsp-cameras/{id}", delete_camera)

    return add
