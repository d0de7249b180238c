"""The audit trail on HTTP: who watched what is recorded, and only a 市级管理员 may read it.

Recording. :func:`audit_middleware` records every audited route after its
handler answered, keyed by the route (method and path pattern), so the route
handlers carry no audit code: the caller (the authenticated principal, its
role, how it logged in and its address), the action, the target (the route's
``{id}``), the outcome (``ok`` or ``http_<status>``) and, for
``DELETE /api/channels/{id}/live``, how long the stream had been open.
A WebRTC session is longer than its request: the offer route records its
start and end itself (:mod:`gateway.httpapi.audit_sessions`).

Reading. ``GET /api/audit?offset&limit&actor&action&target&since&until``
(newest first) and ``GET /api/audit/export.csv`` (chain order, same filters)
are for :attr:`~gateway.security.principal.Role.CITY_ADMIN` only: the trail
shows every district's staff and the police, so a 区级值班员 does not read it
(403, and the refusal is itself recorded as ``access_denied``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from gateway.alarms.payload import rfc3339_ms
from gateway.audit.actions import AuditAction
from gateway.audit.chain import AuditRecord
from gateway.audit.store import AuditFilter
from gateway.audit.trail import AuditTrail
from gateway.httpapi.audit_sessions import caller, caller_source, track_sessions
from gateway.httpapi.common import json_error, json_response, paging, query_time
from gateway.httpapi.guard import requires
from gateway.httpapi.identity import AUDIT, principal_of
from gateway.httpapi.live_routes import LIVE
from gateway.security.principal import Principal, Role
from gateway.security.scope import Capability

__all__ = ["AUDITED_ROUTES", "TRAIL", "add_audit_routes", "audit_middleware", "csv_row", "record_json"]

TRAIL = web.AppKey("kgw_audit_trail", AuditTrail)


@dataclass(frozen=True, slots=True)
class _Audited:
    action: AuditAction
    op: str = ""  # what the detail says it was ("open", "close", …)
    failures_only: bool = False  # the handler records success itself (a session)
    stream_age: bool = False  # duration = how long the channel's stream had been open
    self_recorded: bool = False  # the handler records every outcome itself (a target only it knows)


AUDITED_ROUTES: Final[dict[tuple[str, str], _Audited]] = {
    ("POST", "/api/channels/{id}/live"): _Audited(AuditAction.LIVE_VIEW, "open"),
    ("DELETE", "/api/channels/{id}/live"): _Audited(AuditAction.LIVE_VIEW, "close", stream_age=True),
    ("GET", "/api/channels/{id}/snapshot.jpg"): _Audited(AuditAction.SNAPSHOT),
    ("POST", "/api/channels/{id}/webrtc"): _Audited(AuditAction.WEBRTC_SESSION, "offer", failures_only=True),
    ("GET", "/api/alarms/{id}/snapshot.jpg"): _Audited(AuditAction.ALARM_SNAPSHOT),
    ("POST", "/api/alarms/{id}/ack"): _Audited(AuditAction.ALARM_ACK),
    ("POST", "/api/alarms/{id}/resolve"): _Audited(AuditAction.ALARM_RESOLVE),
    ("POST", "/api/alarms/{id}/verify"): _Audited(AuditAction.ALARM_VERIFY),
    ("POST", "/api/alarms/{id}/deliveries/{sink}/{event}/retry"): _Audited(AuditAction.DELIVERY_RETRY),
    ("POST", "/api/devices/{id}/query/{cmd}"): _Audited(AuditAction.DEVICE_QUERY),
    ("POST", "/api/kindergartens"): _Audited(AuditAction.PROVISIONING, "kindergartens"),
    ("POST", "/api/onvif/discover"): _Audited(AuditAction.PROVISIONING, "onvif discover", self_recorded=True),
    ("POST", "/api/onvif/profiles"): _Audited(AuditAction.PROVISIONING, "onvif profiles", self_recorded=True),
    ("GET", "/api/channels/{id}/records"): _Audited(AuditAction.RECORD_SEARCH),
    ("POST", "/api/channels/{id}/playback"): _Audited(AuditAction.PLAYBACK, "open"),
    ("POST", "/api/playback/{id}/control"): _Audited(AuditAction.PLAYBACK, "control"),
    ("DELETE", "/api/playback/{id}"): _Audited(AuditAction.PLAYBACK, "close"),
    ("POST", "/api/playback/{id}/webrtc"): _Audited(AuditAction.WEBRTC_SESSION, "playback offer", failures_only=True),
    ("POST", "/api/channels/{id}/downloads"): _Audited(AuditAction.DOWNLOAD, "start"),
    ("GET", "/api/downloads/{id}/file"): _Audited(AuditAction.DOWNLOAD, "file"),
    ("DELETE", "/api/downloads/{id}"): _Audited(AuditAction.DOWNLOAD, "delete"),
    ("POST", "/api/channels/{id}/ptz"): _Audited(AuditAction.PTZ_CONTROL, "ptz"),
    ("POST", "/api/devices/{id}/control"): _Audited(AuditAction.DEVICE_CONTROL, "control"),
    ("POST", "/api/channels/{id}/broadcast"): _Audited(AuditAction.BROADCAST, "start", failures_only=True),
    ("DELETE", "/api/channels/{id}/broadcast"): _Audited(AuditAction.BROADCAST, "stop"),
    ("POST", "/api/rtsp-cameras"): _Audited(AuditAction.PROVISIONING, "rtsp camera add"),
    ("PATCH", "/api/rtsp-cameras/{id}"): _Audited(AuditAction.PROVISIONING, "rtsp camera edit"),
    ("DELETE", "/api/rtsp-cameras/{id}"): _Audited(AuditAction.PROVISIONING, "rtsp camera remove"),
    ("POST", "/api/acceptance"): _Audited(AuditAction.ACCEPTANCE, "start"),
    ("POST", "/api/acceptance/{id}/areas"): _Audited(AuditAction.ACCEPTANCE, "areas"),
    ("POST", "/api/acceptance/{id}/finish"): _Audited(AuditAction.ACCEPTANCE, "finish"),
    ("POST", "/api/acceptance/{id}/abort"): _Audited(AuditAction.ACCEPTANCE, "abort"),
    ("GET", "/api/acceptance/{id}/report"): _Audited(AuditAction.ACCEPTANCE, "report"),
    ("GET", "/api/acceptance/{id}/snapshots/{channel}.jpg"): _Audited(AuditAction.ACCEPTANCE, "snapshot"),
}
"""Audited routes by (method, path pattern). Other changing requests under ``/api/`` are recorded by
:func:`_fallback` (users, tokens, areas, provisioning, configuration), except logins, which the
authentication code records itself."""

_LOGIN_WORDS: Final = ("login", "logout", "session")


def _fallback(method: str, path: str) -> _Audited | None:
    """A changing request on a route not in :data:`AUDITED_ROUTES`: record it all the same."""
    if method not in ("POST", "PUT", "PATCH", "DELETE") or not path.startswith("/api/"):
        return None
    if any(word in path for word in _LOGIN_WORDS):
        return None
    if path.startswith("/api/users"):
        return _Audited(AuditAction.USER_CHANGE, method.lower())
    if path.startswith("/api/tokens"):
        return _Audited(AuditAction.TOKEN_CHANGE, method.lower())
    if "area" in path:
        return _Audited(AuditAction.AREA_CONFIRM, method.lower())
    if "provision" in path or path.startswith(("/api/devices", "/api/kindergartens", "/api/channels")):
        return _Audited(AuditAction.PROVISIONING, method.lower())
    return _Audited(AuditAction.CONFIG_CHANGE, method.lower())


def _target(request: web.Request) -> str:
    info = request.match_info
    return str(info.get("id") or info.get("channel_id") or info.get("name") or "")


@web.middleware
async def audit_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Record an audited route's request once the handler answered (or refused)."""
    route = request.match_info.route
    resource = route.resource
    pattern = resource.canonical if resource is not None else ""
    method = "GET" if request.method == "HEAD" else request.method  # aiohttp answers HEAD with the GET handler
    audited = AUDITED_ROUTES.get((method, pattern)) or _fallback(method, pattern)
    if audited is None or audited.self_recorded or AUDIT not in request.app:
        return await handler(request)
    duration = None
    if audited.stream_age and LIVE in request.app:
        live = request.app[LIVE]
        stream = live.streams.get(_target(request))
        duration = live.loop.time() - stream.opened_at if stream is not None else None
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if not (audited.failures_only and status < 400):
            detail: dict[str, object] = {"route": f"{request.method} {pattern}"}
            if audited.op:
                detail["op"] = audited.op
            if request.match_info.get("cmd"):
                detail["cmd"] = request.match_info["cmd"]
            principal = caller(request)
            request.app[AUDIT].record(
                audited.action,
                actor=principal,
                target=_target(request),
                source=caller_source(request, principal),
                outcome="ok" if status < 400 else f"http_{status}",
                detail=detail,
                duration=duration if status < 400 else None,
            )


