"""``/api/onvif``: find ONVIF cameras on the local network and read their profiles (issue 13).

``POST /api/onvif/discover {"host"?, "port"?, "interface"?, "timeout"?}`` probes by
WS-Discovery: multicast on the local segment, or unicast to ``host``; answers
``{"mode", "devices": [...], "dropped": {reason: count}}``.
``POST /api/onvif/profiles {"xaddr", "username", "password"}`` reads the camera's
manufacturer, model and profiles with their RTSP URIs. Adding a profile as a camera
is ``POST /api/rtsp-cameras`` (the rtsp routes).

Scope: :attr:`Capability.PROVISION` (运维 and 市级管理员): both make the gateway
send packets into a network, so only the people who install cameras may. Both are
audited by the handler (``PROVISIONING``, op ``onvif discover`` / ``onvif profiles``,
the host as target, counts and the error kind as detail). The password is used for
the digest and dropped: it is never logged, audited or echoed. Errors answer
``{"error": <zh-CN sentence>, "kind": <stable code>}`` with the status each
:class:`~gateway.onvif.errors.OnvifError` names. At most :data:`MAX_RUNNING` ONVIF
operations run at once per node (429 beyond), so the API cannot be turned into a
network scanner.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.httpapi.audit_sessions import caller_source
from gateway.httpapi.common import json_error, json_response
from gateway.httpapi.guard import requires
from gateway.httpapi.identity import AUDIT, principal_of
from gateway.logsafe import printable
from gateway.onvif.client import lookup_profiles
from gateway.onvif.discovery import discover
from gateway.onvif.errors import OnvifAddressError, OnvifError
from gateway.onvif.soap import Credentials
from gateway.onvif.urls import parse_xaddr
from gateway.onvif.wsdiscovery import DISCOVERY_PORT
from gateway.security.scope import Capability

__all__ = ["MAX_RUNNING", "ONVIF_LIMITS", "OnvifLimits", "add_onvif_routes"]

log = logging.getLogger("kgw.http.onvif")

MAX_RUNNING: Final = 4
MAX_FIELD: Final = 128  # user name, password, interface, host
_STATUS: Final[dict[int, type[web.HTTPException]]] = {
    400: web.HTTPBadRequest,
    422: web.HTTPUnprocessableEntity,
    502: web.HTTPBadGateway,
    504: web.HTTPGatewayTimeout,
}


class OnvifLimits:
    """How long a probe listens and a lookup may take, and how many run at once."""

    def __init__(self, discover_timeout: float = 3.0, lookup_timeout: float = 15.0, max_running: int = MAX_RUNNING):
        self.discover_timeout = discover_timeout
        self.lookup_timeout = lookup_timeout
        self.max_running = max_running
        self.running = 0


ONVIF_LIMITS = web.AppKey("kgw_onvif_limits", OnvifLimits)


def _error(exc: OnvifError) -> web.HTTPException:
    cls = _STATUS.get(exc.status_hint, web.HTTPBadGateway)
    return cls(
        text=json.dumps({"error": exc.message_zh, "kind": exc.kind}, ensure_ascii=False),
        content_type="application/json",
    )


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, "请求须为 JSON 对象 (expected a JSON object)") from exc
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, "请求须为 JSON 对象 (expected a JSON object)")
    return body


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise json_error(web.HTTPBadRequest, f"缺少 {name}")
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise json_error(web.HTTPBadRequest, f"{name} 须为不超过 {MAX_FIELD} 个字符的文本")
    return value


def _audit(request: web.Request, op: str, target: str, outcome: str, detail: dict[str, object]) -> None:
    recorder = request.app.get(AUDIT)
    if recorder is None:
        return
    principal = principal_of(request)
    recorder.record(
        AuditAction.PROVISIONING,
        actor=principal,
        target=target,
        source=caller_source(request, principal),
        outcome=outcome,
        detail={"op": op, "route": f"{request.method} {request.path}", **detail},
    )


class _Slot:
    """One of the node's concurrent ONVIF operations (429 when none is free)."""

    def __init__(self, limits: OnvifLimits) -> None:
        self.limits = limits

    def __enter__(self) -> None:
        if self.limits.running >= self.limits.max_running:
            raise json_error(web.HTTPTooManyRequests, "ONVIF 操作过多,请稍后再试")
        self.limits.running += 1

    def __exit__(self, *exc: object) -> None:
        self.limits.running -= 1