# --- reading ----------------------------------------------------------------------------------------


def _admin(request: web.Request) -> Principal:
    principal = principal_of(request)
    if principal.role is not Role.CITY_ADMIN:
        request.app[AUDIT].record(
            AuditAction.ACCESS_DENIED,
            actor=principal,
            target="audit",
            source=caller_source(request, principal),
            outcome="http_403",
            detail={"route": f"{request.method} {request.path}"},
        )
        raise json_error(web.HTTPForbidden, "only a 市级管理员 may read the audit trail")
    return principal


def _filter(request: web.Request, offset: int = 0, limit: int = 100) -> AuditFilter:
    q = request.query
    return AuditFilter(
        actor=q.get("actor") or None,
        action=q.get("action") or None,
        target=q.get("target") or None,
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        offset=offset,
        limit=limit,
    )


def record_json(record: AuditRecord) -> dict[str, Any]:
    """The API's view of a record (time as RFC 3339 and epoch seconds; detail parsed)."""
    e = record.entry
    try:
        detail = json.loads(e.detail)
    except ValueError:
        detail = {"raw": e.detail}
    try:
        role_zh = Role(e.role).label_zh
    except ValueError:
        role_zh = ""
    return {
        "seq": record.seq,
        "at": rfc3339_ms(e.at),
        "ts": e.at,
        "actor": e.actor,
        "role": e.role,
        "role_name": role_zh,
        "via": e.via,
        "source": e.source,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "detail": detail,
        "duration": e.duration,
        "police": bool(isinstance(detail, dict) and detail.get("police")),
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


@requires(Capability.AUDIT_READ)
async def list_audit(request: web.Request) -> web.Response:
    """GET /api/audit?offset&limit&actor&action&target&since&until (newest first)."""
    _admin(request)
    offset, limit = paging(request)
    page = await request.app[TRAIL].page(_filter(request, offset, limit))
    return json_response(
        {"items": [record_json(r) for r in page.items], "total": page.total, "offset": offset, "limit": limit}
    )


CSV_COLUMNS: Final = (
    "seq", "time", "actor", "role", "via", "source", "action", "target",
    "outcome", "duration_s", "police", "detail", "prev_hash", "hash",
)  # fmt: skip


def csv_row(record: AuditRecord) -> list[str]:
    """One CSV line of a record; text a spreadsheet would run as a formula is quoted with ``'``."""
    data = record_json(record)
    values = [
        str(record.seq),
        data["at"],
        data["actor"],
        data["role"],
        data["via"],
        data["source"],
        data["action"],
        data["target"],
        data["outcome"],
        "" if data["duration"] is None else f"{data['duration']:.3f}",
        "yes" if data["police"] else "",
        record.entry.detail,
        record.prev_hash,
        record.hash,
    ]
    return [("'" + v) if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v for v in values]


@requires(Capability.AUDIT_READ)
async def export_csv(request: web.Request) -> web.StreamResponse:
    """GET /api/audit/export.csv?actor&action&target&since&until: every matching record in chain order."""
    _admin(request)
    flt = _filter(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="kgw-audit.csv"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")  # so spreadsheet programs read the Chinese as UTF-8
    writer.writerow(CSV_COLUMNS)
    async for chunk in request.app[TRAIL].export(flt):
        writer.writerows(csv_row(r) for r in chunk)
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        await response.write(buffer.getvalue().encode())
    await response.write_eof()
    return response


def add_audit_routes(app: web.Application, trail: AuditTrail) -> None:
    """Put the trail on the app (``AUDIT``), record audited routes, serve ``/api/audit``.

    Call it after the authentication middleware was installed: this middleware is
    appended, so it runs inside it and sees the principal.
    """
    app[AUDIT] = trail
    app[TRAIL] = trail
    track_sessions(app)
    app.middlewares.append(audit_middleware)
    app.router.add_get("/api/audit", list_audit)
    app.router.add_get("/api/audit/export.csv", export_csv)