@requires(Capability.PROVISION)
async def discover_cameras(request: web.Request) -> web.Response:
    """POST /api/onvif/discover: WS-Discovery, multicast or unicast to ``host``."""
    limits = request.app[ONVIF_LIMITS]
    body = await _body(request)
    host = _text(body, "host")
    interface = _text(body, "interface")
    port = body.get("port", DISCOVERY_PORT)
    timeout = body.get("timeout", limits.discover_timeout)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise json_error(web.HTTPBadRequest, "port 须为 1–65535")
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0.2 <= timeout <= 10:
        raise json_error(web.HTTPBadRequest, "timeout 须为 0.2–10 秒")
    target = host or f"multicast:{interface or 'default'}"
    started = time.monotonic()
    with _Slot(limits):
        try:
            result = await discover(host=host, port=port, interface=interface, timeout=float(timeout))
        except OnvifAddressError as exc:
            _audit(request, "onvif discover", target, f"http_{exc.status_hint}", {"kind": exc.kind})
            raise _error(exc) from exc
        except OSError as exc:  # no multicast route, interface not ours, address family
            _audit(request, "onvif discover", target, "http_502", {"kind": "socket", "errno": exc.errno or 0})
            log.info("onvif discover %s: %s", printable(target), printable(exc))
            raise json_error(web.HTTPBadGateway, "无法发送探测报文:请检查网络接口或组播设置") from exc
    _audit(
        request,
        "onvif discover",
        target,
        "ok",
        {
            "mode": result.mode,
            "port": port,
            "found": len(result.devices),
            "seconds": round(time.monotonic() - started, 2),
        },
    )
    return json_response(result.to_json())


@requires(Capability.PROVISION)
async def camera_profiles(request: web.Request) -> web.Response:
    """POST /api/onvif/profiles: device information and profiles (with RTSP URIs) of one camera."""
    limits = request.app[ONVIF_LIMITS]
    body = await _body(request)
    xaddr = body.get("xaddr")
    if not isinstance(xaddr, str) or not xaddr:
        raise json_error(web.HTTPBadRequest, "缺少 xaddr (ONVIF 设备服务地址)")
    username = _text(body, "username") or ""
    password = _text(body, "password") or ""
    try:
        target = parse_xaddr(xaddr).origin
    except OnvifAddressError as exc:
        _audit(request, "onvif profiles", printable(xaddr, 120), "http_400", {"kind": exc.kind})
        raise _error(exc) from exc
    with _Slot(limits):
        try:
            result = await lookup_profiles(xaddr, Credentials(username, password), timeout=limits.lookup_timeout)
        except OnvifError as exc:
            _audit(
                request,
                "onvif profiles",
                target,
                f"http_{exc.status_hint}",
                {"kind": exc.kind, "username": username},
            )
            log.info("onvif profiles %s: %s", target, printable(exc.reason))
            raise _error(exc) from exc
    _audit(
        request,
        "onvif profiles",
        target,
        "ok",
        {
            "username": username,
            "profiles": len(result.profiles),
            "manufacturer": result.device.manufacturer,
            "model": result.device.model,
        },
    )
    return json_response(result.to_json())


def add_onvif_routes(app: web.Application, limits: OnvifLimits | None = None) -> None:
    """Register the ONVIF routes (``limits``: tests shorten the deadlines)."""
    app[ONVIF_LIMITS] = limits or OnvifLimits()
    app.router.add_post("/api/onvif/discover", discover_cameras)
    app.router.add_post("/api/onvif/profiles", camera_profiles)
